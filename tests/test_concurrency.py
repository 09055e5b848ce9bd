"""Concurrency: runs in different run dirs do not interfere; a run dir in use is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from partialft.models import load_state_dict_file
from partialft.training.rundir import RunDir
from partialft.training.runs import is_run_dir

TIMING = {"images_per_s", "elapsed_s"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_argv(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "partialft", "train", "--model", "test_vit", "--no-pretrained",
            "--dataset", "synthetic:4", "--img-size", "32", "--max-per-split", "40",
            "--batch-size", "8", "--epochs", "2", "--amp", "no", "--seed", "0", "--no-progress",
            "--checkpoint-every", "1", "--out", str(out), *extra]


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.mark.slow
def test_two_runs_at_once_in_different_dirs_both_finish_with_the_same_result(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [subprocess.Popen(train_argv(out, "--keep-state"), env=ENV,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for out in (a, b)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for run in (a, b):
        assert is_run_dir(run)
        assert len(metrics(run)) == 2
        assert not list(run.rglob("*.tmp"))  # no write left half done
        assert [p.name for p in (run / "state").glob("tensors-*")] == ["tensors-10.safetensors"]
    assert metrics(a) == metrics(b)  # same config and seed: neither disturbed the other
    da, db = (load_state_dict_file(r / "delta.safetensors") for r in (a, b))
    assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)


@pytest.mark.slow
def test_a_second_process_is_refused_a_run_dir_in_use(tmp_path):
    run = tmp_path / "run"
    held = RunDir(run)  # this process is "training" into it
    (run / "config.yaml").write_text("model: test_vit\n")
    try:
        done = subprocess.run(train_argv(run, "--resume"), env=ENV, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr
        assert f"in use by pid {os.getpid()}" in lines[0] and "another --out" in lines[0]
        assert list(run.iterdir()) != [] and not (run / "state").exists()  # nothing touched
    finally:
        held.close()
    again = RunDir(run, resume=True)  # released: the next process gets it
    again.close()


def test_the_lock_is_per_run_dir_and_released_on_close(tmp_path):
    from partialft.errors import PartialFTError

    first, other = RunDir(tmp_path / "x"), RunDir(tmp_path / "y")
    try:
        with pytest.raises(PartialFTError, match="in use by pid"):
            RunDir(tmp_path / "x", resume=True)
    finally:
        first.close()
        other.close()
    RunDir(tmp_path / "x", resume=True).close()


# --- shared (readers) and exclusive (writers) locks: training/locks.py ----------------------

LINEAR = ["train", "--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4",
          "--img-size", "32", "--max-per-split", "16", "--batch-size", "8", "--epochs", "1",
          "--amp", "no", "--no-progress", "--method", "linear", "--threads", "1"]


@pytest.fixture(scope="module")
def lin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny finished linear runs of one base (seed 0), different learning rates."""
    from partialft.cli import main

    root = tmp_path_factory.mktemp("lin")
    runs = {}
    for name, lr in (("a", "1e-3"), ("b", "3e-3")):
        runs[name] = root / name
        assert main([*LINEAR, "--lr", lr, "--out", str(runs[name])]) == 0
    return runs


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_readers_share_a_lock_that_excludes_writers(tmp_path):
    from partialft.errors import PartialFTError
    from partialft.training.locks import acquire

    (tmp_path / ".partialft").write_text('{"kind": "train"}')
    with acquire(tmp_path, shared=True), acquire(tmp_path, shared=True):  # readers coexist
        with pytest.raises(PartialFTError, match="in use by another process; wait"):
            acquire(tmp_path)  # a writer is refused while they read
    with acquire(tmp_path):  # a writer excludes readers and names itself
        with pytest.raises(PartialFTError, match=f"in use by pid {os.getpid()}; then"):
            acquire(tmp_path, shared=True, advice="then.")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partialft"]  # released: no lock file


def test_a_lock_waits_for_its_holder_and_reads_unmarked_dirs_without_creating_one(tmp_path):
    import threading
    import time

    from partialft.training.locks import acquire

    held = acquire(tmp_path)
    threading.Timer(0.3, held.release).start()
    start = time.monotonic()
    acquire(tmp_path, shared=True, wait=10).release()  # waited for the writer to finish
    assert time.monotonic() - start >= 0.25
    plain = tmp_path / "plain"
    plain.mkdir()
    acquire(plain, shared=True).release()  # a reader writes nothing into a foreign folder
    assert list(plain.iterdir()) == []


def test_a_holder_that_removes_its_directory_does_not_bring_it_back(tmp_path):
    """A failed export removes its own folder while holding it: releasing the lock afterwards
    must not create the folder again (filelock creates a lock file's parents)."""
    import shutil

    from partialft.errors import PartialFTError
    from partialft.training.locks import acquire

    out = tmp_path / "out"
    out.mkdir()
    held = acquire(out)
    shutil.rmtree(out)
    held.release()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PartialFTError, match="not a directory"):
        acquire(out)  # a writer never creates the directory it locks
    acquire(out, shared=True).release()  # a reader of nothing: nothing to lock
    assert list(tmp_path.iterdir()) == []


def test_a_killed_holder_releases_its_lock(tmp_path):
    from partialft.training.locks import acquire

    code = ("import sys, time; from partialft.training.locks import acquire; "
            "acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    acquire(tmp_path).release()  # the kernel released it with the process


def test_eval_json_update_waits_for_the_run_dir_lock(tmp_path):
    """save_eval's read-modify-write holds the run dir's lock: an update made meanwhile by
    another holder (another eval) is kept, not overwritten with the older content."""
    import threading

    from partialft.analysis.evaluate import save_eval
    from partialft.training.locks import acquire

    save_eval(tmp_path, "first", {"clean_acc": 1.0})
    held = acquire(tmp_path)
    writer = threading.Thread(target=save_eval, args=(tmp_path, "b", {"clean_acc": 2.0}))
    writer.start()
    writer.join(0.5)
    assert writer.is_alive()  # waiting for the lock, has not read eval.json yet
    data = json.loads((tmp_path / "eval.json").read_text())
    (tmp_path / "eval.json").write_text(json.dumps({**data, "a": {"clean_acc": 3.0}}))
    held.release()
    writer.join(30)
    assert set(json.loads((tmp_path / "eval.json").read_text())) == {"first", "a", "b"}


@pytest.mark.slow
def test_two_evals_of_one_run_at_once_both_keep_their_result(lin, tmp_path):
    run = _copy(lin["a"], tmp_path / "run")
    argv = [sys.executable, "-m", "partialft", "eval", str(run), "--dataset", "synthetic:4",
            "--no-progress", "--threads", "1"]
    procs = [subprocess.Popen([*argv, "--max-images", str(n)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in (8, 16)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    data = json.loads((run / "eval.json").read_text())
    assert {"synthetic:4 first 8", "synthetic:4 first 16"} <= set(data)
    assert not list(run.glob("*.tmp"))


def test_eval_of_a_run_replaced_meanwhile_records_nothing(lin, tmp_path, monkeypatch, capsys):
    """`train --overwrite` of the run while it is evaluated: the old model's accuracy is not
    written into the new run."""
    from conftest import assert_user_error, cli

    import partialft.cli.eval as cli_eval

    run = _copy(lin["a"], tmp_path / "run")
    real = cli_eval.evaluate_run

    def retrained_meanwhile(*args, **kw):
        result = real(*args, **kw)
        assert cli(capsys, *LINEAR, "--lr", "3e-2", "--out", run, "--overwrite")[0] == 0
        return result

    monkeypatch.setattr(cli_eval, "evaluate_run", retrained_meanwhile)
    code, _, err = cli(capsys, "eval", run, "--dataset", "synthetic:4", "--no-progress")
    assert_user_error(code, err, f"run dir {run} was replaced while it was being evaluated")
    assert not (run / "eval.json").exists()
    monkeypatch.setattr(cli_eval, "evaluate_run", real)
    assert cli(capsys, "eval", run, "--dataset", "synthetic:4", "--no-progress")[0] == 0


def test_eval_of_a_run_being_trained_is_refused_after_a_wait(lin, tmp_path, monkeypatch,
                                                              capsys):
    from conftest import assert_user_error, cli

    import partialft.analysis.evaluate as ev

    run = _copy(lin["a"], tmp_path / "run")
    monkeypatch.setattr(ev, "LOCK_WAIT_S", 0.2)
    held = RunDir(run, resume=True)  # a training (--resume) holds it
    try:
        code, _, err = cli(capsys, "eval", run, "--dataset", "synthetic:4", "--no-progress")
    finally:
        held.close()
    assert_user_error(code, err, f"in use by pid {os.getpid()}", "then evaluate again")


def test_a_soup_holds_its_ingredients_so_retraining_one_is_refused(lin, tmp_path, monkeypatch,
                                                                    capsys):
    from conftest import cli

    import partialft.analysis.soups as soups

    a, b = _copy(lin["a"], tmp_path / "a"), _copy(lin["b"], tmp_path / "b")
    real, tried = soups.load_ingredient, []

    def load(run_dir):
        if not tried:  # half-way through reading the ingredients, retrain one of them
            tried.append(cli(capsys, *LINEAR, "--lr", "3e-2", "--out", b, "--overwrite"))
        return real(run_dir)

    monkeypatch.setattr(soups, "load_ingredient", load)
    delta = (b / "delta.safetensors").read_bytes()
    code, _, err = cli(capsys, "soup", a, b, "--out", tmp_path / "soup", "--no-eval")
    assert code == 0, err
    assert tried[0][0] == 2 and "in use by another process" in tried[0][2]
    assert (b / "delta.safetensors").read_bytes() == delta  # untouched
    assert cli(capsys, *LINEAR, "--lr", "3e-2", "--out", b, "--overwrite")[0] == 0  # released


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_angles_writes_of_one_file_at_once_one_wins(lin, tmp_path, monkeypatch, capsys,
                                                        overwrite):
    """Another `angles --out SAME` finishes while this one computes: exactly one says wrote."""
    from conftest import assert_user_error, cli

    import partialft.core.angles as angles

    out = tmp_path / "same.json"
    argv = ["angles", lin["a"], "--out", out, *(["--overwrite"] if overwrite else [])]
    if overwrite:
        assert cli(capsys, *argv)[0] == 0
    real, other = angles.compute_angles, []

    def compute(*args, **kw):
        if not other:
            other.append(None)
            other[0] = cli(capsys, *argv)  # the other process, start to end
        return real(*args, **kw)

    monkeypatch.setattr(angles, "compute_angles", compute)
    code, out_text, err = cli(capsys, *argv)
    assert other[0][0] == 0 and "wrote" in other[0][1]
    assert_user_error(code, err, f"--out {out} was written by another process")
    assert "wrote" not in out_text
    assert not list(tmp_path.glob(".same.json.*"))
