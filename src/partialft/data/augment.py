"""Batch augmentation on the batch's own device: channels, crop/flip or resize, timm's
RandAugment, normalisation and random erasing, so the DataLoader only ships raw uint8 tensors."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from partialft.errors import PartialFTError

RA_LEVEL_MAX = 10  # timm's _LEVEL_DENOM: magnitudes run from 0 to 10 unless mmax raises it
# the sections of timm's rand_augment_transform string and the type timm reads each as
RA_NUMBERS: dict[str, type] = {"m": int, "n": int, "p": float, "mstd": float, "mmax": int,
                               "inc": int}
RA_SETS = {"weights": 15, "3aw": 14, "3a": 3}  # timm's "t" op sets (size: no-replacement cap)
RA_VALID = ("use a timm string such as rand-m9-mstd0.5-inc1 (rand, then any of m 0..10 or up "
            "to mmax, n >= 1 ops per image, p 0..1, mstd >= 0, mmax >= 1, inc 0 or 1, t weights, "
            "3aw or 3a)")


@dataclass
class AugmentConfig:
    """Train-time augmentation; mixup/cutmix are the trainer's (timm Mixup)."""

    randaugment: str | None = None  # timm string, e.g. "rand-m9-mstd0.5-inc1" (n = ops, m = 0..10)
    hflip: float = 0.5
    random_erasing: float = 0.0
    # brightness, contrast and saturation jitter; as in timm, off when RandAugment is on
    color_jitter: float = 0.0
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


def parse_randaugment(spec: str | None) -> dict[str, Any] | None:
    """timm's RandAugment string -> its settings as timm's ``rand_augment_transform`` reads them:
    ``{"m", "n", "p", "mstd", "mmax", "inc", "t"}`` with timm's defaults (m 10, n 2, p 0.5).

    A string timm would reject, crash on or silently ignore part of is an error naming it.
    """
    if spec is None or spec == "":
        return None
    opts: dict[str, Any] = {"m": RA_LEVEL_MAX, "n": 2, "p": 0.5, "mstd": 0.0, "mmax": None,
                            "inc": 0, "t": None}
    parts = str(spec).split("-")
    if parts[0] != "rand":
        raise _bad_randaugment(spec, f"it starts with {parts[0]!r}, not rand")
    for part in parts[1:]:
        key, value = _randaugment_part(spec, part)
        opts[key] = value
    _check_randaugment(spec, opts)
    return opts


def _randaugment_part(spec: str, part: str) -> tuple[str, Any]:
    """One "-" section: t<name> or <key><number>, read the way timm reads it."""
    if part.startswith("t"):
        if part[1:] not in RA_SETS:
            raise _bad_randaugment(spec, f"op set {part[1:]!r} is not one of timm's")
        return "t", part[1:]
    match = re.fullmatch(r"([a-z]+)(\d.*)", part)
    if match is None or match[1] not in RA_NUMBERS:
        raise _bad_randaugment(spec, f"section {part!r} is not one timm knows")
    kind = RA_NUMBERS[match[1]]
    try:
        return match[1], kind(match[2])
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise _bad_randaugment(spec, f"{match[1]} {match[2]!r} is not {what}") from None


def _check_randaugment(spec: str, o: dict[str, Any]) -> None:
    top = o["mmax"] or RA_LEVEL_MAX
    checks = [(o["mmax"] is None or o["mmax"] >= 1, f"mmax {o['mmax']} is below 1"),
              (0 <= o["m"] <= top, f"m {o['m']} is above {top}"),
              (o["n"] >= 1, f"n {o['n']} is below 1"),
              (0.0 <= o["p"] <= 1.0, f"p {o['p']} is not a probability"),
              (o["inc"] in (0, 1), f"inc {o['inc']} is neither 0 nor 1"),
              (o["t"] in (None, "3a") or o["n"] <= RA_SETS[o["t"]],
               f"n {o['n']} is more than the {RA_SETS.get(o['t'])} ops t{o['t']} draws from")]
    for ok, why in checks:
        if not ok:
            raise _bad_randaugment(spec, why)


def _bad_randaugment(spec: str, why: str) -> PartialFTError:
    return PartialFTError(f"randaugment {spec!r} is not valid ({why}); {RA_VALID}.")


def randaugment_transform(spec: str, img_size: int, mean: Sequence[float]) -> Any:
    """timm's own RandAugment for ``spec``, with the hparams timm's create_transform gives it.

    As in timm's ``transforms_imagenet_train``: ``translate_const`` from the image size and the
    fill colour ``img_mean`` from the normalisation mean; no ``interpolation`` hparam, which is
    timm train.py's default ``--train-interpolation random`` (bilinear or bicubic per op).
    """
    from timm.data import auto_augment

    parse_randaugment(spec)  # a clear error before timm's asserts
    hparams = {"translate_const": int(img_size * 0.45),
               "img_mean": tuple(min(255, round(255 * float(m))) for m in mean)}
    ra = auto_augment.rand_augment_transform(spec, hparams)
    for op in ra.ops:
        if op.aug_fn is auto_augment.posterize:
            op.aug_fn = posterize
    return ra


def posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize for every bit count timm's levels give, including none.

    Hand-written around timm's: timm 1.0.31 asks for 0 bits (PosterizeIncreasing at magnitude
    10, Posterize at 0), which Pillow 13 refuses with a ValueError that would stop training;
    older Pillow kept no bits, a black image, which is what timm's level mapping means.
    """
    from timm.data import auto_augment

    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep)


@contextmanager
def seeded_python_rngs(seed: int) -> Iterator[None]:
    """Python's and NumPy's global RNGs seeded with ``seed`` inside, restored after."""
    saved = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


class EvalResize:
    """timm's evaluation geometry (resize the short side to img_size / crop_pct, centre crop
    img_size) for a PIL image, a uint8 or [0, 1] float tensor, or a batch: float out, in [0, 1].

    File datasets apply it per image in the loader and BatchAugment to in-memory batches, on
    the same float pixels, so both give the model bit-identical inputs. Float, not PIL: PIL
    rounds to uint8 after resizing, which a batch on the GPU could not reproduce.
    """

    def __init__(self, img_size: int, crop_pct: float = 1.0,
                 interpolation: str = "bilinear") -> None:
        from timm.data import create_transform

        self.transform = create_transform(int(img_size), is_training=False,
                                          crop_pct=float(crop_pct), interpolation=interpolation,
                                          normalize=False)

    def __call__(self, x: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(x, Image.Image):
            from torchvision.transforms.functional import pil_to_tensor

            x = pil_to_tensor(x)
        x = to_unit_float(x)
        return self.transform(x).clamp(0.0, 1.0)  # bicubic overshoots; PIL's uint8 clips too


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1]; a float tensor is taken to be in [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


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
    """(B, C, h, w) uint8 or float in [0, 1], any device -> normalised (B, in_chans, S, S).

    Train: crop + flip (raw batches), timm's RandAugment, normalise, random erasing. Eval: raw
    batches get timm's evaluation resize + centre crop (``crop_pct``, ``interpolation``, see
    :class:`EvalResize`); float batches already at img_size (file datasets) are only normalised.
    """

    def __init__(self, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float],
                 train: bool, cfg: AugmentConfig | None = None, crop_pct: float = 1.0,
                 interpolation: str = "bilinear") -> None:
        super().__init__()
        self.img_size, self.in_chans, self.train_mode = int(img_size), int(in_chans), bool(train)
        self.cfg = cfg or AugmentConfig()
        self.crop_pct, self.interpolation = float(crop_pct), str(interpolation)
        self.eval_resize = EvalResize(self.img_size, self.crop_pct, self.interpolation)
        self.register_buffer("mean", _stats(mean, in_chans, "mean").view(1, -1, 1, 1), False)
        self.register_buffer("std", _stats(std, in_chans, "std").view(1, -1, 1, 1), False)
        self.randaugment = None  # timm's RandAugment (train mode with a randaugment string)
        if train and self.cfg.randaugment:
            if self.in_chans not in (1, 3):
                raise PartialFTError(f"randaugment needs 1 or 3 channel images, but the model "
                                     f"takes {self.in_chans}; drop randaugment.")
            self.randaugment = randaugment_transform(self.cfg.randaugment, self.img_size,
                                                     self.mean.flatten().tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(0)
        raw = x.dtype == torch.uint8 or tuple(x.shape[-2:]) != (self.img_size, self.img_size)
        x = to_unit_float(self._channels(x))
        if not self.train_mode:
            x = self.eval_resize(x) if raw else x
        else:
            geometric = self.cfg.geometric if self.cfg.geometric is not None else raw
            x = self._crop_flip(x) if geometric else self._resize(x)
            if self.randaugment is not None:  # after crop + flip, as in timm's train transform
                x = self._randaugment(x)
            elif geometric and self.cfg.color_jitter > 0:  # file sets jitter in the loader
                x = self._jitter(x)
        x = self._normalize(x)
        if self.train_mode and self.cfg.random_erasing > 0:
            x = self._erase(x)
        return x

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std of [0, 1] floats; RandAugment's uint8 output in one float copy."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        if x.dtype == torch.uint8:  # (x / 255 - mean) / std, without three more passes
            out = torch.empty(x.shape, device=x.device).copy_(x)
            return out.sub_(mean * 255.0).div_(std * 255.0)
        return (x - mean).div_(std)

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
        else:  # no random crop: the very view evaluation sees (size, crop_pct, interpolation)
            x = self.eval_resize(x)
        if self.cfg.hflip > 0:
            flip = torch.rand(x.shape[0], device=x.device) < self.cfg.hflip
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x

    def _randaugment(self, x: torch.Tensor) -> torch.Tensor:
        """timm's RandAugment on every [0, 1] image -> uint8 batch; its draws follow torch's
        RNG (one seed a batch).

        timm's own transform, image by image, instead of a batched re-implementation: its ops
        are PIL ops whose exact output (equalize, autocontrast, PIL's affine resampling) a
        tensor version would only approximate. The images cross as uint8 HWC arrays, the
        quantisation timm's PIL pipeline applies after its crop too, with no float round trip
        per image; the whole augmentation is 1.8x faster than with the torchvision ops it
        replaced on 32 px batches and on par at 224 px (docs/bench.md). timm draws from
        Python's and NumPy's global RNGs, seeded here from torch's (which the trainer seeds
        and saves at resume points) and restored after.
        """
        b, c, h, w = x.shape
        # [0, 1] -> uint8 HWC in one strided copy (+0.5 then truncation rounds), before any
        # device transfer: a quarter of float's bytes
        hwc = torch.empty((b, h, w, c), dtype=torch.uint8, device=x.device)
        hwc.copy_(x.mul(255.0).add_(0.5).clamp_(0, 255).permute(0, 2, 3, 1))
        hwc = hwc.cpu().numpy()
        out = np.empty_like(hwc)
        with seeded_python_rngs(int(torch.randint(2**31 - 1, (1,)))):
            for i, img in enumerate(hwc):
                pil = Image.fromarray(img[..., 0] if c == 1 else img)
                out[i] = np.asarray(self.randaugment(pil)).reshape(img.shape)
        return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2)  # uint8, see _normalize

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """timm's colour jitter (brightness, contrast, saturation), drawn per image."""
        from torchvision.transforms import v2

        if x.shape[1] != 3:  # saturation has no meaning for one channel
            return x
        cj = self.cfg.color_jitter
        jitter = v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj)
        return torch.stack([jitter(img) for img in x])

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        from timm.data.random_erasing import RandomErasing

        return RandomErasing(self.cfg.random_erasing, mode="pixel", device=x.device)(x)

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, in_chans={self.in_chans}, train={self.train_mode}, "
                f"crop_pct={self.crop_pct}, interpolation={self.interpolation}")


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
