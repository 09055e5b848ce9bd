"""Config files: a YAML file, a config shipped with partialft (by name, from any directory), or
a timm ``train.py`` ``args.yaml`` (its settings mapped to partialft's, the others named)."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError, read_text_file, suggest
from partialft.training.config import FIELDS, TrainConfig
from partialft.utils.parse import load_yaml

# timm train.py's args.yaml keys (and flags) that mean one of partialft's settings
TIMM_KEYS = {"smoothing": "label_smoothing", "clip_grad": "grad_clip", "reprob": "random_erasing",
             "aa": "randaugment", "model_ema_decay": "ema", "grad_accum_steps": "grad_accum",
             "initial_checkpoint": "checkpoint", "color_jitter": "color_jitter"}
# args.yaml keys that only steer timm's own script (logging, hardware, file names): not settings
TIMM_RUNTIME = {"log_interval", "recovery_interval", "checkpoint_hist", "output", "experiment",
                "eval_metric", "tta", "local_rank", "use_multi_epochs_loader", "log_wandb",
                "pin_mem", "no_prefetcher", "channels_last", "device", "rank", "world_size",
                "distributed", "torchcompile", "torchscript", "resume", "no_resume_opt",
                "save_images", "synchronize_step", "fuser", "fast_norm", "amp_impl", "amp_dtype",
                "dist_bn", "split_bn", "worker_seeding"}


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None,
                log: Any = None) -> TrainConfig:
    """Defaults, then the config file (a path or a shipped config's name), then ``overrides``;
    unknown keys are an error, except in a timm args.yaml, whose extra keys are named in one
    line to ``log`` (stderr by default)."""
    return TrainConfig(**config_values(path, overrides, log))


def config_values(path: str | Path | None, overrides: dict[str, Any] | None = None,
                  log: Any = None) -> dict[str, Any]:
    """The settings a config file and ``overrides`` give (not the defaults): what a resume
    compares with the run's record (see :func:`load_config`)."""
    values: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
        if is_timm_args(data):
            data, ignored = from_timm(data)
            if ignored:
                (log or _stderr)(f"timm args {path}: ignored {len(ignored)} settings partialft "
                                 f"does not have: {', '.join(sorted(ignored))}")
        values.update(data)
    values.update(overrides or {})
    check_renamed(values)
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        key = unknown[0]
        bad = f"unknown config key {key!r}{suggest(key, FIELDS)}; valid keys are the fields of"
        raise PartialFTError(f"{bad} TrainConfig.", cli=f"{bad} 'partialft train --help'.")
    return values


# keys of partialft 0.1.0 that have one name now (the library's keyword); ``baseline`` held them
RENAMED_KEYS = {"lora_rank": "rank", "lora_alpha": "alpha", "lora_targets": "targets",
                "adapter_dim": "dim", "vpt_tokens": "tokens"}


def check_renamed(values: dict[str, Any]) -> None:
    """Refuse a key of an older partialft in one sentence that names today's key."""
    from partialft.training.config import BASELINE_KEYS

    for key in values:
        if key in RENAMED_KEYS:
            raise PartialFTError(f"config key {key} is now called {RENAMED_KEYS[key]} (the same "
                                 f"name as the library's keyword); rename it.")
        if key == "baseline":
            raise PartialFTError("config key baseline is gone: write its options as top-level "
                                 f"keys ({', '.join(BASELINE_KEYS)}), e.g. rank: 4.")


def upgrade_recorded(data: dict[str, Any]) -> dict[str, Any]:
    """A run's config.yaml written by partialft 0.1.0, under today's keys (its own record is
    read, not refused): ``lora_rank`` -> ``rank``, ``baseline: {prompts: 5}`` -> ``tokens: 5``."""
    from partialft.core.select import RENAMED_OPTIONS

    out = {k: v for k, v in data.items() if k not in RENAMED_KEYS and k != "baseline"}
    old = {**(data.get("baseline") or {}),
           **{RENAMED_KEYS[k]: v for k, v in data.items() if k in RENAMED_KEYS}}
    for key, value in old.items():
        if value is not None:
            out[RENAMED_OPTIONS.get(key, key)] = value
    return out


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with partialft, by name (``cifar100_vit_b16``)."""
    folder = resources.files("partialft") / "configs"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir()
            if str(f).endswith(".yaml")}


def config_path(path: str | Path) -> Path:
    """``path`` itself, or the shipped config of that name (from any working directory)."""
    given = Path(path)
    if given.exists():
        return given
    shipped = shipped_configs()
    name = given.name.removesuffix(".yaml")
    if str(given.parent) in (".", "configs") and name in shipped:
        return shipped[name]
    if given.suffix in ("", ".yaml") and str(given.parent) in (".", "configs"):
        raise PartialFTError(f"config {path} is neither a file nor a shipped config"
                             f"{suggest(name, shipped)}; pass a YAML file or one of "
                             f"{', '.join(sorted(shipped))} ('partialft configs' lists them).")
    return given  # read_text_file says what is wrong with it


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = config_path(path)
    text = read_text_file(path, "config", "a YAML file (see 'partialft configs')")
    data = load_yaml(text, f"config {path}") or {}  # aliases, deep nesting refused
    if not isinstance(data, dict):
        raise PartialFTError(f"config {path} must be a YAML mapping of TrainConfig fields.")
    return data


def is_timm_args(data: dict[str, Any]) -> bool:
    """A timm train.py args.yaml: it holds keys only timm's script writes."""
    return len(((set(TIMM_KEYS) | TIMM_RUNTIME) - TIMM_SHARED) & set(data)) >= 2


# timm keys spelled like one of partialft's settings: timm's ``rank`` is the process rank, not
# LoRA's; they do not tell a timm file apart
TIMM_SHARED = {"rank", "color_jitter"}


def from_timm(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """timm's args.yaml -> partialft settings, and the keys that mean nothing here."""
    values, ignored = _timm_special(data)
    for key, value in data.items():
        if key in _SPECIAL or value is None or value == "":
            continue
        field = TIMM_KEYS.get(key, key)
        if field in FIELDS and field not in values and key not in TIMM_RUNTIME:
            values[field] = value
        else:
            ignored.append(key)
    return values, ignored


# timm keys whose meaning differs from partialft's field of the same name, handled below
_SPECIAL = ("amp", "amp_dtype", "dataset", "data_dir", "scale", "input_size", "model_ema",
            "model_ema_decay", "interpolation", "train_interpolation")


def _timm_special(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    if "amp" in data:  # timm: a switch plus amp_dtype; partialft: the precision itself
        values["amp"] = ("bf16" if data.get("amp_dtype") == "bfloat16" else "fp16") \
            if data["amp"] else "no"
    dataset, data_dir = data.get("dataset") or "", data.get("data_dir")
    if dataset.startswith(("torch/", "tfds/", "hfds/")):
        values["dataset"] = dataset.split("/", 1)[1]
    elif not dataset and data_dir:
        values["dataset"] = f"folder:{data_dir}"  # timm's default: an ImageFolder tree
    if data_dir and "dataset" in values and not values["dataset"].startswith("folder:"):
        values["data_dir"] = data_dir
    if isinstance(data.get("scale"), (list, tuple)) and data["scale"]:
        values["crop_scale"] = float(data["scale"][0])
    if isinstance(data.get("input_size"), (list, tuple)) and data["input_size"]:
        values["img_size"] = int(data["input_size"][-1])
    if data.get("model_ema") and data.get("model_ema_decay"):
        values["ema"] = float(data["model_ema_decay"])
    if data.get("interpolation") in ("bilinear", "bicubic", "nearest"):
        values["interpolation"] = data["interpolation"]
    ignored = [k for k in ("dataset",) if dataset and "dataset" not in values]
    if data.get("aa") and data.get("color_jitter"):  # timm turns jitter off under RandAugment
        values["color_jitter"] = 0.0
    return values, ignored
