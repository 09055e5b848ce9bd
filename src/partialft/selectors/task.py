"""What every selector works on and returns: a config resolved into data, base model and
augmenters (:class:`Task`, built exactly as ``partialft train`` builds them), and the scores or
layers a selector found (:class:`SelectorResult`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn

from partialft.core.layermap import LayerMap
from partialft.core.select import parse_topk, select_layers
from partialft.training.config import TrainConfig


@dataclass
class SelectorResult:
    """Per-layer scores (higher = moved more / wants more adaptation) or a layer list, and cost."""

    selector: str
    scores: dict[str, float] | None = None
    layers: list[str] | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The scores file: ``{"angles": {id: score}, "selector": ..., "cost": ...}``."""
        out: dict[str, Any] = {"selector": self.selector}
        if self.scores is not None:
            out["angles"] = self.scores
        if self.layers is not None:
            out["layers"] = self.layers
        return {**out, "cost": self.cost, **self.info}

    def choose(self, layer_map: LayerMap, topk: Any = None, mode: str = "large") -> list[str]:
        """The layer ids to train: FAPFT top-k per group over the scores, or greedy's list."""
        if self.layers is not None:
            return list(self.layers)
        return list(select_layers(layer_map, "fapft", angles=self.scores, topk=topk,
                                  mode=mode).layers)

    def topk_used(self, layer_map: LayerMap, topk: Any = None, mode: str = "large"
                  ) -> list[int] | None:
        """The top-k per stage :meth:`choose` applies (the default when ``topk`` is None);
        None for greedy's list."""
        return None if self.layers is not None else parse_topk(topk, layer_map, mode)


@dataclass
class Task:
    """A TrainConfig resolved into data, the base-model recipe, augmenters and a device."""

    cfg: TrainConfig
    data: Any
    base: dict[str, Any]
    device: torch.device
    augment_train: nn.Module
    augment_eval: nn.Module

    def model(self) -> nn.Module:
        """A fresh copy of the base model (the same weights ``train`` starts from)."""
        from partialft.training.runs import base_model

        return base_model(self.base).to(self.device)

    def batches(self, split: str, batch_size: int, *, epoch: int = 0, limit: int | None = None,
                shuffle: bool = True):
        """Raw (x, y) batches of a split in the seeded order ``train`` uses."""
        from partialft.training.loaders import ShardedBatches, loader

        dataset = getattr(self.data, split)
        sampler = ShardedBatches(len(dataset), batch_size, seed=self.cfg.seed, epoch=epoch,
                                 shuffle=shuffle, drop_last=shuffle, limit=limit)
        return loader(dataset, sampler, self.cfg.workers)

    def accuracy(self, model: nn.Module, split: str = "val") -> float:
        """Top-1 accuracy (percent) with the trainer's own evaluate on one process."""
        from contextlib import nullcontext

        from partialft.training.loaders import evaluate

        one = SimpleNamespace(process_index=0, num_processes=1, device=self.device,
                              autocast=nullcontext, reduce=lambda t, reduction: t)
        return evaluate(model, getattr(self.data, split), self.augment_eval, one,
                        self.cfg.batch_size, self.cfg.workers)


def load_task(cfg: TrainConfig) -> Task:
    """Build the datasets, base recipe and augmenters exactly as ``partialft train`` does."""
    from partialft.models import create_model
    from partialft.training.setup import augmenters, resolve_inputs

    cfg = dataclasses.replace(cfg)  # resolve_inputs fills in img_size, preprocessing, ...
    data, base = resolve_inputs(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.device("meta"):  # the augmenters need only the model's input channels
        shape = create_model(cfg.model, img_size=cfg.img_size)
    aug_train, aug_eval = augmenters(cfg, shape, device)
    return Task(cfg, data, base, device, aug_train, aug_eval)
