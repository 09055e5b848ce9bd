"""BatchAugment's RandAugment is timm's: the same ops, choices, probabilities and magnitudes.

The statistical checks draw thousands of ops with fixed seeds and allow Z = 5 standard errors
(two-sided p < 6e-7 per check for a correct implementation); a wrong op list, probability,
number of ops, magnitude noise or increasing variant moves a statistic by far more.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from timm.data import create_transform
from timm.data.auto_augment import (
    _RAND_INCREASING_TRANSFORMS,
    _RAND_TRANSFORMS,
    RandAugment,
)

from partialft.data import AugmentConfig, BatchAugment, parse_randaugment

SIZE = 8  # images are SIZE x SIZE: the statistics do not depend on the pixels
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
N = 6000  # images per sample
Z = 5.0
KS_ALPHA = 1e-6


@dataclass
class Record:
    """What a spied RandAugment did: ops chosen, ops applied, magnitudes used (per op name)."""

    chosen: Counter = field(default_factory=Counter)
    applied: Counter = field(default_factory=Counter)
    magnitudes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def all_magnitudes(self) -> np.ndarray:
        return np.concatenate([np.asarray(v) for v in self.magnitudes.values()])


class Chosen:
    """Stands in for one op in RandAugment.ops: counts the draw, then runs the op."""

    def __init__(self, op: Any, record: Record) -> None:
        self.op, self.record = op, record

    def __call__(self, img: Image.Image) -> Image.Image:
        self.record.chosen[self.op.name] += 1
        return self.op(img)


def spy(ra: RandAugment) -> Record:
    """Record ``ra``'s draws; its ops no longer change the image (the draws stay timm's)."""
    record = Record()
    for op in ra.ops:
        op.aug_fn = lambda img, *args, _name=op.name, **kw: (record.applied.update([_name]), img)[1]
        if op.level_fn is not None:
            level = op.level_fn
            op.level_fn = lambda m, hp, _name=op.name, _level=level: (
                record.magnitudes[_name].append(m), _level(m, hp))[1]
    ra.ops = [Chosen(op, record) for op in ra.ops]
    return record


def timm_reference(spec: str) -> RandAugment:
    """timm's own RandAugment, as its create_transform builds it for a train transform."""
    tf = create_transform(SIZE, is_training=True, auto_augment=spec, mean=MEAN,
                          interpolation="random")
    return next(t for t in tf.transforms if isinstance(t, RandAugment))


def augmenter(spec: str) -> BatchAugment:
    cfg = AugmentConfig(randaugment=spec, hflip=0.0, crop_scale=1.0)
    return BatchAugment(SIZE, 3, MEAN, STD, train=True, cfg=cfg)


def images(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen)


def draw_ours(spec: str) -> tuple[Record, BatchAugment]:
    aug = augmenter(spec)
    record = spy(aug.randaugment)
    torch.manual_seed(1)
    aug(images(N))
    return record, aug


def draw_timm(spec: str) -> tuple[Record, RandAugment]:
    ra = timm_reference(spec)
    record = spy(ra)
    random.seed(2)
    np.random.seed(2)
    pil = Image.fromarray(images(1)[0].permute(1, 2, 0).numpy())
    for _ in range(N):
        ra(pil)
    return record, ra


def binomial_close(count: int, trials: int, p: float) -> bool:
    return abs(count - trials * p) <= Z * math.sqrt(trials * p * (1 - p))


def proportions_close(a: int, n_a: int, b: int, n_b: int) -> bool:
    pooled = (a + b) / (n_a + n_b)
    return abs(a / n_a - b / n_b) <= Z * math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))


def ks_limit(n: int, m: int) -> float:
    """Two-sample Kolmogorov-Smirnov critical distance at KS_ALPHA (asymptotic)."""
    return math.sqrt(-math.log(KS_ALPHA / 2) / 2) * math.sqrt((n + m) / (n * m))


SPECS = ["rand-m9-mstd0.5-inc1",  # the paper's (configs/)
         "rand-m9-mstd0.5",  # the non-increasing ops
         "rand-m7-n3-p0.2",  # no magnitude noise, 3 ops, p 0.2
         "rand-m8-mstd101-inc1",  # mstd > 100: uniform magnitudes in [0, m]
         "rand-m15-mmax20-mstd2"]  # magnitudes above 10 with mmax


@pytest.mark.parametrize("spec", SPECS)
def test_op_statistics_match_timms_own_randaugment(spec: str) -> None:
    opts = parse_randaugment(spec)
    ours, aug = draw_ours(spec)
    theirs, ref = draw_timm(spec)
    names = list(_RAND_INCREASING_TRANSFORMS if opts["inc"] else _RAND_TRANSFORMS)
    assert [c.op.name for c in aug.randaugment.ops] == [c.op.name for c in ref.ops] == names
    for mine, timms in zip(aug.randaugment.ops, ref.ops):  # same parameters, fill, resampling
        assert (mine.op.prob, mine.op.magnitude) == (timms.op.prob, timms.op.magnitude)
        assert mine.op.hparams == timms.op.hparams and mine.op.kwargs == timms.op.kwargs
    draws = opts["n"] * N
    for record in (ours, theirs):
        assert sum(record.chosen.values()) == draws  # n ops for every image
        for name in names:  # each op is drawn uniformly, with replacement
            assert binomial_close(record.chosen[name], draws, 1 / len(names)), name
        applied = sum(record.applied.values())
        assert binomial_close(applied, draws, opts["p"])  # each drawn op runs with prob p
    for name in names:
        assert proportions_close(ours.chosen[name], draws, theirs.chosen[name], draws), name
    assert proportions_close(sum(ours.applied.values()), draws,
                             sum(theirs.applied.values()), draws)
    mine, timms = ours.all_magnitudes(), theirs.all_magnitudes()
    assert stats.ks_2samp(mine, timms).statistic <= ks_limit(len(mine), len(timms))
    check_magnitudes_against_theory(mine, opts)


def check_magnitudes_against_theory(mags: np.ndarray, opts: dict[str, Any]) -> None:
    """timm's AugmentOp: m, plus N(0, mstd) noise (uniform in [0, m] above 100), in [0, top]."""
    m, mstd, top = opts["m"], opts["mstd"], opts["mmax"] or 10
    if mstd == 0:
        assert np.all(mags == m)
    elif mstd > 100:
        assert stats.kstest(mags, stats.uniform(0, m).cdf).pvalue > KS_ALPHA
    else:
        above = stats.norm.sf((top - m) / mstd)  # the share clamped to the top
        assert binomial_close(int(np.sum(mags == top)), len(mags), above)
        inner = mags[(mags > 0) & (mags < top)]  # the normal's body, truncated at 0 and top
        body = stats.truncnorm((0 - m) / mstd, (top - m) / mstd, loc=m, scale=mstd)
        assert stats.kstest(inner, body.cdf).pvalue > KS_ALPHA
        assert mags.min() >= 0 and mags.max() <= top


def test_inc1_draws_the_increasing_variants_only() -> None:
    inc, plain = draw_ours("rand-m9-mstd0.5-inc1")[0], draw_ours("rand-m9-mstd0.5")[0]
    increasing = {n for n in _RAND_INCREASING_TRANSFORMS if n.endswith("Increasing")}
    assert len(increasing) == 6 and increasing <= set(inc.chosen)
    assert not increasing & set(plain.chosen)
    assert {n.removesuffix("Increasing") for n in increasing} <= set(plain.chosen)


def test_a_batch_is_timms_transform_image_by_image_under_the_same_rng() -> None:
    spec = "rand-m5-n3-mstd0.5-inc1"  # real ops (no spy): geometric, colour and histogram ones
    aug, ref = augmenter(spec), timm_reference(spec)
    x = images(64, seed=5)
    torch.manual_seed(3)
    out = aug(x)
    torch.manual_seed(3)  # BatchAugment seeds Python's and NumPy's RNGs from torch's, per batch
    seed = int(torch.randint(2**31 - 1, (1,)))
    random.seed(seed)
    np.random.seed(seed)
    expected = torch.stack([torch.from_numpy(np.array(ref(Image.fromarray(
        img.permute(1, 2, 0).numpy())))).permute(2, 0, 1) for img in x])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(out, (expected.float() / 255 - mean) / std, atol=1e-6)
    assert not torch.equal(expected, x)


def test_randaugment_is_reproducible_and_leaves_global_rngs_alone() -> None:
    aug, x = augmenter("rand-m9-mstd0.5-inc1"), images(32)
    random.seed(11)
    np.random.seed(11)
    py_state, np_state = random.getstate(), np.random.get_state()
    torch.manual_seed(0)
    a, b = aug(x), aug(x)
    torch.manual_seed(0)
    assert torch.equal(aug(x), a) and not torch.equal(a, b)
    assert random.getstate() == py_state
    assert all(np.array_equal(u, v) for u, v in zip(np.random.get_state(), np_state))


@pytest.mark.parametrize(("spec", "name"), [("rand-m10-inc1", "PosterizeIncreasing"),
                                            ("rand-m0", "Posterize")])
def test_posterize_to_zero_bits_gives_a_black_image(spec: str, name: str) -> None:
    """timm asks Pillow for 0 bits at these magnitudes; Pillow 13 refuses, older Pillow (and
    partialft) give the black image timm's level mapping means."""
    op = next(o for o in augmenter(spec).randaugment.ops if o.name == name)
    op.prob = 1.0
    img = Image.fromarray(images(1)[0].permute(1, 2, 0).numpy())
    assert np.asarray(op(img)).max() == 0


def test_randaugment_on_one_channel_images_uses_the_mean_as_fill() -> None:
    aug = BatchAugment(SIZE, 1, (0.5,), (0.5,), train=True,
                       cfg=AugmentConfig(randaugment="rand-m9-n4-mstd0.5", crop_scale=1.0))
    assert all(op.kwargs["fillcolor"] == (128,) for op in aug.randaugment.ops)
    assert all(op.hparams["translate_const"] == int(SIZE * 0.45) for op in aug.randaugment.ops)
    out = aug(images(16)[:, :1])
    assert out.shape == (16, 1, SIZE, SIZE) and torch.isfinite(out).all()


def test_runs_with_randaugment_are_reproducible_and_resume_exactly(tmp_path) -> None:
    """timm draws from Python's and NumPy's RNGs; BatchAugment seeds them from torch's, so the
    run's seed fixes the augmentation and a resumed run continues the same stream."""
    import json

    from conftest import tiny_run

    from partialft.training.train import train

    def metrics(run) -> list[dict]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")}
                for r in rows]

    recipe = dict(randaugment="rand-m9-mstd0.5-inc1", crop_scale=0.5, hflip=0.5)
    random.seed(1)  # the global Python/NumPy states must not matter
    train(tiny_run(tmp_path / "a", **recipe), progress=False)
    random.seed(2)
    np.random.seed(2)
    train(tiny_run(tmp_path / "b", **recipe), progress=False)
    assert train(tiny_run(tmp_path / "c", max_steps=3, **recipe), progress=False) is None
    train(tiny_run(tmp_path / "c", **recipe), resume=True, progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b") == metrics(tmp_path / "c")
