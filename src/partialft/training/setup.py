"""Everything one training run needs, built once: accelerator, run dir, data, model with its
selection, optimizer, schedule, loss, EMA and the batch augmenters (:class:`Setup`, :func:`build`).

``resolve_inputs`` resolves a config's data, base model and preprocessing the same way for
``partialft train`` and for the selectors, so both see the same task. ``--mode auto`` must be
resolved before (by the fapft workflow or the CLI): a run is built from a concrete mode.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration
from timm.data import Mixup, resolve_data_config
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from partialft.core.freeze import delta_names
from partialft.errors import PartialFTError, option_error
from partialft.methods import Prepared, prepare
from partialft.models import default_input_size, file_digest, local_dir, local_weights, shape_model
from partialft.models.create import LOCAL_DIR, TRAIN_HINT
from partialft.training import trackers
from partialft.training.config import TrainConfig, config_inputs, write_config
from partialft.training.loaders import Batches
from partialft.training.outputs import read_marker
from partialft.training.resume import input_digests
from partialft.training.rules import check_amp_device, check_model_kwargs
from partialft.training.rundir import RunDir
from partialft.training.runs import CONFIG, SELECTION, SPLIT, base_model, weights_sha256
from partialft.utils.digest import frozen_sha256
from partialft.utils.io import atomic_write_json
from partialft.utils.limits import check_batch_memory
from partialft.utils.threads import set_threads


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
    # a run dir of the same recipe whose resume point a new run continues (``train``'s
    # ``start_from``): ``--mode auto``'s chosen pilot
    start_from: Path | None = None


# timm optimizer names that are torch's own Adam/AdamW, which have a fused CUDA kernel
FUSED = ("adam", "adamw")


def _precision(amp: str) -> str:
    if amp != "auto":
        return amp
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def build(cfg: TrainConfig, *, overwrite: bool = False, resume: bool = False,
          inputs: Sequence[str | Path] = ()) -> Setup:
    """Accelerator, run dir, data, model with its selection, optimizer, schedule and loss."""
    check_amp_device(cfg.amp)  # fp16 on the CPU would run float32 and record fp16
    set_threads(cfg.threads)  # the free cores, unless --threads or OMP_NUM_THREADS say
    # accelerate keeps one global state per process; clearing it (not the distributed
    # PartialState) lets one process run several trainings with other precision or
    # accumulation: the demo, the fapft pipeline, the tests.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    acc = Accelerator(cpu=not torch.cuda.is_available(),  # several CPU processes -> gloo
                      mixed_precision=_precision(cfg.amp), split_batches=True,
                      gradient_accumulation_steps=cfg.grad_accum,
                      log_with=trackers.make(cfg.log_with, cfg.out),
                      project_config=ProjectConfiguration(project_dir=cfg.out,
                                                          logging_dir=cfg.out))
    # a new run dir records the SHA-256 of its input files (in its marker); a resume checked
    # them already (train.resumable), and an existing marker is not compared here
    reused = not overwrite and read_marker(cfg.out) is not None
    run = RunDir(cfg.out, overwrite=overwrite, resume=resume, main_process=acc.is_main_process,
                 inputs=[*config_inputs(cfg), *inputs],
                 settings=None if reused else {"inputs": input_digests(cfg, inputs)})
    acc.wait_for_everyone()
    try:
        return _assemble(cfg, acc, run)
    except BaseException:
        run.abandon()  # nothing trained yet: the corrected command needs no --overwrite
        raise


def _assemble(cfg: TrainConfig, acc: Accelerator, run: RunDir) -> Setup:
    """Data, model with its selection, optimizer, schedule and loss, in a claimed run dir."""
    # augmentation, dropout (torch); timm's Mixup and file-dataset crops draw from NumPy's and
    # Python's global generators, so those are seeded too (resume points restore all three)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model, prepared, data, base = _model_and_data(cfg, run)
    batches = Batches(len(data.train), cfg.batch_size, cfg.grad_accum, cfg.seed,
                      acc.process_index, acc.num_processes)
    fused = {"fused": True} if acc.device.type == "cuda" and cfg.opt in FUSED else {}
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    layer_decay=cfg.layer_decay, **fused)
    warmup_lr = cfg.lr * 1e-3 if cfg.warmup_lr is None else cfg.warmup_lr
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, min_lr=cfg.min_lr,
        warmup_lr=warmup_lr, warmup_epochs=cfg.warmup_epochs, step_on_epochs=False,
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
    """The datasets of ``cfg`` and its base recipe (what :func:`partialft.training.runs.base_model`
    builds the starting weights from), with ``cfg``'s img_size, num_classes and preprocessing
    resolved in place. ``partialft train`` and the selectors share it, so both see the same task."""
    from partialft.data import PREPROCESS, build_datasets, resolve_preprocess

    img_size = cfg.img_size or default_input_size(cfg.model)[-1]
    check_resources(cfg, img_size)
    # the model's own crop_pct/interpolation/mean/std unless given; recorded in config.yaml,
    # so eval, soups and reports preprocess exactly as this run validated
    shape = shape_model(cfg.model)
    pre = resolve_preprocess(shape, **{k: getattr(cfg, k) for k in PREPROCESS})
    data = build_datasets(cfg.dataset, data_dir=cfg.data_dir, img_size=img_size,
                          val_fraction=cfg.val_fraction, seed=cfg.seed, split_file=split_file,
                          max_per_split=cfg.max_per_split, augment=augment_config(cfg),
                          crop_pct=pre["crop_pct"], interpolation=pre["interpolation"])
    if cfg.num_classes is not None and cfg.num_classes != data.num_classes:
        raise option_error(f"num_classes {cfg.num_classes} does not match dataset "
                           f"{cfg.dataset}, which has {data.num_classes} classes; pass "
                           f"`num_classes={data.num_classes}` or leave it out.")
    cfg.img_size, cfg.num_classes = img_size, data.num_classes
    for key, value in pre.items():
        setattr(cfg, key, value)
    base = {"model": cfg.model, "num_classes": data.num_classes, "pretrained": cfg.pretrained,
            "checkpoint": _absolute(cfg.checkpoint), "img_size": img_size,
            "layer_spec": _absolute(cfg.layer_spec), "init_seed": init_seed(cfg)}
    if cfg.checkpoint:
        base["checkpoint_file"] = file_digest(cfg.checkpoint)
    elif cfg.pretrained and cfg.model.startswith(LOCAL_DIR):  # a folder (an export): its file
        base["pretrained_tag"] = cfg.model
        base["model_file"] = file_digest(local_weights(local_dir(cfg.model)))
    elif cfg.pretrained:  # the weights timm resolved the name to: architecture.tag
        tag = shape.pretrained_cfg.get("tag")
        base["pretrained_tag"] = (cfg.model if cfg.model.startswith("hf-hub:") or not tag
                                  else f"{shape.pretrained_cfg['architecture']}.{tag}")
    if cfg.model_kwargs:  # they may change the architecture: a rebuild needs them too
        base["model_kwargs"] = dict(cfg.model_kwargs)
    return data, base


def check_resources(cfg: TrainConfig, img_size: int) -> None:
    """Before any data or weights: model kwargs the model's constructor accepts, and a batch
    whose images fit the memory free on the training device (utils.limits)."""
    import os

    check_model_kwargs(cfg.model, cfg.model_kwargs, num_classes=cfg.num_classes,
                       img_size=img_size)
    processes = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))  # split_batches=True
    check_batch_memory(max(1, cfg.batch_size // processes), img_size,
                       device="cuda" if torch.cuda.is_available() else None)


def _model_and_data(cfg: TrainConfig, run: RunDir) -> tuple[nn.Module, Prepared, Any, dict]:
    from partialft.core.angles import load_angles
    from partialft.core.layers import find_layers

    data, base = resolve_inputs(cfg, run.file(SPLIT))
    model = base_model(base, offline_hint=TRAIN_HINT, **model_kwargs(cfg))
    # provenance: a delta applied to other base weights is refused (training.runs); hashing
    # costs 9 ms for partialft_vit_tiny, 0.25-0.4 s for ViT-B/16 on one CPU thread
    base_state = dict(model.state_dict())
    base["weights_sha256"] = weights_sha256(base_state)
    check_finite_start(model, cfg)
    _check_img_size(model, cfg.img_size, cfg.model)
    angles = load_angles(cfg.angles, find_layers(model, cfg.layer_spec)) if cfg.angles else None
    if cfg.method == "fapft" and cfg.mode in ("auto", "probe"):
        raise PartialFTError(f"mode {cfg.mode} is decided before a run is built (pilot runs or "
                             "a linear probe): resolve it first (partialft.selectors.auto."
                             "resolve_mode, which the train and fapft commands call) or pass "
                             "mode large or small.")
    # only the options the method takes: a config may carry fapft's top-k for every method
    select = {"layers": cfg.layers} if cfg.method == "layers" else {
        "angles": angles, "topk": cfg.topk, "mode": cfg.mode} if cfg.method == "fapft" else {}
    prepared = prepare(model, cfg.method, layer_spec=cfg.layer_spec,
                       train_non_residual=cfg.train_non_residual, **cfg.baseline_options(),
                       **select)
    if run.main and not run.file(CONFIG).is_file():  # a resume never rewrites the record
        write_config(run.file(CONFIG), cfg)
        atomic_write_json(run.file(SELECTION), prepared.selection.to_dict())
    # the base tensors the delta does not replace: what load_trained checks a caller's base by
    base["frozen_sha256"] = frozen_sha256(base_state, delta_names(prepared.model))
    return prepared.model, prepared, data, base


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
                         random_erasing=cfg.random_erasing, color_jitter=cfg.color_jitter,
                         crop_scale=(cfg.crop_scale, 1.0))


def augmenters(cfg: TrainConfig, model: nn.Module, device: torch.device
                ) -> tuple[nn.Module, nn.Module]:
    from partialft.data import BatchAugment

    in_chans = resolve_data_config({}, model=model)["input_size"][0]
    aug = augment_config(cfg)
    # cfg's preprocessing was resolved from the model (or given) by _model_and_data
    def make(train: bool) -> nn.Module:
        return BatchAugment(cfg.img_size, in_chans, cfg.mean, cfg.std, train=train, cfg=aug,
                            crop_pct=cfg.crop_pct, interpolation=cfg.interpolation).to(device)

    return make(True), make(False)
