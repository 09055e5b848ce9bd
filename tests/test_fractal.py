"""The FractalDB-style generator: acceptance rule, determinism, distinct categories, rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partialft.data.fractal import (
    FractalConfig,
    FractalCorpus,
    _contract,
    _fit,
    chaos_game,
    filling_rate,
    fixed_points,
    jitter_systems,
    make_categories,
    rasterize,
    render,
    sample_maps,
    sigma_band,
    sigma_factor,
)
from partialft.errors import PartialFTError

FAST = FractalConfig(chains=64, iters=12)


@pytest.fixture(scope="module")
def corpus() -> FractalCorpus:
    return FractalCorpus(8, seed=11, cfg=FAST)


def _singular_values(systems: torch.Tensor) -> np.ndarray:
    return np.linalg.svd(systems[..., :4].reshape(-1, 2, 2).numpy(), compute_uv=False)


@pytest.mark.parametrize("num_maps", [2, 3, 4])
def test_sampled_maps_obey_the_sigma_factor_band(num_maps: int) -> None:
    rng = np.random.default_rng(num_maps)
    lo, hi = sigma_band(num_maps)
    for _ in range(20):
        maps = sample_maps(rng, num_maps)
        assert maps.shape == (num_maps, 7)
        assert lo <= sigma_factor(maps) <= hi
        s = np.linalg.svd(maps[:, :4].reshape(-1, 2, 2), compute_uv=False)
        assert (s[:, 0] < 1).all()  # every map contracts
        dets = np.abs(np.linalg.det(maps[:, :4].reshape(-1, 2, 2)))
        np.testing.assert_allclose(maps[:, 6], dets / dets.sum(), rtol=1e-9)  # p ~ |det|


def test_accepted_categories_satisfy_the_acceptance_rule(corpus: FractalCorpus) -> None:
    cats = corpus.categories
    assert cats.shape == (8, FAST.max_maps, 7)
    for system in cats:
        real = system[system[:, 6] > 0]
        assert FAST.min_maps <= len(real) <= FAST.max_maps
        lo, hi = sigma_band(len(real))
        assert lo - 1e-4 <= sigma_factor(real.double().numpy()) <= hi + 1e-4
        assert torch.allclose(real[:, 6].sum(), torch.tensor(1.0))
    # FractalDB filling rate, re-measured with other random points: a small tolerance
    fill = filling_rate(cats, torch.Generator().manual_seed(99))
    assert (fill >= FAST.fill_threshold - 0.02).all(), fill


def test_filling_rate_rejects_a_degenerate_line() -> None:
    line = torch.zeros(1, 2, 7)
    line[0, :, 0] = 0.5  # x -> x/2 and x/2 + 1/2 on the x axis: the attractor is a segment
    line[0, 1, 4] = 0.5
    line[0, :, 6] = 0.5
    good = make_categories(1, seed=0, cfg=FAST)
    assert filling_rate(line)[0] < 0.05 < FAST.fill_threshold <= filling_rate(good)[0]


def test_categories_are_deterministic_for_a_seed() -> None:
    a = make_categories(5, seed=3, cfg=FAST)
    assert torch.equal(a, make_categories(5, seed=3, cfg=FAST))
    assert not torch.allclose(a, make_categories(5, seed=4, cfg=FAST))


def test_same_category_and_seed_give_identical_images(corpus: FractalCorpus) -> None:
    labels = torch.tensor([0, 3, 3, 5])
    x1 = corpus.render(labels, corpus.generator(5))
    x2 = corpus.render(labels, corpus.generator(5))
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, corpus.render(labels, corpus.generator(6)))
    imgs, lab = corpus.fixed_set(2, seed=1)
    again, lab2 = corpus.fixed_set(2, seed=1)
    assert torch.equal(imgs, again) and torch.equal(lab, lab2)
    assert lab.bincount().tolist() == [2] * 8


def test_different_categories_differ_clearly(corpus: FractalCorpus) -> None:
    # the plain attractors (no instance variation) of different categories barely overlap
    pts = chaos_game(corpus.categories, 256, 24, 4, torch.Generator().manual_seed(0))
    masks = rasterize(_fit(pts, torch.ones(8)), 32) > 0
    for i in range(8):
        for j in range(i + 1, 8):
            iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
            assert iou < 0.6, (i, j, float(iou))
    # rendered with the same instance randomness, different categories still differ
    x = corpus.render(torch.arange(8), corpus.generator(2))
    diff = (x[:, None] - x[None]).abs().mean((2, 3, 4))
    assert diff[~torch.eye(8, dtype=torch.bool)].min() > 0.02


def test_render_shape_range_and_grayscale() -> None:
    cfg = FractalConfig(chains=32, iters=8, gray_prob=1.0, img_size=16, render_size=48)
    systems = make_categories(3, seed=1, cfg=cfg)
    x = render(systems[[0, 1, 2, 2]], cfg, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # white on black


def test_instance_jitter_changes_one_parameter_and_stays_contractive() -> None:
    systems = make_categories(6, seed=2, cfg=FAST)
    out = jitter_systems(systems, 0.2, torch.Generator().manual_seed(0))
    changed = (out[..., :6] != systems[..., :6]).sum((1, 2))
    assert (changed <= 4).all()  # one parameter, or one map's matrix rescaled to contract
    assert torch.equal(out[..., 6], systems[..., 6])
    big = _contract(systems * torch.tensor([3.0] * 4 + [1.0] * 3))
    assert _singular_values(big).max() <= 0.99 + 1e-5


def test_chains_start_on_the_attractor() -> None:
    systems = make_categories(4, seed=5, cfg=FAST)
    fp = fixed_points(systems)
    a, b, c, d, e, f = systems[:, 0, :6].unbind(-1)
    mapped = torch.stack([a * fp[:, 0] + b * fp[:, 1] + e, c * fp[:, 0] + d * fp[:, 1] + f], -1)
    assert torch.allclose(mapped, fp, atol=1e-5)
    pts = chaos_game(systems, 16, 6, 0, torch.Generator().manual_seed(0))
    assert pts.shape == (4, 16 * 6, 2) and torch.isfinite(pts).all()


@pytest.mark.parametrize("kwargs", [dict(min_maps=3, max_maps=2), dict(render_size=50),
                                    dict(burn_in=20, iters=20)])
def test_bad_fractal_config_is_a_clear_error(kwargs: dict) -> None:
    with pytest.raises(PartialFTError):
        FractalConfig(**kwargs)


def test_impossible_fill_threshold_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("partialft.data.fractal.MAX_TRIES", 2)
    with pytest.raises(PartialFTError, match="fill_threshold"):
        make_categories(3, cfg=FractalConfig(fill_threshold=0.99))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_renders_on_the_gpu() -> None:
    corpus = FractalCorpus(4, seed=0, cfg=FAST, device="cuda")
    x, y = corpus.sample(16, corpus.generator(0))
    assert x.is_cuda and x.shape == (16, 3, 32, 32) and y.max() < 4
    cpu = FractalCorpus(4, seed=0, cfg=FAST)
    assert torch.equal(corpus.categories.cpu(), cpu.categories)  # categories do not depend on it
