"""The core verbs end to end on tiny models: layers, angles, plan, and their bad-input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import assert_user_error, cli
from safetensors.torch import save_file

from partialft.cli import main
from partialft.methods import prepare
from partialft.training.checkpoints import save_delta


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """pre.safetensors, ft.safetensors (last half fine-tuned) and run/ with only a delta."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(root / "pre.safetensors"))
    prepared = prepare(model, "last-half-blocks")
    with torch.no_grad():  # deeper blocks move much more: angles grow with depth
        for name, p in model.named_parameters():
            if p.requires_grad and name.startswith("blocks."):
                p.add_(0.03 * (int(name.split(".")[1]) - 2) ** 2 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(root / "ft.safetensors"))
    save_delta(root / "run" / "delta.safetensors", model, {"model": "test_vit", "num_classes": 10},
               prepared.selection.to_dict())
    return root


def test_layers_table_and_json(capsys) -> None:
    code, out, _ = cli(capsys, "layers", "test_convnext")
    assert code == 0
    assert "family convnext" in out and "stages.2.blocks.3" in out and "stage2.block" in out
    code, out, _ = cli(capsys, "layers", "test_vit", "--num-classes", "10", "--json")
    data = json.loads(out)
    assert code == 0 and data["model"] == "test_vit" and data["head_params"] == 650
    assert [la["id"] for la in data["layers"]][:2] == ["blocks.0.attn", "blocks.0.mlp"]
    assert data["groups"]["ffn"]["layers"][-1] == "blocks.5.mlp"


def test_angles_json_out_and_table(capsys, weights: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "angles.json"
    code, out, _ = cli(capsys, "angles", weights / "pre.safetensors", weights / "ft.safetensors",
                       "--model", "test_vit", "--out", out_file, "--json")
    angles = json.loads(out)["angles"]
    assert code == 0 and json.loads(out_file.read_text())["angles"] == angles
    assert len(angles) == 12 and all(isinstance(v, float) for v in angles.values())
    assert angles["blocks.0.attn"] == 0.0 and angles["blocks.5.mlp"] > 1.0
    code, out, _ = cli(capsys, "angles", weights / "pre.safetensors", weights / "ft.safetensors",
                       "--model", "test_vit")
    assert code == 0 and out.startswith("attn:\n") and "deg" in out


def test_angles_from_run_dir_with_only_a_delta(capsys, weights: Path) -> None:
    assert [p.name for p in (weights / "run").iterdir()] == ["delta.safetensors"]
    _, full, _ = cli(capsys, "angles", weights / "pre.safetensors", weights / "ft.safetensors",
                     "--model", "test_vit", "--json")
    code, delta, _ = cli(capsys, "angles", weights / "pre.safetensors", weights / "run",
                         "--model", "test_vit", "--json")
    assert code == 0 and json.loads(delta)["angles"] == json.loads(full)["angles"]


def test_angles_of_a_run_dir_alone(capsys, weights: Path, tmp_path: Path) -> None:
    """A run dir alone is compared with the base it recorded: no pretrained file, no --model."""
    torch.manual_seed(0)
    base = tmp_path / "base.safetensors"
    save_file(timm.create_model("test_vit", num_classes=4, img_size=32).state_dict(), str(base))
    run = tmp_path / "run"
    assert main(["train", "--model", "test_vit", "--no-pretrained", "--checkpoint", str(base),
                 "--dataset", "synthetic:4", "--img-size", "32", "--max-per-split", "16",
                 "--batch-size", "8", "--epochs", "1", "--hflip", "0", "--amp", "no",
                 "--lr", "1e-2", "--no-progress", "--method", "last-half-blocks",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    code, alone, _ = cli(capsys, "angles", run, "--json", "--out", tmp_path / "a.json")
    _, files, _ = cli(capsys, "angles", base, run, "--model", "test_vit", "--num-classes", "4",
                      "--json")
    angles = json.loads(alone)["angles"]
    assert code == 0 and angles == json.loads(files)["angles"]
    assert json.loads(alone)["model"] == "test_vit"
    assert json.loads((tmp_path / "a.json").read_text())["angles"] == angles
    assert angles["blocks.0.attn"] == 0.0 and angles["blocks.5.mlp"] > 0.0
    # a run written before base hashing (only a delta naming its base) still works, unchecked
    _, old, _ = cli(capsys, "angles", weights / "run", "--json")
    _, ref, _ = cli(capsys, "angles", weights / "pre.safetensors", weights / "run", "--model",
                    "test_vit", "--json")
    assert json.loads(old)["angles"] == json.loads(ref)["angles"]
    for argv, needles in (
            (["angles", base], ["is not a run dir", "PRETRAINED FINETUNED"]),
            (["angles", base, run], ["--model is needed", "a run dir alone needs none"]),
            (["angles", run, "--model", "test_convnext"], ["does not match run",
                                                           "fine-tuned test_vit"]),
            (["angles", run, "--checkpoint", base], ["--checkpoint is not used"])):
        code, _, err = cli(capsys, *argv)
        assert_user_error(code, err, *needles)


def test_plan_methods(capsys, weights: Path, tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "plan", "--model", "test_vit", "--num-classes", "10",
                       "--method", "attn", "--json")
    data = json.loads(out)
    assert code == 0 and isinstance(data["trainable_params"], int)
    assert data["layers"] == [f"blocks.{i}.attn" for i in range(6)]
    assert data["trainable_params"] == 6 * 16_768 + 650
    angles = tmp_path / "a.json"
    cli(capsys, "angles", weights / "pre.safetensors", weights / "ft.safetensors", "--model",
        "test_vit", "--out", angles)
    code, out, _ = cli(capsys, "plan", "--model", "test_vit", "--num-classes", "10", "--method",
                       "fapft", "--angles", angles, "--topk", "1", "--mode", "large", "--json")
    data = json.loads(out)
    assert code == 0 and data["layers"] == ["blocks.5.attn", "blocks.5.mlp"]
    code, out, _ = cli(capsys, "plan", "--model", "test_vit", "--num-classes", "10", "--method",
                       "fapft", "--angles", angles, "--topk", "2", "--mode", "small", "--json")
    # blocks 0-2 tie at 0 degrees; ties keep depth order
    assert json.loads(out)["layers"] == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn",
                                         "blocks.1.mlp"]
    code, out, _ = cli(capsys, "plan", "--model", "test_vit", "--method", "layers", "--layers",
                       "blocks.2.mlp, blocks.1.attn")
    assert code == 0 and "trains 2 of 12 layers" in out and "trainable:" in out


def test_plan_checks_checkpoint(capsys, weights: Path) -> None:
    code, out, _ = cli(capsys, "plan", "--model", "test_vit", "--num-classes", "10",
                       "--checkpoint", weights / "pre.safetensors", "--method", "ffn", "--json")
    assert code == 0 and json.loads(out)["trainable_params"] == 6 * 24_960 + 650


def test_bad_inputs(capsys, weights: Path, tmp_path: Path) -> None:
    pre, ft = weights / "pre.safetensors", weights / "ft.safetensors"
    angles = tmp_path / "a.json"
    assert cli(capsys, "angles", pre, ft, "--model", "test_vit", "--out", angles)[0] == 0
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(pre.read_bytes()[:500])
    evil = tmp_path / "evil.pth"
    torch.save({"x": Reducer()}, evil)
    cases = [
        (["layers", "test_vitt"], ["unknown model 'test_vitt'", "test_vit"]),
        (["plan", "--model", "test_vit", "--method", "bogus"], ["unknown method 'bogus'",
                                                                "valid methods: full"]),
        (["plan", "--model", "test_vit", "--method", "fapft", "--angles", angles,
          "--topk", "9", "--mode", "large"], ["top-k 9", "use 0..6"]),
        (["plan", "--model", "test_vit", "--method", "fapft", "--angles", angles,
          "--topk", "x", "--mode", "small"], ["top-k 'x' is not a whole number"]),
        (["plan", "--model", "test_vit", "--method", "fapft", "--angles", angles,
          "--topk", "2"], ["needs --mode", "large", "small"]),
        (["plan", "--model", "test_convnext", "--method", "fapft", "--angles", angles],
         ["does not match the model's layers", "another model"]),
        (["plan", "--model", "test_vit", "--method", "ffn", "--checkpoint",
          tmp_path / "missing.pth"], ["missing.pth does not exist"]),
        (["plan", "--model", "test_convnext", "--method", "ffn"], ["kind block"]),
        (["plan", "--model", "test_convnext", "--method", "linear", "--checkpoint", pre],
         ["does not fit the model: missing stem.0.weight"]),
        (["angles", tmp_path / "missing.safetensors", ft, "--model", "test_vit"],
         ["does not exist"]),
        (["angles", cut, ft, "--model", "test_vit"], ["truncated or not a safetensors file"]),
        (["angles", evil, ft, "--model", "test_vit"], ["refused to load", "could run code"]),
        (["angles", pre, ft, "--model", "test_convnext"], ["lack", "stages.0.blocks.0"]),
        (["angles", pre, ft, "--model", "test_vit", "--out", angles], ["--overwrite"]),
        (["plan", "--model", "test_vit"], ["--method"]),
        (["plan", "--model", "test_vit", "--method", "attn", "--num-classes", "0"],
         ["--num-classes", "not a positive whole number"]),
        (["plan", "--model", "test_vit", "--method", "fapft", "--mode", "big"], ["--mode"]),
    ]
    for argv, needles in cases:
        code, _, err = cli(capsys, *argv)
        assert_user_error(code, err, *needles)


class Reducer:
    """A pickle payload that would call os.getcwd on load."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.slow  # a fresh interpreter imports torch, timm and every verb
def test_installed_script_exit_code_2_without_traceback() -> None:
    script = Path(sys.executable).with_name("partialft")
    proc = subprocess.run([str(script), "plan", "--model", "no_such_model", "--method", "attn"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown model 'no_such_model'" in proc.stderr and proc.stdout == ""


def test_help_imports_no_torch():
    """Every verb's --help is built without torch, timm or accelerate (so it answers at once)."""
    code = ("import sys; import partialft.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'accelerate', 'matplotlib') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_static_names_in_help_match_the_library():
    from partialft.cli.common import METHOD_NAMES
    from partialft.methods import all_methods
    from partialft.models.backbone import NAME
    from partialft.training.pretrain_config import BUNDLED

    assert list(METHOD_NAMES) == all_methods()
    assert BUNDLED == NAME
