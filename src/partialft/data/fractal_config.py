"""How fractal categories are sampled and instances rendered (:mod:`partialft.data.fractal`);
kept free of torch so ``partialft pretrain --help`` reads its defaults instantly."""

from __future__ import annotations

from dataclasses import dataclass

from partialft.errors import PartialFTError


@dataclass(frozen=True)
class FractalConfig:
    """How categories are sampled and instances rendered."""

    min_maps: int = 2
    max_maps: int = 4
    img_size: int = 32
    render_size: int = 64  # points are drawn at this size, then average-pooled to img_size
    chains: int = 384  # parallel chaos-game chains per image
    iters: int = 20  # steps per chain; points of the last iters - burn_in steps are drawn
    burn_in: int = 4
    fill_threshold: float = 0.15  # FractalDB filling rate, checked on a plain 64x64 render
    jitter: float = 0.2  # FractalDB weight jitter: one parameter scaled by U(1-j, 1+j)
    min_density: float = 0.15  # share of points kept per instance, U(min_density, 1)
    patch_prob: float = 0.5  # share of instances drawn with a random 3x3 patch per point
    gray_prob: float = 0.5  # share of instances in white on black; the rest in colour
    min_scale: float = 0.7  # the fractal's bounding box fills U(min_scale, 1) of the frame

    def __post_init__(self) -> None:
        if not 1 <= self.min_maps <= self.max_maps <= 8:
            raise PartialFTError(f"maps {self.min_maps}-{self.max_maps} are not valid; use "
                                 "1 <= min_maps <= max_maps <= 8.")
        if self.render_size % self.img_size:
            raise PartialFTError(f"render_size {self.render_size} is not a multiple of img_size "
                                 f"{self.img_size}; use e.g. {2 * self.img_size}.")
        if not 0 <= self.burn_in < self.iters:
            raise PartialFTError(f"burn_in {self.burn_in} is not valid; use 0 <= burn_in < "
                                 f"iters ({self.iters}).")
