"""Reading weights safely and checking they fit a model.

Files are told apart by their first bytes: safetensors, or PyTorch files read with
``torch.load(weights_only=True)`` (a pickle that would run code is refused). ``check_fits``
names missing, unexpected and mis-shaped tensors, and refuses quantized or non-finite weights
where floats are expected; ``file_digest`` records which exact file a run started from.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from partialft.errors import PartialFTError, check_input_file, first_items

StateDict = dict[str, torch.Tensor]


def load_state_dict_file(path: str | Path) -> StateDict:
    """Read tensors from a safetensors file, or a PyTorch file with ``weights_only=True``.

    The format is told from the file's first bytes, not its name. A pickle that would run code
    is refused; a truncated file gives a clear error.
    """
    path = Path(path)
    check_input_file(path, "checkpoint", "a .safetensors, .pth or .pt file")
    if _is_safetensors(path):
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise PartialFTError(f"checkpoint {path} is truncated or not a safetensors file "
                                 f"({exc}).") from None
    if path.suffix == ".safetensors":
        raise PartialFTError(f"checkpoint {path} is truncated or not a safetensors file (its "
                             "header is not a safetensors header).")
    return _unwrap(_torch_load(path), path)


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)`` of a file that starts as a PyTorch file does (a zip
    archive, or a legacy pickle); anything else is refused before torch parses it."""
    head = _head(path, 2)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise PartialFTError(f"checkpoint {path} is not a weights file (neither safetensors, "
                             "nor a PyTorch zip archive or pickle); pass a .safetensors, .pth "
                             "or .pt file of a state dict.")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_safe_globals()):
            warnings.simplefilter("ignore")  # torch warns about legacy files before refusing
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise PartialFTError(f"refused to load {path}: it is a pickle holding objects other "
                             "than tensors, which could run code; save it as safetensors or a "
                             "plain state dict.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        what = ("a zip archive but not a PyTorch checkpoint" if head[:2] == b"PK"
                and zipfile.is_zipfile(path) else "truncated or corrupt")
        raise PartialFTError(f"checkpoint {path} is {what} ({first_line(exc)}).") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler fails on damaged bytes with
        # KeyError, IndexError, struct.error... (each a traceback otherwise)
        raise PartialFTError(f"checkpoint {path} is truncated or corrupt "
                             f"({type(exc).__name__}: {first_line(exc)}).") from None


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _safe_globals() -> list[Any]:
    """The plain-data classes a timm ``train.py`` checkpoint holds besides tensors (its
    ``args`` namespace, a NumPy metric), allowed for ``weights_only`` loading: they hold values,
    not code. Nothing else is let through."""
    import argparse

    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core  # NumPy 2 renamed it
    scalar = core.multiarray.scalar
    return [argparse.Namespace, scalar, np.dtype, *{type(np.dtype(t)) for t in (
        "float64", "float32", "int64", "int32", "bool")}]


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with the little-endian length of its JSON header, then '{'."""
    head = _head(path, 9)
    return len(head) == 9 and head[8:9] == b"{"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def file_digest(path: str | Path) -> dict[str, Any]:
    """SHA-256 and size of a weights file (cached per path, size and modification time)."""
    stat = Path(path).stat()
    return {"sha256": _digest(str(path), stat.st_size, stat.st_mtime_ns), "bytes": stat.st_size}


def check_digest(path: str | Path, recorded: dict[str, Any], what: str) -> None:
    """Refuse weights that changed since a run recorded them."""
    check_input_file(Path(path), what, "the file the run started from")
    now = file_digest(path)
    if now["sha256"] != recorded.get("sha256"):
        then = f"{str(recorded.get('sha256'))[:12]}..., {recorded.get('bytes')} bytes"
        raise PartialFTError(f"{what} {path} changed since the run used it (SHA-256 {then} "
                             f"then; {now['sha256'][:12]}..., {now['bytes']} bytes now); restore "
                             "the original file or train the run again.")


def _unwrap(obj: object, path: Path) -> StateDict:
    """Accept a plain state dict or one nested under 'state_dict' (a timm train.py checkpoint,
    whose 'state_dict_ema' is not used), 'model' or 'module'."""
    for key in ("state_dict", "model", "module", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PartialFTError(f"checkpoint {path} holds no state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(model: nn.Module, state: StateDict, source: str = "checkpoint",
              reset_head: bool = True) -> list[str]:
    """Copy ``state`` into ``model``, checking names and shapes; returns skipped head keys.

    With ``reset_head`` a head of another size (other number of classes) is skipped and keeps
    its fresh initialisation, as timm does for pretrained weights.
    """
    skipped = check_fits(model, state, source, reset_head)
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def check_fits(model: nn.Module, state: StateDict, source: str = "checkpoint",
               reset_head: bool = True) -> list[str]:
    """Raise a clear error unless ``state`` fits ``model``; returns the head keys to skip.

    Works on a ``meta`` model too (shapes only), so a plan can check a checkpoint instantly.
    """
    own = model.state_dict()
    head = head_keys(model)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    skipped = [k for k in mismatched if reset_head and k in head]
    mismatched = [k for k in mismatched if k not in skipped]
    missing = [k for k in missing if not (reset_head and k in head)]
    if missing or extra or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {first_items(missing, 3)}")
        if extra:
            problems.append(f"unexpected {first_items(extra, 3)}")
        if mismatched:
            k = mismatched[0]
            problems.append(f"mis-shaped {k} ({tuple(state[k].shape)} vs the model's "
                            f"{tuple(own[k].shape)})")
        raise PartialFTError(f"{source} does not fit the model: {'; '.join(problems)}.")
    check_values(own, state, source)
    return skipped


def check_values(own: StateDict, state: StateDict, source: str) -> None:
    """Floating-point weights must come as finite floating-point tensors (no int8, no NaN)."""
    for key, value in state.items():
        if key not in own or not own[key].is_floating_point():
            continue
        if not value.is_floating_point():
            dtype = str(value.dtype).removeprefix("torch.")
            raise PartialFTError(f"{source} stores {key} as {dtype}, but the model's {key} is "
                                 "floating point; quantized weights cannot be fine-tuned, pass "
                                 "the float checkpoint.")
        if value.device.type != "meta" and not bool(value.isfinite().all()):
            raise PartialFTError(f"{source} holds NaN or infinite values in {key}, so training "
                                 "from it cannot work; pass a checkpoint with finite weights.")


def head_keys(model: nn.Module) -> set[str]:
    if not hasattr(model, "get_classifier"):
        return set()
    heads = model.get_classifier()
    heads = heads if isinstance(heads, (tuple, list)) else [heads]
    ids = {id(h) for h in heads}
    keys = set()
    for name, module in model.named_modules():
        if id(module) in ids:
            keys |= {f"{name}.{k}" for k in module.state_dict()}
    return keys
