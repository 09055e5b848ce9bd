"""Datasets by name, images and batches, in pipeline order:

- :mod:`~partialft.data.base`: splits (seeded, recorded), the shared request and result types;
- :mod:`~partialft.data.memory`: in-memory sets (CIFAR, Fashion-MNIST, digits, synthetic);
- :mod:`~partialft.data.files`: image-file sets (``folder:PATH``, CUB, NABirds, Flowers, Dogs,
  Cars) and their transforms;
- :mod:`~partialft.data.augment`: batch augmentation on the device, timm's RandAugment, the
  evaluation resize;
- :mod:`~partialft.data.datasets`: ``build_datasets(name, ...)``, the one entry point, and the
  model's preprocessing;
- :mod:`~partialft.data.corruptions`: ImageNet-C-style corruptions of raw images;
- :mod:`~partialft.data.fractal`: FractalDB-style images rendered on the fly (pretraining).

May import :mod:`partialft.core` and the helpers; not models, training or anything above. The
names below are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from partialft.utils.lazy import lazy_exports

if TYPE_CHECKING:  # the same names as _API, seen by type checkers as real attributes
    from partialft.data.augment import (
        AugmentConfig as AugmentConfig,
        BatchAugment as BatchAugment,
        EvalResize as EvalResize,
        parse_randaugment as parse_randaugment,
    )
    from partialft.data.base import (
        Datasets as Datasets,
        make_split as make_split,
    )
    from partialft.data.datasets import (
        DATASETS as DATASETS,
        PREPROCESS as PREPROCESS,
        build_datasets as build_datasets,
        dataset_names as dataset_names,
        known_classes as known_classes,
        resolve_preprocess as resolve_preprocess,
    )
    from partialft.data.files import (
        FileImageDataset as FileImageDataset,
        load_rgb as load_rgb,
    )
    from partialft.data.memory import (
        TensorImageDataset as TensorImageDataset,
        read_idx as read_idx,
    )

_API = {
    "AugmentConfig": "partialft.data.augment",
    "BatchAugment": "partialft.data.augment",
    "DATASETS": "partialft.data.datasets",
    "Datasets": "partialft.data.base",
    "EvalResize": "partialft.data.augment",
    "FileImageDataset": "partialft.data.files",
    "PREPROCESS": "partialft.data.datasets",
    "TensorImageDataset": "partialft.data.memory",
    "build_datasets": "partialft.data.datasets",
    "known_classes": "partialft.data.datasets",
    "dataset_names": "partialft.data.datasets",
    "load_rgb": "partialft.data.files",
    "make_split": "partialft.data.base",
    "parse_randaugment": "partialft.data.augment",
    "read_idx": "partialft.data.memory",
    "resolve_preprocess": "partialft.data.datasets",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
