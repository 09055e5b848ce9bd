"""Images/s of the train-time augmentation alone: ``BatchAugment`` in train mode with a config's
RandAugment string (and its flip, crop scale and random erasing) on uint8 batches, on the CPU,
one thread, median of several repeats.

Two variants, timed side by side in one process (alternating, so machine load hits both):

- BEFORE: partialft's RandAugment up to 2026-11-23, copied verbatim below: torchvision's
  ``v2.RandAugment`` op set, every chosen op applied, ``inc`` ignored, before the crop.
- NOW: ``partialft.data.augment.BatchAugment``: timm's own RandAugment, after the crop.

Run from the repo root (docs/bench.md has the numbers)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/augment_speed.py \\
        --config configs/cifar100_vit_b16.yaml
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from typing import Any

import torch

from partialft.data import BatchAugment, parse_randaugment, resolve_preprocess
from partialft.training.config_files import load_config
from partialft.training.setup import augment_config

BATCH = {32: 256, 224: 64}  # images per batch at each size


# --- BEFORE: partialft up to 2026-11-23 (verbatim forward and _randaugment) -------------------

RA_BINS = 31  # torchvision RandAugment magnitude bins; timm magnitudes run from 0 to 10
RA_MAX = 10.0


class BeforeBatchAugment(BatchAugment):
    """BEFORE: the old forward (RandAugment on the raw batch, then crop) and the old
    torchvision-based ``_randaugment``; channels, crop/flip, resize and erasing are shared."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = parse_randaugment(self.cfg.randaugment) if self.train_mode else None
        self.ra = None if opts is None else {k: float(opts[k]) for k in ("m", "n", "mstd")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(0)
        raw = x.dtype == torch.uint8 or tuple(x.shape[-2:]) != (self.img_size, self.img_size)
        x = self._channels(x)
        if self.ra is not None:
            x = self._randaugment(x)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        geometric = self.cfg.geometric if self.cfg.geometric is not None else raw
        if self.train_mode and geometric:
            x = self._crop_flip(x)
        else:
            x = self._resize(x)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.train_mode and self.cfg.random_erasing > 0:
            x = self._erase(x)
        return x

    def _randaugment(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        op = v2.RandAugment(num_ops=int(self.ra["n"]), num_magnitude_bins=RA_BINS)
        mags = torch.full((x.shape[0],), self.ra["m"])
        if self.ra["mstd"] > 0:
            mags = mags + self.ra["mstd"] * torch.randn(x.shape[0])
        bins = (mags.clamp(0, RA_MAX) / RA_MAX * (RA_BINS - 1)).round().long().tolist()
        out = torch.empty_like(x)
        # one image at a time: torchvision's RandAugment picks one op for a whole batch
        for i, b in enumerate(bins):
            op.magnitude = b
            out[i] = op(x[i])
        return out


# --- measurement ----------------------------------------------------------------------------

def images_per_s(aug: BatchAugment, x: torch.Tensor) -> float:
    """Images per second of one call on batch ``x``."""
    start = time.perf_counter()
    aug(x)
    return x.shape[0] / (time.perf_counter() - start)


def measure(config: str, size: int, repeats: int) -> dict[str, Any]:
    """Median images/s of BEFORE and NOW on one uint8 batch of ``size`` px images."""
    cfg = load_config(config)
    aug_cfg = augment_config(cfg)
    pre = resolve_preprocess(cfg.model)
    x = torch.randint(0, 256, (BATCH[size], 3, size, size), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    variants = {name: cls(size, 3, pre["mean"], pre["std"], train=True, cfg=aug_cfg)
                for name, cls in (("before", BeforeBatchAugment), ("now", BatchAugment))}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for aug in variants.values():
        images_per_s(aug, x)  # warm-up
    for _ in range(repeats):  # alternate: B A B A ...
        for name, aug in variants.items():
            rates[name].append(images_per_s(aug, x))
    before, now = (statistics.median(rates[n]) for n in ("before", "now"))
    return {"size": size, "batch": BATCH[size], "before": before, "now": now,
            "ratio": now / before, "randaugment": aug_cfg.randaugment}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/cifar100_vit_b16.yaml",
                   help="training config whose augmentation is measured")
    p.add_argument("--sizes", default="32,224", help="image sizes (px), comma-separated")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per variant and size")
    args = p.parse_args()
    torch.set_num_threads(1)
    import PIL
    import timm

    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} torch thread; torch "
          f"{torch.__version__}, timm {timm.__version__}, Pillow {PIL.__version__}; "
          f"config {args.config}, median of {args.repeats}\n")
    print("| images | batch | RandAugment | before img/s | now img/s | now / before |")
    print("|---|---:|---|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(args.config, size, args.repeats)
        print(f"| {size}x{size} uint8 | {r['batch']} | `{r['randaugment']}` | "
              f"{r['before']:,.0f} | {r['now']:,.0f} | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
