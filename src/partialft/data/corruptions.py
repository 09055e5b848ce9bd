"""ImageNet-C-style corruptions on any dataset (the ``imagecorruptions`` package) and mCE.

``imagecorruptions`` 1.1.2 (the latest release) predates NumPy 2, scikit-image 0.19 and
setuptools 81: it imports ``pkg_resources``, calls ``skimage.filters.gaussian(multichannel=)``
and uses ``np.float_``. :func:`_imagecorruptions` imports it with three narrow compatibility
shims (a ``resource_filename`` for its frost images, ``multichannel`` mapped to
``channel_axis=-1``, and a NumPy proxy that adds ``float_``) so all 19 corruptions run; the shims
touch only that package's module, never NumPy or scikit-image themselves.

The package needs images of at least 32x32 pixels: smaller images (MNIST-sized data) are
upscaled to 32x32 (bilinear) before corrupting and the result is reported with the note.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from partialft.errors import PartialFTError, option_error, suggest
from partialft.utils.extras import require

# The 15 ImageNet-C benchmark corruptions (Hendrycks & Dietterich 2019), in their order.
BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
             "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
             "elastic_transform", "pixelate", "jpeg_compression")
# The 4 held-out ("validation") corruptions of ImageNet-C.
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

# AlexNet's top-1 error on ImageNet-C, averaged over severities 1-5 (fractions), as published
# with ImageNet-C (github.com/hendrycks/robustness, ImageNet-C/test.py); mCE divides by these.
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
    "speckle_noise": 0.845388, "gaussian_blur": 0.787108, "spatter": 0.718752,
    "saturate": 0.658252,
}
MIN_SIDE = 32


def parse_corruptions(text: str) -> list[str]:
    """'all' (the 15 benchmark corruptions), 'extra' (the 4 held-out), 'every' or 'a,b,c'."""
    groups = {"all": BENCHMARK, "extra": EXTRA, "every": BENCHMARK + EXTRA}
    if text in groups:
        return list(groups[text])
    names = [t.strip() for t in text.split(",") if t.strip()]
    valid = BENCHMARK + EXTRA
    for name in names:
        if name not in valid:
            raise PartialFTError(f"unknown corruption {name!r}{suggest(name, valid)}; use all, "
                                 f"extra, every or names from: {', '.join(valid)}.")
    if not names:
        raise option_error("`corruptions` is empty; use all, extra, every or a list of names.")
    return names


def parse_severities(text: str) -> list[int]:
    """'1-5', '3' or '1,2,5' -> severities in 1..5."""
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            values = list(range(lo, hi + 1))
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 or v > 5 for v in values):
        raise PartialFTError(f"severities {text!r} are not valid; use a range like 1-5 or a "
                             "list like 1,3,5 of integers from 1 to 5.")
    return sorted(set(values))


class _NumpyCompat(types.ModuleType):
    """NumPy as seen by imagecorruptions: everything forwarded, plus the removed ``float_``."""

    float_ = np.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _resource_filename(package: str, resource: str) -> str:
    return os.path.join(os.path.dirname(sys.modules[package].__file__ or ""), resource)


@cache
def _imagecorruptions() -> types.ModuleType:
    """Import imagecorruptions with the compatibility shims described in the module docstring."""
    require("imagecorruptions", "corruptions")
    # a pkg_resources shim only while imagecorruptions imports (it binds resource_filename
    # then): left in sys.modules it would stand in for the real package for everyone else
    shimmed = importlib.util.find_spec("pkg_resources") is None and \
        "pkg_resources" not in sys.modules
    if shimmed:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import imagecorruptions
            from imagecorruptions import corruptions as impl
    finally:
        if shimmed:
            del sys.modules["pkg_resources"]
    gaussian = impl.gaussian

    def gaussian_compat(image: Any, *args: Any, multichannel: bool | None = None,
                        **kwargs: Any) -> Any:
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)

    impl.gaussian = gaussian_compat
    impl.np = _NumpyCompat("numpy")
    return imagecorruptions


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """A CxHxW image (uint8, or float in [0, 1]) as HxWxC uint8 numpy."""
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return image.permute(1, 2, 0).cpu().numpy()


def corrupt_batch(images: torch.Tensor, name: str, severity: int, seed: int = 0
                  ) -> torch.Tensor:
    """Corrupt a batch (B, C, H, W) of uint8 or [0, 1] float images; returns uint8 (B, C, H', W').

    Images smaller than 32 px are upscaled to at least 32 px first (the package's minimum).
    NumPy's global RNG (used by the package) is seeded with ``seed`` for reproducibility.
    """
    lib = _imagecorruptions()
    b, c, h, w = images.shape
    if c not in (1, 3):
        raise PartialFTError(f"corruptions need 1- or 3-channel images, got {c} channels.")
    if min(h, w) < MIN_SIDE:
        scale = MIN_SIDE / min(h, w)
        size = (max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale)))
        floats = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
        images = F.interpolate(floats, size=size, mode="bilinear", align_corners=False)
    np.random.seed(seed)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for image in images:
            arr = to_uint8_hwc(image)
            arr = arr[..., 0] if c == 1 else arr
            bad = lib.corrupt(arr, severity=severity, corruption_name=name)  # HxWx3 uint8
            t = torch.from_numpy(np.ascontiguousarray(bad)).permute(2, 0, 1)
            out.append(t.float().mean(0, keepdim=True).round().to(torch.uint8) if c == 1 else t)
    return torch.stack(out)


def corruption_errors(errors: dict[str, dict[int, float]]) -> dict[str, Any]:
    """Per-corruption mean error (%) and the mean over corruptions and severities."""
    per = {name: float(np.mean(list(by_sev.values()))) for name, by_sev in errors.items()}
    cells = [e for by_sev in errors.values() for e in by_sev.values()]
    return {"per_corruption": per, "mean_corruption_error": float(np.mean(cells))}


def mce(errors: dict[str, dict[int, float]]) -> dict[str, Any]:
    """ImageNet-C mCE (%): per corruption, the error summed over severities 1-5 divided by
    AlexNet's, averaged over the 15 benchmark corruptions (Hendrycks & Dietterich 2019).

    Only complete (all 5 severities) benchmark corruptions count; ``complete`` says whether all
    15 were present, since an mCE over fewer corruptions is not comparable with published ones.
    """
    ce = {}
    for name in BENCHMARK:
        by_sev = errors.get(name, {})
        if sorted(by_sev) == [1, 2, 3, 4, 5]:
            ce[name] = float(np.mean(list(by_sev.values()))) / ALEXNET_ERR[name]  # % / fraction
    if not ce:
        return {"mce": None, "ce": {}, "complete": False}
    return {"mce": float(np.mean(list(ce.values()))), "ce": ce, "complete": len(ce) == 15}
