"""Image-file datasets read with PIL: ImageFolder trees and the FGVC benchmarks (CUB-200-2011,
NABirds, Oxford Flowers 102, Stanford Dogs, Stanford Cars) from their standard layouts."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset

from partialft.data.base import Datasets, Request, find_root, holdout_split
from partialft.errors import PartialFTError, option_error

Transform = Callable[[Image.Image], torch.Tensor]


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB; an unreadable file raises a PartialFTError naming it.

    A decompression bomb (more pixels than PIL's ``Image.MAX_IMAGE_PIXELS``, which PIL only
    warns about up to twice that) is refused before it is decoded: one such file in a folder
    would otherwise take gigabytes per loader worker.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PartialFTError(f"image file {path} is a decompression bomb (more than "
                             f"{Image.MAX_IMAGE_PIXELS} pixels); replace or remove it.") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        reason = str(err).strip() or type(err).__name__
        raise PartialFTError(f"image file {path} cannot be read ({reason}); replace or remove "
                             "it.") from None


def image_transforms(img_size: int, augment: Any = None, crop_pct: float = 1.0,
                     interpolation: str = "bilinear") -> tuple[Transform, Transform]:
    """(train, eval) PIL -> float tensor in [0, 1] of size img_size (timm's transforms).

    Eval is :class:`EvalResize`, the same function BatchAugment applies to in-memory batches,
    so a folder of images and the same images in memory reach the model identically.
    """
    from timm.data import create_transform
    from torchvision.transforms import v2

    from partialft.data.augment import EvalResize

    scale = tuple(getattr(augment, "crop_scale", (0.08, 1.0)))
    hflip = float(getattr(augment, "hflip", 0.5))
    # scale (1, 1) with ratio (1, 1) falls back to a centred square crop: no random crop
    ratio = (1.0, 1.0) if scale[0] >= 1.0 else (3 / 4, 4 / 3)
    to_float = v2.ToDtype(torch.float32, scale=True)
    train = create_transform(img_size, is_training=True, scale=scale, ratio=ratio, hflip=hflip,
                             color_jitter=_jitter(augment), normalize=False)
    return v2.Compose([train, to_float]), EvalResize(img_size, crop_pct, interpolation)


def _jitter(augment: Any) -> float | None:
    """timm's colour jitter for the loader, off with RandAugment (which BatchAugment runs)."""
    cj = float(getattr(augment, "color_jitter", 0.0) or 0.0)
    return cj if cj > 0 and not getattr(augment, "randaugment", None) else None


def request_transforms(req: Request) -> tuple[Transform, Transform]:
    """:func:`image_transforms` for a build request."""
    return image_transforms(req.img_size, req.augment, req.crop_pct, req.interpolation)


class FileImageDataset(Dataset):
    """(path, label) samples loaded with PIL and transformed to a CxHxW tensor."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(load_rgb(path)), int(label)


def split_sets(req: Request, make: Callable[[Transform], Dataset], test: Dataset | None,
               classes: list[str]) -> Datasets:
    """Random (seeded, recorded) val part of the official train split; the test split as is."""
    train_tf, eval_tf = request_transforms(req)
    train_aug, train_eval = make(train_tf), make(eval_tf)
    split = holdout_split(req, len(train_aug))
    return Datasets(train=Subset(train_aug, split["train"]), val=Subset(train_eval, split["val"]),
                    test=test, num_classes=len(classes), classes=classes, in_memory=False,
                    split=split)


def _check_samples(samples: Sequence[tuple[Path, int]], what: str, where: Path) -> None:
    if not samples:
        raise PartialFTError(f"{what} under {where} lists no images; check the dataset files.")
    missing = [p for p, _ in samples if not Path(p).is_file()]
    if missing:
        raise PartialFTError(f"{what}: image {missing[0]} is missing ({len(missing)} missing in "
                             f"all); re-extract the dataset under {where}.")


# --- folder:PATH ---------------------------------------------------------------------------

def build_folder(req: Request) -> Datasets:
    """An ImageFolder tree: PATH/train/CLASS/*.jpg, PATH/val/CLASS/*, optional PATH/test/."""
    root = Path(req.arg or "").expanduser()
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise PartialFTError(f"folder dataset {root} has no {sub}/ subfolder; use "
                                 "folder:PATH with PATH/train/CLASS/* and PATH/val/CLASS/*.")
    train_tf, eval_tf = request_transforms(req)
    train = _image_folder(root / "train", train_tf)
    val = _image_folder(root / "val", eval_tf, train.classes)
    test = _image_folder(root / "test", eval_tf, train.classes) if (root / "test").is_dir() \
        else None
    return Datasets(train=train, val=val, test=test, num_classes=len(train.classes),
                    classes=list(train.classes), in_memory=False)


def _image_folder(path: Path, transform: Transform, classes: list[str] | None = None) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(path), transform=transform, loader=load_rgb)
    except FileNotFoundError as err:
        raise PartialFTError(f"image folder {path} is not usable ({err}).") from None
    if classes is not None and ds.classes != classes:
        raise PartialFTError(f"image folder {path} has classes {ds.classes[:5]}... but train/ has "
                             f"{classes[:5]}...; every split needs the same class folders.")
    return ds


# --- CUB-200-2011 and NABirds (images.txt, image_class_labels.txt, train_test_split.txt) -----

def _read_table(path: Path) -> dict[str, str]:
    """``id value`` per line -> {id: value} (value may contain spaces)."""
    rows = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {r[0]: r[1].strip() for r in rows if len(r) == 2}


def read_cub_style(root: Path) -> tuple[list, list, list[str]]:
    """(train samples, test samples, class names) of a CUB/NABirds-style folder."""
    paths = _read_table(root / "images.txt")
    labels = _read_table(root / "image_class_labels.txt")
    is_train = _read_table(root / "train_test_split.txt")
    names = _read_table(root / "classes.txt") if (root / "classes.txt").is_file() else {}
    class_ids = sorted({int(v) for v in labels.values()})  # NABirds ids are not contiguous
    index = {cid: i for i, cid in enumerate(class_ids)}
    samples: dict[bool, list] = {True: [], False: []}
    for image_id, rel in paths.items():
        if image_id not in labels or image_id not in is_train:
            raise PartialFTError(f"image id {image_id} of {root / 'images.txt'} has no label or "
                                 "train/test flag; the dataset files do not match.")
        samples[is_train[image_id] == "1"].append((root / "images" / rel,
                                                   index[int(labels[image_id])]))
    classes = [names.get(str(c), str(c)) for c in class_ids]
    return samples[True], samples[False], classes


def build_cub_style(req: Request) -> Datasets:
    """CUB-200-2011 (``cub``) or NABirds (``nabirds``)."""
    subdirs = {"cub": ("CUB_200_2011", "CUB_200_2011/CUB_200_2011", "cub"),
               "nabirds": ("nabirds", "NABirds")}[req.name]
    root = find_root(req, "images.txt", subdirs, req.name)
    train, test, classes = read_cub_style(root)
    return _sample_sets(req, train, test, classes, root)


def _sample_sets(req: Request, train: list, test: list, classes: list[str],
                 root: Path) -> Datasets:
    _check_samples(train, f"{req.name} train split", root)
    _check_samples(test, f"{req.name} test split", root)
    _, eval_tf = request_transforms(req)
    return split_sets(req, lambda tf: FileImageDataset(train, tf),
                      FileImageDataset(test, eval_tf), classes)


# --- Stanford Dogs (Images/, lists/train_list.mat, lists/test_list.mat) ---------------------

def build_dogs(req: Request) -> Datasets:
    """Stanford Dogs: the official train/test lists, a random val part of train."""
    from scipy.io import loadmat

    root = find_root(req, "Images", ("stanford_dogs", "StanfordDogs", "Stanford_Dogs"), "dogs")
    lists = root / "lists" if (root / "lists" / "train_list.mat").is_file() else root
    parts = []
    for name in ("train_list.mat", "test_list.mat"):
        if not (lists / name).is_file():
            raise PartialFTError(f"Stanford Dogs list {lists / name} is missing; put "
                                 "train_list.mat and test_list.mat in lists/ next to Images/.")
        mat = loadmat(str(lists / name), squeeze_me=True)
        files = [str(f) for f in mat["file_list"]]
        parts.append([(root / "Images" / f, int(y) - 1) for f, y in zip(files, mat["labels"])])
    # class names from the folder names "n02085620-Chihuahua", in label order
    names = {y: Path(p).parent.name.split("-", 1)[-1] for p, y in parts[0] + parts[1]}
    classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
    return _sample_sets(req, parts[0], parts[1], classes, root)


# --- Oxford Flowers 102 and Stanford Cars (torchvision readers, download=False) --------------

def build_flowers(req: Request) -> Datasets:
    """Oxford Flowers 102 via torchvision: the official train/val/test split (setid.mat)."""
    from torchvision.datasets import Flowers102

    base = find_root(req, "flowers-102", ("flowers", "oxford_flowers"), "flowers")
    train_tf, eval_tf = request_transforms(req)
    sets = [_tv(Flowers102, base, split, tf, "flowers-102/ (jpg/, imagelabels.mat, setid.mat)")
            for split, tf in (("train", train_tf), ("val", eval_tf), ("test", eval_tf))]
    return Datasets(train=sets[0], val=sets[1], test=sets[2], num_classes=102,
                    classes=list(Flowers102.classes), in_memory=False)


def build_cars(req: Request) -> Datasets:
    """Stanford Cars via torchvision (devkit .mat files): a random val part of train."""
    from torchvision.datasets import StanfordCars

    base = find_root(req, "stanford_cars", ("cars",), "cars")
    what = "stanford_cars/ (devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat)"
    _, eval_tf = request_transforms(req)
    test = _tv(StanfordCars, base, "test", eval_tf, what)
    return split_sets(req, lambda tf: _tv(StanfordCars, base, "train", tf, what), test,
                      list(test.classes))


def _tv(cls: type, base: Path, split: str, transform: Transform, what: str) -> Any:
    try:
        return cls(str(base), split=split, transform=transform, download=False, loader=load_rgb)
    except (RuntimeError, OSError, KeyError, ValueError) as err:
        raise option_error(f"{cls.__name__} files under {base} are missing or corrupt ({err}); "
                           f"`data_dir` must hold {what}.") from None
