"""Accuracy on clean and corrupted data, ImageNet-C mCE, ImageNet-A/R (paper Table 4).

Everything takes a model and a DataLoader of ``(images, labels)``; ``preprocess`` maps a raw
batch (uint8 or [0, 1] float, any size) to the model's normalized input. Corruptions are applied
to the raw batch on the CPU before ``preprocess`` (see :mod:`partialft.data.corruptions`).

ImageNet-A and ImageNet-R have 200 classes each; a 1000-class ImageNet model is scored on them
through the standard 200-class masks of the ImageNet-1K logits. The masks and wnid lists are the
ones timm ships (``timm/data/_info/imagenet_{a,r}_{indices,synsets}.txt``, identical to the
``indices_in_1k`` lists published with both datasets); :func:`imagenet_subset` reads them.
"""

from __future__ import annotations

import hashlib
import pkgutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from partialft.data.corruptions import corrupt_batch, corruption_errors, mce
from partialft.errors import PartialFTError, first_items, option_error
from partialft.utils.io import atomic_write_json

Preprocess = Callable[[torch.Tensor], torch.Tensor]
EVAL = "eval.json"


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable, preprocess: Preprocess | None = None,
             device: str | torch.device = "cpu", class_indices: list[int] | None = None,
             corrupt: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` over ``loader``.

    ``class_indices`` restricts the logits to those classes (label i = class_indices[i]);
    ``corrupt(raw_batch, batch_index)`` transforms each raw batch before ``preprocess``.
    """
    model.eval()
    correct = total = 0
    for i, (images, labels) in enumerate(loader):
        if corrupt is not None:
            images = corrupt(images, i)
        images = images.to(device)
        x = preprocess(images) if preprocess is not None else images
        logits = model(x)
        if class_indices is not None:
            logits = logits[:, class_indices]
        correct += int((logits.argmax(-1).cpu() == labels).sum())
        total += len(labels)
    if total == 0:
        raise option_error("the evaluation data is empty; check `dataset` and `data_dir`.")
    return 100.0 * correct / total


def corruption_eval(model: nn.Module, loader: Iterable, names: list[str],
                    severities: list[int], preprocess: Preprocess | None = None,
                    device: str | torch.device = "cpu", seed: int = 0,
                    clean_acc: float | None = None, progress: bool = False) -> dict[str, Any]:
    """Error (%) for every corruption and severity, generated on the fly; plus their means.

    With ``clean_acc``, also the relative corruption error: the mean corruption error minus the
    model's own clean error. The AlexNet-normalised mCE is added only where it means what
    Hendrycks & Dietterich define: the 15 benchmark corruptions x severities 1-5 on a 1000-class
    (ImageNet-1K) model; on any other task it would compare with AlexNet on another dataset.
    """
    from tqdm.auto import tqdm

    errors: dict[str, dict[int, float]] = {}
    cells = [(ci, name, sev) for ci, name in enumerate(names) for sev in severities]
    # disable=None: a bar only on a terminal, nothing in a redirected log
    for ci, name, sev in tqdm(cells, desc="corruptions", unit="pass",
                              disable=None if progress else True):
        base_seed = seed + 100_003 * ci + 1009 * sev

        def corrupt(images: torch.Tensor, i: int, name: str = name, sev: int = sev,
                    base_seed: int = base_seed) -> torch.Tensor:
            return corrupt_batch(images, name, sev, seed=base_seed + i)

        errors.setdefault(name, {})[sev] = 100.0 - accuracy(model, loader, preprocess, device,
                                                            corrupt=corrupt)
    result = {"severities": severities, "errors": _str_keys(errors),
              **corruption_errors(errors)}
    if clean_acc is not None:
        result["relative_corruption_error"] = result["mean_corruption_error"] - (100 - clean_acc)
    if imagenet_c_protocol(errors, getattr(model, "num_classes", None)):
        result["mce_vs_alexnet"] = mce(errors)
    return result


def imagenet_c_protocol(errors: dict[str, dict[int, float]], num_classes: int | None) -> bool:
    """True for ImageNet-C's 15 benchmark corruptions x 5 severities on a 1000-class model."""
    from partialft.data.corruptions import BENCHMARK

    return num_classes == 1000 and all(sorted(errors.get(n, {})) == [1, 2, 3, 4, 5]
                                       for n in BENCHMARK)


def _str_keys(errors: dict[str, dict[int, float]]) -> dict[str, dict[str, float]]:
    return {n: {str(s): e for s, e in by.items()} for n, by in errors.items()}


# --- ImageNet-A / -R / -C folders --------------------------------------------------------------

def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1K wnids in class-index order (timm's list)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def imagenet_subset(name: str) -> tuple[list[int], list[str]]:
    """(1K class indices, wnids) of the 200-class subset ``imagenet-a`` or ``imagenet-r``."""
    key = {"imagenet-a": "a", "imagenet-r": "r"}.get(name)
    if key is None:
        raise PartialFTError(f"{name!r} has no 200-class subset; use imagenet-a or imagenet-r.")

    def read(kind: str) -> list[str]:
        data = pkgutil.get_data("timm.data", f"_info/imagenet_{key}_{kind}.txt")
        return (data or b"").decode().split()

    indices, wnids = [int(i) for i in read("indices")], read("synsets")
    if len(indices) != 200 or len(wnids) != 200:
        raise PartialFTError(f"timm's {name} class list is incomplete; reinstall timm.")
    return indices, wnids


def wnid_folder(root: str | Path, wnids: list[str], transform: Callable | None
                ) -> torch.utils.data.Dataset:
    """``root/<wnid>/<image>`` as a Dataset labelled by each wnid's position in ``wnids``."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise PartialFTError(f"{root} is not a directory of <wnid>/<image> folders.")
    folder = ImageFolder(str(root), transform=transform)
    position = {w: i for i, w in enumerate(wnids)}
    unknown = [c for c in folder.classes if c not in position]
    if unknown:
        what = f"{root} has class folders that are not expected wnids ({first_items(unknown, 3)})"
        raise PartialFTError(f"{what}; point root at the dataset root.",
                             cli=f"{what}; point --data-dir at the dataset root.")
    remap = [position[c] for c in folder.classes]
    folder.target_transform = remap.__getitem__
    return folder


def eval_transform(model: nn.Module, crop_pct: float | None = None) -> Callable:
    """timm's evaluation transform for ``model`` (resize, center crop, normalize)."""
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config(model=model)
    if crop_pct is not None:
        cfg["crop_pct"] = crop_pct
    return create_transform(**cfg, is_training=False)


def _check_1k(model: nn.Module, dataset: str) -> None:
    n = getattr(model, "num_classes", None)
    if n != 1000:
        raise PartialFTError(f"{dataset} scores ImageNet-1K predictions but the model has {n} "
                             "classes; evaluate a run fine-tuned on ImageNet-1K.")


def imagenet_ar_eval(model: nn.Module, root: str | Path, name: str,
                     device: str | torch.device = "cpu", batch_size: int = 64,
                     num_workers: int = 0) -> dict[str, Any]:
    """Top-1 accuracy (%) on ImageNet-A or -R through the 200-class logit mask."""
    _check_1k(model, name)
    indices, wnids = imagenet_subset(name)
    data = wnid_folder(root, wnids, eval_transform(model))
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    acc = accuracy(model, loader, device=device, class_indices=indices)
    return {"acc": acc, "images": len(data), "classes": len(data.classes)}


def imagenet_c_eval(model: nn.Module, root: str | Path, names: list[str] | None = None,
                    severities: list[int] | None = None, device: str | torch.device = "cpu",
                    batch_size: int = 64, num_workers: int = 0) -> dict[str, Any]:
    """Errors on ``root/<corruption>/<severity>/<wnid>/<image>`` and mCE vs AlexNet."""
    _check_1k(model, "imagenet-c")
    root = Path(root)
    present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not present:
        what = f"{root} holds no <corruption>/<severity>/<wnid>/ folders"
        raise PartialFTError(f"{what}; point root at the ImageNet-C root.",
                             cli=f"{what}; point --data-dir at the ImageNet-C root.")
    missing = sorted(set(names or []) - set(present))
    names = [n for n in (names or present) if n in present]
    transform, wnids = eval_transform(model, crop_pct=1.0), imagenet_wnids()
    errors: dict[str, dict[int, float]] = {}
    for name in names:
        for sev in severities or [1, 2, 3, 4, 5]:
            folder = root / name / str(sev)
            if not folder.is_dir():
                continue
            loader = DataLoader(wnid_folder(folder, wnids, transform), batch_size=batch_size,
                                num_workers=num_workers)
            errors.setdefault(name, {})[sev] = 100.0 - accuracy(model, loader, device=device)
    if not errors:
        raise PartialFTError(f"{root} has none of the requested corruptions/severities.")
    result = {"errors": _str_keys(errors), **corruption_errors(errors), "missing": missing}
    if imagenet_c_protocol(errors, 1000):  # _check_1k made sure of the model
        result["mce_vs_alexnet"] = mce(errors)
    return result


def eval_key(dataset: str, split: str = "test", max_images: int | None = None,
             corruptions: str | None = None, severities: str | None = None,
             seed: int | None = None) -> str:
    """The name of one evaluation in eval.json: what was evaluated, so that evaluations of
    different subsets, corruption sets, severities or seeds are kept side by side."""
    key = dataset if split == "test" else f"{dataset}:{split}"
    if max_images:
        key += f" first {max_images}"
    if corruptions:
        key += f" corruptions {corruptions} severities {severities} seed {seed}"
    return key


# seconds an evaluation waits for another process's hold on the run dir (another eval's
# eval.json update takes milliseconds; a training holds it for its whole run)
LOCK_WAIT_S = 30.0


def run_identity(run_dir: str | Path) -> str:
    """SHA-256 over the run's delta.safetensors and summary.json: it changes when the run is
    replaced (``train --overwrite``), so an evaluation of the old model is never recorded in
    the new run."""
    digest = hashlib.sha256()
    for name in ("delta.safetensors", "summary.json"):
        try:
            with open(Path(run_dir) / name, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError:
            digest.update(b"missing " + name.encode())
    return digest.hexdigest()


def save_eval(run_dir: str | Path, key: str, result: dict[str, Any],
              identity: str | None = None) -> Path:
    """Record ``result`` in ``run_dir/eval.json`` under ``key`` (atomic write).

    ``key`` names exactly what was evaluated (:func:`eval_key`): only the same evaluation run
    again replaces an entry; any other is added beside it. The read-modify-write holds the run
    dir's exclusive lock (waiting up to :data:`LOCK_WAIT_S`), so two evaluations finishing at
    once both keep their result; with ``identity`` (:func:`run_identity` when the model was
    loaded) it refuses a run that was replaced in the meantime.
    """
    from partialft.training.locks import acquire
    from partialft.training.runfiles import read_evals
    from partialft.utils.io import remove_stale_tmp_of

    path = Path(run_dir) / EVAL
    with acquire(run_dir, wait=LOCK_WAIT_S, advice="wait for it to finish, then evaluate "
                 "again."):
        if identity is not None and run_identity(run_dir) != identity:
            raise PartialFTError(f"run dir {run_dir} was replaced while it was being evaluated "
                                 "(trained again?), so this result is not recorded; evaluate "
                                 "it again.")
        data = read_evals(run_dir)  # checked: a damaged eval.json is named, never overwritten
        data[key] = result
        remove_stale_tmp_of(path)  # an evaluation killed in its write left one
        return atomic_write_json(path, data)
