"""Crash safety: `kill -9` at several points of train, fapft and soup, then resume or rerun.

The killed process is the real CLI in a subprocess. Two ways to pick the kill point:
- from outside: poll the run dir (``state/state.json`` step counts) and send SIGKILL;
- from inside, exactly: a wrapper kills its own process with SIGKILL just before (temporary
  file written, not yet renamed) or just after the n-th atomic write of a given file name.
The resumed (or rerun) result must equal an uninterrupted run's: metrics.jsonl without timing
fields, summary accuracies and the delta tensors (CPU, fixed seed, one thread everywhere).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from partialft.cli import main
from partialft.models import load_state_dict_file
from partialft.training.config import TrainConfig
from partialft.training.runs import is_run_dir
from partialft.training.train import train

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"images_per_s", "elapsed_s", "wall_s"}
TINY = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "40", "--batch-size", "8", "--amp", "no", "--seed", "0",
        "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Runs `partialft.cli.main(argv)` and SIGKILLs itself around the n-th os.replace onto a file
# called NAME (KILL_AT="NAME:n:before|after"); atomic writes all end in that os.replace.
KILLER = r"""
import os, signal, sys
name, nth, when = os.environ["KILL_AT"].split(":")
seen, real = [0], os.replace
def replace(src, dst, *a, **kw):
    if os.path.basename(str(dst)) == name:
        seen[0] += 1
        if seen[0] == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, *a, **kw)
    if os.path.basename(str(dst)) == name and seen[0] == int(nth) and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from partialft.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The subprocesses use one thread; so does the reference run here (identical floats)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def same_run(a: Path, b: Path) -> None:
    """Equal metrics, accuracies and delta tensors (timings aside)."""
    assert metrics(a) == metrics(b)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    for key in ("best_acc", "final_acc", "test_acc", "layers", "trainable_params"):
        assert sa[key] == sb[key], key
    da, db = (load_state_dict_file(r / "delta.safetensors") for r in (a, b))
    assert da.keys() == db.keys()
    assert all(torch.equal(da[k], db[k]) for k in da)


def step_of(run: Path) -> int:
    """The step of the run's last complete resume point (0 when it has none)."""
    try:
        return int(json.loads((run / "state" / "state.json").read_text())["global_step"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def kill_when(argv: list[str], ready: Callable[[], bool], timeout: float = 180) -> None:
    """Start `python -m partialft ARGV` and SIGKILL it once ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-m", "partialft", *argv], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"ended before the kill point (rc {proc.returncode}): "
                        f"{proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def kill_at(argv: list[str], name: str, nth: int, when: str) -> None:
    """Run the CLI in a subprocess that SIGKILLs itself at an exact write (see KILLER)."""
    done = subprocess.run([sys.executable, "-c", KILLER, *argv], env={**ENV, "KILL_AT":
                          f"{name}:{nth}:{when}"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def train_argv(out: Path, *extra: str) -> list[str]:
    return ["train", *TINY, "--epochs", "3", "--checkpoint-every", "1", "--out", str(out), *extra]


def tiny_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(model="test_vit", pretrained=False, dataset="synthetic:4", img_size=32,
                max_per_split=40, batch_size=8, amp="no", seed=0, epochs=3, checkpoint_every=1,
                out=str(out))
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_train_killed_twice_resumes_to_the_uninterrupted_result(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(tiny_cfg(ref), progress=False)
    # 1. inside the 4th resume point: its tensors are written, state.json not yet renamed
    kill_at(train_argv(run), "state.json", 4, "before")
    assert step_of(run) == 3 and not is_run_dir(run)
    assert list((run / "state").glob(".state.json.*.tmp"))  # the write that was cut short
    # 2. from outside, in epoch 2 or 3, wherever the process happens to be
    kill_when(train_argv(run, "--resume"), lambda: step_of(run) >= 8)
    assert 8 <= step_of(run) and not is_run_dir(run)
    assert main(train_argv(run, "--resume")) == 0
    same_run(ref, run)
    assert (run / "README.md").is_file()


@pytest.mark.slow
def test_fapft_killed_in_each_stage_reruns_to_the_uninterrupted_result(tmp_path):
    argv = ["fapft", *TINY, "--epochs", "2", "--topk", "2", "--mode", "large",
            "--checkpoint-every", "1"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main([*argv, "--out", str(ref)]) == 0
    # 1. full stage: its delta written, killed before summary.json marks it finished
    kill_at([*argv, "--out", str(run)], "delta.safetensors", 1, "after")
    assert (run / "full" / "delta.safetensors").is_file() and not is_run_dir(run / "full")
    # 2. partial stage killed from outside after a few steps
    kill_when([*argv, "--out", str(run)], lambda: step_of(run / "fapft") >= 3)
    assert is_run_dir(run / "full") and not is_run_dir(run / "fapft")
    assert main([*argv, "--out", str(run)]) == 0  # a plain rerun finishes the pipeline
    same_run(ref / "full", run / "full")
    same_run(ref / "fapft", run / "fapft")
    angles = [json.loads((r / "angles.json").read_text())["angles"] for r in (ref, run)]
    assert angles[0] == angles[1]
    summaries = [json.loads((r / "summary.json").read_text()) for r in (ref, run)]
    assert summaries[0]["fapft_layers"] == summaries[1]["fapft_layers"]


@pytest.mark.slow
def test_soup_killed_mid_write_leaves_no_out_and_a_rerun_completes_it(tmp_path):
    runs = []
    for lr in (1e-3, 3e-3):  # same seed: the same base (soups need one)
        out = tmp_path / f"r{lr}"
        train(tiny_cfg(out, method="linear", epochs=1, checkpoint_every=0, lr=lr,
                       max_per_split=24), progress=False)
        runs.append(str(out))
    ref, soup = tmp_path / "ref", tmp_path / "soup"
    assert main(["soup", *runs, "--out", str(ref)]) == 0
    kill_at(["soup", *runs, "--out", str(soup)], "summary.json", 1, "before")
    assert not soup.exists()  # the half-written soup sits in a hidden sibling
    assert main(["soup", *runs, "--out", str(soup)]) == 0  # no --overwrite needed
    assert not list(tmp_path.glob(".soup.*"))
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, soup))
    assert (sa["best_acc"], sa["test_acc"], sa["used"]) == (sb["best_acc"], sb["test_acc"],
                                                           sb["used"])
    da, db = (load_state_dict_file(r / "delta.safetensors") for r in (ref, soup))
    assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)


def _folder(root: Path) -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(2):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(12):
                pixels = torch.randint(0, 256, (12, 12, 3), generator=gen, dtype=torch.uint8)
                pixels[:, :6, c] = 255
                Image.fromarray(pixels.numpy()).save(root / split / f"c{c}" / f"{i}.png")


def test_folder_dataset_resumed_mid_epoch_matches_with_random_augmentation(tmp_path):
    """DataLoader-backed data with random flips: a resume must not shift the RNG stream."""
    _folder(tmp_path / "data")
    kw = dict(dataset=f"folder:{tmp_path / 'data'}", max_per_split=None, epochs=2, hflip=0.5,
              checkpoint_every=0)
    train(tiny_cfg(tmp_path / "ref", **kw), progress=False)
    assert train(tiny_cfg(tmp_path / "run", max_steps=2, **kw), progress=False) is None
    train(tiny_cfg(tmp_path / "run", **kw), resume=True, progress=False)
    same_run(tmp_path / "ref", tmp_path / "run")


def test_a_resume_point_is_never_half_written(tmp_path):
    """The last state.json always names a tensors file that exists and loads."""
    from partialft.training.rundir import RunDir

    run = tmp_path / "run"
    train(tiny_cfg(run, epochs=1, max_steps=3), progress=False)
    state = json.loads((run / "state" / "state.json").read_text())
    assert state["global_step"] == 3
    assert [p.name for p in (run / "state").glob("tensors-*")] == [state["tensors"]]
    (run / "state" / ".state.json.junk.tmp").write_text("{")  # a write cut short by a crash
    rd = RunDir(run, resume=True)
    try:
        tensors, info = rd.load_state()
    finally:
        rd.close()
    assert info["global_step"] == 3 and any(k.startswith("model.") for k in tensors)


@pytest.mark.slow
def test_many_short_epochs_with_resume_points_keep_memory_flat():
    """Quick soak (benchmarks/soak.py): RSS after warm-up must not climb epoch after epoch.

    A leaked resume point of this model (weights + AdamW moments) is ~3.6 MB, so a leak of
    training state shows as several MiB per epoch; the bound leaves room for allocator noise.
    """
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    result = soak.soak(epochs=15, checkpoint_every=2, warmup=3)
    assert len(result["rss_mib"]) == 15
    assert result["slope_mib_per_epoch"] < 0.25, result
    assert result["growth_after_warmup_mib"] < 3.0, result
