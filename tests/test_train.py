"""The training loop end to end on a tiny ViT and tiny synthetic data (CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_run

from partialft.cli import main
from partialft.errors import PartialFTError
from partialft.models import load_state_dict_file
from partialft.training.config import load_config
from partialft.training.runs import is_run_dir, load_run_model
from partialft.training.train import train

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
TIMING = {"images_per_s", "elapsed_s"}


tiny = tiny_run


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.mark.parametrize("method", ["full", "linear", "attn", "ffn", "last-half-blocks"])
def test_every_layer_method_trains_and_writes_its_run_dir(tmp_path, method):
    summary = train(tiny(tmp_path / method, method=method, epochs=1), progress=False)
    run = tmp_path / method
    assert is_run_dir(run)
    for name in ("config.yaml", "selection.json", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    for key in ("method", "layers", "trainable_params", "total_params", "best_acc", "final_acc",
                "wall_s", "device"):
        assert key in summary, key
    assert summary["method"] == method
    delta = load_state_dict_file(run / "delta.safetensors")
    trained = sum(v.numel() for v in delta.values())
    assert trained == summary["trainable_params"]  # test_vit has no buffers in trained modules
    if method != "full":
        assert summary["trainable_params"] < summary["total_params"]
    assert all(k.startswith("head.") for k in delta) == (method == "linear")


def test_training_learns_the_synthetic_task(tmp_path):
    summary = train(tiny(tmp_path / "r", epochs=4, max_per_split=64), progress=False)
    lines = metrics(tmp_path / "r")
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert summary["best_acc"] > 50.0  # 4 classes: chance is 25%


def test_same_seed_gives_identical_metrics(tmp_path):
    train(tiny(tmp_path / "a"), progress=False)
    train(tiny(tmp_path / "b"), progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


def test_same_seed_with_mixup_and_cutmix_gives_identical_metrics(tmp_path):
    """timm's Mixup draws from NumPy's global generator: the run seeds it too."""
    recipe = dict(mixup=0.8, cutmix=1.0, epochs=1)
    train(tiny(tmp_path / "a", **recipe), progress=False)
    import numpy as np

    np.random.seed(12345)  # whatever the global state was before, the run starts from its seed
    train(tiny(tmp_path / "b", **recipe), progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


def test_drop_path_reaches_the_model_and_is_recorded(tmp_path):
    import yaml

    from partialft.training.config import TrainConfig
    from partialft.training.setup import build

    setup = build(tiny(tmp_path / "dp", drop_path=0.2))
    try:
        rates = [m.drop_prob for m in setup.prepared.model.modules()
                 if type(m).__name__ == "DropPath"]
        assert rates and max(rates) == pytest.approx(0.2)  # timm's linear ramp ends at the rate
    finally:
        setup.run.close()
    assert yaml.safe_load((tmp_path / "dp" / "config.yaml").read_text())["drop_path"] == 0.2
    with pytest.raises(PartialFTError, match="drop_path 1.5"):
        TrainConfig(drop_path=1.5)


def test_val_fraction_0_trains_on_the_whole_training_split(tmp_path, capsys):
    """The paper's CIFAR-100 protocol: no held-out part, test accuracy only."""
    for i, lr in enumerate((1e-3, 3e-3)):  # one base (seed 0): soupable
        summary = train(tiny(tmp_path / f"all{i}", val_fraction=0.0, epochs=1,
                             dataset="digits", max_per_split=None, lr=lr), progress=False)
        assert summary["best_acc"] is None and summary["test_acc"] is not None
    split = json.loads((tmp_path / "all0" / "split.json").read_text())
    assert split["val"] == [] and len(split["train"]) == 1797 - len(split["test"])
    assert metrics(tmp_path / "all0")[0]["val_acc"] is None
    runs = [str(tmp_path / "all0"), str(tmp_path / "all1")]
    assert main(["soup", *runs, "--out", str(tmp_path / "u")]) == 0  # uniform: test acc only
    assert json.loads((tmp_path / "u" / "summary.json").read_text())["test_acc"] is not None
    capsys.readouterr()
    assert main(["soup", *runs, "--greedy", "--out", str(tmp_path / "g")]) == 2
    assert "without a validation split" in capsys.readouterr().err


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    train(tiny(tmp_path / "straight", ema=0.9), progress=False)
    assert train(tiny(tmp_path / "split", ema=0.9, max_steps=3), progress=False) is None
    assert not is_run_dir(tmp_path / "split")
    train(tiny(tmp_path / "split", ema=0.9), resume=True, progress=False)
    assert metrics(tmp_path / "split") == metrics(tmp_path / "straight")
    a = load_state_dict_file(tmp_path / "straight" / "delta.safetensors")
    b = load_state_dict_file(tmp_path / "split" / "delta.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_delta_round_trip_reproduces_the_trained_model(tmp_path):
    run = tmp_path / "attn"
    train(tiny(run, method="attn", save_full=True, epochs=1), progress=False)
    model, summary = load_run_model(run)
    full = load_state_dict_file(run / "model.safetensors")
    reference, _ = load_run_model(run)
    reference.load_state_dict(full)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), reference(x))
    assert summary["method"] == "attn"


def test_fapft_selection_trains_the_chosen_layers(tmp_path):
    angles = {f"blocks.{i}.{k}": float(i) for i in range(6) for k in ("attn", "mlp")}
    path = tmp_path / "angles.json"
    path.write_text(json.dumps({"angles": angles}))
    summary = train(tiny(tmp_path / "f", method="fapft", angles=str(path), topk="2",
                         mode="small", epochs=1), progress=False)
    assert summary["layers"] == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]


def test_existing_run_dir_needs_overwrite_or_resume(tmp_path):
    train(tiny(tmp_path / "r", epochs=1), progress=False)
    with pytest.raises(PartialFTError, match="--overwrite"):
        train(tiny(tmp_path / "r", epochs=1), progress=False)
    before = (tmp_path / "r" / "summary.json").read_text()
    assert train(tiny(tmp_path / "r", epochs=1), resume=True, progress=False) is not None
    assert (tmp_path / "r" / "summary.json").read_text() == before
    train(tiny(tmp_path / "r", epochs=1, seed=1), overwrite=True, progress=False)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["seed"] == 1


def test_a_run_dir_in_use_is_refused(tmp_path):
    from partialft.training.rundir import RunDir

    held = RunDir(tmp_path / "busy")
    try:
        with pytest.raises(PartialFTError, match="in use"):
            RunDir(tmp_path / "busy", resume=True)
    finally:
        held.close()


def test_cli_train_with_config_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**tiny(tmp_path / "unused").to_dict(), "epochs": 5}))
    out = tmp_path / "cli"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--out", str(out),
                 "--method", "ffn", "--no-progress"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["method"] == "ffn" and saved["batch_size"] == 8
    assert "test acc" in capsys.readouterr().out


def test_cli_bad_values_exit_2_with_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--lr", "-1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lr -1" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "two"])
    assert exc.value.code == 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert cfg.epochs >= 1 and cfg.lr > 0


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(PartialFTError, match="'epoch'.*epochs"):
        load_config(bad)


def test_fapft_pipeline_runs_and_skips_completed_stages(tmp_path, capsys):
    from partialft.workflows.fapft import run_fapft

    cfg = tiny(tmp_path / "pipe", epochs=1, method="fapft", topk="1", mode="large")
    summary = run_fapft(cfg, progress=False)
    assert set(summary["runs"]) == {"full", "fapft"}
    assert len(summary["fapft_layers"]) == 2  # top-1 of the attn group and of the ffn group
    angles = json.loads((tmp_path / "pipe" / "angles.json").read_text())["angles"]
    assert len(angles) == 12 and all(0.0 <= a <= 180.0 for a in angles.values())
    stamp = (tmp_path / "pipe" / "full" / "summary.json").stat().st_mtime_ns
    run_fapft(cfg, progress=False)
    assert (tmp_path / "pipe" / "full" / "summary.json").stat().st_mtime_ns == stamp


def test_bf16_autocast_on_cpu_and_tensorboard_logs(tmp_path):
    pytest.importorskip("tensorboard")
    summary = train(tiny(tmp_path / "bf16", amp="bf16", epochs=1), progress=False)
    assert summary["precision"] == "bf16"
    assert list((tmp_path / "bf16").rglob("events.out.tfevents*")), "no TensorBoard event file"


def test_recipe_options_run_together(tmp_path):
    summary = train(tiny(tmp_path / "recipe", epochs=1, mixup=0.8, cutmix=1.0, grad_accum=2,
                         randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25,
                         crop_scale=0.5, hflip=0.5, batch_size=4), progress=False)
    record = metrics(tmp_path / "recipe")[0]
    assert record["step"] == 5  # 40 images / (4 x 2 accumulation) optimizer steps
    assert summary["best_acc"] is not None


def test_fapft_mode_auto_is_resolved_by_a_linear_probe_before_the_run(tmp_path, capsys):
    """`partialft train --mode auto` probes first and records the concrete mode; the library's
    train() is never handed 'auto' (training does not depend on the selectors)."""
    angles = {f"blocks.{i}.{k}": float(i) for i in range(6) for k in ("attn", "mlp")}
    path = tmp_path / "angles.json"
    path.write_text(json.dumps({"angles": angles}))
    argv = ["train", "--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4",
            "--img-size", "32", "--max-per-split", "40", "--batch-size", "8", "--epochs", "1",
            "--amp", "no", "--no-progress", "--method", "fapft", "--angles", str(path),
            "--topk", "1", "--mode", "auto", "--out", str(tmp_path / "auto")]
    assert main(argv) == 0
    assert "mode auto -> " in capsys.readouterr().out
    selection = json.loads((tmp_path / "auto" / "selection.json").read_text())
    assert selection["mode"] in ("large", "small")
    summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
    expected = "blocks.5.attn" if selection["mode"] == "large" else "blocks.0.attn"
    assert expected in summary["layers"]
    assert main([*argv, "--resume"]) == 0  # the resumed run keeps the mode it got
    with pytest.raises(PartialFTError, match="mode auto is decided by a linear probe"):
        train(tiny(tmp_path / "lib", method="fapft", angles=str(path), topk="1", mode="auto"),
              progress=False)
