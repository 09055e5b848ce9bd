"""Datasets by name and batch augmentation: the one entry point the trainer and evaluators use.

In-memory sets (cifar10, cifar100, fashion-mnist, digits, synthetic) yield uint8 images at native
resolution; file sets (folder:PATH, cub, nabirds, flowers, dogs, cars) yield float images in
[0, 1] already cropped to img_size. ``BatchAugment`` does the rest on the batch's device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from partialft.data.augment import AugmentConfig, BatchAugment, EvalResize, parse_randaugment
from partialft.data.base import Datasets, Request, first_n, make_split
from partialft.data.files import (
    FileImageDataset,
    build_cars,
    build_cub_style,
    build_dogs,
    build_flowers,
    build_folder,
    load_rgb,
)
from partialft.data.memory import (
    TensorImageDataset,
    build_cifar,
    build_digits,
    build_fashion_mnist,
    build_synthetic,
    read_idx,
)
from partialft.errors import PartialFTError, suggest

__all__ = ["AugmentConfig", "BatchAugment", "Datasets", "EvalResize", "FileImageDataset",
           "TensorImageDataset", "DATASETS", "PREPROCESS", "build_datasets", "dataset_names",
           "load_rgb", "make_split", "parse_randaugment", "read_idx", "resolve_preprocess"]

Builder = Callable[[Request], Datasets]

# name -> builder; "folder" and "synthetic" also take an argument after a colon
DATASETS: dict[str, Builder] = {
    "cifar10": build_cifar,
    "cifar100": build_cifar,
    "fashion-mnist": build_fashion_mnist,
    "digits": build_digits,
    "synthetic": build_synthetic,
    "folder": build_folder,
    "cub": build_cub_style,
    "nabirds": build_cub_style,
    "flowers": build_flowers,
    "dogs": build_dogs,
    "cars": build_cars,
}
TAKES_ARG = {"folder": True, "synthetic": False}  # True: the argument is required
# a model's input preprocessing (timm's data config), recorded in a run's config.yaml
PREPROCESS = ("crop_pct", "interpolation", "mean", "std")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # the ones tensor resizing has


# classes of the named datasets (what ``build_datasets`` would find), for counts without data
CLASSES = {"cifar10": 10, "cifar100": 100, "fashion-mnist": 10, "digits": 10, "cub": 200,
           "nabirds": 555, "flowers": 102, "dogs": 120, "cars": 196}


def known_classes(name: str) -> int | None:
    """The number of classes of dataset ``name`` when it is fixed (``synthetic:N`` too)."""
    base, _, arg = name.partition(":")
    if base == "synthetic":
        return int(arg) if arg.isdigit() else 4
    return CLASSES.get(base)


def dataset_names() -> list[str]:
    """Valid dataset names, as a user writes them."""
    return [f"{n}:PATH" if n == "folder" else n for n in DATASETS] + ["synthetic:N"]


def parse_name(name: str) -> tuple[str, str | None]:
    """ "folder:/x" -> ("folder", "/x"); check the name exists."""
    base, sep, arg = name.partition(":")
    if TAKES_ARG.get(base) and not arg:
        raise PartialFTError(f"dataset {name!r} needs a path after the colon: use folder:PATH "
                             "with PATH/train/CLASS/* and PATH/val/CLASS/* image files.")
    if base not in DATASETS or (sep and base not in TAKES_ARG):
        raise PartialFTError(f"dataset {name!r} is not known{suggest(base, DATASETS)}; valid: "
                             f"{', '.join(dataset_names())}.")
    return base, (arg if sep else None)


def build_datasets(name: str, *, data_dir: str | Path | None = None, img_size: int = 224,
                   val_fraction: float = 0.1, seed: int = 0, download: bool = True,
                   split_file: str | Path | None = None, max_per_split: int | None = None,
                   augment: AugmentConfig | None = None, crop_pct: float = 1.0,
                   interpolation: str = "bilinear") -> Datasets:
    """Build the train/val/test splits of dataset ``name`` (see docs/datasets.md).

    ``split_file``: JSON of the random train/val indices, read if it exists, else written.
    ``augment``: crop scale and flip of the loader-side transforms of file datasets.
    ``crop_pct``, ``interpolation``: the evaluation resize of file datasets (give the values
    the evaluating BatchAugment has, see :func:`resolve_preprocess`).
    """
    base, arg = parse_name(name)
    _check_build_args(val_fraction, max_per_split)
    check_eval_resize(crop_pct, interpolation)
    for given, what in ((data_dir, "data_dir"), (arg if base == "folder" else None, name)):
        if given is not None and Path(given).exists() and not Path(given).is_dir():
            raise PartialFTError(f"{what} {given} is a file; datasets are read from a folder, so "
                                 "pass the folder that holds the dataset's files.")
    req = Request(name=base, arg=arg, data_dir=None if data_dir is None else Path(data_dir),
                  img_size=int(img_size), val_fraction=val_fraction, seed=seed,
                  download=download, split_file=None if split_file is None else Path(split_file),
                  max_per_split=max_per_split, augment=augment, crop_pct=float(crop_pct),
                  interpolation=interpolation)
    ds = DATASETS[base](req)
    if ds.num_classes < 2:
        raise PartialFTError(f"dataset {name} has {ds.num_classes} class"
                             f"{'' if ds.num_classes == 1 else 'es'}; classification needs at "
                             "least 2 (one folder of images per class).")
    ds.train, ds.val = first_n(ds.train, max_per_split), first_n(ds.val, max_per_split)
    ds.test = None if ds.test is None else first_n(ds.test, max_per_split)
    return ds


def _check_build_args(val_fraction: float, max_per_split: int | None) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise PartialFTError(f"val_fraction {val_fraction} is not valid; use 0 (no validation "
                             "split) or a share below 1, such as 0.1.")
    if max_per_split is not None and max_per_split < 1:
        raise PartialFTError(f"max_per_split {max_per_split} is not valid; use a positive number.")


def check_eval_resize(crop_pct: float, interpolation: str) -> None:
    """crop_pct in (0, 1] and an interpolation tensor resizing has."""
    if not 0.0 < crop_pct <= 1.0:
        raise PartialFTError(f"crop_pct {crop_pct} is not valid; use a share in (0, 1], e.g. "
                             "0.875 (1 = no crop).")
    if interpolation not in INTERPOLATIONS:
        raise PartialFTError(f"interpolation {interpolation!r} is not valid; use "
                             f"{', '.join(INTERPOLATIONS)}.")


def resolve_preprocess(model: nn.Module, **given: Any) -> dict[str, Any]:
    """``crop_pct``, ``interpolation``, ``mean``, ``std`` for ``model`` (a meta-device model is
    enough): each value in ``given`` that is not None, else the model's pretrained config as
    timm's ``resolve_data_config`` reads it."""
    values = {k: given.get(k) for k in PREPROCESS}
    missing = [k for k, v in values.items() if v is None]
    in_chans = 3
    if missing:
        from timm.data import resolve_data_config

        dcfg = resolve_data_config({}, model=model)
        in_chans = int(dcfg["input_size"][0])
        values |= {k: dcfg[k] for k in missing}
    for key in ("mean", "std"):
        values[key] = [float(v) for v in values[key]]
        if len(values[key]) not in (1, 3, in_chans):  # what BatchAugment can use
            raise PartialFTError(f"{key} has {len(values[key])} values but the model takes "
                                 f"{in_chans} channels; give 1 or {in_chans} values.")
    values["crop_pct"] = float(values["crop_pct"])
    check_eval_resize(values["crop_pct"], values["interpolation"])
    return values
