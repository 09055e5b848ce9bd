"""Read run dirs back: the trained model (base + delta), its base weights, its data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

from partialft.errors import PartialFTError
from partialft.models import check_digest, create_model, load_state_dict_file, shape_model
from partialft.training.checkpoints import DELTA, SUMMARY, apply_delta, read_metadata, read_summary

CONFIG = "config.yaml"
SELECTION = "selection.json"
SPLIT = "split.json"


def is_run_dir(path: str | Path) -> bool:
    """True for a directory that holds a finished run (a summary and a delta)."""
    path = Path(path)
    return (path / SUMMARY).is_file() and (path / DELTA).is_file()


def read_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise PartialFTError(f"{run_dir} has no {CONFIG}; is it a partialft run dir?")
    return yaml.safe_load(path.read_text()) or {}


def delta_info(run_dir: str | Path) -> dict[str, Any]:
    """The delta's metadata: ``base`` (model, num_classes, pretrained, checkpoint) and selection."""
    path = Path(run_dir) / DELTA
    if not path.is_file():
        raise PartialFTError(f"{run_dir} has no {DELTA}; is it a finished partialft run dir?")
    meta = read_metadata(path)
    if meta.get("format") != "partialft-delta" or "base" not in meta:
        raise PartialFTError(f"{path} is not a partialft delta checkpoint.")
    _check_base(meta["base"], path)
    return meta


# the fields of a delta's ``base`` metadata and the JSON types each may have
_BASE_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "num_classes": (int, type(None)), "pretrained": (bool,),
    "checkpoint": (str, type(None)), "img_size": (int, type(None)),
    "layer_spec": (str, type(None)), "init_seed": (int,), "checkpoint_file": (dict,),
}


def _check_base(base: Any, path: Path) -> None:
    """Metadata is read from a file someone may have edited: check it before using it."""
    if not isinstance(base, dict) or not isinstance(base.get("model"), str):
        raise PartialFTError(f"{path} has damaged metadata: 'base' must be a mapping that names "
                             f"the model, not {json.dumps(base)[:60]}; the delta cannot be used.")
    for key, kinds in _BASE_TYPES.items():
        value = base.get(key)
        ok = key not in base or (isinstance(value, kinds) and
                                 not (isinstance(value, bool) and bool not in kinds))
        if not ok:
            raise PartialFTError(f"{path} has damaged metadata: base {key} is "
                                 f"{json.dumps(value)[:60]}, not "
                                 f"{' or '.join(k.__name__ for k in kinds)}; the delta cannot "
                                 "be used.")


def base_model(base: dict[str, Any], **model_kwargs: Any) -> nn.Module:
    """A fresh model with the base weights a run started from.

    Weights that no checkpoint provides (a new head, or the whole model when it is trained from
    scratch) are drawn from ``base["init_seed"]``, so base + delta is exactly the trained model.
    ``model_kwargs`` (e.g. ``drop_path_rate``) go to timm and change no weight.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(base.get("init_seed", 0)))
        return _create(base, model_kwargs)


def _create(base: dict[str, Any], model_kwargs: dict[str, Any]) -> nn.Module:
    if base.get("checkpoint") and base.get("checkpoint_file"):
        check_digest(base["checkpoint"], base["checkpoint_file"], "base checkpoint")
    return create_model(base["model"], num_classes=base.get("num_classes"),
                        pretrained=bool(base.get("pretrained")), checkpoint=base.get("checkpoint"),
                        img_size=base.get("img_size"), offline_hint=RUN_HINT, **model_kwargs)


# reading a run needs its base weights; no flag can replace them
RUN_HINT = ("the run's base weights are needed to rebuild it: copy them into this machine's "
            "Hugging Face cache (HF_HOME), or read the run where they are.")


def structured_model(base: dict[str, Any], selection: dict[str, Any]) -> nn.Module:
    """The base model with a PEFT baseline's modules inserted when the run used one."""
    from partialft.baselines import BASELINES
    from partialft.methods import prepare

    model = base_model(base)
    method = selection.get("method")
    if method in BASELINES:
        options = {k: v for k, v in selection.items() if k not in ("method", "layers", "train_all")}
        model = prepare(model, method, baseline_options=options).model
    return model


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run (base + delta) in eval mode, and the run's summary."""
    meta = delta_info(run_dir)
    model = structured_model(meta["base"], meta.get("selection", {}))
    apply_delta(model, load_state_dict_file(Path(run_dir) / DELTA))
    return model.to(device).eval(), read_summary(run_dir)


def base_state(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The base (pretrained) weights of a run, as a state dict."""
    return base_model(delta_info(run_dir)["base"]).state_dict()


def run_datasets(run_dir: str | Path, split: str = "test") -> torch.utils.data.Dataset:
    """The split (``train``, ``val`` or ``test``) of the dataset a run trained on."""
    from partialft.data import PREPROCESS, build_datasets, resolve_preprocess

    if split not in ("train", "val", "test"):
        raise PartialFTError(f"split {split!r} is not valid; use train, val or test.")
    cfg = read_config(run_dir)
    split_file = Path(run_dir) / SPLIT
    # the evaluation resize the run recorded (its model's own where a run predates it)
    pre = resolve_preprocess(shape_model(cfg["model"]), **{k: cfg.get(k) for k in PREPROCESS})
    data = build_datasets(cfg["dataset"], data_dir=cfg.get("data_dir"),
                          img_size=cfg["img_size"], val_fraction=cfg["val_fraction"],
                          seed=cfg["seed"], download=False,
                          split_file=split_file if split_file.is_file() else None,
                          max_per_split=cfg.get("max_per_split"), crop_pct=pre["crop_pct"],
                          interpolation=pre["interpolation"])
    return getattr(data, split)
