"""The FAPFT pipeline: full fine-tuning -> angles -> selection -> partial fine-tuning -> compare.

Each stage writes under ``out``: ``full/`` (a run dir), ``angles.json``, ``fapft/`` (a run dir)
and ``summary.json`` + ``comparison.md``. Rerunning skips the stages that are complete and
resumes the one that was interrupted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partialft.core.angles import compute_angles, save_angles
from partialft.core.layers import find_layers
from partialft.errors import PartialFTError, first_items, option_error
from partialft.models import load_state_dict_file
from partialft.training.config import TrainConfig, config_inputs
from partialft.training.rundir import RunDir
from partialft.training.runs import (
    SELECTION,
    base_model,
    base_state,
    delta_info,
    is_run_dir,
    load_run_model,
    reference_info,
)
from partialft.utils.io import atomic_write_json, atomic_write_text


def run_fapft(cfg: TrainConfig, *, reference: str | None = None, progress: bool = True,
              selector: str = "angle", overwrite: bool = False,
              inputs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Run (or finish) the pipeline under ``cfg.out`` and return the comparison summary.

    ``selector`` other than ``angle`` (see :mod:`partialft.selectors`) replaces the full run and
    its angles; the full run is then only compared against when ``reference`` names one. A
    rerun reuses the finished stages only when it asks for the same selector and reference.
    ``cfg.mode`` ``auto`` trains two pilot runs (``pilot-large/``, ``pilot-small/``) once the
    layers' scores are known and records the decision in ``summary.json`` (``mode_decision``);
    ``probe`` uses the linear-probe rule (:mod:`partialft.selectors.auto`).
    """
    if reference is not None:
        check_reference(reference, cfg)
    settings = {"selector": selector,
                "reference": str(Path(reference).resolve()) if reference else None}
    with RunDir(cfg.out, kind="fapft", overwrite=overwrite, resume=True, settings=settings,
                inputs=[*config_inputs(cfg), reference, *inputs]):
        return _pipeline(cfg, reference, progress, selector,
                         [p for p in inputs if p and Path(p).is_file()])


def pipeline_record(out: str | Path) -> dict[str, Any] | None:
    """The settings a pipeline in ``out`` started with, from its stages' config.yaml (the
    partial run's, else the full run's), without what each stage sets itself; None before any
    stage recorded its settings."""
    from partialft.training.resume import recorded_config

    for stage, own in (("fapft", ("out", "angles", "layers")),
                       ("full", ("out", "angles", "layers", "topk", "mode"))):
        recorded = recorded_config(Path(out) / stage)
        if recorded is not None:
            return {**{k: v for k, v in recorded.items() if k not in own}, "method": "fapft"}
    return None


def _pipeline(cfg: TrainConfig, reference: str | None, progress: bool, selector: str,
              inputs: Sequence[str | Path] = ()) -> dict[str, Any]:
    from partialft.training.train import train

    out = Path(cfg.out)
    full_dir = Path(reference) if reference and Path(reference).is_dir() else out / "full"
    if selector != "angle":
        full = _summary_of(full_dir) if reference and is_run_dir(full_dir) else None
        return _compare(out, full, *_selector_run(cfg, out, selector, progress))
    if reference is None:
        # selection settings do not affect the full run: a rerun with another --topk reuses it
        full = dataclasses.replace(cfg, method="full", out=str(full_dir), layers=None,
                                   angles=None, topk=None, mode=None)
        if train(full, resume=True, progress=progress, inputs=inputs) is None:
            raise option_error("the full fine-tuning in {full_dir} stopped at max_steps "
                               "{max_steps}, before the angles can be measured; rerun without "
                               "`max_steps` to continue the pipeline.", full_dir=full_dir,
                               max_steps=cfg.max_steps)
    angles_path = out / "angles.json"
    if not angles_path.is_file():
        write_angles(cfg, angles_path, full_dir, reference)
    partial = dataclasses.replace(cfg, method="fapft", angles=str(angles_path),
                                  out=str(out / "fapft"))
    full_summary = _summary_of(full_dir) if is_run_dir(full_dir) else None
    partial, decision = _resolve(partial, out, full_summary, progress)
    fapft_summary = train(partial, resume=True, progress=progress, inputs=inputs,
                          start_from=(decision or {}).get("start_from"))
    return _compare(out, full_summary, fapft_summary, decision)


def _resolve(cfg: TrainConfig, out: Path, full: dict[str, Any] | None, progress: bool,
             layers_by_mode: dict[str, list[str]] | None = None
             ) -> tuple[TrainConfig, dict[str, Any] | None]:
    """``mode auto`` (pilots in ``out/pilot-MODE``) or ``probe`` resolved to large or small."""
    from partialft.selectors.auto import choose_mode, resolve_mode

    full_wall = full.get("wall_s") if full else None
    if cfg.mode == "auto" and layers_by_mode is not None:
        decision = choose_mode(cfg, out, fraction=cfg.pilot_fraction,
                               layers_by_mode=layers_by_mode, full_wall_s=full_wall,
                               progress=progress)
        resolved, record = dataclasses.replace(cfg, mode=decision.mode), decision.to_dict()
    else:
        resolved, record = resolve_mode(cfg, out, full_wall_s=full_wall)
    if record is not None:  # kept for a rerun, which continues with the recorded mode
        atomic_write_json(out / MODE_DECISION, record)
    return resolved, record


MODE_DECISION = "mode_decision.json"


def _recorded_decision(out: Path, mode: str | None) -> dict[str, Any] | None:
    """The decision an earlier run of this pipeline recorded for ``mode`` (a rerun resumes
    with the resolved mode), or None."""
    path = out / MODE_DECISION
    if not path.is_file():
        return None
    from partialft.training.runfiles import check_mapping, read_json

    record = check_mapping(read_json(path), path, {})
    return record if record.get("mode") == mode else None


def write_angles(cfg: TrainConfig, path: Path, full_dir: Path, reference: str | None) -> None:
    """Measure the angles between the base and the full run ``full_dir`` (or the weights file
    ``reference``) and write them to ``path`` with their source."""
    angles = _angles(cfg, full_dir, reference)
    source = (reference_info(full_dir) if is_run_dir(full_dir)
              else {"reference": str(Path(reference).resolve())})  # a weights file
    save_angles(path, angles[0], angles[1], model=cfg.model, **source)


def check_reference(reference: str, cfg: TrainConfig) -> None:
    """A reference run dir must be a finished full fine-tuning of the same base model."""
    path = Path(reference)
    if not path.exists():
        raise option_error("`reference={ref}` does not exist; pass a finished full fine-tuning "
                           "run dir or a weights file.", ref=reference)
    if not path.is_dir():
        return  # a weights file: _angles checks no layer was left untrained
    if not is_run_dir(path):
        what = "is not a finished run dir; pass a finished"
        raise PartialFTError(f"reference={reference} {what} run dir of method=full or a "
                             "checkpoint.", cli=f"--reference {reference} {what} 'partialft "
                             "train --method full' run dir or a checkpoint.")
    summary = _summary_of(path)
    if summary.get("method") != "full":
        raise option_error("`reference={ref}` is a {method!r} run; angles need a full "
                           "fine-tuning run (`method=full`) of the same base model.",
                           ref=reference, method=summary.get("method"))
    base = delta_info(path)["base"]
    ours = {"model": cfg.model, "pretrained": cfg.pretrained,
            "checkpoint": str(Path(cfg.checkpoint).resolve()) if cfg.checkpoint else None}
    for key, value in ours.items():
        if base.get(key) != value:
            raise option_error("`reference={ref}` was fine-tuned from {key}={old!r}, but this "
                               "run starts from {key}={new!r}; angles need a full run of the "
                               "same base model.", ref=reference, key=key, old=base.get(key),
                               new=value)


def _angles(cfg: TrainConfig, full_dir: Path, reference: str | None):
    """Angles between the base weights and the fully fine-tuned ones."""
    if reference is not None and not Path(reference).is_dir():
        from partialft.training.setup import init_seed

        finetuned = load_state_dict_file(reference)
        # the weights the run starts from: a model without pretraining is drawn from --seed,
        # and the draw depends on the head's size, so take that from the reference
        base = base_model({"model": cfg.model, "pretrained": cfg.pretrained,
                           "checkpoint": cfg.checkpoint, "img_size": cfg.img_size,
                           "init_seed": init_seed(cfg),
                           "num_classes": cfg.num_classes or head_classes(cfg, finetuned)})
        pretrained = base.state_dict()
        layer_map = find_layers(base, cfg.layer_spec)
    else:
        if not is_run_dir(full_dir):
            raise PartialFTError(f"reference {full_dir} is not a finished run dir; pass a "
                                 "finished 'partialft train' run dir or a checkpoint file.")
        model, _ = load_run_model(full_dir)
        pretrained, finetuned = base_state(full_dir), model.state_dict()
        layer_map = find_layers(model, cfg.layer_spec)
    angles = compute_angles(pretrained, finetuned, layer_map)
    same = [layer_id for layer_id, angle in angles.items() if angle == 0.0]
    if same:
        raise PartialFTError(f"the reference {reference or full_dir} leaves {first_items(same, 3)}"
                             " exactly at the base weights; angles need a full fine-tuning, in "
                             "which every layer trains.")
    return angles, layer_map


def head_classes(cfg: TrainConfig, weights: dict[str, Any]) -> int | None:
    """The number of classes of the classifier in ``weights`` (None when it has no head)."""
    import torch

    from partialft.models import create_model, head_keys

    with torch.device("meta"):
        model = create_model(cfg.model, img_size=cfg.img_size)
    sizes = [weights[k].shape[0] for k in sorted(head_keys(model))
             if k in weights and weights[k].ndim == 2]
    return sizes[0] if sizes else None


def _selector_run(cfg: TrainConfig, out: Path, selector: str, progress: bool
                  ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Score layers with ``selector``, pick top-k per group (or greedy's list), train those."""
    from partialft.selectors.run import run_selector
    from partialft.selectors.task import load_task
    from partialft.training.train import train

    scores_path = out / "scores.json"
    if scores_path.is_file():
        from partialft.training.runfiles import check_mapping, read_json

        record = check_mapping(read_json(scores_path), scores_path, {"chosen": (list,)},
                               ("chosen",))
        layers = [str(la) for la in record["chosen"]]
        decision = record.get("mode_decision")
        decision = decision if isinstance(decision, dict) else None
        mode = record.get("mode") if record.get("mode") in ("large", "small") else None
    else:
        result = run_selector(selector, cfg, out / "selector")
        layer_map = find_layers(load_task(cfg).model(), cfg.layer_spec)
        mode, decision = cfg.mode, None
        if result.scores is not None and cfg.mode in ("auto", "probe"):
            both = {m: result.choose(layer_map, cfg.topk, m) for m in ("large", "small")}
            resolved, decision = _resolve(cfg, out, None, progress, both)
            mode = resolved.mode
        layers = result.choose(layer_map, cfg.topk, mode)
        atomic_write_json(scores_path, {**result.to_dict(), "model": cfg.model, "chosen": layers,
                                        "topk": result.topk_used(layer_map, cfg.topk, mode),
                                        "mode": mode, "mode_decision": decision})
    partial = dataclasses.replace(cfg, method="layers" if layers else "linear",
                                  layers=layers or None, angles=None, out=str(out / "fapft"),
                                  mode=mode if mode in ("large", "small") else None)
    return train(partial, resume=True, progress=progress,
                 start_from=(decision or {}).get("start_from")), decision


def _summary_of(run_dir: Path) -> dict[str, Any]:
    from partialft.training.checkpoints import read_summary

    return read_summary(run_dir)


def _chosen_by(out: Path) -> dict[str, Any]:
    """The stage that chose the layers: the fapft run's selection.json (angles) or, for another
    selector, scores.json; both record the top-k actually used (None for greedy's list)."""
    for path in (out / "fapft" / SELECTION, out / "scores.json"):
        if path.is_file():
            from partialft.training.runfiles import check_mapping, read_json

            record = check_mapping(read_json(path), path, {})
            if "topk" in record:
                return record
    return {}


def _compare(out: Path, full: dict[str, Any] | None, fapft: dict[str, Any],
             decision: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = {"fapft": fapft} if full is None else {"full": full, "fapft": fapft}
    table = {name: {k: s.get(k) for k in ("best_acc", "test_acc", "trainable_params", "wall_s")}
             for name, s in rows.items()}
    chosen = _chosen_by(out)  # a config without --topk used the architecture's default
    mode = chosen.get("mode") or fapft["config"].get("mode")
    summary: dict[str, Any] = {"runs": table, "fapft_layers": fapft["layers"],
                               "topk": chosen.get("topk"), "mode": mode,
                               "mode_decision": decision or _recorded_decision(out, mode)}
    if full is not None and None not in (fapft["test_acc"], full["test_acc"]):
        summary["test_acc_gain"] = fapft["test_acc"] - full["test_acc"]
    if full is not None:
        summary["param_ratio"] = fapft["trainable_params"] / full["trainable_params"]
    lines = ["| run | best val acc (%) | test acc (%) | trainable params | wall (s) |",
             "|---|---:|---:|---:|---:|"]
    for name, r in table.items():
        lines.append(f"| {name} | {_num(r['best_acc'])} | {_num(r['test_acc'])} | "
                     f"{r['trainable_params']:,} | {r['wall_s']:.1f} |")
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "comparison.md", "\n".join(lines) + "\n")
    return summary


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
