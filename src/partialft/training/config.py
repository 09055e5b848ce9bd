"""The training config: one dataclass, validated in ``__post_init__``.

Read from YAML files by :mod:`partialft.training.config_files` and from flags by
:mod:`partialft.training.config_flags`; precedence: field defaults < ``--config`` (YAML) <
flags given on the command line. Every field is also a ``partialft train`` flag
(``batch_size`` -> ``--batch-size``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from partialft.errors import PartialFTError, option_error
from partialft.training import rules
from partialft.training.config_values import (
    check_optimizer,
    describe,
    floats,
    is_kind,
    keyword_values,
    kinds,
    optional,
    whole,
)
from partialft.training.rules import MAX_SEED  # noqa: F401  (re-exported)
from partialft.utils.limits import check_img_size, check_threads, check_workers

AMP = ("auto", "no", "bf16", "fp16")
# timm's schedulers that step per optimizer step (plateau needs an epoch metric: not offered)
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "rsqrt", "constant")
LOGGERS = ("auto", "tensorboard", "wandb", "csv", "none")
MAX_EPOCHS = 100_000


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything one training run needs; the run dir's config.yaml is this, resolved."""

    # what to train
    model: str = _f("partialft_vit_tiny", "timm model name")
    pretrained: bool = _f(True, "start from the model's pretrained weights (timm hub or bundled)")
    checkpoint: str | None = _f(None, "start from these weights instead (.safetensors/.pth)")
    layer_spec: str | None = _f(None, "YAML/JSON layer spec for models partialft does not know")
    method: str = _f("full", "full, linear, attn, ffn, the *-half-* strategies, layers, fapft, "
                     "adapter, vpt-deep, ssf, lora")
    layers: list[str] | None = _f(None, "layer ids for --method layers (comma-separated)")
    angles: str | None = _f(None, "angles JSON for --method fapft")
    topk: str | None = _f(None, "fapft layers per group: one number or one per stage (0,0,6,2)")
    mode: str | None = _f(None, "fapft (required): train the layers with the largest (hard "
                          "task) or smallest (easy task) angles; auto: start both, the better on "
                          "the validation split after pilot_fraction of the schedule continues; "
                          "probe: partialft's linear-probe threshold rule (docs/selectors.md); "
                          "no default")
    pilot_fraction: float = _f(rules.PILOT_FRACTION, "mode auto: share of the schedule's "
                               "epochs both modes train before the better on validation "
                               "continues (at least one epoch)")
    train_non_residual: bool = _f(False, "also train embeddings, downsampling and final norm")
    # the PEFT baselines' options, one name each (the keyword of partialft.prepare, this key,
    # the flag --rank): partialft.methods.method_options lists them per method
    rank: int | None = _f(None, "lora: rank of the update B A (default 8)")
    alpha: float | None = _f(None, "lora: scaling numerator, update * alpha / rank (default 16)")
    dropout: float | None = _f(None, "lora: dropout on the LoRA branch input; vpt-deep: dropout "
                               "on the prompt tokens (default 0)")
    targets: str | None = _f(None, "lora: comma-separated modules to adapt, of qkv, attn.proj, "
                             "mlp.fc1, mlp.fc2 (default: all four)")
    reduction: int | None = _f(None, "adapter: bottleneck width = channels // reduction "
                               "(default 64)")
    dim: int | None = _f(None, "adapter: bottleneck width itself (default 0: channels // "
                         "reduction)")
    tokens: int | None = _f(None, "vpt-deep: prompt tokens per block (default 50)")
    model_kwargs: dict[str, Any] = _f(None, "extra timm.create_model arguments, e.g. "
                                      "drop_rate=0.1,global_pool=avg (recorded with the base)")
    # data
    dataset: str = _f("digits", "cifar10, cifar100, fashion-mnist, digits, synthetic, "
                      "folder:PATH, cub, nabirds, flowers, dogs, cars")
    data_dir: str | None = _f(None, "where the dataset's files are (or are downloaded to)")
    num_classes: int | None = _f(None, "classes of the data; checked against the dataset "
                                 "(default: the dataset's)")
    img_size: int | None = _f(None, "input size (default: the model's)")
    val_fraction: float = _f(0.1, "share of the training split held out for validation (0 = "
                             "none: train on all of it and report test accuracy only, as the "
                             "paper does for CIFAR-100)")
    max_per_split: int | None = _f(None, "keep only the first N images of each split")
    workers: int = _f(0, "DataLoader worker processes")
    # recipe
    epochs: int = _f(10, "training epochs")
    batch_size: int = _f(64, "global batch size (split across processes)")
    opt: str = _f("adamw", "optimizer, any timm.optim.create_optimizer_v2 name (adamw, sgd, "
                  "lamb, ...)")
    lr: float = _f(1e-3, "peak learning rate")
    layer_decay: float | None = _f(None, "layer-wise lr decay, e.g. 0.75 (none = off; timm's)")
    sched: str = _f("cosine", "schedule, a timm.scheduler.create_scheduler_v2 name: cosine, "
                    "tanh, step, multistep, poly, rsqrt, constant; stepped per optimizer step")
    min_lr: float = _f(1e-6, "final learning rate of the schedule")
    weight_decay: float = _f(0.05, "weight decay")
    warmup_epochs: float = _f(1.0, "linear warm-up, in epochs (per-step schedule)")
    warmup_lr: float | None = _f(None, "learning rate the warm-up starts from (default: lr / "
                                 "1000)")
    label_smoothing: float = _f(0.1, "label smoothing")
    mixup: float = _f(0.0, "mixup alpha (0 = off)")
    cutmix: float = _f(0.0, "cutmix alpha (0 = off)")
    randaugment: str | None = _f(None, "timm RandAugment string, e.g. rand-m9-mstd0.5-inc1")
    hflip: float = _f(0.5, "horizontal flip probability")
    random_erasing: float = _f(0.0, "random erasing probability")
    color_jitter: float = _f(0.0, "colour jitter strength for brightness, contrast and "
                             "saturation (0 = off)")
    crop_scale: float = _f(1.0, "lower bound of random-resized-crop scale (1 = no crop)")
    crop_pct: float | None = _f(None, "evaluation centre crop, as a share of the resized image "
                                "(default: the model's pretrained config)")
    interpolation: str | None = _f(None, "resize interpolation: bilinear, bicubic or nearest "
                                   "(default: the model's pretrained config)")
    mean: list[float] | None = _f(None, "normalisation mean per channel, e.g. 0.5,0.5,0.5 "
                                  "(default: the model's pretrained config)")
    std: list[float] | None = _f(None, "normalisation std per channel (default: the model's "
                                 "pretrained config)")
    drop_path: float = _f(0.0, "stochastic depth rate (timm's drop_path_rate; 0 = off)")
    grad_clip: float | None = _f(1.0, "clip gradient norm (none = off)")
    grad_accum: int = _f(1, "gradient accumulation steps")
    ema: float | None = _f(None, "EMA decay of the weights, e.g. 0.9998 (none = off)")
    amp: str = _f("auto", "mixed precision: auto (bf16 on a GPU that has it), no, bf16, fp16")
    compile: bool = _f(False, "torch.compile the model")
    seed: int = _f(0, "random seed")
    threads: int | None = _f(None, "CPU threads for torch (default: the free cores, see "
                             "docs/bench.md)")
    log_with: str = _f("auto", "metrics logger: tensorboard, wandb, csv or none (auto: "
                       "tensorboard when installed, else csv)")
    wandb_project: str | None = _f(None, "W&B project of --log-with wandb (default: partialft)")
    run_name: str | None = _f(None, "the run's name in its tracker: W&B's run name, and "
                              "run_name in TensorBoard's hparams (default: the tracker's own)")
    # run dir
    out: str = _f("runs/train", "run dir to write")
    save_full: bool = _f(False, "also write the full model.safetensors")
    checkpoint_every: int = _f(0, "also save resume state every N steps (0 = each epoch only)")
    max_steps: int | None = _f(None, "stop after N optimizer steps (the run can be resumed)")
    keep_state: bool = _f(False, "keep the resume state (state/) after the run finishes")

    def __post_init__(self) -> None:
        self._normalise()
        self._check_types()
        self._check_counts()
        self._check_recipe()
        self._check_choices()
        self._check_method_options()

    def baseline_options(self) -> dict[str, Any]:
        """The PEFT baseline's options that are set (``rank``, ``tokens``, ...)."""
        return {k: getattr(self, k) for k in BASELINE_KEYS if getattr(self, k) is not None}

    def _check_method_options(self) -> None:
        """A baseline's option only with a method that takes it (one ignored is a mistake),
        in range: the rule partialft.prepare and ``partialft plan`` apply too."""
        from partialft.methods import check_method_options

        check_method_options(self.method, self.baseline_options())

    def _normalise(self) -> None:
        """Flag and YAML spellings of list fields -> their one form; a ``local-dir:`` model
        folder as an absolute path (a run is read back from any directory)."""
        if isinstance(self.model, str) and self.model.startswith("local-dir:"):
            from partialft.models.create import absolute_local_dir

            self.model = absolute_local_dir(self.model)
        if isinstance(self.layers, str):
            self.layers = [s.strip() for s in self.layers.split(",") if s.strip()]
        if isinstance(self.layers, list):
            self.layers = [str(layer) for layer in self.layers]
        if isinstance(self.targets, list):  # YAML [qkv, mlp.fc1] = "qkv,mlp.fc1"
            self.targets = ",".join(str(t) for t in self.targets)
        for name in ("mean", "std"):
            setattr(self, name, floats(name, getattr(self, name)))
        if isinstance(self.model_kwargs, str):
            self.model_kwargs = keyword_values("model_kwargs", self.model_kwargs)
        for key, value in (self.model_kwargs or {}).items() if isinstance(
                self.model_kwargs, dict) else ():
            if key in rules.RATES:
                rules.check_probability(f"model_kwargs {key}", value)
        owned = [k for k in self.model_kwargs or {} if k in OWN_SETTINGS]
        if owned:
            own = OWN_SETTINGS[owned[0]]
            raise PartialFTError(f"model_kwargs {owned[0]} is set by partialft itself; use "
                                 f"--{own.replace('_', '-')} (or {own}: in a config) instead.")
        if isinstance(self.topk, list) and all(whole(k) for k in self.topk):
            self.topk = ",".join(str(k) for k in self.topk)  # YAML [0, 0, 6, 2] = "0,0,6,2"
        elif self.topk is not None and not isinstance(self.topk, (dict, list)):
            self.topk = str(self.topk)

    def _check_counts(self) -> None:
        """Whole-number settings: epochs, batch, seed, sizes, steps."""
        self._check_positive("epochs", "batch_size", "grad_accum")
        if self.epochs > MAX_EPOCHS:
            raise PartialFTError(f"epochs {self.epochs} is not valid; use a whole number from 1 "
                                 f"to {MAX_EPOCHS:,}.")
        rules.check_seed(self.seed)
        if not str(self.out).strip():
            raise PartialFTError("out '' is empty; name a run dir such as runs/my-run.")
        for name in ("num_classes", "img_size"):
            if getattr(self, name) is not None:
                self._check_positive(name)
        check_threads(self.threads, "threads")  # what the machine can run (utils.limits)
        check_workers(self.workers, "workers")
        check_img_size(self.img_size, "img_size")
        for name in ("checkpoint_every", "max_steps"):  # 0 means off / none
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise PartialFTError(f"{name} {getattr(self, name)} is not valid; use 0 or more.")

    def _check_recipe(self) -> None:
        """Rates, probabilities and shares of the recipe."""
        rules.check_lr(self.lr)
        rules.check_min_lr(self.min_lr, self.lr)
        rules.check_label_smoothing(self.label_smoothing)
        rules.check_weight_decay(self.weight_decay)
        for name in ("ema", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise PartialFTError(f"{name} {value!r} is not valid; use a finite number >= 0 "
                                     "(or none for off).")
        if self.ema is not None and self.ema >= 1:
            raise PartialFTError(f"ema {self.ema} is not valid; use a decay below 1 such as "
                                 "0.9998 (or none for off).")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise PartialFTError(f"val_fraction {self.val_fraction!r} is not valid; use 0 (no "
                                 "validation split) or a share below 1, such as 0.1.")
        self._check_range("crop_scale", 0.05, 1.0)
        if self.crop_pct is not None:
            self._check_range("crop_pct", 0.05, 1.0)
        rules.check_probability("drop_path", self.drop_path)
        for name in ("mixup", "cutmix", "warmup_epochs", "hflip", "random_erasing"):
            rules.check_non_negative(name, getattr(self, name))
        if self.warmup_lr is not None:
            rules.check_non_negative("warmup_lr", self.warmup_lr, rules.MAX_LR)
        if self.color_jitter is not None:
            rules.check_non_negative("color_jitter", self.color_jitter)
        if self.color_jitter and self.randaugment:
            raise PartialFTError(f"color_jitter {self.color_jitter} has no effect with randaugment "
                                 f"{self.randaugment!r} (timm turns it off too); drop one of them.")
        if self.layer_decay is not None and not (rules.number(self.layer_decay)
                                                 and 0 < self.layer_decay <= 1):
            raise PartialFTError(f"layer_decay {self.layer_decay!r} is not valid; use a number in "
                                 "(0, 1], such as 0.75 (or none for off).")

    def _check_choices(self) -> None:
        """Named choices, and settings that only some methods read."""
        if self.sched not in SCHEDULERS:
            raise PartialFTError(f"sched {self.sched!r} is not valid; use one of "
                                 f"{', '.join(SCHEDULERS)} (timm's schedulers).")
        if self.log_with not in LOGGERS:
            raise PartialFTError(f"log_with {self.log_with!r} is not valid; use one of "
                                 f"{', '.join(LOGGERS)}.")
        rules.check_tracker_name("wandb_project", self.wandb_project)
        rules.check_tracker_name("run_name", self.run_name)
        check_optimizer(self.opt)
        if self.interpolation not in (None, "bilinear", "bicubic", "nearest"):
            raise PartialFTError(f"interpolation {self.interpolation!r} is not valid; use "
                                 "bilinear, bicubic or nearest.")
        if self.layers is not None and self.method != "layers":
            raise option_error(f"`layers={','.join(self.layers)}` is only used by "
                               f"`method=layers`, not {self.method}; drop `layers` or use "
                               "`method=layers`.")
        if self.amp not in AMP:
            raise PartialFTError(f"amp {self.amp!r} is not valid; use one of {', '.join(AMP)}.")
        if self.mode not in (None, "large", "small", "auto", "probe"):
            raise PartialFTError(f"mode {self.mode!r} is not valid; use large, small, auto or "
                                 "probe.")
        rules.check_pilot_fraction(self.pilot_fraction)
        if self.method == "fapft" and self.mode is None:
            from partialft.core.select import MODE_NEEDED

            raise option_error(MODE_NEEDED)

    def _check_types(self) -> None:
        """YAML can give any type: each field must hold its annotated one (an int for a float)."""
        hints = typing.get_type_hints(TrainConfig)
        for name, tp in hints.items():
            value = getattr(self, name)
            if value is None and (FIELDS[name].default is None or optional(tp)):
                continue
            allowed = kinds(tp)
            if not any(is_kind(value, k) for k in allowed):
                bad = f"{name} {value!r} is not valid; use {describe(allowed)}"
                raise PartialFTError(f"{bad} (see the fields of TrainConfig).",
                                     cli=f"{bad} (see 'partialft train --help').")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PartialFTError(f"{name} {value!r} is not valid; use a whole number >= 1.")

    def _check_range(self, name: str, low: float, high: float, upper_open: bool = False) -> None:
        value = getattr(self, name)
        ok = isinstance(value, (int, float)) and low <= value and (
            value < high if upper_open else value <= high)
        if not ok:
            bound = f"[{low}, {high})" if upper_open else f"[{low}, {high}]"
            raise PartialFTError(f"{name} {value!r} is not valid; use a number in {bound}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}
BASELINE_KEYS = ("rank", "alpha", "dropout", "targets", "reduction", "dim", "tokens")
# timm.create_model arguments that have a setting of their own (model_kwargs may not repeat them)
OWN_SETTINGS = {"num_classes": "num_classes", "img_size": "img_size", "pretrained": "pretrained",
                "checkpoint_path": "checkpoint", "pretrained_cfg": "pretrained",
                "pretrained_cfg_overlay": "pretrained", "drop_path_rate": "drop_path"}


def input_roles(cfg: TrainConfig) -> dict[str, str]:
    """The files and folders a run reads, by the setting that names them: the one list that
    output paths are checked against and whose files' SHA-256 a run records (training.resume)."""
    paths = {"checkpoint": cfg.checkpoint, "layer_spec": cfg.layer_spec, "angles": cfg.angles,
             "data_dir": cfg.data_dir}
    base, _, arg = cfg.dataset.partition(":")
    if base == "folder" and arg:
        paths["dataset"] = arg
    if cfg.model.startswith("local-dir:"):  # a model folder (an export) and its weights file
        from partialft.models.create import local_dir_inputs

        paths.update(local_dir_inputs(cfg.model, cfg.pretrained))
    return {role: p for role, p in paths.items() if p}


def config_inputs(cfg: TrainConfig) -> list[str]:
    """The files and folders a run reads: an output path must not contain or sit inside them."""
    return list(input_roles(cfg).values())


def write_config(path: str | Path, cfg: TrainConfig | dict[str, Any]) -> None:
    from partialft.utils.io import atomic_write_text

    data = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
