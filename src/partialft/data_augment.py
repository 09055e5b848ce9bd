"""Batch augmentation on the batch's own device: resize, channels, crop/flip, RandAugment,
normalisation and random erasing, so the DataLoader only ships raw uint8 tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from partialft.errors import PartialFTError

RA_BINS = 31  # torchvision RandAugment magnitude bins; timm magnitudes run from 0 to 10
RA_MAX = 10.0


@dataclass
class AugmentConfig:
    """Train-time augmentation; mixup/cutmix are the trainer's (timm Mixup)."""

    randaugment: str | None = None  # timm string, e.g. "rand-m9-mstd0.5-inc1" (n = ops, m = 0..10)
    hflip: float = 0.5
    random_erasing: float = 0.0
    crop_scale: tuple[float, float] = (0.08, 1.0)  # a float x means (x, 1.0); (1, 1) = no crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # crop + flip in the batch: None = only for raw batches (uint8 or not yet img_size); file
    # datasets already crop and flip in the loader
    geometric: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.crop_scale, (int, float)):
            self.crop_scale = (float(self.crop_scale), 1.0)
        self.crop_scale = tuple(float(s) for s in self.crop_scale)
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise PartialFTError(f"crop_scale {self.crop_scale} is not valid; use 0 < min <= max "
                                 "<= 1, e.g. (0.08, 1.0).")
        for name in ("hflip", "random_erasing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PartialFTError(f"{name} {getattr(self, name)} is not a probability; use a "
                                     "value in [0, 1].")
        parse_randaugment(self.randaugment)


def parse_randaugment(spec: str | None) -> dict[str, float] | None:
    """timm's "rand-m9-n2-mstd0.5-inc1" -> {"m": 9, "n": 2, "mstd": 0.5}."""
    if spec is None or spec == "":
        return None
    parts = spec.split("-")
    opts = {"m": 9.0, "n": 2.0, "mstd": 0.0}
    ok = parts[0] == "rand"
    for part in parts[1:]:
        key = next((k for k in ("mstd", "inc", "m", "n") if part.startswith(k)), None)
        try:
            value = float(part[len(key):]) if key else math.nan
        except ValueError:
            value = math.nan
        ok = ok and key is not None and not math.isnan(value)
        if key in opts and ok:  # "inc": torchvision's ops already grow with the magnitude
            opts[key] = value
    if not ok or not 0 <= opts["m"] <= RA_MAX or opts["n"] < 1:
        raise PartialFTError(f"randaugment {spec!r} is not valid; use a timm string such as "
                             "rand-m9-mstd0.5-inc1 (m in 0..10, n >= 1, mstd >= 0).")
    return opts


def _stats(values: Sequence[float], in_chans: int, what: str) -> torch.Tensor:
    t = torch.as_tensor([float(v) for v in values])
    if len(t) == in_chans:
        return t
    if len(t) == 1:
        return t.expand(in_chans).clone()
    if len(t) == 3 and in_chans == 1:
        return t.mean().reshape(1)
    raise PartialFTError(f"{what} has {len(t)} values but the model takes {in_chans} channels; "
                         f"give 1 or {in_chans} values.")


class BatchAugment(nn.Module):
    """(B, C, h, w) uint8 or float in [0, 1], any device -> normalised (B, in_chans, S, S)."""

    def __init__(self, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float],
                 train: bool, cfg: AugmentConfig | None = None) -> None:
        super().__init__()
        self.img_size, self.in_chans, self.train_mode = int(img_size), int(in_chans), bool(train)
        self.cfg = cfg or AugmentConfig()
        self.ra = parse_randaugment(self.cfg.randaugment) if train else None
        self.register_buffer("mean", _stats(mean, in_chans, "mean").view(1, -1, 1, 1), False)
        self.register_buffer("std", _stats(std, in_chans, "std").view(1, -1, 1, 1), False)

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

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_chans:
            return x
        if c == 1:
            return x.expand(-1, self.in_chans, -1, -1).contiguous()
        if c == 3 and self.in_chans == 1:
            from torchvision.transforms.v2 import functional as TF

            return TF.rgb_to_grayscale(x, num_output_channels=1)
        raise PartialFTError(f"a batch with {c} channels cannot feed a model with "
                             f"{self.in_chans} input channels; use 1 or 3 channel images.")

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.img_size, self.img_size):
            return x
        return F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear",
                             align_corners=False, antialias=True)

    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        if self.cfg.crop_scale[0] < 1.0:
            boxes = crop_boxes(x.shape[0], x.shape[-2], x.shape[-1], self.cfg.crop_scale,
                               self.cfg.crop_ratio, x.device)
            # bilinear crop + resize of every image at once; sampling_ratio=-1 averages
            # ceil(box/out) samples per output pixel, which anti-aliases when shrinking
            x = roi_align(x, boxes, (self.img_size, self.img_size), aligned=True)
        else:
            x = self._resize(x)
        if self.cfg.hflip > 0:
            flip = torch.rand(x.shape[0], device=x.device) < self.cfg.hflip
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
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

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        from timm.data.random_erasing import RandomErasing

        return RandomErasing(self.cfg.random_erasing, mode="pixel", device=x.device)(x)

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, in_chans={self.in_chans}, train={self.train_mode}"


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float], device: torch.device) -> torch.Tensor:
    """Random-resized-crop boxes (n, 5) [index, x1, y1, x2, y2], one per image.

    Hand-written (vectorised) because torchvision's RandomResizedCrop draws a single crop for a
    whole batch; the sampling follows its get_params: 10 tries, else the whole image.
    """
    tries = 10
    area = height * width * torch.empty(n, tries, device=device).uniform_(*scale)
    log_r = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    w, h = (area * log_r.exp()).sqrt(), (area / log_r.exp()).sqrt()
    ok = (w <= width) & (h <= height)
    found, pick = ok.any(1), ok.float().argmax(1, keepdim=True)  # first valid try
    w = torch.where(found, w.gather(1, pick).squeeze(1), torch.full_like(w[:, 0], width))
    h = torch.where(found, h.gather(1, pick).squeeze(1), torch.full_like(h[:, 0], height))
    x1 = torch.rand(n, device=device) * (width - w)
    y1 = torch.rand(n, device=device) * (height - h)
    idx = torch.arange(n, device=device, dtype=w.dtype)
    return torch.stack([idx, x1, y1, x1 + w, y1 + h], dim=1)
