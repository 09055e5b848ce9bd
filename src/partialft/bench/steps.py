"""The bench's timing pieces: a synced timer, the hand-written reference step, AdamW flavour."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one call of ``fn``, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return 1000.0 * (time.perf_counter() - start)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


class PlainStep:
    """The hand-written reference step: forward, loss, backward, clip, AdamW step, zero_grad.

    Same model object, same loss and same optimizer implementation as the trainer, but no
    accelerate: ``torch.autocast`` directly, and the model's own forward (accelerate replaces
    ``forward`` with an autocast wrapper and keeps the original as ``_original_forward``).
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, amp: str,
                 grad_clip: float | None, optimizer_flags: dict[str, Any]) -> None:
        self.forward = getattr(model, "_original_forward", model)
        self.criterion, self.grad_clip = criterion, grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.05,
                                           **optimizer_flags)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.criterion(self.forward(x), y)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def optimizer_impl(s: Any) -> tuple[str, dict[str, Any]]:
    """How the setup's AdamW runs (fused, foreach, for-loop) and the flags to copy it."""
    inner = getattr(s.optimizer, "optimizer", s.optimizer)
    fused, foreach = inner.defaults.get("fused"), inner.defaults.get("foreach")
    if fused:
        return f"{type(inner).__name__} fused", {"fused": True}
    if foreach:
        return f"{type(inner).__name__} foreach", {"foreach": True}
    default = "foreach" if s.acc.device.type == "cuda" else "for-loop"
    return f"{type(inner).__name__} ({default}, torch default)", {}
