"""A failed first run removes the directory it created (nothing to --overwrite next time), unless
it holds resume state, which a --resume continues: train, fapft, pretrain, soup (real CLI runs
on test_vit; the failure is a real bad input, or an error injected after a resume point)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, cli
from PIL import Image

from partialft.training.outputs import read_marker
from partialft.training.rundir import RunDir

TRAIN = ["--model", "test_vit", "--no-pretrained", "--img-size", "32", "--batch-size", "4",
         "--warmup-epochs", "0", "--amp", "no", "--no-progress", "--method", "attn"]
PRETRAIN = ["pretrain", "--model", "test_vit", "--categories", "2", "--steps", "2",
            "--warmup-steps", "0", "--batch-size", "2", "--val-per-category", "1",
            "--eval-every", "1", "--checkpoint-every", "1", "--log-every", "1", "--iters", "6",
            "--chains", "8", "--no-progress"]


@pytest.fixture
def bad_data(tmp_path: Path) -> Path:
    """A folder dataset whose last training image is not an image: found mid-epoch."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                pixels = (rng.random((16, 16, 3)) * 255).astype("uint8")
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    (root / "train" / "b" / "3.png").write_bytes(b"not an image")
    return root


def test_train_failing_on_bad_data_leaves_nothing(capsys, bad_data, tmp_path) -> None:
    out = tmp_path / "runs" / "attn"
    argv = ["train", *TRAIN, "--dataset", f"folder:{bad_data}", "--epochs", "1", "--out", out]
    assert_user_error(*cli(capsys, *argv)[::2], "3.png cannot be read")
    assert not out.exists() and (tmp_path / "runs").is_dir()  # only what the run created goes
    out.mkdir()  # an empty folder of the user's is kept, emptied of what partialft wrote
    assert_user_error(*cli(capsys, *argv)[::2], "3.png cannot be read")
    assert out.is_dir() and list(out.iterdir()) == []
    Image.fromarray(np.zeros((16, 16, 3), "uint8")).save(bad_data / "train" / "b" / "3.png")
    assert cli(capsys, *argv)[0] == 0  # corrected: the same command, no --overwrite


def test_user_files_beside_or_inside_a_failed_run_survive(capsys, monkeypatch, bad_data,
                                                         tmp_path) -> None:
    """The clean-up of a failed first run deletes only what partialft wrote: a file of the
    user's beside the run dir, or one that lands inside it while it runs, stays, and so does
    the run dir that holds it; the original error is what the user sees."""
    import partialft.training.train as train_module

    out = tmp_path / "runs" / "attn"
    (tmp_path / "runs").mkdir()
    beside = tmp_path / "runs" / "notes.txt"
    beside.write_text("mine")
    real = train_module._train

    def user_writes_then_train(s, *args, **kwargs):
        (out / "mine.txt").write_text("mine too")  # e.g. an editor's file, mid-run
        return real(s, *args, **kwargs)

    monkeypatch.setattr(train_module, "_train", user_writes_then_train)
    argv = ["train", *TRAIN, "--dataset", f"folder:{bad_data}", "--epochs", "1", "--out", out]
    assert_user_error(*cli(capsys, *argv)[::2], "3.png cannot be read")
    assert beside.read_text() == "mine" and (out / "mine.txt").read_text() == "mine too"


def test_fapft_failing_in_its_first_stage_leaves_nothing(capsys, bad_data, tmp_path) -> None:
    out = tmp_path / "fapft"
    assert_user_error(*cli(capsys, "fapft", *TRAIN[:-2], "--dataset", f"folder:{bad_data}",
                           "--epochs", "1", "--topk", "1", "--mode", "large", "--out", out)[::2],
                      "3.png cannot be read")
    assert not out.exists()


def test_a_run_that_failed_after_a_resume_point_keeps_it(capsys, monkeypatch, tmp_path) -> None:
    """Crashed in its second epoch: state/ of the first stays, and --resume finishes the run."""
    out = tmp_path / "run"
    argv = ["train", *TRAIN, "--dataset", "synthetic:2", "--max-per-split", "8", "--epochs",
            "2", "--out", out]
    saved = RunDir.save_state

    def save_then_crash(self, tensors, info):
        saved(self, tensors, info)
        raise RuntimeError("simulated crash after the first resume point")

    monkeypatch.setattr(RunDir, "save_state", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(capsys, *argv)
    assert (out / "state" / "state.json").is_file() and read_marker(out)["kind"] == "train"
    monkeypatch.setattr(RunDir, "save_state", saved)
    assert cli(capsys, *argv, "--resume")[0] == 0 and (out / "summary.json").is_file()


def test_pretrain_failing_before_its_first_resume_point_leaves_nothing(capsys, monkeypatch,
                                                                        tmp_path) -> None:
    from partialft.training import pretrain

    def crash(job):
        raise RuntimeError("simulated crash in the first step")

    monkeypatch.setattr(pretrain, "_train_step", crash)
    out = tmp_path / "pre"
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(capsys, *PRETRAIN, "--out", out)
    assert not out.exists()


def test_a_failed_soup_leaves_nothing(capsys, monkeypatch, tmp_path) -> None:
    runs = []
    for i, lr in enumerate(("1e-3", "3e-3")):
        runs.append(tmp_path / f"r{i}")
        assert cli(capsys, "train", *TRAIN, "--dataset", "synthetic:2", "--max-per-split", "8",
                   "--epochs", "1", "--lr", lr, "--out", runs[-1])[0] == 0
    from partialft.analysis import soups

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the soup")

    monkeypatch.setattr(soups, "save_tensors", crash)
    out = tmp_path / "soup"
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(capsys, "soup", *runs, "--no-eval", "--out", out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r0", "r1"]
