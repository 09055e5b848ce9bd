"""Shared pieces of the dataset builders: the request, the result, seeded splits, split files."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from partialft.errors import PartialFTError, option_error
from partialft.utils.io import atomic_write_json

DATA_DIR_ENV = "PARTIALFT_DATA_DIR"


@dataclass
class Datasets:
    """The three splits of one dataset, plus what a trainer needs to know about them."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    num_classes: int
    classes: list[str]
    in_memory: bool
    split: dict[str, Any] | None = None  # the random train/val split (as in split.json), if any


@dataclass
class Request:
    """The arguments of build_datasets, passed to every builder."""

    name: str
    arg: str | None = None  # the part after "name:" (folder:PATH, synthetic:N)
    data_dir: Path | None = None
    img_size: int = 224
    val_fraction: float = 0.1
    seed: int = 0
    download: bool = True
    split_file: Path | None = None
    max_per_split: int | None = None
    augment: Any = None  # AugmentConfig for loader-side crops of file datasets
    crop_pct: float = 1.0  # evaluation resize of file datasets (see data_augment.EvalResize)
    interpolation: str = "bilinear"
    extra: dict[str, Any] = field(default_factory=dict)

    def root(self) -> Path:
        """The data dir: --data-dir, else $PARTIALFT_DATA_DIR, else ./data."""
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        return Path(os.environ.get(DATA_DIR_ENV, "data")).expanduser()


def holdout_split(req: Request, num_items: int,
                  labels: Sequence[int] | None = None,
                  test_fraction: float = 0.0) -> dict[str, Any]:
    """A seeded random train/val(/test) split of ``num_items`` items, read from or saved to
    ``req.split_file``; stratified by ``labels`` when given."""
    if req.split_file is not None and Path(req.split_file).is_file():
        return load_split(Path(req.split_file), num_items)
    split = make_split(num_items, req.val_fraction, req.seed, labels, test_fraction)
    split = {"dataset": req.name if req.arg is None else f"{req.name}:{req.arg}",
             "seed": req.seed, "val_fraction": req.val_fraction, "num_items": num_items, **split}
    if req.split_file is not None:
        atomic_write_json(req.split_file, split)
    return split


def make_split(num_items: int, val_fraction: float, seed: int,
               labels: Sequence[int] | None = None,
               test_fraction: float = 0.0) -> dict[str, list[int]]:
    """Sorted index lists ``train``, ``val`` (and ``test`` if test_fraction > 0)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(num_items)
    out: dict[str, list[int]] = {}
    strat = None if labels is None else np.asarray(labels)
    if test_fraction > 0:
        index, test = train_test_split(index, test_size=test_fraction, random_state=seed,
                                       stratify=strat)
        strat = None if strat is None else strat[index]
        out["test"] = sorted(int(i) for i in test)
    if val_fraction == 0:  # no validation split: train on all of it (the paper's protocol)
        return {"train": sorted(int(i) for i in index), "val": [], **out}
    _check_split_sizes(len(index), val_fraction, strat)
    train, val = train_test_split(index, test_size=val_fraction, random_state=seed,
                                  stratify=strat)
    return {"train": sorted(int(i) for i in train), "val": sorted(int(i) for i in val), **out}


def _check_split_sizes(n: int, val_fraction: float, labels: np.ndarray | None) -> None:
    """Both splits non-empty (and, when stratified, holding every class once): sklearn's
    own error for a tiny split is a traceback."""
    import math

    n_val = math.ceil(val_fraction * n)  # train_test_split's rounding of a float test_size
    need = 1 if labels is None else len(np.unique(labels))
    if n_val < need or n - n_val < need:
        what = "image" if need == 1 else f"image of each of the {need} classes"
        raise PartialFTError(f"val_fraction {val_fraction} splits {n} training images into "
                             f"{n - n_val} to train and {n_val} to validate, but each split needs "
                             f"at least one {what}; use a val_fraction between "
                             f"{need / n:.3g} and {1 - need / n:.3g}, or 0 for no validation.")


def load_split(path: Path, num_items: int) -> dict[str, Any]:
    """Read a split file and check it fits a dataset of ``num_items`` items."""
    try:
        split = json.loads(path.read_text())
        ok = (split.get("num_items") == num_items
              and all(0 <= int(i) < num_items for key in ("train", "val")
                      for i in split[key]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise PartialFTError(f"split file {path} does not fit this dataset of {num_items} items; "
                             "delete it or point split_file at the run's own split.json.")
    return split


def first_n(dataset: Dataset, n: int | None) -> Dataset:
    """Keep only the first ``n`` items (all when n is None)."""
    if n is None or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    if hasattr(dataset, "head"):
        return dataset.head(n)
    return Subset(dataset, list(range(n)))


def find_root(req: Request, marker: str, subdirs: Sequence[str], what: str) -> Path:
    """The first of data_dir, data_dir/SUBDIR... that contains ``marker``."""
    base = req.root()
    if base.name == marker and base.exists():  # pointed at the dataset's own folder
        return base.parent
    candidates = [base] + [base / s for s in subdirs]
    for cand in candidates:
        if (cand / marker).exists():
            return cand
    raise option_error(f"{what} not found: no {marker} in {base} or its subfolders "
                       f"{', '.join(subdirs)}; pass `data_dir=DIR|DIR` pointing to the dataset's "
                       "folder.")
