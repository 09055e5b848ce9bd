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
