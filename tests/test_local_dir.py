"""``--model local-dir:DIR``: continue from a ``partialft export`` folder with train, plan,
layers and fapft; runs made from one record the folder and its weights' SHA-256, and every
reader (eval, soup, angles, resume) finds and checks that base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, cli
from safetensors.torch import load_file, save_file

from partialft.models import file_digest

TINY = ["--dataset", "synthetic:4", "--img-size", "32", "--max-per-split", "16",
        "--batch-size", "8", "--epochs", "1", "--amp", "no", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fully fine-tuned run, exported as a timm folder by the real CLI."""
    from partialft.cli import main

    root = tmp_path_factory.mktemp("exported")
    run, folder = root / "run", root / "export"
    assert main(["train", "--model", "test_vit", "--no-pretrained", *TINY, "--method", "full",
                 "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(folder)]) == 0
    return folder


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    (dest / ".partialft").unlink(missing_ok=True)  # a plain folder of the user's now
    return dest


def _train(capsys, model: str, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "train", "--model", model, *TINY, "--method", "attn", "--out", out, *extra)


@pytest.mark.slow
def test_train_from_an_export_records_it_and_its_readers_check_it(export, tmp_path, capsys):
    folder = _copy(export, tmp_path / "export")
    run, other = tmp_path / "again", tmp_path / "other"
    code, _, err = _train(capsys, f"local-dir:{folder}", run)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == f"local-dir:{folder.resolve()}"  # absolute: read from anywhere
    assert summary["base_weights_sha256"]
    base = json.loads(load_file_metadata(run / "delta.safetensors")["base"])
    assert base["model_file"]["sha256"] == file_digest(folder / "model.safetensors")["sha256"]
    # the frozen layers are the export's weights, not a fresh initialisation
    from partialft.training.runs import checked_base_model

    weights = load_file(str(folder / "model.safetensors"))
    start = checked_base_model(base).state_dict()
    assert torch.equal(start["blocks.0.mlp.fc1.weight"], weights["blocks.0.mlp.fc1.weight"])
    assert _train(capsys, f"local-dir:{folder}", other, "--lr", "3e-3")[0] == 0
    for argv in (["eval", run, "--dataset", "synthetic:4", "--max-images", "8", "--no-progress"],
                 ["soup", run, other, "--no-eval", "--out", tmp_path / "soup"],
                 ["angles", run, "--out", tmp_path / "angles.json"]):
        code, _, err = cli(capsys, *argv)
        assert code == 0, (argv[0], err)
    assert cli(capsys, "train", "--model", f"local-dir:{folder}", *TINY, "--method", "attn",
               "--out", run, "--resume")[0] == 0  # the same run: nothing left to do
    code, _, err = cli(capsys, "export", run, "--out", tmp_path / "export2")  # and on again
    assert code == 0, err
    card = (tmp_path / "export2" / "README.md").read_text()
    assert f"model folder {folder.resolve()} (weights SHA-256 {base['model_file']['sha256']})" \
        in card

    # the export changes afterwards: each reader refuses in one sentence, nothing mixes
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["blocks.0.mlp.fc1.weight"] += 1.0
    save_file(tensors, str(folder / "model.safetensors"))
    for argv in (["eval", run, "--dataset", "synthetic:4", "--max-images", "8", "--no-progress"],
                 ["angles", run, "--out", tmp_path / "angles2.json"]):
        code, _, err = cli(capsys, *argv)
        assert_user_error(code, err, f"{folder.resolve() / 'model.safetensors'} changed")
    code, _, err = cli(capsys, "train", "--model", f"local-dir:{folder}", *TINY, "--method",
                       "attn", "--out", run, "--resume")
    assert_user_error(code, err, "changed since")
    shutil.rmtree(folder)
    code, _, err = cli(capsys, "eval", run, "--dataset", "synthetic:4", "--no-progress")
    assert_user_error(code, err, f"{folder.resolve()} does not exist")


def load_file_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()


@pytest.mark.slow
def test_plan_layers_and_fapft_take_an_export(export, tmp_path, capsys):
    model = f"local-dir:{export}"
    code, out, err = cli(capsys, "layers", model)
    assert code == 0 and "family vit, 12 residual layers" in out, err
    code, out, err = cli(capsys, "plan", "--model", model, "--method", "attn", "--json")
    assert code == 0, err
    assert json.loads(out)["trainable_params"] == 100_868  # 12 ATTN layers + the 4-class head
    code, _, err = cli(capsys, "fapft", "--model", model, *TINY, "--topk", "1", "--mode",
                       "large", "--out", tmp_path / "fapft")
    assert code == 0, err
    summary = json.loads((tmp_path / "fapft" / "fapft" / "summary.json").read_text())
    assert summary["model"] == model and summary["trainable_params"] < 100_868


def test_an_output_inside_the_model_folder_is_refused(export, capsys):
    code, _, err = _train(capsys, f"local-dir:{export}", export / "run")
    assert_user_error(code, err, "--out", str(export))
    assert not (export / "run").exists()


def _damage(kind: str, folder: Path) -> None:
    if kind == "missing":
        shutil.rmtree(folder)
    elif kind == "no-config":
        (folder / "config.json").unlink()
    elif kind == "bad-json":
        (folder / "config.json").write_text("{not json")
    elif kind == "unknown-arch":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "architecture": "no_such_net"}))
    elif kind == "no-weights":
        (folder / "model.safetensors").unlink()
    elif kind == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def test_a_local_dir_name_without_a_folder_is_one_sentence(tmp_path, capsys):
    code, _, err = _train(capsys, "local-dir:", tmp_path / "run")
    assert_user_error(code, err, "model 'local-dir:' names no folder")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind,needle", [
    ("missing", "does not exist"), ("no-config", "has no config.json"),
    ("bad-json", "damaged config.json"), ("unknown-arch", "'no_such_net' is not a timm model"),
    ("no-weights", "holds no weights file"), ("truncated", "truncated"),
])
def test_a_bad_model_folder_is_one_sentence(kind, needle, export, tmp_path, capsys):
    folder = _copy(export, tmp_path / "export")
    _damage(kind, folder)
    code, _, err = _train(capsys, f"local-dir:{folder}", tmp_path / "run")
    assert_user_error(code, err, needle)
    assert not (tmp_path / "run").exists()
    if kind not in ("no-weights", "truncated"):  # plan and layers read no weights
        code, _, err = cli(capsys, "layers", f"local-dir:{folder}")
        assert_user_error(code, err, needle)
