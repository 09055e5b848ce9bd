"""``--mode auto``: decide FAPFT's mode (largest or smallest angles) from the user's own data.

The paper gives no automatic rule: it labels its tasks easy or hard by hand. ``choose_mode``
starts the final run in both modes, the same recipe and schedule, on the training split, stops
both after ``fraction`` of the schedule's epochs (the *pilots*), and keeps the mode whose pilot
reached the better validation accuracy so far. The test split is never read to choose. Ties go
to the pilot with fewer trainable parameters, then to ``small`` (the pretrained layers that
moved least keep training; the paper's choice for the tasks the backbone already handles).

A pilot is the first part of the final run, not a shortened copy of it: the final run continues
the chosen pilot's resume point (``train(..., start_from=...)``), so auto costs one run in the
chosen mode plus ``fraction`` of a run in the other. The pilots are ordinary run dirs under
``out`` (``out/pilot-large/``, ``out/pilot-small/``) that keep their resume point, so a rerun
reuses them, and ``partialft train --resume --out OUT/pilot-large`` finishes the other mode
for a comparison.

``--mode probe`` keeps partialft's earlier linear-probe threshold rule
(:mod:`partialft.selectors.probe`), which is cheaper and was wrong on the study's tasks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError, option_error
from partialft.selectors.probe import (  # noqa: F401  (public here too)
    EASY_THRESHOLD,
    linear_probe,
    probe_rule,
    resolve_probe_mode,
)
from partialft.training.config import TrainConfig, config_inputs
from partialft.training.rules import PILOT_FRACTION, check_pilot_fraction

__all__ = ["ModeDecision", "Pilot", "choose_mode", "decide", "pilot_epochs", "rank", "resolve_mode",
           "train_auto"]

MODES = ("large", "small")


@dataclass
class Pilot:
    """One pilot: its mode, run dir, best validation accuracy over its first ``epochs`` epochs
    and what those epochs cost."""

    mode: str
    run_dir: str
    val_acc: float | None
    trainable_params: int
    epochs: int
    steps: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ModeDecision:
    """What ``choose_mode`` decided, why, and what the pilots cost. ``start_from`` is the
    chosen pilot's run dir, which the final run continues."""

    mode: str
    reason: str
    fraction: float
    pilots: dict[str, Pilot] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def start_from(self) -> str:
        return self.pilots[self.mode].run_dir

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "rule": "validation pilots", "reason": self.reason,
                "fraction": self.fraction, "start_from": self.start_from,
                "pilots": {m: p.to_dict() for m, p in self.pilots.items()}, "cost": self.cost}


def pilot_epochs(cfg: TrainConfig, fraction: float) -> int:
    """Epochs each pilot trains before they are compared: ``fraction`` of ``cfg.epochs``,
    rounded, at least one."""
    return min(cfg.epochs, max(1, round(fraction * cfg.epochs)))


def pilot_config(cfg: TrainConfig, mode: str, out: Path,
                 layers: Sequence[str] | None = None) -> TrainConfig:
    """The final run's recipe and whole schedule in ``mode``, in ``out/pilot-MODE``, keeping its
    resume point (the final run continues it); with ``layers``, those layers are trained
    (``method layers``) instead of FAPFT's angles."""
    where = {"out": str(out / f"pilot-{mode}"), "max_steps": None, "keep_state": True}
    if layers is not None:
        return dataclasses.replace(cfg, method="layers" if layers else "linear",
                                   layers=list(layers) or None, angles=None, mode=None,
                                   **where)
    return dataclasses.replace(cfg, mode=mode, **where)


def choose_mode(cfg: TrainConfig, out: str | Path, *, fraction: float = PILOT_FRACTION,
                layers_by_mode: Mapping[str, Sequence[str]] | None = None,
                full_wall_s: float | None = None, progress: bool = False,
                log: Callable[[str], None] | None = print) -> ModeDecision:
    """Train one pilot per mode under ``out`` and return the better mode by validation accuracy.

    ``cfg``: the recipe of the final run (``method fapft`` with ``angles``, or any method when
    ``layers_by_mode`` gives the layers each mode trains, as a non-angle selector does).
    ``fraction``: share of ``cfg.epochs`` the pilots train before they are compared (rounded,
    at least 1 epoch); the final run continues the chosen one (``start_from``).
    ``full_wall_s``: full fine-tuning's training time, when known, for the ``x full FT`` cost.
    ``progress``: progress bars for the pilots' training.
    ``log``: where the one-line decision is printed (None: silent).
    """
    check_auto(cfg, fraction)
    if layers_by_mode is None and (cfg.method != "fapft" or not cfg.angles):
        raise PartialFTError(f"mode auto needs the fine-tuned angles of a method fapft run (got "
                             f"method {cfg.method}, angles {cfg.angles}); pass angles, or the "
                             "layers each mode trains.")
    epochs = pilot_epochs(cfg, fraction)
    pilots = {}
    for mode in MODES:
        layers = None if layers_by_mode is None else layers_by_mode[mode]
        pcfg = pilot_config(cfg, mode, Path(out), layers)
        pilots[mode] = _run_pilot(mode, pcfg, epochs, progress)
    decision = decide(pilots, fraction, cfg.epochs, full_wall_s)
    if log is not None:
        log(f"mode auto -> {decision.mode}: {decision.reason}")
    return decision


def _run_pilot(mode: str, cfg: TrainConfig, epochs: int, progress: bool) -> Pilot:
    """Train ``cfg`` (resuming it) until ``epochs`` epochs are done; a pilot that has them
    already (a rerun) is read, not trained."""
    from partialft.training.train import train

    done = _pilot_progress(cfg.out)
    if done is None or len(done[0]) < epochs:
        train(cfg, resume=True, progress=progress,
              on_epoch=lambda record: record["epoch"] < epochs)
        done = _pilot_progress(cfg.out)
    else:  # reused as it is: opening it (locked) sweeps what a kill mid-write left there
        from partialft.training.rundir import RunDir

        RunDir(cfg.out, kind="train", resume=True, inputs=config_inputs(cfg)).close()
    if done is None or len(done[0]) < epochs:  # pragma: no cover - train runs them or raises
        raise PartialFTError(f"the pilot in {cfg.out} stopped before epoch {epochs}; rerun to "
                             "finish it.")
    records = done[0][:epochs]
    vals = [r["val_acc"] for r in records if r.get("val_acc") is not None]
    return Pilot(mode, str(cfg.out), max(vals) if vals else None, done[1], epochs,
                 int(records[-1]["step"]), float(records[-1].get("elapsed_s") or 0.0))


def _pilot_progress(run_dir: str | Path) -> tuple[list[dict[str, Any]], int] | None:
    """The epoch records a pilot has behind it and its trainable parameters: from its resume
    point (``state/state.json``, what a resume continues; metrics.jsonl may be one epoch ahead
    of it after a kill), else from a finished run's metrics and summary; None before either."""
    from partialft.training.checkpoints import SUMMARY
    from partialft.training.rundir import STATE_DIR

    state, summary = Path(run_dir) / STATE_DIR / "state.json", Path(run_dir) / SUMMARY
    if state.is_file():
        info = json.loads(state.read_text(encoding="utf-8"))
        records = info.get("metrics")
    elif summary.is_file():
        info = json.loads(summary.read_text(encoding="utf-8"))
        path = Path(run_dir) / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        return None
    if "trainable_params" not in info or not isinstance(records, list):
        raise PartialFTError(f"the pilot in {run_dir} was written by another version of "
                             "partialft; start again with `overwrite=True`.")
    return records, int(info["trainable_params"])


def check_auto(cfg: TrainConfig, fraction: float) -> None:
    """What pilots need, checked before anything is written."""
    check_pilot_fraction(fraction)
    if cfg.val_fraction == 0:
        raise option_error("mode auto scores its pilot runs on the validation split, which is "
                           "empty (val_fraction 0); pass `val_fraction=0.1` (or another share "
                           "above 0), or `mode=large` or small.")


def rank(val_acc: float | None, trainable_params: int, mode: str) -> tuple[float, int, int]:
    """Sort key of the rule, smallest first: the higher ``val_acc`` (None ranks last), then
    fewer ``trainable_params``, then ``mode`` ``small``."""
    return (-(val_acc if val_acc is not None else -1.0), trainable_params,
            0 if mode == "small" else 1)


def decide(pilots: Mapping[str, Pilot], fraction: float, full_epochs: int,
           full_wall_s: float | None = None) -> ModeDecision:
    """The better of ``pilots`` by validation accuracy; ties: fewer trainable parameters, then
    small. ``fraction`` and ``full_epochs`` (the schedule's epochs) are recorded and quoted;
    ``full_wall_s``, full fine-tuning's training time when known, prices the cost in it.

    Cost: ``wall_s``/``steps``/``epochs`` of both pilots; ``extra_*`` what auto adds to a run
    in a fixed mode (the other pilot: the chosen one is the start of the final run)."""
    best = min(pilots.values(), key=lambda p: rank(p.val_acc, p.trainable_params, p.mode))
    other = next(p for p in pilots.values() if p is not best)
    tie = best.val_acc == other.val_acc
    why = ("tie on validation, so " + ("fewer trainable parameters" if
                                        best.trainable_params < other.trainable_params
                                        else "the stated tie rule (small)")
           if tie else "higher validation accuracy")
    cost: dict[str, Any] = {
        "wall_s": round(best.wall_s + other.wall_s, 3), "steps": best.steps + other.steps,
        "epochs": best.epochs + other.epochs, "extra_wall_s": round(other.wall_s, 3),
        "extra_steps": other.steps, "x_full_epochs": round(other.epochs / full_epochs, 3)}
    if full_wall_s:
        cost["x_full_wall"] = round(other.wall_s / full_wall_s, 3)
    x_full = (f", {cost['x_full_wall']:.2f}x full fine-tuning's wall time" if full_wall_s
              else "")
    reason = (f"pilots of {best.epochs} of {full_epochs} epochs: best val acc "
              f"{_pct(best.val_acc)} ({best.mode}) vs {_pct(other.val_acc)} ({other.mode}), "
              f"{why}; the {best.mode} run continues, the {other.mode} pilot cost "
              f"{other.wall_s:.1f} s, {other.steps} steps{x_full}")
    return ModeDecision(best.mode, reason, fraction, dict(pilots), cost)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def resolve_mode(cfg: TrainConfig, pilots: str | Path | None = None, *,
                 full_wall_s: float | None = None,
                 log: Callable[[str], None] = print) -> tuple[TrainConfig, dict[str, Any] | None]:
    """``cfg`` with ``mode auto`` (pilots in ``pilots/pilot-MODE``) or ``probe`` replaced by the
    mode they choose, and the decision's record (None when ``cfg`` names its mode); the pilots
    train ``cfg.pilot_fraction`` of the schedule, and the record's ``start_from`` is the chosen
    pilot, which the final run continues (``train(..., start_from=...)``). ``full_wall_s``:
    full fine-tuning's training time, for the cost; ``log``: where the decision is printed."""
    if cfg.method != "fapft" or cfg.mode not in ("auto", "probe"):
        return cfg, None
    if cfg.mode == "probe":
        start = time.perf_counter()
        mode, reason, _ = resolve_probe_mode(cfg)
        log(f"mode probe -> {mode}: {reason}")
        record = {"mode": mode, "rule": "linear probe", "reason": reason,
                  "cost": {"wall_s": round(time.perf_counter() - start, 3)}}
        return dataclasses.replace(cfg, mode=mode), record
    if pilots is None:
        raise PartialFTError("mode auto needs a folder for its pilot runs.")
    decision = choose_mode(cfg, pilots, fraction=cfg.pilot_fraction, full_wall_s=full_wall_s,
                           log=log)
    return dataclasses.replace(cfg, mode=decision.mode), decision.to_dict()


def train_auto(cfg: TrainConfig, *, overwrite: bool = False, resume: bool = False,
               progress: bool = True, inputs: Sequence[str | Path] = ()
               ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``partialft train`` of a ``method fapft`` run whose mode is ``auto`` or ``probe``:
    resolve the mode (pilots in ``cfg.out/pilot-large/`` and ``pilot-small/``, stages of the run
    dir), train (continuing the chosen pilot), and add the decision to the run's
    ``summary.json`` (``mode_decision``). ``overwrite``/``resume``: as for ``train``, for the
    run dir ``cfg.out``; ``progress``: progress bars; ``inputs``: files read besides those
    ``cfg`` names (a YAML config). Returns (summary, decision)."""
    from partialft.training.checkpoints import SUMMARY
    from partialft.training.outputs import read_marker
    from partialft.training.resume import input_digests
    from partialft.training.rundir import RunDir
    from partialft.training.train import train
    from partialft.utils.io import atomic_write_json

    if cfg.mode == "auto":
        check_auto(cfg, cfg.pilot_fraction)
    out = Path(cfg.out)
    started = (out / "config.yaml").is_file()  # past its pilots: a rerun is a plain resume
    marker = read_marker(out) if out.is_dir() else None
    pilots_only = marker is not None and marker["kind"] == "train" and not started
    settings = {"inputs": input_digests(cfg, inputs)}
    with RunDir(out, kind="train", overwrite=overwrite, resume=resume or pilots_only,
                inputs=[*config_inputs(cfg), *inputs], settings=None if (
                    marker is not None and not overwrite) else settings):
        cfg, decision = resolve_mode(cfg, out)
        if decision is not None:
            atomic_write_json(out / "mode_decision.json", decision)
    summary = train(cfg, resume=True, progress=progress, inputs=inputs,
                    start_from=(decision or {}).get("start_from"))
    if summary is not None and decision is not None and "mode_decision" not in summary:
        with RunDir(out, kind="train", resume=True):
            summary = {**summary, "mode_decision": decision}
            atomic_write_json(out / SUMMARY, summary)
    return summary, decision

