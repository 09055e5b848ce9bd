"""One training loop for every method (accelerate): the same recipe for full, partial and PEFT.

``train(cfg)`` reads a :class:`TrainConfig`, writes a run dir (see :mod:`partialft.checkpoints`)
and returns the summary. It resumes from ``state/`` with ``resume=True``; an interrupted run
(``max_steps``, a crash, ``kill -9``) continues to the same final metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration
from timm.data import Mixup, resolve_data_config
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from partialft.checkpoints import DELTA, FULL, SUMMARY, save_delta, save_tensors
from partialft.config import TrainConfig, config_inputs, write_config
from partialft.errors import PartialFTError
from partialft.io import atomic_write_json, atomic_write_text
from partialft.loaders import Batches, evaluate
from partialft.methods import Prepared, prepare
from partialft.models import default_input_size, file_digest
from partialft.outputs import check_claim
from partialft.rundir import RunDir
from partialft.runs import CONFIG, SELECTION, SPLIT, base_model

TRACKER_DIR = "tensorboard"


@dataclass
class Setup:
    """Everything the loop touches, built once by :func:`build`."""

    cfg: TrainConfig
    acc: Accelerator
    run: RunDir
    data: Any
    prepared: Prepared
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    augment_train: nn.Module
    augment_eval: nn.Module
    batches: Batches
    base: dict[str, Any]


def _precision(amp: str) -> str:
    if amp != "auto":
        return amp
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _trackers() -> str | None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    return "tensorboard"


def build(cfg: TrainConfig, *, overwrite: bool = False, resume: bool = False,
          inputs: Sequence[str | Path] = ()) -> Setup:
    """Accelerator, run dir, data, model with its selection, optimizer, schedule and loss."""
    # accelerate keeps one global state per process; clearing it (not the distributed
    # PartialState) lets one process run several trainings with other precision or
    # accumulation: the demo, the fapft pipeline, the tests.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    acc = Accelerator(cpu=not torch.cuda.is_available(),  # several CPU processes -> gloo
                      mixed_precision=_precision(cfg.amp), split_batches=True,
                      gradient_accumulation_steps=cfg.grad_accum, log_with=_trackers(),
                      project_config=ProjectConfiguration(project_dir=cfg.out,
                                                          logging_dir=cfg.out))
    run = RunDir(cfg.out, overwrite=overwrite, resume=resume, main_process=acc.is_main_process,
                 inputs=[*config_inputs(cfg), *inputs])
    acc.wait_for_everyone()
    # augmentation, dropout (torch); timm's Mixup and file-dataset crops draw from NumPy's and
    # Python's global generators, so those are seeded too (resume points restore all three)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model, prepared, data, base = _model_and_data(cfg, run)
    batches = Batches(len(data.train), cfg.batch_size, cfg.grad_accum, cfg.seed,
                      acc.process_index, acc.num_processes)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    fused=acc.device.type == "cuda" or None)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=cfg.epochs, min_lr=cfg.min_lr,
        warmup_lr=cfg.lr * 1e-3, warmup_epochs=cfg.warmup_epochs, step_on_epochs=False,
        updates_per_epoch=batches.steps_per_epoch)
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                      label_smoothing=cfg.label_smoothing, num_classes=data.num_classes)
    criterion = (SoftTargetCrossEntropy() if mixup
                 else nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing))
    if prepared.layer_map.family == "convnext" and acc.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema) if cfg.ema else None
    if cfg.compile:
        model = torch.compile(model)
    aug_train, aug_eval = augmenters(cfg, prepared.model, acc.device)  # before DDP wraps it
    model, optimizer = acc.prepare(model, optimizer)
    return Setup(cfg, acc, run, data, prepared, model, optimizer, scheduler, criterion, mixup,
                 ema, aug_train, aug_eval, batches, base)


def resolve_inputs(cfg: TrainConfig, split_file: Path | None = None) -> tuple[Any, dict]:
    """The datasets of ``cfg`` and its base recipe (what :func:`partialft.runs.base_model` builds
    the starting weights from), with ``cfg``'s img_size, num_classes and preprocessing resolved
    in place. ``partialft train`` and the selectors share it, so both see the same task."""
    from partialft.data import PREPROCESS, build_datasets, resolve_preprocess

    img_size = cfg.img_size or default_input_size(cfg.model)[-1]
    # the model's own crop_pct/interpolation/mean/std unless given; recorded in config.yaml,
    # so eval, soups and reports preprocess exactly as this run validated
    pre = resolve_preprocess(cfg.model, **{k: getattr(cfg, k) for k in PREPROCESS})
    data = build_datasets(cfg.dataset, data_dir=cfg.data_dir, img_size=img_size,
                          val_fraction=cfg.val_fraction, seed=cfg.seed, split_file=split_file,
                          max_per_split=cfg.max_per_split, augment=augment_config(cfg),
                          crop_pct=pre["crop_pct"], interpolation=pre["interpolation"])
    if cfg.num_classes is not None and cfg.num_classes != data.num_classes:
        raise PartialFTError(f"num_classes {cfg.num_classes} does not match dataset "
                             f"{cfg.dataset}, which has {data.num_classes} classes; pass "
                             f"--num-classes {data.num_classes} or leave it out.")
    cfg.img_size, cfg.num_classes = img_size, data.num_classes
    for key, value in pre.items():
        setattr(cfg, key, value)
    base = {"model": cfg.model, "num_classes": data.num_classes, "pretrained": cfg.pretrained,
            "checkpoint": _absolute(cfg.checkpoint), "img_size": img_size,
            "layer_spec": _absolute(cfg.layer_spec), "init_seed": init_seed(cfg)}
    if cfg.checkpoint:
        base["checkpoint_file"] = file_digest(cfg.checkpoint)
    return data, base


def _model_and_data(cfg: TrainConfig, run: RunDir) -> tuple[nn.Module, Prepared, Any, dict]:
    from partialft.angles import load_angles
    from partialft.layers import find_layers

    data, base = resolve_inputs(cfg, run.file(SPLIT))
    model = base_model(base, **model_kwargs(cfg))
    check_finite_start(model, cfg)
    _check_img_size(model, cfg.img_size, cfg.model)
    angles = load_angles(cfg.angles, find_layers(model, cfg.layer_spec)) if cfg.angles else None
    prepared = prepare(model, cfg.method, layer_spec=cfg.layer_spec,
                       train_non_residual=cfg.train_non_residual,
                       baseline_options=cfg.baseline or {}, layers=cfg.layers, angles=angles,
                       topk=cfg.topk, mode=_resolve_mode(cfg))
    if run.main:
        write_config(run.file(CONFIG), cfg)
        atomic_write_json(run.file(SELECTION), prepared.selection.to_dict())
    return prepared.model, prepared, data, base


def _resolve_mode(cfg: TrainConfig) -> str:
    """``--mode auto`` for fapft: decided from a linear probe of the base model's features."""
    if cfg.mode != "auto":
        return cfg.mode
    if cfg.method != "fapft":
        return "large"  # unused by other methods
    from tqdm.auto import tqdm

    from partialft.selectors import resolve_auto_mode

    mode, reason, _ = resolve_auto_mode(cfg)
    tqdm.write(f"mode auto -> {mode}: {reason}")
    return mode


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Training-only architecture options (they change no weight, so the base omits them)."""
    return {"drop_path_rate": cfg.drop_path} if cfg.drop_path else {}


def check_finite_start(model: nn.Module, cfg: TrainConfig) -> None:
    """Non-finite starting weights would only surface later as a diverged loss."""
    bad = next((n for n, w in model.state_dict().items()
                if w.is_floating_point() and not bool(w.isfinite().all())), None)
    if bad is not None:
        source = f"checkpoint {cfg.checkpoint}" if cfg.checkpoint else f"model {cfg.model}"
        raise PartialFTError(f"the starting weights from {source} hold NaN or infinite values in "
                             f"{bad}; training from them cannot work, use finite weights.")


def _check_img_size(model: nn.Module, img_size: int, name: str) -> None:
    """A patch-embedding model needs an input size divisible by its patch size."""
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if not patch or getattr(embed, "dynamic_img_pad", False):
        return
    patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
    if any(img_size % p for p in patch):
        raise PartialFTError(f"img_size {img_size} does not fit {name}, whose patches are "
                             f"{patch[0]}x{patch[1]}; use a multiple of {patch[0]}.")


def init_seed(cfg: TrainConfig) -> int:
    """Seed of the weights no checkpoint gives. A pretrained model's new head is drawn from a
    fixed seed, so runs that differ only in --seed share their base (and can be souped); a
    model trained from scratch is initialised from --seed."""
    return 0 if cfg.pretrained or cfg.checkpoint else cfg.seed


def _absolute(path: str | None) -> str | None:
    """Paths recorded in a run dir must work from any working directory."""
    return str(Path(path).resolve()) if path else None


def augment_config(cfg: TrainConfig) -> Any:
    from partialft.data import AugmentConfig

    return AugmentConfig(randaugment=cfg.randaugment, hflip=cfg.hflip,
                         random_erasing=cfg.random_erasing, crop_scale=(cfg.crop_scale, 1.0))


def augmenters(cfg: TrainConfig, model: nn.Module, device: torch.device
                ) -> tuple[nn.Module, nn.Module]:
    from partialft.data import BatchAugment

    in_chans = resolve_data_config({}, model=model)["input_size"][0]
    aug = augment_config(cfg)
    # cfg's preprocessing was resolved from the model (or given) by _model_and_data
    make = lambda train: BatchAugment(  # noqa: E731
        cfg.img_size, in_chans, cfg.mean, cfg.std, train=train, cfg=aug, crop_pct=cfg.crop_pct,
        interpolation=cfg.interpolation).to(device)
    return make(True), make(False)


def train(cfg: TrainConfig, *, overwrite: bool = False, resume: bool = False,
          progress: bool = True, inputs: Sequence[str | Path] = ()) -> dict[str, Any] | None:
    """Train one run; returns its summary, or None when stopped early by ``max_steps``.

    ``inputs``: files the caller read besides those ``cfg`` names (a YAML config), which the
    run dir must not contain or sit inside.
    """
    if resume and not overwrite:
        check_claim(cfg.out, "train", reuse=True, inputs=[*config_inputs(cfg), *inputs])
        check_resumable(cfg)
        if (Path(cfg.out) / SUMMARY).is_file():
            return json.loads((Path(cfg.out) / SUMMARY).read_text())  # already complete
    s = build(cfg, overwrite=overwrite, resume=resume, inputs=inputs)
    try:
        from partialft.loop import run_loop

        if s.acc.log_with:
            _start_tracker(s)
        finished = run_loop(s, progress=progress)
        summary = _finish(s) if finished else None
        s.acc.end_training()
        return summary
    except torch.cuda.OutOfMemoryError:
        raise PartialFTError(f"CUDA ran out of memory at batch size {cfg.batch_size}; try "
                             f"--batch-size {max(1, cfg.batch_size // 2)} (with --grad-accum 2 "
                             "to keep the same global batch).") from None
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):
            raise
        raise PartialFTError(f"the CPU ran out of memory at batch size {cfg.batch_size} and "
                             f"img_size {cfg.img_size}; try a smaller --batch-size or "
                             "--img-size.") from None
    finally:
        s.run.close()


def _start_tracker(s: Setup) -> None:
    """One TensorBoard log per run, in RUN/tensorboard: a resumed run rewrites it from scratch
    (the loop replays metrics.jsonl into it), so event files never pile up across resumes."""
    if s.acc.is_main_process:
        log_dir = s.run.file(TRACKER_DIR)
        if log_dir.is_dir():
            shutil.rmtree(log_dir)
    s.acc.wait_for_everyone()
    s.acc.init_trackers(TRACKER_DIR, config=_scalar_config(s.cfg))


# settings that may change between a run and its --resume: they do not change the results
RUNTIME_ONLY = ("out", "workers", "max_steps", "checkpoint_every", "compile")


def ignored_by(method: str) -> tuple[str, ...]:
    """Settings a method does not read (a full run's ``mode`` changes nothing)."""
    return () if method == "fapft" else ("mode", "topk", "angles")


def check_resumable(cfg: TrainConfig) -> None:
    """Refuse to --resume a run dir with settings that differ from its config.yaml."""
    path = Path(cfg.out) / CONFIG
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text()) or {}
    for key, value in cfg.to_dict().items():
        if key in RUNTIME_ONLY or key not in saved or key in ignored_by(cfg.method):
            continue
        if value is None and key in ("img_size", "num_classes", "crop_pct", "interpolation",
                                     "mean", "std"):
            continue  # resolved from the model/data when the run started
        if saved[key] != value:
            raise PartialFTError(f"--resume of {cfg.out} with {key}={value!r}, but the run was "
                                 f"started with {key}={saved[key]!r}; resume with the same "
                                 "settings, or use --overwrite or another --out.")


def _scalar_config(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}


def delta_names(model: nn.Module) -> list[str]:
    """Trainable parameters plus the persistent buffers of modules that train (BatchNorm stats)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    keys = set(model.state_dict())
    for mod_name, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            prefix = f"{mod_name}." if mod_name else ""
            names += [prefix + b for b, _ in module.named_buffers(recurse=False)
                      if prefix + b in keys]
    return names


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
        "config": cfg.to_dict(),
    }
    if acc.is_main_process:
        selection = s.prepared.selection.to_dict()
        save_delta(s.run.file(DELTA), model, s.base, selection, delta_names(model))
        if cfg.save_full:
            save_tensors(s.run.file(FULL), model.state_dict(),
                         {"format": "partialft-delta", "base": s.base, "selection": selection})
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
