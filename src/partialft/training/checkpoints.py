"""Delta and full checkpoints (safetensors) and the run-dir layout every command shares.

A run dir holds::

    config.yaml          the resolved training config
    selection.json       the selection (method, layer ids, top-k, mode)
    metrics.jsonl        one JSON line per epoch
    summary.json         method, layers, trainable/total params, accuracies, wall time, device
    delta.safetensors    only the trained tensors + metadata naming the base model
    model.safetensors    optional full weights (--save-full)
    state/               resume state (trainable weights, optimizer, scheduler, RNG)
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from partialft.core.freeze import delta_names  # noqa: F401  (re-exported)
from partialft.errors import PartialFTError
from partialft.models import StateDict, load_state_dict_file
from partialft.utils.canonical import canonicalize
from partialft.utils.io import atomic_write

DELTA = "delta.safetensors"
FULL = "model.safetensors"
SUMMARY = "summary.json"


def save_tensors(path: str | Path, tensors: StateDict, metadata: dict[str, Any]) -> Path:
    """Atomically write ``tensors`` as safetensors; metadata values are stored as JSON strings
    (keys sorted). The same tensors and metadata give the same bytes (see
    :mod:`partialft.utils.canonical`), so files can be compared by hash."""
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in metadata.items()}
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(flat, str(tmp), metadata=meta)
        canonicalize(tmp)

    written = atomic_write(path, write)
    # save_file leaves ctypes reference cycles behind (~100 objects per tensor); free them while
    # they are young, or a run writing many resume points grows until a rare full collection
    # (benchmarks/soak.py, docs/reliability.md). A young-generation pass costs microseconds.
    gc.collect(1)
    return written


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a safetensors file, JSON values decoded."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise PartialFTError(f"{path} is truncated or not a safetensors file ({exc}).") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        except RecursionError:
            raise PartialFTError(f"{path} has damaged metadata: {key} is nested too deeply."
                                 ) from None
    return out


def trained_state(model: nn.Module, names: Iterable[str] | None = None) -> StateDict:
    """The tensors to keep in a delta: trainable parameters (or ``names``, which may also name
    buffers such as BatchNorm running statistics, see :func:`delta_names`)."""
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {n: tensors[n] for n in names}


def save_delta(path: str | Path, model: nn.Module, base: dict[str, Any],
               selection: dict[str, Any], names: Iterable[str] | None = None) -> Path:
    """Write only the trained tensors; ``base`` names the base model (name, num_classes, ...)."""
    return save_tensors(path, trained_state(model, names),
                        {"format": "partialft-delta", "base": base, "selection": selection})


def apply_delta(model: nn.Module, delta: StateDict) -> None:
    """Overwrite the model's tensors named in ``delta`` (base + delta = the fine-tuned model)."""
    own = model.state_dict()
    unknown = [k for k in delta if k not in own]
    if unknown:
        raise PartialFTError(f"the delta names tensors the model lacks ({unknown[:3]}); it was "
                             "trained on another base model.")
    bad = [k for k in delta if own[k].shape != delta[k].shape]
    if bad:
        raise PartialFTError(f"delta tensor {bad[0]} has shape {tuple(delta[bad[0]].shape)} but "
                             f"the model's is {tuple(own[bad[0]].shape)}.")
    with torch.no_grad():
        for key, value in delta.items():
            own[key].copy_(value)


def load_run_weights(run_dir: str | Path) -> tuple[StateDict, dict[str, Any]]:
    """The tensors a run trained and their metadata: the full model if saved, else the delta."""
    run_dir = Path(run_dir)
    for name in (FULL, DELTA):
        if (run_dir / name).is_file():
            return load_state_dict_file(run_dir / name), read_metadata(run_dir / name)
    raise PartialFTError(f"{run_dir} holds neither {DELTA} nor {FULL}; is it a finished "
                         "partialft run dir?")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json of a finished run, every field partialft reads checked
    (:func:`partialft.training.runfiles.read_summary`)."""
    from partialft.training.runfiles import read_summary as validated

    return validated(run_dir)
