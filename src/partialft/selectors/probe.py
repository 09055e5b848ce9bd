"""``--mode probe``: a linear probe of the base model's frozen features labels a task easy (train
the smallest-angle layers) or hard (the largest), before any run is built.

This is partialft's own heuristic, not the paper's (which gives no automatic rule): a threshold
fitted to seven linear-probe numbers of the paper's ViT-B/16. ``--mode auto``
(:func:`partialft.selectors.auto.choose_mode`) decides by validation pilots instead."""

from __future__ import annotations

import time

import torch
import torch.nn as nn

from partialft.errors import PartialFTError, option_error
from partialft.selectors.task import Task, load_task
from partialft.training.config import TrainConfig

# Chance-normalised linear-probe accuracy at or above which a task counts as easy (see probe_rule).
EASY_THRESHOLD = 0.855


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
                 ) -> float | None:
    """Fit the model's classifier on frozen features (L-BFGS) in place; return val accuracy
    (None when the task has no validation split)."""
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise option_error(f"linear probe needs a linear classifier, but {task.cfg.model}'s "
                           f"is {type(head).__name__}; use `mode=auto`, large or small.")
    x, y = _features(task, model, "train", max_images)
    empty = len(task.data.val) == 0  # val_fraction 0: the head is fitted, not scored
    xv, yv = (x[:0], y[:0]) if empty else _features(task, model, "val", max_images)
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
    if empty:  # nothing to score on (resolve_probe_mode refuses an empty validation split)
        return None
    with torch.no_grad():
        return float(100.0 * (head(xv).argmax(-1) == yv).float().mean())


def probe_rule(probe_acc: float, num_classes: int, threshold: float = EASY_THRESHOLD
              ) -> tuple[str, str]:
    """``"small"`` (easy task) when the frozen features already solve it, else ``"large"``.

    The score is the linear-probe accuracy normalised between chance (0) and perfect (1). The
    threshold 0.855 is fitted (not calibrated) to the seven easy/hard labels the paper gives
    (Appendix B) with its own linear-probe numbers (Tables 1-2, ViT-B/16): easy CIFAR-100
    0.886, Flowers 0.979, Dogs 0.861; hard ImageNet 0.820, CUB 0.852, NABirds 0.759, Cars
    0.510. Anything in (0.852, 0.861] separates them; 0.855 is 0.003 from CUB.
    """
    if num_classes < 2:
        raise PartialFTError(f"mode probe needs at least 2 classes, got {num_classes}.")
    chance = 1.0 / num_classes
    score = (probe_acc / 100.0 - chance) / (1.0 - chance)
    mode = "small" if score >= threshold else "large"
    word = "easy" if mode == "small" else "hard"
    cmp = ">=" if mode == "small" else "<"
    reason = (f"linear probe {probe_acc:.1f}% on {num_classes} classes (chance "
              f"{100 * chance:.1f}%) -> normalised {score:.3f} {cmp} {threshold}: {word} task, "
              f"train the {'largest' if mode == 'large' else 'smallest'}-score layers")
    return mode, reason


def resolve_probe_mode(cfg: TrainConfig, task: Task | None = None) -> tuple[str, str, float]:
    """Linear-probe the base model on ``cfg``'s data: (mode, reason, seconds spent)."""
    start = time.perf_counter()
    task = task or load_task(cfg)
    if len(task.data.val) == 0:  # the probe's accuracy would be measured on nothing
        raise option_error(f"mode probe scores a linear probe on the validation split, which is "
                           f"empty (val_fraction {cfg.val_fraction}); pass `val_fraction=0.1` "
                           "(or another share above 0), or `mode=auto`, large or small.")
    acc = linear_probe(task, task.model())
    mode, reason = probe_rule(acc, task.data.num_classes)
    return mode, reason, time.perf_counter() - start
