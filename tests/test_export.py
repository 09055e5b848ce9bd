"""`partialft export`: timm, merged and peft folders that timm / peft load without partialft,
the Hub upload (mocked at huggingface_hub's functions), and base-weight provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from conftest import assert_user_error, cli
from safetensors.torch import load_file, save_file

from partialft.cli import main
from partialft.models.loading import file_digest
from partialft.training.checkpoints import DELTA, read_metadata, save_tensors
from partialft.training.runs import base_state, load_run_model, read_config, weights_sha256

CLASSES = 10
TRAIN = ["--dataset", f"synthetic:{CLASSES}", "--img-size", "32", "--max-per-split", "16",
         "--batch-size", "8", "--epochs", "1", "--warmup-epochs", "0", "--hflip", "0",
         "--amp", "no", "--no-progress", "--lr", "1e-2"]
# |logit difference| allowed between an export loaded by timm/peft alone and partialft's model:
# a layer method's weights are copied bit for bit and peft runs LoRA unmerged, as partialft
# does; merging SSF or LoRA into the weights reorders float32 sums
EXACT, MERGED = 1e-6, 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Real run dirs (the real CLI): test_vit from a saved base checkpoint trained with attn,
    ssf, lora and adapter, and a LoRA run of the bundled partialft_vit_tiny on digits."""
    root = tmp_path_factory.mktemp("export_runs")
    torch.manual_seed(0)
    base = root / "base.safetensors"
    save_file(timm.create_model("test_vit", num_classes=CLASSES, img_size=32).state_dict(),
              str(base))
    found = {"base": base}
    for method in ("attn", "ssf", "lora", "adapter"):
        found[method] = root / method
        assert main(["train", "--model", "test_vit", "--no-pretrained", "--checkpoint",
                     str(base), *TRAIN, "--method", method, "--out", str(found[method])]) == 0
    found["lora-s1"] = root / "lora-s1"
    assert main(["train", "--model", "test_vit", "--no-pretrained", "--checkpoint", str(base),
                 *TRAIN, "--method", "lora", "--seed", "1", "--out", str(found["lora-s1"])]) == 0
    found["tiny"] = root / "tiny-lora"
    assert main(["train", "--model", "partialft_vit_tiny", "--dataset", "digits", "--method",
                 "lora", "--epochs", "1", "--max-per-split", "32", "--batch-size", "16",
                 "--amp", "no", "--no-progress", "--out", str(found["tiny"])]) == 0
    return found


def expected(run: Path, tmp: Path, name: str) -> Path:
    """A fixed batch and partialft's own logits on it, saved for the plain-Python check."""
    model, _ = load_run_model(run)
    size = read_config(run)["img_size"]
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    path = tmp / f"{name}.safetensors"
    save_file({"x": x, "y": y}, str(path))
    return path


# Runs in a fresh interpreter that imports timm, peft, torch and safetensors, never partialft.
PLAIN = textwrap.dedent("""
    import json, sys
    import peft, timm, torch
    from safetensors.torch import load_file

    for check in json.loads(sys.argv[1]):
        ref = load_file(check["expected"])
        if check["kind"] == "timm":
            model = timm.create_model("local-dir:" + check["dir"], pretrained=True)
            data = timm.data.resolve_data_config({}, model=model)
            want = check["data"]
            assert list(data["input_size"]) == want["input_size"], (data, want)
            for key in ("mean", "std"):
                assert [round(v, 6) for v in data[key]] == [round(v, 6) for v in want[key]]
            assert data["crop_pct"] == want["crop_pct"], data
            assert data["interpolation"] == want["interpolation"], data
            assert model.pretrained_cfg.get("label_names") == check["labels"], model.pretrained_cfg
        else:
            base = timm.create_model("test_vit", num_classes=check["classes"], img_size=32)
            base.load_state_dict(load_file(check["base"]))
            model = peft.PeftModel.from_pretrained(base, check["dir"])
        with torch.no_grad():
            got = model.eval()(ref["x"])
        assert torch.allclose(got, ref["y"], rtol=0, atol=check["atol"]), (
            check["dir"], float((got - ref["y"]).abs().max()))
    assert "partialft" not in sys.modules and not any(m.startswith("partialft.")
                                                      for m in sys.modules)
    print("ok", len(json.loads(sys.argv[1])))
""")


def plain_python(checks: list[dict]) -> None:
    """Run the checks with timm/peft alone (no partialft importable by accident either)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", PLAIN, json.dumps(checks)], env=env,
                          capture_output=True, text=True, cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"ok {len(checks)}"


def run_data(run: Path) -> dict:
    cfg = read_config(run)
    size = cfg["img_size"]
    return {"input_size": [3, size, size], "mean": cfg["mean"], "std": cfg["std"],
            "crop_pct": cfg["crop_pct"], "interpolation": cfg["interpolation"]}


@pytest.mark.slow  # a fresh interpreter imports torch, timm and peft
def test_timm_and_merged_exports_load_in_plain_timm(capsys, runs, tmp_path: Path) -> None:
    checks = []
    synthetic = [f"class{i}" for i in range(CLASSES)]
    for name, fmt, atol in (("attn", "timm", EXACT), ("ssf", "timm", MERGED),
                            ("lora", "merged", MERGED), ("tiny", "timm", MERGED)):
        out = tmp_path / f"{name}-{fmt}"
        code, text, err = cli(capsys, "export", runs[name], "--out", out, "--format", fmt)
        assert code == 0, err
        assert f"as {fmt} to {out}" in text and "checked: loaded back" in text
        assert sorted(p.name for p in out.iterdir()) == [
            "README.md", "config.json", "model.safetensors"]  # no partialft marker, no lock
        labels = [str(i) for i in range(10)] if name == "tiny" else synthetic
        checks.append({"kind": "timm", "dir": str(out), "atol": atol, "labels": labels,
                       "expected": str(expected(runs[name], tmp_path, name)),
                       "data": run_data(runs[name])})
    plain_python(checks)
    tiny = json.loads((tmp_path / "tiny-timm" / "config.json").read_text())
    assert tiny["architecture"] == "vit_tiny_patch16_224"  # timm alone knows it
    assert tiny["model_args"]["embed_dim"] == 128 and tiny["num_classes"] == 10


def test_model_card_states_the_run(capsys, runs, tmp_path: Path) -> None:
    out = tmp_path / "card"
    assert cli(capsys, "export", runs["tiny"], "--out", out)[0] == 0
    card = (out / "README.md").read_text()
    summary = json.loads((runs["tiny"] / "summary.json").read_text())
    for fact in ("library_name: timm", "partialft_vit_tiny.fractal", "**Method:** lora",
                 f"{summary['trainable_params']:,} of {summary['total_params']:,}",
                 "**Fine-tuning dataset:** digits", f"{summary['test_acc']:.2f}%",
                 summary["base_weights_sha256"], f'timm.create_model("local-dir:{out}"'):
        assert fact in card, fact
    code, _, _ = cli(capsys, "export", runs["attn"], "--out", tmp_path / "attn")
    card = (tmp_path / "attn" / "README.md").read_text()
    assert code == 0 and "blocks.0.attn, blocks.1.attn" in card and "checkpoint " in card


@pytest.mark.slow  # a fresh interpreter imports torch, timm and peft
def test_peft_export_loads_with_peft_alone(capsys, runs, tmp_path: Path) -> None:
    out = tmp_path / "peft"
    code, text, err = cli(capsys, "export", runs["lora"], "--out", out, "--format", "peft")
    assert code == 0, err
    assert "modules_to_save head" in text and "PeftModel.from_pretrained(base" in text
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json",
                                               "adapter_model.safetensors", "README.md"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["modules_to_save"] == ["head"]
    assert config["r"] == 8 and config["lora_alpha"] == 16.0
    plain_python([{"kind": "peft", "dir": str(out), "atol": EXACT, "classes": CLASSES,
                   "base": str(runs["base"]),
                   "expected": str(expected(runs["lora"], tmp_path, "lora"))}])


def test_a_soup_of_lora_runs_exports_like_a_lora_run(capsys, runs, tmp_path: Path) -> None:
    soup = tmp_path / "soup"
    assert cli(capsys, "soup", runs["lora"], runs["lora-s1"], "--out", soup, "--no-eval")[0] == 0
    for fmt in ("peft", "timm"):
        code, text, err = cli(capsys, "export", soup, "--out", tmp_path / fmt, "--format", fmt)
        assert code == 0, err
        assert f"exported lora run {soup} as {fmt}" in text and "checked: loaded back" in text


def test_weights_timm_cannot_load_are_refused_and_nothing_is_left(capsys, tmp_path) -> None:
    """SSF merged into Swin gives its bias-free patch-merging reductions a bias timm lacks."""
    config = tmp_path / "swin.yaml"
    config.write_text("model: swin_tiny_patch4_window7_224\npretrained: false\nmodel_kwargs: "
                      "{patch_size: 4, window_size: 2, embed_dim: 8, depths: [1, 1, 2, 1], "
                      "num_heads: [1, 1, 2, 2]}\nmethod: ssf\n")
    run = tmp_path / "swin-ssf"
    assert main(["train", "--config", str(config), *TRAIN, "--out", str(run)]) == 0
    capsys.readouterr()
    assert_user_error(*cli(capsys, "export", run, "--out", tmp_path / "e")[::2],
                      "the weights hold layers.1.downsample.reduction.bias, which timm's model "
                      "lacks",
                      "cannot be exported as a plain timm folder")
    assert not (tmp_path / "e").exists()


def test_help_lists_the_library_formats() -> None:
    from partialft.analysis import export
    from partialft.cli import export as verb

    assert verb.FORMATS == export.FORMATS


def test_formats_a_method_cannot_use_are_refused(capsys, runs, tmp_path: Path) -> None:
    for run, fmt, needles in (
            ("adapter", "timm", ["adapter run adds modules", "--format timm and merged work",
                                 "--format peft for lora"]),
            ("adapter", "merged", ["cannot be exported as --format merged",
                                   "export it with --format onnx"]),
            ("ssf", "peft", ["--format peft writes a peft LoRA adapter but this is a ssf run",
                             "--format timm"]),
            ("attn", "peft", ["this is an attn run"])):
        code, _, err = cli(capsys, "export", runs[run], "--out", tmp_path / "x", "--format", fmt)
        assert_user_error(code, err, *needles)
        assert not (tmp_path / "x").exists()
    code, _, err = cli(capsys, "export", runs["attn"], "--out", tmp_path / "x", "--format",
                       "tflite")
    assert code == 2 and "invalid choice: 'tflite'" in err


def test_out_follows_the_output_rules(capsys, runs, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    assert cli(capsys, "export", runs["attn"], "--out", out)[0] == 0
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", out)[::2], "already exists",
                      "--overwrite")
    assert cli(capsys, "export", runs["ssf"], "--out", out, "--overwrite")[0] == 0
    assert "ssf" in (out / "README.md").read_text()
    (out / "notes.txt").write_text("mine")
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", out, "--overwrite")[::2],
                      "notes.txt", "did not write")
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", runs["attn"] / "exp")[::2],
                      "inside the input")
    assert_user_error(*cli(capsys, "export", tmp_path / "nope", "--out", tmp_path / "y")[::2],
                      "does not exist")
    assert_user_error(*cli(capsys, "export", tmp_path, "--out", tmp_path / "y")[::2],
                      "not a finished partialft run")
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", runs["ssf"])[::2],
                      "is a partialft train directory, not an export one", "--overwrite")


def test_a_finished_export_carries_its_marker_in_its_card(capsys, runs, tmp_path: Path) -> None:
    """No .partialft in the folder people upload; --overwrite still deletes only partialft's
    own, unchanged files: an edited card or config, or a file of the user's, stops it."""
    from partialft.training.outputs import read_marker

    for fmt, run, other in (("timm", "attn", "config.json"),
                            ("peft", "lora", "adapter_config.json")):
        out = tmp_path / fmt
        assert cli(capsys, "export", runs[run], "--out", out, "--format", fmt)[0] == 0
        assert not (out / ".partialft").exists()
        marker = read_marker(out)
        assert marker["kind"] == "export" and marker["complete"] and "settings" not in marker
        assert {other, "README.md"} <= set(marker["files"])
        card = (out / "README.md").read_text()
        assert card.splitlines()[-1].startswith("<!-- partialft {")
        assert str(tmp_path) not in card.splitlines()[-1]  # no local paths published
        assert_user_error(*cli(capsys, "export", runs[run], "--out", out, "--format",
                               fmt)[::2], "already exists", "--overwrite")
        (out / "README.md").write_text(card.replace("partialft", "my model", 1))
        assert_user_error(*cli(capsys, "export", runs[run], "--out", out, "--format", fmt,
                               "--overwrite")[::2], "README.md", "did not write")
        (out / "README.md").write_text(card)
        (out / other).write_text((out / other).read_text() + " ")
        assert_user_error(*cli(capsys, "export", runs[run], "--out", out, "--format", fmt,
                               "--overwrite")[::2], other, "did not write")
        (out / other).write_text((out / other).read_text()[:-1])
        assert cli(capsys, "export", runs[run], "--out", out, "--format", fmt,
                   "--overwrite")[0] == 0
        assert not (out / ".partialft").exists() and read_marker(out)["complete"]
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", tmp_path / "timm" / "in")[::2],
                      "is inside", "partialft export directory")


class FakeHub:
    """Stands in for huggingface_hub's network functions; records what export asked."""

    def __init__(self, monkeypatch, token: str | None = "hf_test", fail: Exception | None = None):
        import huggingface_hub

        self.calls: list[tuple[str, dict]] = []
        self.fail = fail
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
        monkeypatch.setattr(huggingface_hub, "create_repo", self.create_repo)
        monkeypatch.setattr(huggingface_hub, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id: str, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kw):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("upload_folder", {**kw, "files": sorted(
            p.name for p in Path(kw["folder_path"]).iterdir())}))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/abc")


def test_push_to_hub_uploads_the_folder(capsys, monkeypatch, runs, tmp_path: Path) -> None:
    hub = FakeHub(monkeypatch)
    out = tmp_path / "hub"
    code, text, err = cli(capsys, "export", runs["lora"], "--out", out, "--push-to-hub",
                          "me/test-vit-lora", "--private")
    assert code == 0, err
    assert "pushed to https://huggingface.co/me/test-vit-lora/commit/abc" in text
    (_, created), (_, upload) = hub.calls
    assert created == {"repo_id": "me/test-vit-lora", "exist_ok": True, "private": True}
    assert upload["repo_id"] == "me/test-vit-lora" and upload["folder_path"] == str(out)
    assert {".partialft", ".lock"} <= set(upload["ignore_patterns"])
    assert {"config.json", "model.safetensors", "README.md"} <= set(upload["files"])
    assert 'timm.create_model("hf-hub:me/test-vit-lora"' in (out / "README.md").read_text()
    assert not (out / ".partialft").exists()  # complete once pushed: the card holds the marker


def test_push_to_hub_failures_are_one_sentence(capsys, monkeypatch, runs, tmp_path: Path) -> None:
    import huggingface_hub

    FakeHub(monkeypatch, token=None)
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", tmp_path / "a", "--push-to-hub",
                    "me/x")[::2], "needs a Hugging Face token", "HF_TOKEN")
    assert not (tmp_path / "a").exists()  # refused before any work
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", tmp_path / "a", "--push-to-hub",
                    "me/bad name")[::2], "'me/bad name' is not a Hub repo id")
    from huggingface_hub.utils import HfHubHTTPError

    refused = HfHubHTTPError.__new__(HfHubHTTPError)  # its constructor wants a live response
    Exception.__init__(refused, "403 Forbidden: you cannot write to me/x")
    FakeHub(monkeypatch, fail=refused)
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", tmp_path / "r", "--push-to-hub",
                    "me/x")[::2], "the Hugging Face Hub refused the upload to me/x",
                      "403 Forbidden", "your token may write there")
    FakeHub(monkeypatch, fail=ConnectionError("[Errno -2] Name or service not known"))
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", tmp_path / "b", "--push-to-hub",
                    "me/x")[::2], "could not reach the Hugging Face Hub", "Name or service")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", tmp_path / "c", "--push-to-hub",
                    "me/x")[::2], "HF_HUB_OFFLINE is set")


def test_runs_record_their_base(runs) -> None:
    tiny = json.loads((runs["tiny"] / "summary.json").read_text())
    assert tiny["pretrained_tag"] == "partialft_vit_tiny.fractal"
    assert tiny["checkpoint_sha256"] is None
    assert tiny["base_weights_sha256"] == weights_sha256(base_state(runs["tiny"]))
    meta = read_metadata(runs["tiny"] / DELTA)["base"]
    assert meta["pretrained_tag"] == tiny["pretrained_tag"]
    assert meta["weights_sha256"] == tiny["base_weights_sha256"]
    attn = json.loads((runs["attn"] / "summary.json").read_text())
    assert attn["pretrained_tag"] is None
    assert attn["checkpoint_sha256"] == file_digest(runs["base"])["sha256"]
    assert attn["base_weights_sha256"] == weights_sha256(load_file(str(runs["base"])))


def test_other_base_weights_are_refused_unless_allowed(capsys, monkeypatch, runs,
                                                       tmp_path: Path) -> None:
    """The bundled weights the tiny run started from change (as timm's Hub weights can)."""
    from timm.models import _registry

    from partialft.models.backbone import NAME, WEIGHTS

    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in load_file(WEIGHTS).items()}
    save_file(other, str(tmp_path / "other.safetensors"))
    for key in (NAME, f"{NAME}.fractal"):  # what timm resolves the name to
        monkeypatch.setattr(_registry._model_pretrained_cfgs[key], "file",
                            str(tmp_path / "other.safetensors"))
    every = (["export", runs["tiny"], "--out", tmp_path / "e"],
             ["eval", runs["tiny"], "--dataset", "digits", "--no-progress"],
             ["soup", runs["tiny"], "--out", tmp_path / "s"],  # a LoRA soup, evaluated
             ["angles", runs["tiny"]])
    for argv in every:
        assert_user_error(*cli(capsys, *argv)[::2], "differ from those the run started from",
                   "--allow-base-mismatch")
    assert not (tmp_path / "e").exists() and not (tmp_path / "s").exists()
    for argv in every:
        code, text, err = cli(capsys, *argv, "--allow-base-mismatch")
        assert code == 0, err
        assert err.startswith("warning: the base weights") and "applied to them anyway" in err
    assert "checked: loaded back" in cli(capsys, "export", runs["tiny"], "--out", tmp_path / "e",
                                         "--allow-base-mismatch", "--overwrite")[1]
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["test_acc"] is not None


def test_runs_without_a_recorded_hash_are_unchecked(capsys, runs, tmp_path: Path) -> None:
    """A run written before base hashing: its delta's base lacks the new fields."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(runs["attn"], old)
    meta = read_metadata(old / DELTA)
    for key in ("weights_sha256", "pretrained_tag"):
        meta["base"].pop(key, None)
    save_tensors(old / DELTA, load_file(str(old / DELTA)), meta)
    summary = json.loads((old / "summary.json").read_text())
    del summary["delta_sha256"]  # nor did such a run record its delta's SHA-256
    (old / "summary.json").write_text(json.dumps(summary))
    code, text, err = cli(capsys, "export", old, "--out", tmp_path / "e")
    assert code == 0, err
    assert "note: the run predates base-weight hashing" in text
