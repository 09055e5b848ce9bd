"""Shared tiny models for the core tests: one of every supported family, built in milliseconds."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache

import pytest
import timm
import torch
import torch.nn as nn
from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

# One thread per test process: with pytest -n 2 on a 2-core machine, two workers of two
# OpenMP threads each make tiny models' steps ~20x slower. Subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

IMG = 32  # every tiny model here takes 32x32 images

_SWIN = dict(img_size=IMG, patch_size=4, window_size=2, embed_dim=8, depths=(1, 1, 2, 1),
             num_heads=(1, 1, 2, 2))
_MIXER = dict(img_size=IMG, patch_size=8, num_blocks=3, embed_dim=16)

# family name -> builder(num_classes) of a tiny model of that family
TINY: dict[str, Callable[[int], nn.Module]] = {
    "vit": lambda nc: timm.create_model("test_vit", num_classes=nc, img_size=IMG),
    "deit_distilled": lambda nc: timm.create_model(
        "deit_tiny_distilled_patch16_224", num_classes=nc, img_size=IMG, patch_size=8, depth=2,
        embed_dim=16, num_heads=2),
    "swin": lambda nc: timm.create_model("swin_tiny_patch4_window7_224", num_classes=nc,
                                         **_SWIN),
    "swinv2": lambda nc: timm.create_model("swinv2_tiny_window8_256", num_classes=nc, **_SWIN),
    "convnext": lambda nc: timm.create_model("test_convnext", num_classes=nc),
    "convnextv2": lambda nc: timm.create_model("convnextv2_atto", num_classes=nc,
                                               depths=(1, 1, 2, 1), dims=(8, 16, 32, 64)),
    "mixer": lambda nc: MlpMixer(num_classes=nc, **_MIXER),
    "resmlp": lambda nc: MlpMixer(num_classes=nc, mlp_ratio=4, block_layer=ResBlock,
                                  norm_layer=Affine, **_MIXER),
}


def tiny(family: str, num_classes: int = 5, seed: int = 0) -> nn.Module:
    """A freshly initialised tiny model of ``family`` (a key of :data:`TINY`), on the CPU."""
    torch.manual_seed(seed)
    return TINY[family](num_classes)


@cache
def meta_model(name: str, num_classes: int | None = None) -> nn.Module:
    """A timm model built on the meta device (no memory, instant counts); cached: do not mutate."""
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


@pytest.fixture(params=sorted(TINY))
def family(request: pytest.FixtureRequest) -> str:
    """Each tiny family in turn."""
    return request.param


@pytest.fixture
def images() -> torch.Tensor:
    """A tiny batch of 32x32 RGB images."""
    return torch.randn(4, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


def tiny_run(out, **kw):
    """TrainConfig for test_vit at 32 px on 4-class synthetic data: an epoch is 4-5 steps."""
    from partialft.training.config import TrainConfig

    base = dict(model="test_vit", pretrained=False, dataset="synthetic:4", img_size=32,
                max_per_split=40, epochs=2, batch_size=8, lr=1e-3, warmup_epochs=0.5,
                hflip=0.0, amp="no", out=str(out), seed=0)
    return TrainConfig(**{**base, **kw})


# --- real run dirs, written by the real CLI (reports, soups and evaluation read these) --------

# test_vit at 32 px on 10 classes from one saved base checkpoint (so runs that differ only in
# seed share their base and can be souped), 30 images per split, two epochs of four steps: hard
# enough that seeds and recipes give different accuracies
REAL_CLASSES = 10
REAL = ["--model", "test_vit", "--no-pretrained", "--dataset", f"synthetic:{REAL_CLASSES}",
        "--img-size", "32", "--max-per-split", "30", "--batch-size", "8", "--epochs", "2",
        "--warmup-epochs", "0.5", "--hflip", "0", "--amp", "no", "--no-progress", "--lr", "3e-4"]


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    """Run ``partialft ARGV`` in-process; returns (exit code, stdout, stderr)."""
    from partialft.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2 and one stderr line without a traceback, naming each of ``needles``."""
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def _cli(*argv: str) -> None:
    from partialft.cli import main

    assert main(list(argv)) == 0, f"partialft {' '.join(argv)} failed"


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> run dir (or angles file): full fine-tuning in two recipes (lr 3e-4 and 1e-3) x
    three seeds, a duplicate of one of them, attn/ffn/first-half-attn, fapft top-k 1 and 2 with
    the largest and smallest angles, uniform and greedy soups of the three lr-3e-4 seeds, two
    angles files and three evaluations of one run (the whole test split, its first 8 images,
    and two corruptions at severities 1 and 3)."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("real_runs")
    torch.manual_seed(0)
    base = d / "base.safetensors"
    save_file(timm.create_model("test_vit", num_classes=REAL_CLASSES, img_size=IMG).state_dict(),
              str(base))
    common = [*REAL, "--checkpoint", str(base)]
    runs: dict[str, str] = {"base": str(base)}

    def train(name: str, *extra: str) -> None:
        runs[name] = str(d / name)
        _cli("train", *common, "--out", runs[name], *extra)

    for seed in (0, 1, 2):
        train(f"full-a-s{seed}", "--seed", str(seed))
        train(f"full-b-s{seed}", "--seed", str(seed), "--lr", "1e-3")
    train("full-a-s0-again", "--seed", "0")
    for method in ("attn", "ffn", "first-half-attn"):
        train(method, "--method", method)
    for seed in (0, 1):
        runs[f"angles-s{seed}"] = str(d / f"angles-s{seed}.json")
        _cli("angles", str(base), runs[f"full-a-s{seed}"], "--model", "test_vit",
             "--num-classes", str(REAL_CLASSES), "--out", runs[f"angles-s{seed}"])
    for k in (1, 2):
        for mode in ("large", "small"):
            train(f"fapft-{mode}-k{k}", "--method", "fapft", "--angles", runs["angles-s0"],
                  "--topk", str(k), "--mode", mode)
    seeds = [runs[f"full-a-s{s}"] for s in (0, 1, 2)]
    for kind, extra in (("uniform", []), ("greedy", ["--greedy"])):
        runs[f"soup-{kind}"] = str(d / f"soup-{kind}")
        _cli("soup", *seeds, "--out", runs[f"soup-{kind}"], *extra)
    dataset = f"synthetic:{REAL_CLASSES}"
    _cli("eval", runs["full-a-s0"], "--dataset", dataset, "--no-progress")
    _cli("eval", runs["full-a-s0"], "--dataset", dataset, "--max-images", "8", "--no-progress")
    _cli("eval", runs["full-a-s0"], "--dataset", dataset, "--corruptions", "brightness,contrast",
         "--severities", "1,3", "--no-progress")
    return runs
