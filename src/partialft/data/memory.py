"""In-memory datasets stored as uint8 tensors at native resolution: CIFAR, Fashion-MNIST,
scikit-learn digits and a synthetic learnable set."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from partialft.data.base import Datasets, Request, holdout_split
from partialft.errors import PartialFTError, option_error
from partialft.utils.net import reachable, socket_timeout

FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DOWNLOAD_TIMEOUT_S = 60.0


class TensorImageDataset(Dataset):
    """Images (N, C, H, W) uint8 and labels (N,) int64 held in memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} "
                             "do not match")
        self.images = images.contiguous()
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def head(self, n: int) -> TensorImageDataset:
        """The first ``n`` items."""
        return TensorImageDataset(self.images[:n], self.labels[:n])

    def subset(self, index: list[int]) -> TensorImageDataset:
        """The items at ``index``."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return TensorImageDataset(self.images[idx], self.labels[idx])


def holdout(req: Request, full: TensorImageDataset, test: TensorImageDataset | None,
            classes: list[str]) -> Datasets:
    """Split ``full`` into train/val (VPT style, seeded, recorded in the split file)."""
    split = holdout_split(req, len(full))
    return Datasets(train=full.subset(split["train"]), val=full.subset(split["val"]), test=test,
                    num_classes=len(classes), classes=classes, in_memory=True, split=split)


# --- CIFAR ---------------------------------------------------------------------------------

def _torchvision_set(cls: type, root: Path, train: bool, download: bool, what: str) -> Any:
    """Construct a torchvision dataset, downloading only when the host answers quickly."""
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # files missing or corrupt
    url = getattr(cls, "url", None) or cls.mirrors[0]
    if not download:
        raise option_error(f"{what} files not found under {root}; pass `data_dir=DIR|DIR` with "
                           "the downloaded files or allow the download.")
    if not reachable(url):
        raise option_error(f"{what} is not under {root} and {url} cannot be reached (offline?); "
                           "download it elsewhere and pass `data_dir=DIR|DIR`.")
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            return cls(str(root), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise option_error(f"downloading {what} into {root} failed ({err}); download it "
                           "elsewhere and pass `data_dir=DIR|DIR`.") from None


def build_cifar(req: Request) -> Datasets:
    """CIFAR-10/100 via torchvision: official train split (minus a random val part) and test."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if req.name == "cifar10" else CIFAR100
    root = req.root()
    parts = [_torchvision_set(cls, root, t, req.download, req.name) for t in (True, False)]
    full, test = (_from_hwc(p.data, p.targets) for p in parts)
    return holdout(req, full, test, list(parts[0].classes))


def _from_hwc(data: np.ndarray, targets: list[int]) -> TensorImageDataset:
    images = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2)  # NHWC -> NCHW
    return TensorImageDataset(images, torch.as_tensor(targets))


# --- Fashion-MNIST -------------------------------------------------------------------------

def read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (uint8 data, optionally gzipped).

    Hand-written because torchvision's reader only opens uncompressed files, and Debian's
    dataset-fashion-mnist package ships the .gz files.
    """
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise PartialFTError(f"{path} is not an unsigned-byte idx file.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise PartialFTError(f"{path} is truncated: expected {shape}, got {data.size} bytes.")
    return torch.from_numpy(data.copy()).view(*shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(req: Request) -> Path | None:
    """The folder holding the four idx files: data_dir (or its FashionMNIST/raw), then Debian's."""
    bases = [req.root()] + ([] if req.data_dir is not None else list(FASHION_MNIST_DIRS))
    for base in bases:
        for folder in (base, base / "FashionMNIST" / "raw", base / "fashion-mnist"):
            if all(_idx_file(folder, s) for pair in FASHION_MNIST_FILES.values() for s in pair):
                return folder
    return None


def build_fashion_mnist(req: Request) -> Datasets:
    """Fashion-MNIST from idx files (Debian's package or torchvision's layout), else download."""
    from torchvision.datasets import FashionMNIST

    folder = find_fashion_mnist(req)
    if folder is None:
        sets = [_torchvision_set(FashionMNIST, req.root(), t, req.download, req.name)
                for t in (True, False)]
        pairs = [(s.data, s.targets) for s in sets]
    else:
        pairs = [(read_idx(_idx_file(folder, img)), read_idx(_idx_file(folder, lab)))
                 for img, lab in FASHION_MNIST_FILES.values()]
    full, test = (TensorImageDataset(x.unsqueeze(1), y.long()) for x, y in pairs)
    return holdout(req, full, test, list(FashionMNIST.classes))


# --- scikit-learn digits -------------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.2


def build_digits(req: Request) -> Datasets:
    """scikit-learn's 8x8 handwritten digits with a stratified, seeded train/val/test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))
    full = TensorImageDataset(images.unsqueeze(1), torch.from_numpy(bunch.target))
    split = holdout_split(req, len(full), labels=bunch.target.tolist(),
                          test_fraction=DIGITS_TEST_FRACTION)
    classes = [str(c) for c in bunch.target_names]
    return Datasets(train=full.subset(split["train"]), val=full.subset(split["val"]),
                    test=full.subset(split["test"]), num_classes=len(classes), classes=classes,
                    in_memory=True, split=split)


# --- synthetic -----------------------------------------------------------------------------

SYNTHETIC_SIZE = 16
SYNTHETIC_PER_CLASS = {"train": 24, "val": 8, "test": 8}


def build_synthetic(req: Request) -> Datasets:
    """A learnable toy set: per class a blocky colour pattern, per image Gaussian noise."""
    num_classes = _synthetic_classes(req.arg)
    gen = torch.Generator().manual_seed(req.seed)
    # class prototypes: 4x4 random colour blocks upsampled to 16x16 (C, H, W) in [40, 215]
    protos = torch.randint(40, 216, (num_classes, 3, 4, 4), generator=gen).float()
    protos = protos.repeat_interleave(SYNTHETIC_SIZE // 4, 2).repeat_interleave(
        SYNTHETIC_SIZE // 4, 3)
    splits = {}
    for name, per_class in SYNTHETIC_PER_CLASS.items():
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        labels = labels[torch.randperm(len(labels), generator=gen)]
        noise = torch.randn((len(labels), 3, SYNTHETIC_SIZE, SYNTHETIC_SIZE), generator=gen)
        images = (protos[labels] + 25.0 * noise).round().clamp(0, 255).to(torch.uint8)
        splits[name] = TensorImageDataset(images, labels)
    classes = [f"class{i}" for i in range(num_classes)]
    return Datasets(train=splits["train"], val=splits["val"], test=splits["test"],
                    num_classes=num_classes, classes=classes, in_memory=True)


def _synthetic_classes(arg: str | None) -> int:
    if arg is None:
        return 4
    if not arg.isdigit() or not 2 <= int(arg) <= 1000:
        raise PartialFTError(f"synthetic:{arg} is not valid; use synthetic:N with N classes "
                             "between 2 and 1000.")
    return int(arg)
