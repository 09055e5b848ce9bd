"""SHA-256 of model weights: the provenance check a delta is laid over its base with."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict: each tensor's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def frozen_sha256(state: dict[str, torch.Tensor], trained: Iterable[str]) -> str:
    """:func:`weights_sha256` of the base tensors a delta does not replace (``trained`` names
    the delta's): what base + delta depends on, so a new random head does not count."""
    trained = set(trained)
    return weights_sha256({k: v for k, v in state.items() if k not in trained})
