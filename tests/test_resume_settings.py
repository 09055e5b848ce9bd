"""A resume continues the SAME run or refuses (issue 21): recorded settings and input files.

- flags left out on ``train --resume`` take the recorded values (preprocessing included), and
  config.yaml is never rewritten;
- a flag or --config value that differs from the record is refused in one sentence naming the
  setting, the recorded and the given value; so are the library call and a fapft rerun;
- an input file (angles, layer spec, checkpoint, --config) changed in place is refused;
- ``pretrain --resume`` follows the same rules, and its metrics.jsonl equals an uninterrupted
  run's after a stop or a kill -9.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REAL, assert_user_error, cli, tiny_run
from safetensors.torch import load_file

from partialft.errors import PartialFTError
from partialft.training.pretrain import PretrainConfig, pretrain
from partialft.training.train import train

PRE = ["--mean", "0.2,0.3,0.4", "--std", "0.3,0.3,0.3", "--crop-pct", "0.9",
       "--interpolation", "nearest"]
TIMING = {"images_per_s", "elapsed_s", "wall_s"}


def _metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def _delta(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "delta.safetensors"))


def test_a_resume_without_the_preprocessing_flags_keeps_the_recorded_ones(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(capsys, "train", *REAL, *PRE, "--out", a, "--max-steps", "3")[0] == 0
    record = (a / "config.yaml").read_text()
    code, _, err = cli(capsys, "train", "--out", a, "--resume", "--no-progress")
    assert code == 0, err
    assert (a / "config.yaml").read_text() == record  # never rewritten by a resume
    assert cli(capsys, "train", *REAL, *PRE, "--out", b)[0] == 0
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert (sa["test_acc"], sa["best_acc"]) == (sb["test_acc"], sb["best_acc"])
    assert sa["config"]["mean"] == [0.2, 0.3, 0.4] and sa["config"]["interpolation"] == "nearest"
    assert _metrics(a) == _metrics(b)
    da, db = _delta(a), _delta(b)
    assert all(torch.equal(da[k], db[k]) for k in db)


@pytest.mark.parametrize(("flags", "needles"), [
    (["--mean", "0.5,0.5,0.5"], ("mean [0.5, 0.5, 0.5]", "mean [0.2, 0.3, 0.4]")),
    (["--crop-pct", "1.0"], ("crop_pct 1.0", "crop_pct 0.9")),
    (["--interpolation", "bicubic"], ("'bicubic'", "'nearest'")),
    (["--lr", "1e-3"], ("lr 0.001", "lr 0.0003")),
    (["--seed", "3"], ("seed 3", "seed 0")),
    (["--method", "attn"], ("method 'attn'", "method 'full'")),
    (["--img-size", "64"], ("img_size 64", "img_size 32")),
    (["--epochs", "5"], ("epochs 5", "epochs 2")),
    (["--workers", "2"], ("workers 2", "workers 0")),  # another augmentation stream
])
def test_a_resume_refuses_a_setting_that_differs_from_the_record(tmp_path, capsys, flags,
                                                                  needles):
    run = tmp_path / "run"
    assert cli(capsys, "train", *REAL, *PRE, "--out", run, "--max-steps", "2")[0] == 0
    record = (run / "config.yaml").read_text()
    code, _, err = cli(capsys, "train", "--out", run, "--resume", *flags)
    assert_user_error(code, err, "--resume", *needles)
    assert (run / "config.yaml").read_text() == record


def test_a_resume_with_the_same_values_or_runtime_flags_continues(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *REAL, *PRE, "--out", run, "--max-steps", "2")[0] == 0
    # the recorded values given again (another spelling of the same path too), runtime flags
    code, _, err = cli(capsys, "train", *REAL, *PRE, "--out", run, "--resume", "--threads", "1",
                       "--workers", "0", "--log-with", "none", "--max-steps", "5")
    assert code == 0, err
    assert cli(capsys, "train", "--out", run, "--resume", "--no-progress")[0] == 0
    assert (run / "summary.json").is_file()


def test_a_config_file_value_that_differs_is_refused_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *REAL, "--out", run, "--max-steps", "2")[0] == 0
    config = tmp_path / "c.yaml"
    config.write_text("label_smoothing: 0.2\n")
    code, _, err = cli(capsys, "train", "--config", config, "--out", run, "--resume")
    assert_user_error(code, err, "label_smoothing 0.2", "label_smoothing 0.1")


def test_the_library_resume_uses_the_record_and_refuses_recipe_changes(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_run(out, mean=[0.2, 0.3, 0.4], std=[0.3, 0.3, 0.3], max_steps=3)
    assert train(cfg, progress=False) is None
    with pytest.raises(PartialFTError, match="lr 0.01, but the run was started with lr 0.001"):
        train(tiny_run(out, lr=1e-2), resume=True, progress=False)
    with pytest.raises(PartialFTError, match=r"mean \[0.5"):
        train(tiny_run(out, mean=[0.5, 0.5, 0.5]), resume=True, progress=False)
    # None in a resolved field (mean, std, crop_pct, ...) means the recorded value
    summary = train(tiny_run(out), resume=True, progress=False)
    assert summary["config"]["mean"] == [0.2, 0.3, 0.4]
    ref = tiny_run(tmp_path / "ref", mean=[0.2, 0.3, 0.4], std=[0.3, 0.3, 0.3])
    assert train(ref, progress=False)["test_acc"] == summary["test_acc"]


def _angles(path: Path, order: list[int]) -> None:
    layers = [f"blocks.{i}.{k}" for i in range(6) for k in ("attn", "mlp")]  # test_vit: depth 6
    path.write_text(json.dumps({"angles": {la: float(10 + o) for la, o in zip(layers, order)}}))


def test_a_changed_angles_file_stops_a_fapft_resume(tmp_path):
    angles, out = tmp_path / "angles.json", tmp_path / "run"
    _angles(angles, list(range(12)))
    kw = dict(method="fapft", angles=str(angles), topk="1", mode="large")
    assert train(tiny_run(out, max_steps=2, **kw), progress=False) is None
    _angles(angles, list(range(12))[::-1])  # other layers would be trained with the old Adam state
    with pytest.raises(PartialFTError, match="angles .*changed since"):
        train(tiny_run(out, **kw), resume=True, progress=False)
    _angles(angles, list(range(12)))  # restored: the resume goes on
    assert train(tiny_run(out, **kw), resume=True, progress=False) is not None


def test_a_changed_checkpoint_layer_spec_or_config_stops_a_resume(tmp_path, capsys):
    from conftest import tiny
    from safetensors.torch import save_file

    ckpt, spec, config = tmp_path / "base.safetensors", tmp_path / "spec.yaml", tmp_path / "c.yaml"
    save_file(tiny("vit", 10).state_dict(), str(ckpt))
    spec.write_text("layers:\n  blocks.{i}.attn: ['blocks.{i}.norm1.*', 'blocks.{i}.attn.*']\n"
                    "  blocks.{i}.mlp: ['blocks.{i}.norm2.*', 'blocks.{i}.mlp.*']\n"
                    "groups:\n  attn: ['blocks.{i}.attn']\n  ffn: ['blocks.{i}.mlp']\n")
    config.write_text("seed: 0\n")
    argv = ["train", *REAL, "--checkpoint", ckpt, "--layer-spec", spec, "--config", config]
    for name, path in (("checkpoint", ckpt), ("layer spec", spec), ("file", config)):
        run = tmp_path / name.replace(" ", "_")
        assert cli(capsys, *argv, "--out", run, "--max-steps", "2")[0] == 0
        original = path.read_bytes()
        path.write_bytes(original + b"\n" if path != ckpt else _resaved(ckpt))
        code, _, err = cli(capsys, *argv, "--out", run, "--resume")
        assert_user_error(code, err, f"{name} ", "changed since")
        path.write_bytes(original)
    assert cli(capsys, *argv, "--out", tmp_path / "file", "--resume")[0] == 0


def _resaved(ckpt: Path) -> bytes:
    """The same tensors with one weight nudged: a checkpoint changed in place."""
    from safetensors.torch import save

    state = load_file(str(ckpt))
    key = sorted(state)[0]
    state[key] = state[key] + 1
    return save(state)


def test_a_fapft_rerun_keeps_left_out_flags_and_refuses_changed_ones(tmp_path, capsys):
    out = tmp_path / "pipe"
    argv = ["fapft", *REAL, "--mean", "0.2,0.3,0.4", "--topk", "1", "--mode", "large",
            "--out", out]
    code, _, err = cli(capsys, *argv, "--max-steps", "2")  # the full run stops at step 2
    assert_user_error(code, err, "stopped at max_steps 2")
    code, _, err = cli(capsys, "fapft", *REAL, "--lr", "1e-3", "--topk", "1", "--mode", "large",
                       "--out", out)
    assert_user_error(code, err, "lr 0.001", "lr 0.0003")
    # the flags left out (the data, model and --mean here) keep the recorded values; --topk
    # and --mode are recorded by the partial stage, which has not started yet
    code, _, err = cli(capsys, "fapft", "--topk", "1", "--mode", "large", "--out", out,
                       "--no-progress")
    assert code == 0, err
    code, _, err = cli(capsys, "fapft", "--out", out, "--no-progress")  # all recorded now
    assert code == 0, err
    for stage in ("full", "fapft"):
        assert json.loads((out / stage / "summary.json").read_text())["config"]["mean"] == [
            0.2, 0.3, 0.4]


# --- pretrain -------------------------------------------------------------------------------

PT = dict(categories=3, steps=5, batch_size=4, warmup_steps=1, val_per_category=2,
          eval_every=2, log_every=2, checkpoint_every=1, chains=16, iters=6)
PT_FLAGS = ["--categories", "3", "--steps", "5", "--batch-size", "4", "--warmup-steps", "1",
            "--val-per-category", "2", "--eval-every", "2", "--log-every", "2",
            "--checkpoint-every", "1", "--chains", "16", "--iters", "6", "--no-progress"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pt") / "whole"
    pretrain(PretrainConfig(out=str(out), **PT), progress=False)
    return out


def test_a_stopped_pretrain_resumes_to_the_same_metrics(tmp_path, pretrained, capsys):
    out = tmp_path / "b"
    # stopped at step 3 (not a log step: the lines' sums straddle the stop)
    assert pretrain(PretrainConfig(out=str(out), max_steps=3, **PT), progress=False) is None
    record = (out / "config.json").read_text()
    assert cli(capsys, "pretrain", "--out", out, "--resume", "--no-progress")[0] == 0
    assert (out / "config.json").read_text() == record
    assert _metrics(out) == _metrics(pretrained)
    a, b = load_file(str(pretrained / "model.safetensors")), load_file(str(out /
                                                                          "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kill_at", ["state.json:3:after", "state.json:1:before",
                                     "MODEL_CARD.md:1:before"])
def test_a_killed_pretrain_resumes_to_the_same_metrics(tmp_path, pretrained, kill_at):
    """Killed after a resume point, before the first one (metrics logged since are logged
    again, never twice) and while finishing (the card lands before the summary)."""
    from test_crash import ENV, KILLER

    out = tmp_path / "k"
    argv = ["pretrain", "--out", str(out), *PT_FLAGS]
    done = subprocess.run([sys.executable, "-c", KILLER, *argv], capture_output=True, text=True,
                          env={**ENV, "KILL_AT": kill_at}, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "partialft", *argv, "--resume"], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _metrics(out) == _metrics(pretrained)
    assert (out / "MODEL_CARD.md").is_file()
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.parametrize(("flags", "needle"), [
    (["--lr", "0.01"], "lr 0.01"), (["--seed", "1"], "seed 1"),
    (["--label-smoothing", "0.2"], "label_smoothing 0.2"), (["--steps", "9"], "steps 9"),
])
def test_a_pretrain_resume_refuses_changed_settings(tmp_path, capsys, flags, needle):
    out = tmp_path / "p"
    assert pretrain(PretrainConfig(out=str(out), max_steps=1, **PT), progress=False) is None
    code, _, err = cli(capsys, "pretrain", "--out", out, "--resume", *flags)
    assert_user_error(code, err, needle, "the run was started with")
    with pytest.raises(PartialFTError, match="the run was started with"):
        pretrain(PretrainConfig(out=str(out), **{**PT, "lr": 0.5}), resume=True, progress=False)
