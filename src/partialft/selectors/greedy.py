"""SubTuning's greedy layer selection (Kaplun et al., 2023).

Start from the head alone; in each round briefly train every candidate set "chosen + one more
layer" from the base weights and keep the candidate with the best validation accuracy; stop when
the best gain is below ``epsilon`` percentage points or ``max_layers`` are chosen. The cost is
one short training per candidate per round, reported in the result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2

from partialft.core.layers import find_layers
from partialft.errors import PartialFTError
from partialft.methods import prepare
from partialft.selectors.task import SelectorResult, Task, load_task
from partialft.training.config import TrainConfig

UNITS = ("layer", "block")


def short_train(task: Task, layers: list[str], steps: int) -> float:
    """Train ``layers`` + head for ``steps`` steps from the base weights; return val accuracy.

    A deliberately small loop (constant AdamW learning rate, the run's augmentation and loss)
    instead of ``partialft.training.train``: each greedy candidate would otherwise pay for a run
    dir, an Accelerator and checkpoints, which would dominate the cost being measured.
    """
    cfg = task.cfg
    model = task.model()
    method = "layers" if layers else "linear"
    prepare(model, method, layer_spec=cfg.layer_spec, layers=layers or None)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model.train()
    done, epoch = 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # every candidate sees the same batches and augmentation
        while done < steps:
            for x, y in task.batches("train", cfg.batch_size, epoch=epoch, limit=steps - done):
                x, y = task.augment_train(x.to(task.device)), y.to(task.device)
                loss = criterion(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                done += 1
            epoch += 1
    return task.accuracy(model, "val")


def _candidates(task: Task, unit: str) -> list[list[str]]:
    """Candidate units in depth order: single layers, or all layers of one block."""
    if unit not in UNITS:
        raise PartialFTError(f"greedy unit {unit!r} is not valid; use {' or '.join(UNITS)}.")
    layer_map = find_layers(task.model(), task.cfg.layer_spec)
    if unit == "layer":
        return [[la.id] for la in layer_map.layers]
    blocks: dict[tuple[int, int], list[str]] = {}
    for la in layer_map.layers:
        blocks.setdefault((la.stage, la.index), []).append(la.id)
    return list(blocks.values())


def greedy_search(task: Task, *, steps: int, epsilon: float = 0.5, max_layers: int = 4,
                  unit: str = "layer") -> dict[str, Any]:
    """The greedy rounds; returns chosen layers, per-round history and the training count."""
    if steps < 1 or max_layers < 1:
        raise PartialFTError(f"greedy needs steps >= 1 and max_layers >= 1, got steps {steps} "
                             f"and max_layers {max_layers}.")
    pool = _candidates(task, unit)
    chosen: list[list[str]] = []
    current = short_train(task, [], steps)
    history: list[dict[str, Any]] = [{"round": 0, "added": None, "val_acc": current}]
    trainings, stop = 1, "max_layers"
    while len(chosen) < min(max_layers, len(pool)):
        flat = [i for c in chosen for i in c]
        tried = {tuple(c): short_train(task, flat + c, steps) for c in pool if c not in chosen}
        trainings += len(tried)
        best, acc = max(tried.items(), key=lambda kv: kv[1])
        if acc - current < epsilon:
            stop = f"gain {acc - current:.2f} < epsilon {epsilon}"
            break
        chosen.append(list(best))
        current = acc
        history.append({"round": len(chosen), "added": list(best), "val_acc": acc})
    else:
        stop = "max_layers" if len(chosen) >= max_layers else "no candidates left"
    return {"layers": [i for c in chosen for i in c], "history": history, "trainings": trainings,
            "stop": stop}


def greedy_selector(cfg: TrainConfig, out: Path, steps: int | None = None, epsilon: float = 0.5,
                    max_layers: int = 4, unit: str = "layer") -> SelectorResult:
    """SubTuning greedy search; ``steps`` per candidate training (default: one epoch)."""
    from partialft.training.loaders import Batches

    start = time.perf_counter()
    task = load_task(cfg)
    if steps is None:
        steps = Batches(len(task.data.train), cfg.batch_size, 1, cfg.seed, 0, 1).steps_per_epoch
    found = greedy_search(task, steps=steps, epsilon=epsilon, max_layers=max_layers, unit=unit)
    cost = {"trainings": found["trainings"], "steps": found["trainings"] * steps,
            "search_s": round(time.perf_counter() - start, 3)}
    info = {"history": found["history"], "stop": found["stop"], "epsilon": epsilon,
            "max_layers": max_layers, "unit": unit, "steps_per_training": steps}
    return SelectorResult("greedy", layers=found["layers"], cost=cost, info=info)
