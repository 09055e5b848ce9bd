"""Layer selectors beside the full-run fine-tuned angle, and the automatic easy/hard mode.

Every selector maps a :class:`~partialft.config.TrainConfig` (model, data, recipe) to a
:class:`SelectorResult`: per-layer scores that FAPFT's top-k per homogeneous group reads exactly
like angles (``select_layers(layer_map, "fapft", angles=scores, ...)``), or, for ``greedy``, the
layer list itself; plus what the selection cost (wall time, trainings, optimizer steps).

- ``angle``: fine-tuned angles of a complete full fine-tuning run (the paper's FAPFT).
- ``probe-angle``: angles after the same full fine-tuning schedule stopped early (paper Fig. 4b:
  rankings are stable across epochs).
- ``grad``: relative gradient norm ``||g_L|| / ||w_L||`` per layer, averaged over a few batches
  (Surgical Fine-Tuning's Auto-RGN), measured after fitting the new head on frozen features.
- ``greedy``: SubTuning's greedy search (:mod:`partialft.selectors_greedy`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from partialft.config import TrainConfig
from partialft.errors import PartialFTError, suggest
from partialft.layers import LayerMap, find_layers
from partialft.select import select_layers

# Chance-normalised linear-probe accuracy at or above which a task counts as easy (see auto_mode).
EASY_THRESHOLD = 0.855


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


# --- the data, base model and device a selector works on -------------------------------------

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
        from partialft.runs import base_model

        return base_model(self.base).to(self.device)

    def batches(self, split: str, batch_size: int, *, epoch: int = 0, limit: int | None = None,
                shuffle: bool = True):
        """Raw (x, y) batches of a split in the seeded order ``train`` uses."""
        from partialft.loaders import ShardedBatches, loader

        dataset = getattr(self.data, split)
        sampler = ShardedBatches(len(dataset), batch_size, seed=self.cfg.seed, epoch=epoch,
                                 shuffle=shuffle, drop_last=shuffle, limit=limit)
        return loader(dataset, sampler, self.cfg.workers)

    def accuracy(self, model: nn.Module, split: str = "val") -> float:
        """Top-1 accuracy (percent) with the trainer's own evaluate on one process."""
        from contextlib import nullcontext

        from partialft.loaders import evaluate

        one = SimpleNamespace(process_index=0, num_processes=1, device=self.device,
                              autocast=nullcontext, reduce=lambda t, reduction: t)
        return evaluate(model, getattr(self.data, split), self.augment_eval, one,
                        self.cfg.batch_size, self.cfg.workers)


def load_task(cfg: TrainConfig) -> Task:
    """Build the datasets, base recipe and augmenters exactly as ``partialft train`` does."""
    from partialft.models import create_model
    from partialft.train import augmenters, resolve_inputs

    cfg = dataclasses.replace(cfg)  # resolve_inputs fills in img_size, preprocessing, ...
    data, base = resolve_inputs(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.device("meta"):  # the augmenters need only the model's input channels
        shape = create_model(cfg.model, img_size=cfg.img_size)
    aug_train, aug_eval = augmenters(cfg, shape, device)
    return Task(cfg, data, base, device, aug_train, aug_eval)


# --- linear probe and the automatic mode -----------------------------------------------------

@torch.no_grad()  # not inference_mode: the probe's head trains on these features
def _features(task: Task, model: nn.Module, split: str, limit: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-logit features (N, D) and labels of up to ``limit`` images of a split."""
    model.eval()
    feats, labels, seen = [], [], 0
    for x, y in task.batches(split, task.cfg.batch_size, shuffle=False):
        x = task.augment_eval(x.to(task.device))
        feats.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
        labels.append(y.to(task.device))
        seen += len(y)
        if seen >= limit:
            break
    return torch.cat(feats)[:limit], torch.cat(labels)[:limit]


def linear_probe(task: Task, model: nn.Module, max_images: int = 2000, steps: int = 100
                 ) -> float:
    """Fit the model's classifier on frozen features (L-BFGS) in place; return val accuracy."""
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise PartialFTError(f"linear probe needs a linear classifier, but {task.cfg.model}'s "
                             f"is {type(head).__name__}; use --mode large or small.")
    x, y = _features(task, model, "train", max_images)
    xv, yv = _features(task, model, "val", max_images)
    with torch.enable_grad():
        head.requires_grad_(True)
        opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(head(x), y) + 1e-4 * head.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        return float(100.0 * (head(xv).argmax(-1) == yv).float().mean())


def auto_mode(probe_acc: float, num_classes: int, threshold: float = EASY_THRESHOLD
              ) -> tuple[str, str]:
    """``"small"`` (easy task) when the frozen features already solve it, else ``"large"``.

    The score is the linear-probe accuracy normalised between chance (0) and perfect (1). The
    threshold 0.855 is fitted (not calibrated) to the seven easy/hard labels the paper gives
    (Appendix B) with its own linear-probe numbers (Tables 1-2, ViT-B/16): easy CIFAR-100
    0.886, Flowers 0.979, Dogs 0.861; hard ImageNet 0.820, CUB 0.852, NABirds 0.759, Cars
    0.510. Anything in (0.852, 0.861] separates them; 0.855 is 0.003 from CUB.
    """
    if num_classes < 2:
        raise PartialFTError(f"auto mode needs at least 2 classes, got {num_classes}.")
    chance = 1.0 / num_classes
    score = (probe_acc / 100.0 - chance) / (1.0 - chance)
    mode = "small" if score >= threshold else "large"
    word = "easy" if mode == "small" else "hard"
    cmp = ">=" if mode == "small" else "<"
    reason = (f"linear probe {probe_acc:.1f}% on {num_classes} classes (chance "
              f"{100 * chance:.1f}%) -> normalised {score:.3f} {cmp} {threshold}: {word} task, "
              f"train the {'largest' if mode == 'large' else 'smallest'}-score layers")
    return mode, reason


def resolve_auto_mode(cfg: TrainConfig, task: Task | None = None) -> tuple[str, str, float]:
    """Linear-probe the base model on ``cfg``'s data: (mode, reason, seconds spent)."""
    start = time.perf_counter()
    task = task or load_task(cfg)
    acc = linear_probe(task, task.model())
    mode, reason = auto_mode(acc, task.data.num_classes)
    return mode, reason, time.perf_counter() - start


# --- selectors --------------------------------------------------------------------------------

Selector = Callable[..., SelectorResult]
SELECTORS: dict[str, Selector] = {}


def register(name: str) -> Callable[[Selector], Selector]:
    def deco(fn: Selector) -> Selector:
        SELECTORS[name] = fn
        return fn

    return deco


def run_selector(name: str, cfg: TrainConfig, out: str | Path, **options: Any
                 ) -> SelectorResult:
    """Run selector ``name`` for ``cfg``, working under ``out``; cost includes all its work."""
    if name not in SELECTORS:
        raise PartialFTError(f"unknown selector {name!r}{suggest(name, SELECTORS)}; valid "
                             f"selectors: {', '.join(SELECTORS)}.")
    start = time.perf_counter()
    result = SELECTORS[name](cfg, Path(out), **options)
    result.cost["wall_s"] = round(time.perf_counter() - start, 3)
    return result


def _angles_of_weights(task_base: dict[str, Any], finetuned: Mapping[str, torch.Tensor],
                       layer_spec: str | None) -> dict[str, float]:
    from partialft.angles import compute_angles
    from partialft.runs import base_model

    base = base_model(task_base)
    return compute_angles(base.state_dict(), finetuned, find_layers(base, layer_spec))


@register("angle")
def angle_selector(cfg: TrainConfig, out: Path, reference: str | None = None
                   ) -> SelectorResult:
    """Angles of a complete full fine-tuning run (``reference`` run dir, or trained here)."""
    from partialft.angles import compute_angles
    from partialft.runs import base_state, is_run_dir, load_run_model
    from partialft.train import train

    full = Path(reference) if reference else out / "full"
    steps = 0
    if not is_run_dir(full):
        summary = train(dataclasses.replace(cfg, method="full", out=str(full), max_steps=None),
                        resume=True, progress=False)
        steps = _steps_of(full) if summary else 0
    model, _ = load_run_model(full)
    scores = compute_angles(base_state(full), model.state_dict(),
                            find_layers(model, cfg.layer_spec))
    return SelectorResult("angle", scores=scores, cost={"trainings": int(steps > 0),
                                                        "steps": steps},
                          info={"reference": str(full)})


def _steps_of(run_dir: Path) -> int:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return int(json.loads(lines[-1])["step"]) if lines else 0


@register("probe-angle")
def probe_angle_selector(cfg: TrainConfig, out: Path, fraction: float = 0.2) -> SelectorResult:
    """Angles after the full fine-tuning schedule stopped at ``fraction`` of its steps."""
    from partialft.loaders import Batches
    from partialft.rundir import RunDir
    from partialft.train import train

    if not 0.0 < fraction <= 1.0:
        raise PartialFTError(f"probe fraction {fraction} is not valid; use a number in (0, 1].")
    task = load_task(cfg)
    per_epoch = Batches(len(task.data.train), cfg.batch_size, cfg.grad_accum, cfg.seed, 0,
                        1).steps_per_epoch
    steps = max(1, math.ceil(fraction * cfg.epochs * per_epoch))
    probe = dataclasses.replace(cfg, method="full", out=str(out / "probe"), max_steps=steps)
    train(probe, overwrite=True, progress=False)
    run = RunDir(out / "probe", resume=True)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):  # load_state restores the run's RNG states
            tensors, _ = run.load_state()
    finally:
        run.close()
        random.setstate(py_state)
        np.random.set_state(np_state)
    finetuned = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    scores = _angles_of_weights(task.base, finetuned, cfg.layer_spec)
    return SelectorResult("probe-angle", scores=scores,
                          cost={"trainings": 1, "steps": steps},
                          info={"fraction": fraction, "total_steps": cfg.epochs * per_epoch})


@register("grad")
def grad_selector(cfg: TrainConfig, out: Path, batches: int = 4, fit_head: bool = True
                  ) -> SelectorResult:
    """Mean over ``batches`` of ``||g_L|| / ||w_L||`` per layer (Auto-RGN), head fitted first."""
    task = load_task(cfg)
    model = task.model()
    probe_acc = linear_probe(task, model) if fit_head else None
    layer_map = find_layers(model, cfg.layer_spec)
    scores = relative_grad_norms(task, model, layer_map, batches)
    info = {"batches": batches, "fit_head": fit_head, "probe_acc": probe_acc}
    return SelectorResult("grad", scores=scores, cost={"trainings": 0, "steps": 0,
                                                       "backward_passes": batches}, info=info)


def relative_grad_norms(task: Task, model: nn.Module, layer_map: LayerMap, batches: int
                        ) -> dict[str, float]:
    """Per layer, the mean over ``batches`` training batches of ||grad|| / ||weight||."""
    if batches < 1:
        raise PartialFTError(f"grad batches {batches} is not valid; use 1 or more.")
    params = dict(model.named_parameters())
    model.train().requires_grad_(True)
    criterion = nn.CrossEntropyLoss(label_smoothing=task.cfg.label_smoothing)
    sums = dict.fromkeys((la.id for la in layer_map.layers), 0.0)
    seen = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(task.cfg.seed)
        for x, y in task.batches("train", task.cfg.batch_size, limit=batches):
            model.zero_grad(set_to_none=True)
            x, y = task.augment_train(x.to(task.device)), y.to(task.device)
            criterion(model(x), y).backward()
            for layer in layer_map.layers:
                ps = [params[n] for n in layer.param_names]
                g = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in ps
                                  if p.grad is not None))
                w = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in ps))
                sums[layer.id] += g / max(w, 1e-12)
            seen += 1
    model.zero_grad(set_to_none=True)
    return {k: v / seen for k, v in sums.items()}


def _register_greedy() -> None:
    from partialft.selectors_greedy import greedy_selector

    register("greedy")(greedy_selector)


_register_greedy()
