"""A delta's metadata checked as input: it names the base model, sizes, a checkpoint path and
timm arguments, and a delta copied in from elsewhere (or edited) must not make partialft
allocate a terabyte, read an arbitrary file, or lay one run's tensors under another's summary.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError

# the fields of a delta's ``base`` metadata and the JSON types each may have
BASE_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "num_classes": (int, type(None)), "pretrained": (bool,),
    "checkpoint": (str, type(None)), "img_size": (int, type(None)),
    "layer_spec": (str, type(None)), "init_seed": (int,), "checkpoint_file": (dict,),
    "model_kwargs": (dict,), "pretrained_tag": (str, type(None)), "weights_sha256": (str,),
    "model_file": (dict,),
    "frozen_sha256": (str,),
}
# sizes a delta may ask a model to be built with (beyond them a model does not fit in memory)
MAX_IMG_SIZE = 4096
MAX_CLASSES = 100_000
MAX_OPTION = 65_536  # a number in model kwargs or baseline options (rank, dim, depth...)
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# timm arguments that would make a rebuild load other files or weights: never from metadata
FORBIDDEN_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                    "cache_dir", "num_classes", "img_size", "features_only")
_SHA = re.compile(r"[0-9a-f]{64}")


def _bad(path: Path, what: str) -> PartialFTError:
    return PartialFTError(f"{path} has damaged metadata: {what}; the delta cannot be used.")


def _show(value: Any) -> str:
    return json.dumps(value, default=str)[:60]


def check_base(base: Any, path: Path) -> None:
    """Metadata is read from a file someone may have edited: check it before using it."""
    if not isinstance(base, dict) or not isinstance(base.get("model"), str):
        raise _bad(path, f"'base' must be a mapping that names the model, not {_show(base)}")
    unknown = sorted(set(base) - set(BASE_TYPES))
    if unknown:
        raise _bad(path, f"base has the unknown field {unknown[0]!r}")
    for key, kinds in BASE_TYPES.items():
        value = base.get(key)
        ok = key not in base or (isinstance(value, kinds) and
                                 not (isinstance(value, bool) and bool not in kinds))
        if not ok:
            raise _bad(path, f"base {key} is {_show(value)}, not "
                       f"{' or '.join(k.__name__ for k in kinds)}")
    _check_range(base, "img_size", 1, MAX_IMG_SIZE, path)
    _check_range(base, "num_classes", 1, MAX_CLASSES, path)
    _check_range(base, "init_seed", 0, 2**64 - 1, path)
    for key in ("weights_sha256", "frozen_sha256"):
        if key in base and not _SHA.fullmatch(base[key]):
            raise _bad(path, f"base {key} {_show(base[key])} is not a SHA-256")
    check_model_kwargs(base.get("model_kwargs") or {}, path)
    _check_checkpoint(base, path)
    _check_local_dir(base, path)


def _check_range(base: dict[str, Any], key: str, low: int, high: int, path: Path) -> None:
    value = base.get(key)
    if value is not None and not low <= value <= high:
        raise _bad(path, f"base {key} {value} is outside {low}..{high}")


def check_model_kwargs(kwargs: dict[str, Any], path: Path) -> None:
    """timm arguments from metadata: plain names with small scalar (or list) values only."""
    for key, value in kwargs.items():
        if not key.isidentifier() or key in FORBIDDEN_KWARGS:
            raise _bad(path, f"model_kwargs {key!r} is not an argument a run may record")
        values = value if isinstance(value, list) else [value]
        for item in values:
            ok = (item is None or isinstance(item, bool)
                  or (isinstance(item, str) and len(item) <= 64)
                  or (isinstance(item, (int, float)) and math.isfinite(item)
                      and abs(item) <= MAX_OPTION))
            if ok and key.endswith("_rate") and not isinstance(item, bool):
                ok = isinstance(item, (int, float)) and 0 <= item < 1
            if not ok:
                raise _bad(path, f"model_kwargs {key} is {_show(value)}, not a small number, "
                           "flag or name")


def _check_checkpoint(base: dict[str, Any], path: Path) -> None:
    """A checkpoint path is trusted only as partialft records it: an absolute path to a
    weights file, with the SHA-256 and size it had (checked before the file is read)."""
    checkpoint = base.get("checkpoint")
    if not checkpoint:
        return
    record = base.get("checkpoint_file")
    if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
            and _SHA.fullmatch(record["sha256"]) and isinstance(record.get("bytes"), int)):
        raise _bad(path, f"base checkpoint {_show(checkpoint)} comes without the SHA-256 "
                   "partialft records with it")
    if not checkpoint.lower().endswith(CHECKPOINT_SUFFIXES):
        raise _bad(path, f"base checkpoint {_show(checkpoint)} is not a weights file "
                   f"({', '.join(CHECKPOINT_SUFFIXES)})")


def _check_local_dir(base: dict[str, Any], path: Path) -> None:
    """A ``local-dir:`` base with pretrained weights is read only with the SHA-256 and size its
    weights file had (checked before the file is read), at an absolute path."""
    model = base["model"]
    if not model.startswith("local-dir:") or not base.get("pretrained") or base.get("checkpoint"):
        return
    if not Path(model.removeprefix("local-dir:")).is_absolute():
        raise _bad(path, f"base model {_show(model)} is not an absolute folder path")
    if not _digest_record(base.get("model_file")):
        raise _bad(path, f"base model {_show(model)} comes without the SHA-256 of its weights "
                   "file that partialft records with it")


def _digest_record(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("sha256"), str)
            and bool(_SHA.fullmatch(record["sha256"])) and isinstance(record.get("bytes"), int))


def check_selection(selection: Any, path: Path) -> dict[str, Any]:
    """The delta's selection: method, layer ids and a baseline's (small) options."""
    if selection is None:
        return {}
    if not isinstance(selection, dict):
        raise _bad(path, f"'selection' must be a mapping, not {_show(selection)}")
    if "method" in selection and not isinstance(selection["method"], str):
        raise _bad(path, f"selection method is {_show(selection['method'])}, not a name")
    layers = selection.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(la, str) for la in layers):
        raise _bad(path, f"selection layers is {_show(layers)}, not a list of layer ids")
    for key, value in selection.items():
        if key in ("method", "layers"):
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            big = (isinstance(item, (int, float)) and not isinstance(item, bool)
                   and not (math.isfinite(item) and abs(item) <= MAX_OPTION))
            if big or isinstance(item, dict):
                raise _bad(path, f"selection {key} is {_show(value)}, not a small number, "
                           "flag or name")
    return selection
