"""Portability: partialft imports and trains where Python has no ``fcntl`` (Windows), locking
through filelock's marker files there; CPU load and memory come from psutil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                      os.environ.get("PYTHONPATH", "")])}
NO_FCNTL = 'import sys; sys.modules["fcntl"] = None\n'  # `import fcntl` raises ImportError

TRAIN = ["train", "--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4",
         "--img-size", "32", "--max-per-split", "16", "--batch-size", "8", "--epochs", "1",
         "--amp", "no", "--no-progress", "--method", "linear", "--threads", "1"]


def _python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_FCNTL + code, *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_train_runs_without_fcntl(tmp_path):
    out = tmp_path / "run"
    code = ("from partialft.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "assert sys.modules['fcntl'] is None, 'something imported fcntl'\n"
            "import filelock; print('lock', filelock.FileLock.__name__)\n"
            "sys.exit(code)\n")
    done = _python(code, *TRAIN, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "lock SoftFileLock" in done.stdout  # filelock's fallback without flock
    assert "only soft file lock" not in done.stderr  # the CLI does not pass that warning on
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "linear" and summary["trainable_params"] > 0
    assert (out / "delta.safetensors").is_file()
    assert not list(out.rglob(".lock*"))  # no lock file left behind


def test_marker_locks_keep_the_guarantees_without_fcntl(tmp_path):
    """Without flock: readers share, a writer is refused naming the holder's pid, a killed
    holder does not keep the directory locked, and nothing is left behind."""
    (tmp_path / ".partialft").write_text('{"kind": "train"}')
    code = """
import os, subprocess, time
from partialft.errors import PartialFTError
from partialft.training.locks import acquire
d = sys.argv[1]
with acquire(d, shared=True), acquire(d, shared=True):
    try:
        acquire(d); raise SystemExit("a writer got in beside readers")
    except PartialFTError as exc:
        assert "in use by another process" in str(exc), exc
with acquire(d):
    try:
        acquire(d); raise SystemExit("two writers")
    except PartialFTError as exc:
        assert f"in use by pid {os.getpid()}" in str(exc), exc
assert sorted(os.listdir(d)) == [".partialft"], os.listdir(d)
holder = subprocess.Popen([sys.executable, "-c", sys.argv[2], d], stdout=subprocess.PIPE,
                          text=True)
assert holder.stdout.readline().strip() == "held"
try:
    acquire(d); raise SystemExit("the holder was not seen")
except PartialFTError as exc:
    assert f"in use by pid {holder.pid}" in str(exc), exc
holder.kill(); holder.wait(); holder.stdout.close()
acquire(d, wait=10).release()  # the dead holder's marker is broken
assert sorted(os.listdir(d)) == [".partialft"], os.listdir(d)
print("ok")
"""
    hold = (NO_FCNTL + "import time; from partialft.training.locks import acquire; "
            "held = acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)")
    done = _python(code, str(tmp_path), hold, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_cpu_load_and_memory_come_from_psutil(monkeypatch):
    import psutil

    from partialft.utils import limits, threads

    assert limits.available_bytes() == pytest.approx(psutil.virtual_memory().available,
                                                     rel=0.2)
    busy = threads.busy_cores(0.05)
    assert busy is not None and 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
    assert limits.cpu_name()  # a model name on Linux, the architecture elsewhere
    monkeypatch.setattr("builtins.open", _no_proc(open))
    assert limits.cpu_name()  # no /proc: still a name


def _no_proc(real):
    def fake(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise FileNotFoundError(path)
        return real(path, *args, **kwargs)
    return fake
