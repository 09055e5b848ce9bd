"""``--mode auto``: decide FAPFT's mode (largest or smallest angles) from the user's own data.

The paper gives no automatic rule: it labels its tasks easy or hard by hand. ``choose_mode``
trains two short *pilot* runs with the same recipe, one per mode, on the training split, each
for ``fraction`` of the schedule's epochs (the cosine schedule compressed to that length), and
keeps the mode whose pilot has the better validation accuracy. The test split is never read
to choose. Ties (equal validation accuracy) go to the pilot with fewer trainable parameters,
then to ``small`` (the pretrained layers that moved least keep training; the paper's choice for
the tasks the backbone already handles). The pilots are ordinary run dirs under ``out``
(``out/pilot-large/``, ``out/pilot-small/``), so a rerun reuses finished ones and resumes an
interrupted one.

``--mode probe`` keeps partialft's earlier linear-probe threshold rule
(:mod:`partialft.selectors.probe`), which is cheaper and was wrong on the study's tasks.
"""

from __future__ import annotations

import dataclasses
import json
import math
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

MODES = ("large", "small")
# Share of the schedule's epochs each pilot trains (at least one epoch). Chosen from the
# study rerun (docs/RESULTS.md, "--mode auto by validation pilots"): see docs/selectors.md.
PILOT_FRACTION = 0.25


@dataclass
class Pilot:
    """One pilot run: its mode, run dir, validation accuracy and cost."""

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
    """What ``choose_mode`` decided, why, and what the pilots cost."""

    mode: str
    reason: str
    fraction: float
    pilots: dict[str, Pilot] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "rule": "validation pilots", "reason": self.reason,
                "fraction": self.fraction,
                "pilots": {m: p.to_dict() for m, p in self.pilots.items()}, "cost": self.cost}


def pilot_config(cfg: TrainConfig, mode: str, out: Path, fraction: float,
                 layers: Sequence[str] | None = None) -> TrainConfig:
    """``cfg`` shortened to ``fraction`` of its epochs (warm-up scaled alike) in ``mode``; with
    ``layers``, those layers are trained (``method layers``) instead of FAPFT's angles."""
    epochs = max(1, round(fraction * cfg.epochs))
    shorter = {"epochs": epochs, "warmup_epochs": cfg.warmup_epochs * epochs / cfg.epochs,
               "out": str(out / f"pilot-{mode}"), "max_steps": None, "keep_state": False}
    if layers is not None:
        return dataclasses.replace(cfg, method="layers" if layers else "linear",
                                   layers=list(layers) or None, angles=None, mode=None,
                                   **shorter)
    return dataclasses.replace(cfg, mode=mode, **shorter)


def check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction)
            and 0 < fraction <= 1):
        raise PartialFTError(f"pilot_fraction {fraction!r} is not valid; use a share of the "
                             f"schedule in (0, 1], such as {PILOT_FRACTION}.")


def choose_mode(cfg: TrainConfig, out: str | Path, *, fraction: float = PILOT_FRACTION,
                layers_by_mode: Mapping[str, Sequence[str]] | None = None,
                full_wall_s: float | None = None, progress: bool = False,
                log: Callable[[str], None] | None = print) -> ModeDecision:
    """Train one pilot per mode under ``out`` and return the better mode by validation accuracy.

    ``cfg``: the recipe of the final run (``method fapft`` with ``angles``, or any method when
    ``layers_by_mode`` gives the layers each mode trains, as a non-angle selector does).
    ``fraction``: share of ``cfg.epochs`` each pilot trains (rounded, at least 1 epoch).
    ``full_wall_s``: full fine-tuning's training time, when known, for the ``x full FT`` cost.
    ``log``: where the one-line decision is printed (None: silent).
    """
    from partialft.training.train import train

    check_auto(cfg, fraction)
    if layers_by_mode is None and (cfg.method != "fapft" or not cfg.angles):
        raise PartialFTError(f"mode auto needs the fine-tuned angles of a method fapft run (got "
                             f"method {cfg.method}, angles {cfg.angles}); pass angles, or the "
                             "layers each mode trains.")
    pilots = {}
    for mode in MODES:
        layers = None if layers_by_mode is None else layers_by_mode[mode]
        pcfg = pilot_config(cfg, mode, Path(out), fraction, layers)
        summary = train(pcfg, resume=True, progress=progress)
        if summary is None:  # pragma: no cover - max_steps is cleared above
            raise PartialFTError(f"the pilot in {pcfg.out} stopped early; rerun to finish it.")
        pilots[mode] = _pilot(mode, pcfg, summary)
    decision = decide(pilots, fraction, cfg.epochs, full_wall_s)
    if log is not None:
        log(f"mode auto -> {decision.mode}: {decision.reason}")
    return decision


def check_auto(cfg: TrainConfig, fraction: float) -> None:
    """What pilots need, checked before anything is written."""
    check_fraction(fraction)
    if cfg.val_fraction == 0:
        raise option_error("mode auto scores its pilot runs on the validation split, which is "
                           "empty (val_fraction 0); pass `val_fraction=0.1` (or another share "
                           "above 0), or `mode=large` or small.")


def _pilot(mode: str, cfg: TrainConfig, summary: dict[str, Any]) -> Pilot:
    steps = 0
    metrics = Path(cfg.out) / "metrics.jsonl"
    if metrics.is_file():
        lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
        steps = int(json.loads(lines[-1]).get("step", 0)) if lines else 0
    return Pilot(mode, str(cfg.out), summary.get("best_acc"), int(summary["trainable_params"]),
                 cfg.epochs, steps, float(summary.get("wall_s") or 0.0))


def decide(pilots: Mapping[str, Pilot], fraction: float, full_epochs: int,
           full_wall_s: float | None = None) -> ModeDecision:
    """The better pilot by validation accuracy; ties: fewer trainable parameters, then small."""
    def key(p: Pilot) -> tuple[float, int, int]:
        return (-(p.val_acc if p.val_acc is not None else -1.0), p.trainable_params,
                0 if p.mode == "small" else 1)

    best = min(pilots.values(), key=key)
    other = next(p for p in pilots.values() if p is not best)
    tie = best.val_acc == other.val_acc
    why = ("tie on validation, so " + ("fewer trainable parameters" if
                                        best.trainable_params < other.trainable_params
                                        else "the stated tie rule (small)")
           if tie else "higher validation accuracy")
    wall = sum(p.wall_s for p in pilots.values())
    steps = sum(p.steps for p in pilots.values())
    cost: dict[str, Any] = {"wall_s": round(wall, 3), "steps": steps,
                            "epochs": sum(p.epochs for p in pilots.values()),
                            "x_full_epochs": round(sum(p.epochs for p in pilots.values())
                                                   / full_epochs, 3)}
    if full_wall_s:
        cost["x_full_wall"] = round(wall / full_wall_s, 3)
    x_full = (f", {cost['x_full_wall']:.2f}x full fine-tuning's wall time" if full_wall_s
              else "")
    reason = (f"pilots of {best.epochs} of {full_epochs} epochs: val acc {_pct(best.val_acc)} "
              f"({best.mode}) vs {_pct(other.val_acc)} ({other.mode}), {why}; cost "
              f"{wall:.1f} s, {steps} steps{x_full}")
    return ModeDecision(best.mode, reason, fraction, dict(pilots), cost)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def resolve_mode(cfg: TrainConfig, pilots: str | Path | None = None, *,
                 full_wall_s: float | None = None,
                 log: Callable[[str], None] = print) -> tuple[TrainConfig, dict[str, Any] | None]:
    """``cfg`` with ``mode auto`` (pilots in ``pilots/pilot-MODE``) or ``probe`` replaced by the
    mode they choose, and the decision's record (None when ``cfg`` names its mode); the pilots train
    ``cfg.pilot_fraction`` of the schedule."""
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
    dir), train, and add the
    decision to the run's ``summary.json`` (``mode_decision``). Returns (summary, decision)."""
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
    summary = train(cfg, resume=True, progress=progress, inputs=inputs)
    if summary is not None and decision is not None and "mode_decision" not in summary:
        with RunDir(out, kind="train", resume=True):
            summary = {**summary, "mode_decision": decision}
            atomic_write_json(out / SUMMARY, summary)
    return summary, decision

