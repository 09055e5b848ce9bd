"""One training loop for every method (accelerate): the same recipe for full, partial and PEFT.

``train(cfg)`` reads a :class:`TrainConfig`, writes a run dir (see
:mod:`partialft.training.checkpoints`) and returns the summary. It resumes from ``state/`` with
``resume=True``; an interrupted run (``max_steps``, a crash, ``kill -9``) continues to the same
final metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from partialft.errors import option_error
from partialft.models import file_digest
from partialft.training import trackers
from partialft.training.checkpoints import (
    DELTA,
    FULL,
    SUMMARY,
    delta_names,
    save_delta,
    save_tensors,
)
from partialft.training.config import TrainConfig, config_inputs
from partialft.training.loaders import evaluate
from partialft.training.outputs import check_claim, read_marker, remove_recorded
from partialft.training.resume import (
    check_inputs,
    check_same_recipe,
    given_by,
    resume_config,
)
from partialft.training.rundir import STATE_DIR, RunDir
from partialft.training.runs import angles_origin
from partialft.training.setup import Setup, build
from partialft.utils.io import atomic_write_json, atomic_write_text


def train(cfg: TrainConfig, *, overwrite: bool = False, resume: bool = False,
          progress: bool = True, inputs: Sequence[str | Path] = (),
          on_epoch: Callable[[dict[str, Any]], bool] | None = None,
          start_from: str | Path | None = None) -> dict[str, Any] | None:
    """Train one run; returns its summary, or None when stopped early by ``max_steps`` or by
    ``on_epoch`` (given each epoch's metrics record; False stops the run, resumable: a
    search's pruner).

    ``start_from``: a run dir of the same recipe (only :data:`~partialft.training.resume.
    RUNTIME_ONLY` settings may differ) whose resume point a new run continues instead of
    starting at step 0, as ``--mode auto`` continues its chosen pilot; ignored once the run has
    a resume point of its own.

    ``inputs``: files the caller read besides those ``cfg`` names (a YAML config), which the
    run dir must not contain or sit inside; their SHA-256 is recorded with the others'.
    ``resume``: continue the run in ``cfg.out`` with its recorded settings and inputs, refusing
    any that differ (see :mod:`partialft.training.resume`).
    """
    if resume and not overwrite:
        check_claim(cfg.out, "train", reuse=True, inputs=[*config_inputs(cfg), *inputs])
        cfg = resumable(cfg, inputs)
        if (Path(cfg.out) / SUMMARY).is_file():  # already complete
            if not cfg.keep_state and (Path(cfg.out) / STATE_DIR).exists():
                _drop_leftover_state(cfg, inputs)
            return json.loads((Path(cfg.out) / SUMMARY).read_text())
    if start_from is not None:
        check_same_recipe(start_from, cfg)
    s = build(cfg, overwrite=overwrite, resume=resume, inputs=inputs)
    s.start_from = None if start_from is None else Path(start_from)
    failed = True
    try:
        summary = _train(s, progress, on_epoch)
        failed = False
        return summary
    finally:  # a new run dir that failed before its first resume point is removed again
        s.run.abandon() if failed else s.run.close()


def _train(s: Setup, progress: bool,
           on_epoch: Callable[[dict[str, Any]], bool] | None) -> dict[str, Any] | None:
    """The loop, the final checkpoint and summary, in a claimed run dir."""
    cfg = s.cfg
    try:
        from partialft.training.loop import run_loop

        since = trackers.start(s.acc, s.run.path, _scalar_config(cfg)) if s.acc.log_with else 0
        finished = run_loop(s, progress=progress, on_epoch=on_epoch)
        summary = _finish(s) if finished else None
        s.acc.end_training()
        if s.acc.log_with:
            trackers.finish(s.acc, s.run.path, since)
        if summary is not None and not cfg.keep_state and s.acc.is_main_process:
            remove_recorded(s.run.path, STATE_DIR)  # summary.json is written
        return summary
    except torch.cuda.OutOfMemoryError:
        raise option_error(f"CUDA ran out of memory at batch size {cfg.batch_size}; try "
                           f"`batch_size={max(1, cfg.batch_size // 2)}` (with `grad_accum=2` "
                           "to keep the same global batch).") from None
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):
            raise
        raise option_error(f"the CPU ran out of memory at batch size {cfg.batch_size} and "
                           f"img_size {cfg.img_size}; try a smaller `batch_size` or "
                           "`img_size`.") from None


def _drop_leftover_state(cfg: TrainConfig, inputs: Sequence[str | Path]) -> None:
    """A run killed between summary.json and removing its resume state: remove it now (under
    the run dir's lock, and only the files partialft recorded writing there)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    with RunDir(cfg.out, kind="train", resume=True,
                inputs=[*config_inputs(cfg), *inputs]) as run:
        if run.finished:
            remove_recorded(run.path, STATE_DIR)


def resumable(cfg: TrainConfig, inputs: Sequence[str | Path] = ()) -> TrainConfig:
    """The config to resume ``cfg.out`` with: its recorded settings (``cfg`` may not change a
    recipe setting) and unchanged input files; refuses otherwise."""
    resumed = resume_config(cfg.out, given_by(cfg))
    marker = read_marker(cfg.out) or {}
    check_inputs(cfg.out, (marker.get("settings") or {}).get("inputs"), resumed, inputs)
    return resumed


def _scalar_config(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}


def _finish(s: Setup) -> dict[str, Any]:
    """Test accuracy, delta (and full) checkpoint, summary.json."""
    cfg, acc = s.cfg, s.acc
    model = _final_model(s)
    test_acc = None  # a folder dataset may have no test/ split
    if s.data.test is not None:
        test_acc = evaluate(model, s.data.test, s.augment_eval, acc, cfg.batch_size, cfg.workers)
    state = s.run.load_state()
    info = state[1] if state else {}
    summary = {
        "method": cfg.method, "model": cfg.model, "num_classes": s.data.num_classes,
        "dataset": cfg.dataset, "seed": cfg.seed, "lr": cfg.lr, "epochs": cfg.epochs,
        "layers": list(s.prepared.selection.layers),
        "trainable_params": s.prepared.summary.trainable_params,
        "total_params": s.prepared.summary.total_params,
        "groups": s.prepared.summary.groups,
        "best_acc": info.get("best_acc"), "final_acc": info.get("final_acc"),
        "test_acc": test_acc, "wall_s": round(info.get("elapsed_s", 0.0), 3),
        "images_per_s": info.get("images_per_s"), "device": _device_name(acc.device),
        "processes": acc.num_processes, "precision": acc.mixed_precision,
        # provenance of the base weights (also in the delta's metadata "base")
        "pretrained_tag": s.base.get("pretrained_tag"),
        "checkpoint_sha256": (s.base.get("checkpoint_file") or {}).get("sha256"),
        "base_weights_sha256": s.base.get("weights_sha256"),
        "angles_from": angles_origin(cfg.angles),  # reports group runs by it, not by path
        "threads": torch.get_num_threads(),  # chosen by --threads, OMP_NUM_THREADS or free cores
        "optimizer": _optimizer_record(s.optimizer),
        "config": cfg.to_dict(),
    }
    if acc.is_main_process:
        # train_non_residual with the selection: what partialft.load_trained rebuilds from
        selection = {**s.prepared.selection.to_dict(),
                     "train_non_residual": bool(cfg.train_non_residual)}
        delta = save_delta(s.run.file(DELTA), model, s.base, selection, delta_names(model))
        # the delta's identity: readers refuse a delta copied in from another run
        summary["delta_sha256"] = file_digest(delta)["sha256"]
        if cfg.save_full:
            full = save_tensors(s.run.file(FULL), model.state_dict(),
                                {"format": "partialft-delta", "base": s.base,
                                 "selection": selection})
            summary["full_sha256"] = file_digest(full)["sha256"]
        atomic_write_text(s.run.file("README.md"), _run_readme(summary))
        atomic_write_json(s.run.file(SUMMARY), summary)  # last: it marks the run as finished
    acc.wait_for_everyone()
    return summary


def _final_model(s: Setup) -> nn.Module:
    model = s.acc.unwrap_model(s.model)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if s.ema is not None:
        model.load_state_dict(s.ema.module.state_dict())
    return model


def _optimizer_record(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Which optimizer ran and whether torch's fused kernel did (CUDA Adam/AdamW)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return {"name": type(inner).__name__, "fused": bool(inner.defaults.get("fused"))}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def _run_readme(summary: dict[str, Any]) -> str:
    acc = summary["best_acc"]
    return (f"# {summary['method']} on {summary['dataset']}\n\nmodel {summary['model']}, "
            f"trainable {summary['trainable_params']:,} of {summary['total_params']:,} "
            f"parameters; best val acc {acc if acc is None else round(acc, 2)}%, "
            f"test acc {fmt_pct(summary['test_acc'])}, {summary['wall_s']:.1f} s on "
            f"{summary['device']}.\n")


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"
