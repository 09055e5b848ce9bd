"""The training loop, top to bottom, with resume points that reproduce an uninterrupted run."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from partialft.errors import option_error
from partialft.training.checkpoints import delta_names
from partialft.training.loaders import evaluate, loader
from partialft.training.rundir import optimizer_state, optimizer_tensors, read_state
from partialft.utils.io import atomic_write_text

if TYPE_CHECKING:
    from partialft.training.setup import Setup

METRICS = "metrics.jsonl"


@dataclass
class Progress:
    """Counters that a resume point restores; sums are float64 for exact replays."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    images: int = 0
    train_s: float = 0.0
    elapsed_s: float = 0.0
    best_acc: float | None = None
    final_acc: float | None = None
    images_per_s: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)


def run_loop(s: Setup, progress: bool = True,
             on_epoch: Callable[[dict[str, Any]], bool] | None = None) -> bool:
    """Train until ``cfg.epochs``; False when ``cfg.max_steps`` stopped it first, or when
    ``on_epoch`` (called with each epoch's metrics record after its resume point is written)
    returned False: the run then stays resumable, like one stopped by ``max_steps``."""
    cfg, acc = s.cfg, s.acc
    p = _restore(s)
    if acc.log_with:  # the tracker starts empty: give it the epochs done before a resume
        for record in p.metrics:
            _log_epoch(s, record)
    sums = torch.tensor([p.loss_sum, p.correct, p.seen], dtype=torch.float64, device=acc.device)
    params = [q for q in s.model.parameters() if q.requires_grad]
    for epoch in range(p.epoch, cfg.epochs):
        s.model.train()
        bar = tqdm(total=s.batches.steps_per_epoch, initial=p.step_in_epoch, unit="step",
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
                   # None: tqdm draws it only on a terminal; redirected output gets the one
                   # plain line per epoch below, no carriage returns
                   disable=None if progress and acc.is_main_process else True)
        start = time.perf_counter()
        batches = loader(s.data.train, s.batches.sampler(epoch, p.step_in_epoch), cfg.workers,
                         acc.device)
        for x, y in _iterate(batches):
            loss, logits, y = train_step(s, x, y, params)
            sums += torch.stack([loss.detach().double() * y.numel(),
                                 (logits.argmax(-1) == y).sum().double(),
                                 torch.tensor(float(y.numel()), device=acc.device)])
            if not acc.sync_gradients:
                continue
            p.global_step += 1
            p.step_in_epoch += 1
            p.images += y.numel() * s.batches.grad_accum * acc.num_processes
            s.scheduler.step_update(num_updates=p.global_step)
            if s.ema is not None:
                s.ema.update(acc.unwrap_model(s.model), step=p.global_step)
            bar.update(1)
            if p.global_step % 10 == 0 or p.step_in_epoch == s.batches.steps_per_epoch:
                _check_finite(sums, p)
                elapsed = p.train_s + time.perf_counter() - start
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}",
                                acc=f"{100 * sums[1] / sums[2]:.1f}%",
                                img_s=f"{p.images / max(elapsed, 1e-9):.0f}")
            if cfg.max_steps and p.global_step >= cfg.max_steps:
                _check_finite(sums, p)
                _save(s, p, sums, time.perf_counter() - start)
                bar.close()
                return False
            if cfg.checkpoint_every and p.global_step % cfg.checkpoint_every == 0:
                _save(s, p, sums, time.perf_counter() - start)
                start = time.perf_counter()
        bar.close()
        _check_finite(sums, p)
        _end_epoch(s, p, sums, time.perf_counter() - start)
        if on_epoch is not None and not on_epoch(p.metrics[-1]) and p.epoch < cfg.epochs:
            return False
    return True


def _iterate(batches: Iterable[Any]) -> Iterator[Any]:
    """Start iterating ``batches`` without touching the global RNG.

    A DataLoader draws its workers' base seed from the global torch RNG when iteration starts; a
    run resumed mid-epoch starts one more iteration than an uninterrupted run, which shifted
    every later random augmentation. Drawing that seed inside a fork keeps both runs identical.
    """
    with torch.random.fork_rng(devices=[]):
        return iter(batches)


def train_step(s: Setup, x: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One micro-batch: augment on the device, forward, backward, maybe an optimizer step.

    ``params`` are the trainable parameters (clipping then skips the frozen ones)."""
    acc, cfg = s.acc, s.cfg
    x = s.augment_train(x.to(acc.device, non_blocking=True))
    y = y.to(acc.device, non_blocking=True)
    target = y
    if s.mixup is not None:
        x, target = s.mixup(x, y)
    with acc.accumulate(s.model):
        with acc.autocast():
            logits = s.model(x)
            loss = s.criterion(logits, target)
        acc.backward(loss)
        if acc.sync_gradients and cfg.grad_clip:
            if params is None:
                params = [q for q in s.model.parameters() if q.requires_grad]
            acc.clip_grad_norm_(params, cfg.grad_clip)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
    return loss, logits, y


def _check_finite(sums: torch.Tensor, p: Progress) -> None:
    if not math.isfinite(float(sums[0])):
        raise option_error(
            f"the training loss became non-finite at step {p.global_step}; the run stopped and "
            "keeps its last good resume point (lower `lr` or enable `grad_clip`, then "
            "`resume=True`).")


def _check_finite_weights(s: Setup, p: Progress) -> None:
    """A finite loss can still end in non-finite weights (an overflowing gradient)."""
    model = s.acc.unwrap_model(s.model)
    bad = next((n for n, w in model.named_parameters()
                if w.requires_grad and not bool(w.detach().isfinite().all())), None)
    if bad is not None:
        raise option_error(
            f"the weights became non-finite ({bad}) by step {p.global_step}; the run stopped and "
            "keeps its last good resume point (lower `lr` or enable `grad_clip`, then "
            "`resume=True`).")


def _end_epoch(s: Setup, p: Progress, sums: torch.Tensor, seconds: float) -> None:
    """Validate, append the epoch's metrics, save a resume point, reset the running sums."""
    acc, cfg = s.acc, s.cfg
    model = s.ema.module if s.ema is not None else acc.unwrap_model(s.model)
    eval_start = time.perf_counter()
    val_acc = None  # no validation split (val_fraction 0): the test pass at the end only
    if len(s.data.val):
        val_acc = evaluate(model, s.data.val, s.augment_eval, acc, cfg.batch_size, cfg.workers)
    eval_s = time.perf_counter() - eval_start
    totals = acc.reduce(sums.clone(), reduction="sum")
    record = {
        "epoch": p.epoch + 1, "step": p.global_step, "lr": s.optimizer.param_groups[0]["lr"],
        "train_loss": float(totals[0] / totals[2]), "train_acc": float(100 * totals[1] / totals[2]),
        "val_acc": val_acc, "images_per_s": round(p.images / max(p.train_s + seconds, 1e-9), 2),
        "elapsed_s": round(p.elapsed_s + seconds + eval_s, 3),
    }
    p.metrics.append(record)
    if val_acc is not None:
        p.best_acc = val_acc if p.best_acc is None else max(p.best_acc, val_acc)
    p.final_acc, p.images_per_s = val_acc, record["images_per_s"]
    p.epoch, p.step_in_epoch = p.epoch + 1, 0
    p.elapsed_s += eval_s
    sums.zero_()
    if acc.log_with:
        _log_epoch(s, record)
    if acc.is_main_process:
        tqdm.write(f"epoch {record['epoch']}/{cfg.epochs}: loss {record['train_loss']:.4f}, "
                   f"train acc {record['train_acc']:.2f}%, val acc {_pct(val_acc)}, "
                   f"{record['images_per_s']:.0f} img/s")
    _save(s, p, sums, seconds)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _log_epoch(s: Setup, record: dict[str, Any]) -> None:
    s.acc.log({k: v for k, v in record.items() if k not in ("epoch", "step") and v is not None},
              step=record["step"])


def _save(s: Setup, p: Progress, sums: torch.Tensor, seconds: float) -> None:
    """Write metrics.jsonl and a resume point (trainable tensors, optimizer, EMA, counters)."""
    _check_finite(sums, p)  # never replace the last good resume point with a diverged one
    _check_finite_weights(s, p)
    p.train_s += seconds
    p.elapsed_s += seconds
    p.loss_sum, p.correct, p.seen = (float(v) for v in sums.tolist())
    if not s.acc.is_main_process:
        return
    atomic_write_text(s.run.file(METRICS), "".join(json.dumps(m) + "\n" for m in p.metrics))
    tensors, optim_info = _state_tensors(s)
    s.run.save_state(tensors, {**asdict(p), "optimizer": optim_info, "base": s.base,
                               "trainable_params": s.prepared.summary.trainable_params})


def _state_tensors(s: Setup) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = s.acc.unwrap_model(s.model)
    own = model.state_dict()
    tensors = {f"model.{n}": own[n] for n in delta_names(model)}
    if s.ema is not None:
        ema_sd = s.ema.module.state_dict()
        tensors |= {f"ema.{n}": ema_sd[n] for n in delta_names(model)}
    optim_tensors, optim_info = optimizer_tensors(s.optimizer)
    return tensors | optim_tensors, optim_info


def _restore(s: Setup) -> Progress:
    """Load the last resume point into the model, EMA, optimizer and schedule, if there is one."""
    loaded = s.run.load_state() if s.run.main else None
    if loaded is None and s.start_from is not None and s.run.main:
        loaded = read_state(s.start_from)  # a new run continuing another's (same recipe)
        if loaded is not None:  # from here on a kill -9 resumes from the run's own state
            atomic_write_text(s.run.file(METRICS), "".join(
                json.dumps(m) + "\n" for m in loaded[1].get("metrics", [])))
            s.run.save_state(loaded[0], loaded[1])
    if s.acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [loaded]
        broadcast_object_list(box)
        loaded = box[0]
    if loaded is None:
        return Progress()
    tensors, info = loaded
    recorded = {k: v for k, v in info.get("base", s.base).items() if k != "frozen_sha256"}
    if recorded != {k: v for k, v in s.base.items() if k != "frozen_sha256"}:  # 0.1.0 runs
        raise option_error(f"`resume=True` of {s.cfg.out}: the base weights differ from the "
                           "ones the run started from (their file changed since); restore them, "
                           "or start again with `overwrite=True`.")
    model = s.acc.unwrap_model(s.model)
    model.load_state_dict(_prefixed(tensors, "model."), strict=False)
    if s.ema is not None:
        s.ema.module.load_state_dict(_prefixed(tensors, "ema."), strict=False)
    s.optimizer.load_state_dict(optimizer_state(tensors, info["optimizer"]))
    fields = {k: v for k, v in info.items() if k in Progress.__dataclass_fields__}
    p = Progress(**fields)
    s.scheduler.step_update(num_updates=p.global_step)
    return p


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
