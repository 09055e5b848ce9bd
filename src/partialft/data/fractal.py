"""FractalDB-style formula-driven images: random IFS categories drawn by a vectorised chaos game.

A *category* is one iterated function system (IFS) of 2-4 contractive affine maps
``(x, y) -> (a x + b y + e, c x + d y + f)`` chosen with probabilities proportional to
``|det|`` (FractalDB, Kataoka et al., ACCV 2020). Each map's 2x2 matrix is built from its
singular values, ``A = R(theta) diag(s1, s2) R(phi) diag(d1, d2)``, and a category is accepted
when its sigma-factor ``sum(s1 + 2 s2)`` lies within 0.5 of ``(5 + N) / 2`` (Anderson & Farrell,
WACV 2022) and its rendered filling rate reaches ``fill_threshold`` (FractalDB's rule), so no
category is dust or a line. An *instance* (FractalDB's intra-category variation) scales one
parameter of one map by ``U(1 - jitter, 1 + jitter)``, is flipped/rotated by one of the 8
symmetries of the square, rendered with a random point density, as points or random 3x3
patches, in grayscale or colour. ``docs/backbone.md`` describes the recipe.

Everything after category sampling is batched torch (chains x images in parallel), so the same
code renders on a CPU or a GPU; the only Python loop runs over chaos-game iterations.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from partialft.data.fractal_config import FractalConfig
from partialft.errors import PartialFTError

PARAMS = 7  # per map: a, b, c, d, e, f, probability
FILL_SIZE = 64  # resolution of the filling-rate check
MAX_TRIES = 1000  # candidate batches before giving up on a too strict fill_threshold


def sigma_band(num_maps: int) -> tuple[float, float]:
    """The accepted sigma-factor interval for an IFS of ``num_maps`` maps."""
    centre = (5 + num_maps) / 2
    return centre - 0.5, centre + 0.5


def sigma_factor(maps: np.ndarray) -> float:
    """``sum_i (s1_i + 2 s2_i)`` over the singular values of each map's 2x2 matrix."""
    s = np.linalg.svd(maps[:, :4].reshape(-1, 2, 2), compute_uv=False)
    return float((s[:, 0] + 2 * s[:, 1]).sum())


def _rotation(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n, 2, 2)


def sample_maps(rng: np.random.Generator, num_maps: int) -> np.ndarray:
    """One IFS, (num_maps, 7) rows a b c d e f p, with its sigma-factor in the band."""
    lo, hi = sigma_band(num_maps)
    while True:  # rejection on singular values: cheap, and exact for the band
        s = np.sort(rng.uniform(0.0, 1.0, (num_maps, 2)), axis=1)[:, ::-1]  # s1 >= s2
        if lo <= (s[:, 0] + 2 * s[:, 1]).sum() <= hi:
            break
    theta, phi = rng.uniform(0.0, 2 * math.pi, (2, num_maps))
    signs = rng.choice([-1.0, 1.0], (num_maps, 2))
    mats = _rotation(theta) @ (s[:, :, None] * _rotation(phi)) * signs[:, None, :]
    shift = rng.uniform(-1.0, 1.0, (num_maps, 2))
    prob = s[:, 0] * s[:, 1]  # |det A|
    return np.concatenate([mats.reshape(num_maps, 4), shift, (prob / prob.sum())[:, None]], 1)


def _pad(systems: list[np.ndarray], width: int) -> torch.Tensor:
    """Stack IFSs of different sizes into (n, width, 7); padded maps have probability 0."""
    out = np.zeros((len(systems), width, PARAMS), dtype=np.float32)
    for i, maps in enumerate(systems):
        out[i, : len(maps)] = maps
    return torch.from_numpy(out)


def make_categories(num_categories: int, seed: int = 0,
                    cfg: FractalConfig | None = None) -> torch.Tensor:
    """``num_categories`` accepted IFSs as (C, max_maps, 7); deterministic for a seed (CPU)."""
    cfg = cfg or FractalConfig()
    if num_categories < 1:
        raise PartialFTError(f"num_categories {num_categories} is not valid; use >= 1.")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    accepted: list[np.ndarray] = []
    for _ in range(MAX_TRIES):
        cands = [sample_maps(rng, int(rng.integers(cfg.min_maps, cfg.max_maps + 1)))
                 for _ in range(64)]
        fill = filling_rate(_pad(cands, cfg.max_maps), gen)
        accepted += [c for c, f in zip(cands, fill.tolist()) if f >= cfg.fill_threshold]
        if len(accepted) >= num_categories:
            break
    else:
        raise PartialFTError(f"fill_threshold {cfg.fill_threshold} accepts too few IFSs; use a "
                             "lower value such as 0.15.")
    return _pad(accepted[:num_categories], cfg.max_maps)


def filling_rate(systems: torch.Tensor, generator: torch.Generator | None = None,
                 size: int = FILL_SIZE) -> torch.Tensor:
    """Share of pixels of a plain size x size render that the attractor covers (FractalDB).

    A fixed budget of points (~2.5 per pixel) so the rule does not depend on instance settings.
    """
    pts = chaos_game(systems, 256, 44, 4, generator)  # 10,240 points per system
    hits = rasterize(_fit(pts, torch.ones(len(systems))), size)
    return (hits > 0).float().mean((1, 2))


def fixed_points(systems: torch.Tensor) -> torch.Tensor:
    """Fixed point of each IFS's first map, (n, 2): it lies on the attractor (no burn-in drift)."""
    a, b, c, d, e, f = systems[:, 0, :6].unbind(-1)
    det = (1 - a) * (1 - d) - b * c  # (I - A) is invertible for a contraction
    return torch.stack([((1 - d) * e + b * f) / det, (c * e + (1 - a) * f) / det], -1)


def chaos_game(systems: torch.Tensor, chains: int, iters: int, burn_in: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Points on each attractor, (n, chains * (iters - burn_in), 2); all images in parallel."""
    n, width, _ = systems.shape
    cum = systems[..., 6].cumsum(-1)
    cum = (cum / cum[:, -1:]).contiguous()  # (n, width); padded maps add nothing
    coef = systems[..., :6]
    pts = fixed_points(systems)[:, None, :].expand(n, chains, 2)
    out = []
    for step in range(iters):
        u = torch.rand(n, chains, generator=generator, device=systems.device)
        pick = torch.searchsorted(cum, u).clamp_(max=width - 1)  # (n, chains) map index
        k = coef.gather(1, pick[..., None].expand(n, chains, 6))  # (n, chains, 6)
        x, y = pts[..., 0], pts[..., 1]
        pts = torch.stack([k[..., 0] * x + k[..., 1] * y + k[..., 4],
                           k[..., 2] * x + k[..., 3] * y + k[..., 5]], -1)
        if step >= burn_in:
            out.append(pts)
    return torch.cat(out, 1)


def _fit(pts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Centre each point cloud and scale its longer side to ``scale`` of the unit frame."""
    lo, hi = pts.amin(1, keepdim=True), pts.amax(1, keepdim=True)
    extent = (hi - lo).amax(-1, keepdim=True).clamp_min(1e-6)  # keep the aspect ratio
    return (pts - (lo + hi) / 2) / extent * scale.view(-1, 1, 1) + 0.5


def rasterize(unit_pts: torch.Tensor, size: int, weights: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Count points per pixel: (n, N, 2) in [0, 1) -> (n, size, size)."""
    n, count, _ = unit_pts.shape
    ij = (unit_pts * size).long().clamp_(0, size - 1)
    base = torch.arange(n, device=unit_pts.device)[:, None] * (size * size)
    flat = (base + ij[..., 1] * size + ij[..., 0]).reshape(-1)
    w = None if weights is None else weights.reshape(-1)
    hist = torch.bincount(flat, weights=w, minlength=n * size * size)
    return hist.view(n, size, size)


def _contract(systems: torch.Tensor, limit: float = 0.99) -> torch.Tensor:
    """Scale any map whose largest singular value exceeds ``limit`` back to ``limit``."""
    a, b, c, d = systems[..., :4].unbind(-1)
    fro2, det = a * a + b * b + c * c + d * d, a * d - b * c
    s1 = ((fro2 + (fro2 * fro2 - 4 * det * det).clamp_min(0).sqrt()) / 2).sqrt()  # 2x2 closed form
    factor = (limit / s1.clamp_min(1e-12)).clamp(max=1.0)
    out = systems.clone()
    out[..., :4] *= factor[..., None]
    return out


def jitter_systems(systems: torch.Tensor, jitter: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """FractalDB instance variation: one parameter (a-f) of one real map times U(1-j, 1+j)."""
    n, _, _ = systems.shape
    dev = systems.device
    maps = (systems[..., 6] > 0).sum(1)  # real (unpadded) maps per system
    which = (torch.rand(n, generator=generator, device=dev) * maps).long()
    param = torch.randint(6, (n,), generator=generator, device=dev)
    weight = 1 + (2 * torch.rand(n, generator=generator, device=dev) - 1) * jitter
    out = systems.clone()
    rows = torch.arange(n, device=dev)
    out[rows, which, param] *= weight
    return _contract(out)


# The 8 symmetries of the square (rotations by 90 degrees, with and without a flip), (8, 2, 2).
_DIHEDRAL = torch.tensor([[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]],
                          [[0, 1], [-1, 0]], [[-1, 0], [0, 1]], [[0, 1], [1, 0]],
                          [[1, 0], [0, -1]], [[0, -1], [-1, 0]]], dtype=torch.float32)


def _symmetry(unit_pts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Flip/rotate each point cloud (centred in the unit frame) by a random square symmetry."""
    n = unit_pts.shape[0]
    pick = torch.randint(8, (n,), generator=generator, device=unit_pts.device)
    mats = _DIHEDRAL.to(unit_pts.device)[pick]  # (n, 2, 2)
    return (unit_pts - 0.5) @ mats.transpose(1, 2) + 0.5


def _patches(hits: torch.Tensor, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """FractalDB patch rendering: stamp a random 3x3 binary pattern at every hit pixel."""
    n, dev = hits.shape[0], hits.device
    kernel = (torch.rand(n, 1, 3, 3, generator=generator, device=dev) < 0.5).float()
    use = torch.rand(n, generator=generator, device=dev) < prob
    kernel = kernel * use.view(n, 1, 1, 1)  # point instances: the centre pixel only
    kernel[:, 0, 1, 1] = 1.0
    stamped = F.conv2d(hits.float()[None], kernel, padding=1, groups=n)[0]  # (n, H, W)
    return stamped > 0


def _colour(gray: torch.Tensor, gray_prob: float, generator: torch.Generator | None
            ) -> torch.Tensor:
    """(n, 1, H, W) coverage -> (n, 3, H, W): white on black, or a bright on a dark colour."""
    n, dev = gray.shape[0], gray.device
    rand = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
    is_gray = (rand(n, 1, 1, 1) < gray_prob).float()
    fg = is_gray + (1 - is_gray) * (0.3 + 0.7 * rand(n, 3, 1, 1))
    bg = (1 - is_gray) * 0.25 * rand(n, 3, 1, 1)
    return bg + (fg - bg) * gray


def render(systems: torch.Tensor, cfg: FractalConfig,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One random instance of each IFS: (n, max_maps, 7) -> images (n, 3, img, img) in [0, 1]."""
    n, dev = systems.shape[0], systems.device
    pts = chaos_game(jitter_systems(systems, cfg.jitter, generator), cfg.chains, cfg.iters,
                     cfg.burn_in, generator)
    scale = cfg.min_scale + (1 - cfg.min_scale) * torch.rand(n, generator=generator, device=dev)
    unit = _symmetry(_fit(pts, scale), generator)
    density = cfg.min_density + (1 - cfg.min_density) * torch.rand(
        n, 1, generator=generator, device=dev)
    keep = (torch.rand(pts.shape[:2], generator=generator, device=dev) < density).float()
    hits = _patches(rasterize(unit, cfg.render_size, keep) > 0, cfg.patch_prob, generator)
    gray = F.avg_pool2d(hits.float()[:, None], cfg.render_size // cfg.img_size)
    return _colour(gray, cfg.gray_prob, generator)


class FractalCorpus:
    """``num_categories`` IFS categories; draws fresh labelled instances on any device."""

    def __init__(self, num_categories: int, seed: int = 0, cfg: FractalConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg or FractalConfig()
        self.seed = seed
        self.device = torch.device(device)
        self.categories = make_categories(num_categories, seed, self.cfg).to(self.device)

    @property
    def num_categories(self) -> int:
        return self.categories.shape[0]

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def render(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Instances of the given categories, (len(labels), 3, img, img)."""
        return render(self.categories[labels.to(self.device)], self.cfg, generator)

    def sample(self, batch_size: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of uniformly drawn categories and one fresh instance of each."""
        labels = torch.randint(self.num_categories, (batch_size,), generator=generator,
                               device=self.device)
        return self.render(labels, generator), labels

    def fixed_set(self, per_category: int, seed: int, chunk: int = 256
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_category`` instances of every category, the same for the same seed."""
        gen = self.generator(seed)
        labels = torch.arange(self.num_categories, device=self.device).repeat(per_category)
        images = [self.render(part, gen) for part in labels.split(chunk)]
        return torch.cat(images), labels
