"""Read run dirs back: the trained model (base + delta), its base weights, its data.

A run records the SHA-256 of the base weights it started from (``base["weights_sha256"]``,
:func:`weights_sha256`); rebuilding the base checks it, so a delta is never laid over other
weights unless the caller allows it. Runs written before that field existed are not checked.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from partialft.errors import PartialFTError, option_error
from partialft.models import (
    check_digest,
    create_model,
    file_digest,
    load_state_dict_file,
    shape_model,
)
from partialft.training.checkpoints import (
    DELTA,
    FULL,
    SUMMARY,
    apply_delta,
    read_metadata,
    read_summary,
)
from partialft.training.delta_meta import check_base, check_selection
from partialft.training.runfiles import CONFIG, SELECTION, read_config, read_json
from partialft.utils.digest import weights_sha256

SPLIT = "split.json"
# re-exported: readers import them here
__all__ = ["CONFIG", "SELECTION", "SPLIT", "read_config", "weights_sha256"]


# config keys outside a run's recipe: the seed, and what cannot change a finished run's result
# (where it was written, stopping and resuming, what was logged or kept, how many CPU threads
# and loader processes did the same work: results are identical, see docs/reliability.md)
NOT_RECIPE = ("seed", "out", "max_steps", "checkpoint_every", "log_with", "wandb_project",
              "run_name", "keep_state", "threads", "workers", "save_full")


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without :data:`NOT_RECIPE`: what runs that differ only in seed share."""
    return {k: v for k, v in config.items() if k not in NOT_RECIPE}


def recipe_hash(config: dict[str, Any]) -> str:
    """A short, stable name of a recipe (8 hex digits of its SHA-256)."""
    text = json.dumps(recipe(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def reference_info(run_dir: str | Path) -> dict[str, Any]:
    """What an angles file records about the run it measured: its path, method, seed and
    recipe, so reports can group runs whose angles came from the same recipe."""
    summary = read_summary(run_dir)
    config = summary.get("config") or {}
    return {"reference": str(Path(run_dir).resolve()), "reference_method": summary.get("method"),
            "reference_seed": summary.get("seed"), "reference_recipe": recipe(config)}


def angles_origin(path: str | Path | None) -> dict[str, Any] | None:
    """Which run an angles file measured: method, seed and recipe hash (None when the file
    does not say: older files, or two weights files compared)."""
    if not path or not Path(path).is_file():
        return None
    data = read_json(path, "angles")
    if not isinstance(data, dict) or not isinstance(data.get("reference_recipe"), dict):
        return None
    return {"method": data.get("reference_method"), "seed": data.get("reference_seed"),
            "recipe": recipe_hash(data["reference_recipe"])}


def is_run_dir(path: str | Path) -> bool:
    """True for a directory that holds a finished run (a summary and a delta)."""
    path = Path(path)
    return (path / SUMMARY).is_file() and (path / DELTA).is_file()


def delta_info(run_dir: str | Path) -> dict[str, Any]:
    """The delta's metadata: ``base`` (model, num_classes, pretrained, checkpoint) and selection."""
    path = Path(run_dir) / DELTA
    if not path.is_file():
        raise PartialFTError(f"{run_dir} has no {DELTA}; is it a finished partialft run dir?")
    meta = read_metadata(path)
    if meta.get("format") != "partialft-delta" or "base" not in meta:
        raise PartialFTError(f"{path} is not a partialft delta checkpoint.")
    check_base(meta["base"], path)
    check_selection(meta.get("selection"), path)
    if (Path(run_dir) / SUMMARY).is_file():
        check_identity(run_dir, meta)
    return meta


def check_identity(run_dir: str | Path, meta: dict[str, Any]) -> None:
    """Refuse a delta that is not the one the run's summary.json was written with (copied in
    from another run): its SHA-256 as recorded, else the model, classes and method it names."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    for name, key in ((DELTA, "delta_sha256"), (FULL, "full_sha256")):
        recorded = summary.get(key)
        if recorded and (run_dir / name).is_file():
            now = file_digest(run_dir / name)["sha256"]
            if now != recorded:
                raise PartialFTError(f"{run_dir / name} is not the file this run wrote (SHA-256 "
                                     f"{now[:12]}... now, {recorded[:12]}... in its "
                                     f"{SUMMARY}); was it copied in from another run? Restore "
                                     "it or train the run again.")
    base, selection = meta["base"], meta.get("selection") or {}
    pairs = [("model", summary.get("model"), base.get("model")),
             ("num_classes", summary.get("num_classes"), base.get("num_classes"))]
    if summary.get("method") != "soup":
        pairs.append(("method", summary.get("method"), selection.get("method")))
    for key, said, holds in pairs:
        if said is not None and holds is not None and said != holds:
            raise PartialFTError(f"{run_dir / DELTA} holds a delta of {key} {holds!r}, but the "
                                 f"run's {SUMMARY} says {said!r}; was it copied in from another "
                                 "run? Restore it or train the run again.")


def base_model(base: dict[str, Any], *, offline_hint: str | None = None,
               allow_base_mismatch: bool = False, **model_kwargs: Any) -> nn.Module:
    """A fresh model with the base weights a run started from.

    Weights that no checkpoint provides (a new head, or the whole model when it is trained from
    scratch) are drawn from ``base["init_seed"]``, so base + delta is exactly the trained model.
    ``model_kwargs`` (e.g. ``drop_path_rate``) go to timm and change no weight.
    ``offline_hint`` ends the error when pretrained weights are missing (default: how to read
    an existing run). ``allow_base_mismatch`` reads a base checkpoint file that changed since
    the run recorded it (with a warning) instead of refusing it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(base.get("init_seed", 0)))
        return _create(base, model_kwargs, offline_hint or RUN_HINT, allow_base_mismatch)


def _create(base: dict[str, Any], model_kwargs: dict[str, Any], hint: str,
            allow_mismatch: bool = False) -> nn.Module:
    if base.get("checkpoint") and base.get("checkpoint_file"):
        try:
            check_digest(base["checkpoint"], base["checkpoint_file"], "base checkpoint")
        except PartialFTError as exc:
            if not (allow_mismatch and Path(base["checkpoint"]).is_file()):
                raise
            print(f"warning: {str(exc).split('; restore')[0]}; it is used anyway "
                  "(--allow-base-mismatch).", file=sys.stderr)
    elif base.get("pretrained") and base.get("model_file") and not base.get("checkpoint"):
        _check_model_file(base, allow_mismatch)
    return create_model(base["model"], num_classes=base.get("num_classes"),
                        pretrained=bool(base.get("pretrained")), checkpoint=base.get("checkpoint"),
                        img_size=base.get("img_size"), offline_hint=hint,
                        **{**(base.get("model_kwargs") or {}), **model_kwargs})


def _check_model_file(base: dict[str, Any], allow_mismatch: bool) -> None:
    """A ``local-dir:`` base (an export): its folder and the weights file the run recorded."""
    from partialft.models import local_dir, local_weights

    weights = local_weights(local_dir(base["model"]))
    try:
        check_digest(weights, base["model_file"], "base model weights")
    except PartialFTError as exc:
        if not allow_mismatch:
            raise
        print(f"warning: {str(exc).split('; restore')[0]}; it is used anyway "
              "(--allow-base-mismatch).", file=sys.stderr)


# reading a run needs its base weights; no flag can replace them
RUN_HINT = ("the run's base weights are needed to rebuild it: copy them into this machine's "
            "Hugging Face cache (HF_HOME), or read the run where they are.")


def base_source(base: dict[str, Any]) -> str:
    """Where a run's base weights come from, in words (for messages and model cards)."""
    if base.get("checkpoint"):
        sha = (base.get("checkpoint_file") or {}).get("sha256")
        return f"checkpoint {base['checkpoint']}" + (f" (SHA-256 {sha})" if sha else "")
    if base.get("pretrained") and isinstance(base.get("model_file"), dict):
        folder = base["model"].removeprefix("local-dir:")
        return f"model folder {folder} (weights SHA-256 {base['model_file'].get('sha256')})"
    if base.get("pretrained"):
        return f"timm pretrained weights {base.get('pretrained_tag') or base['model']}"
    return f"{base['model']} initialised from seed {base.get('init_seed', 0)} (no pretraining)"


def check_base_weights(model: nn.Module, base: dict[str, Any],
                       allow_mismatch: bool = False) -> None:
    """Refuse base weights other than those the run recorded (unchecked when it recorded none)."""
    recorded = base.get("weights_sha256")
    if not recorded:
        return
    now = weights_sha256(model.state_dict())
    if now == recorded:
        return
    what = (f"the base weights ({base_source(base)}) differ from those the run started from "
            f"(SHA-256 {recorded[:12]}... recorded, {now[:12]}... now)")
    if allow_mismatch:
        print(f"warning: {what}; the delta is applied to them anyway (allow_base_mismatch=True, "
              "--allow-base-mismatch).", file=sys.stderr)
        return
    raise option_error(f"{what}, so base + delta is not the trained model; restore the "
                       "original base weights, or pass `allow_base_mismatch=True` to apply the "
                       "delta to these anyway.")


def checked_base_model(base: dict[str, Any], allow_base_mismatch: bool = False) -> nn.Module:
    """:func:`base_model`, checked against the base weights' SHA-256 the run recorded."""
    model = base_model(base, allow_base_mismatch=allow_base_mismatch)
    check_base_weights(model, base, allow_base_mismatch)
    return model


# selection keys that are not baseline options (a soup's selection names its ingredients)
NOT_OPTIONS = ("method", "layers", "train_all", "soup", "ingredients", "train_non_residual")


def legacy_options(options: dict[str, Any]) -> dict[str, Any]:
    """A baseline's recorded options under today's names (runs before 0.2 wrote VPT's
    ``tokens`` as ``prompts``)."""
    from partialft.core.select import RENAMED_OPTIONS

    return {RENAMED_OPTIONS.get(k, k): v for k, v in options.items()}


def structured_model(base: dict[str, Any], selection: dict[str, Any], *,
                     allow_base_mismatch: bool = False) -> nn.Module:
    """The base model with a PEFT baseline's modules inserted when the run used one."""
    from partialft.baselines import BASELINES
    from partialft.methods import prepare

    model = checked_base_model(base, allow_base_mismatch)
    method = selection.get("method")
    if method in BASELINES:
        options = legacy_options({k: v for k, v in selection.items() if k not in NOT_OPTIONS})
        model = prepare(model, method, **options).model
    return model


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu", *,
                   allow_base_mismatch: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run (base + delta) in eval mode, and the run's summary."""
    meta = delta_info(run_dir)
    model = structured_model(meta["base"], meta.get("selection", {}),
                             allow_base_mismatch=allow_base_mismatch)
    delta = load_state_dict_file(Path(run_dir) / DELTA)
    check_selected(model, delta, meta, Path(run_dir) / DELTA)
    apply_delta(model, delta)
    return model.to(device).eval(), read_summary(run_dir)


def check_selected(model: nn.Module, delta: dict[str, torch.Tensor], meta: dict[str, Any],
                   path: Path) -> None:
    """A layer method's delta trains only the residual layers its selection names: tensors of
    any other layer mean the delta and its metadata come from different runs."""
    from partialft.baselines import BASELINES
    from partialft.core.layers import find_layers

    selection = meta.get("selection") or {}
    if not selection or selection.get("train_all") or selection.get("method") in BASELINES:
        return
    try:
        layer_map = find_layers(model, meta["base"].get("layer_spec"))
    except PartialFTError:
        return  # a model partialft finds no layers in: nothing to compare
    chosen = set(selection.get("layers") or [])
    stray = [la.id for la in layer_map.layers
             if la.id not in chosen and any(n in delta for n in la.param_names)]
    if stray:
        raise PartialFTError(f"{path} holds trained tensors of layer {stray[0]}, which its "
                             f"selection ({selection.get('method')}) did not train; the delta "
                             "and its metadata come from different runs, train the run again.")


def base_state(run_dir: str | Path, *, allow_base_mismatch: bool = False
               ) -> dict[str, torch.Tensor]:
    """The base (pretrained) weights of a run, as a state dict."""
    return checked_base_model(delta_info(run_dir)["base"], allow_base_mismatch).state_dict()


def run_datasets(run_dir: str | Path, split: str = "test") -> torch.utils.data.Dataset:
    """The split (``train``, ``val`` or ``test``) of the dataset a run trained on."""
    if split not in ("train", "val", "test"):
        raise PartialFTError(f"split {split!r} is not valid; use train, val or test.")
    return getattr(_run_data(run_dir), split)


def run_classes(run_dir: str | Path) -> list[str]:
    """The class names of the dataset a run trained on, in label order."""
    return list(_run_data(run_dir).classes)


def _run_data(run_dir: str | Path) -> Any:
    """The run's datasets (all splits), built as the run built them."""
    from partialft.data import PREPROCESS, build_datasets, resolve_preprocess

    cfg = read_config(run_dir)
    split_file = Path(run_dir) / SPLIT
    # the evaluation resize the run recorded (its model's own where a run predates it)
    pre = resolve_preprocess(shape_model(cfg["model"]), **{k: cfg.get(k) for k in PREPROCESS})
    return build_datasets(cfg["dataset"], data_dir=cfg.get("data_dir"),
                          img_size=cfg["img_size"], val_fraction=cfg["val_fraction"],
                          seed=cfg["seed"], download=False,
                          split_file=split_file if split_file.is_file() else None,
                          max_per_split=cfg.get("max_per_split"), crop_pct=pre["crop_pct"],
                          interpolation=pre["interpolation"])
