"""Real run dirs for tests/test_damaged_inputs.py and tests/test_run_identity.py: tiny runs
written by the real ``partialft train`` command, which the tests copy and then damage."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

# test_vit at 32 px on 4 classes, one epoch of 3 steps, from one saved base checkpoint
TINY = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "24", "--batch-size", "8", "--epochs", "1", "--amp", "no",
        "--no-progress", "--hflip", "0"]

# name -> extra flags of `partialft train` ({d} = the runs' folder)
RUNS = {
    "full": ["--method", "full"],
    "full_s1_threads": ["--method", "full", "--seed", "1", "--threads", "1", "--workers", "1"],
    "linear": ["--method", "linear"],
    "attn": ["--method", "attn", "--save-full"],
    "bilinear": ["--method", "full", "--interpolation", "bilinear"],
    "lora": ["--method", "lora"],
    "adapter": ["--method", "adapter"],
    "folder4": ["--method", "full", "--dataset", "folder:{d}/images"],
    "convnext": ["--method", "full", "--model", "test_convnext"],
}


def make_runs(d: Path) -> dict[str, Path]:
    """Train every run of :data:`RUNS` under ``d``; returns name -> run dir (and 'base')."""
    import timm
    from PIL import Image
    from safetensors.torch import save_file

    from partialft.cli import main

    torch.manual_seed(0)
    base = d / "base.safetensors"
    save_file(timm.create_model("test_vit", num_classes=4, img_size=32).state_dict(), str(base))
    for split in ("train", "val", "test"):
        for c in range(4):
            (d / "images" / split / f"c{c}").mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), (60 * c, 40 * i, 90)).save(
                    d / "images" / split / f"c{c}" / f"{i}.png")
    runs = {"base": base}
    for name, extra in RUNS.items():
        extra = [e.replace("{d}", str(d)) for e in extra]
        ckpt = [] if "test_convnext" in extra else ["--checkpoint", str(base)]
        runs[name] = d / name
        assert main(["train", *TINY, *ckpt, "--out", str(runs[name]), *extra]) == 0, name
    return runs


def copy_run(runs: dict[str, Path], name: str, dest: Path) -> Path:
    """A copy of run ``name`` to damage (the originals stay intact for other tests)."""
    out = dest / f"{name}-copy"
    shutil.copytree(runs[name], out)
    return out


@functools.cache
def shared_runs() -> dict[str, Path]:
    """The runs of :data:`RUNS`, trained once per test process (both test files use them)."""
    d = Path(tempfile.mkdtemp(prefix="partialft-read-runs-"))
    atexit.register(shutil.rmtree, d, True)
    return make_runs(d)
