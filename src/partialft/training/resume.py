"""A resume continues the same run, or refuses: the recorded settings and input files rule.

A run dir records its resolved settings in ``config.yaml`` and the SHA-256 of every input file
(checkpoint, layer spec, angles file, ``--config`` file) in its marker when it starts. A resume
(``train --resume``, a ``fapft`` rerun, ``train(cfg, resume=True)``) then:

- starts from the recorded settings: a setting left out takes the recorded value (not the
  default, and not a value resolved again from the model: ``mean``/``std``/``crop_pct``/
  ``interpolation``/``img_size``/``num_classes`` stay what the run trained with);
- refuses a setting given with another value than the recorded one, naming both;
- refuses when an input file changed in place since the run started;
- never rewrites ``config.yaml``.

Only :data:`RUNTIME_ONLY` settings may differ: they say where and how this invocation runs,
not what it computes. The library cannot tell "left out" from "given": ``train(cfg,
resume=True)`` compares every recipe field of ``cfg`` with the record, except that ``None`` in
a field resolved at the start (:data:`RESOLVED`) means "the recorded value".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from partialft.errors import option_error
from partialft.models import file_digest
from partialft.training.config import FIELDS, TrainConfig, input_roles
from partialft.training.config_files import upgrade_recorded
from partialft.utils.parse import load_yaml

CONFIG = "config.yaml"  # partialft.training.runs.CONFIG
# settings of one invocation: where the run dir is, when to stop and save, logging, and speed
# knobs that do not change which images, augmentations or updates a step uses (threads and
# compile may change floating-point rounding, as the machine's free cores already do). Not
# workers: DataLoader workers draw a folder dataset's random crops and flips from their own
# seeds, so another worker count is another augmentation stream (it is kept, or refused).
RUNTIME_ONLY = ("out", "max_steps", "checkpoint_every", "compile", "threads", "log_with",
                "wandb_project", "run_name", "keep_state")
# settings resolved from the model or the data when a run starts (None = "resolve it")
RESOLVED = ("img_size", "num_classes", "crop_pct", "interpolation", "mean", "std")


def recorded_config(out: str | Path) -> dict[str, Any] | None:
    """A run dir's config.yaml, or None when it has none yet (killed before writing it)."""
    path = Path(out) / CONFIG
    if not path.is_file():
        return None
    data = load_yaml(path.read_text(encoding="utf-8"), f"{path}") or {}
    if not isinstance(data, dict):
        raise option_error(f"{path} is not a mapping of settings, so the run cannot be "
                           "resumed; start it again with `overwrite=True` instead of "
                           "`resume=True`.")
    return upgrade_recorded(data)


def ignored_by(method: str) -> tuple[str, ...]:
    """Settings a method does not read (a full run's ``mode`` changes nothing)."""
    return () if method == "fapft" else ("mode", "topk", "angles", "pilot_fraction")


def resume_config(out: str | Path, given: dict[str, Any],
                  recorded: dict[str, Any] | None = None, *, flag: str = "--resume") -> TrainConfig:
    """The config a resume of ``out`` runs with: ``recorded`` (default: its config.yaml) with
    the runtime settings of ``given``; a recipe setting in ``given`` must equal the record."""
    if recorded is None:
        recorded = recorded_config(out)
    if recorded is None:  # nothing recorded yet: the run starts from what is given
        return TrainConfig(**{**given, "out": str(out)})
    base = {k: v for k, v in recorded.items() if k in FIELDS and k not in RUNTIME_ONLY}
    runtime = {k: v for k, v in given.items() if k in RUNTIME_ONLY}
    recipe = {k: v for k, v in given.items() if k in FIELDS and k not in RUNTIME_ONLY}
    unrecorded = {k: v for k, v in recipe.items() if k not in base}  # taken as given
    saved = TrainConfig(**{**base, **unrecorded, **runtime, "out": str(out)})
    wanted = TrainConfig(**{**base, **recipe, **runtime, "out": str(out)})  # normalised
    for key in recipe:
        if key not in base or key in ignored_by(saved.method):
            continue
        old, new = getattr(saved, key), getattr(wanted, key)
        if not same(key, old, new):
            who = f"`{flag[2:].replace('-', '_')}=True`" if flag.startswith("--") else "{flag}"
            raise option_error(who + " of {out} with {key} {new!r}, but the run was started "
                               "with {key} {old!r}; leave it out (the recorded value is used) "
                               "or give the same value, or use `overwrite=True` or another "
                               "`out`.", flag=flag, out=out, key=key, new=new, old=old)
    return saved


def check_same_recipe(source: str | Path, cfg: TrainConfig) -> None:
    """``start_from``: the run dir ``source`` whose resume point a new run continues must have
    trained ``cfg``'s recipe (every setting but the :data:`RUNTIME_ONLY` ones; a :data:`RESOLVED`
    one left as None in ``cfg`` takes the recorded value), or its weights are another run's."""
    recorded = recorded_config(source)
    if recorded is None:
        raise option_error("`start_from={source}` has no recorded settings (config.yaml); pass "
                           "a run dir that partialft started.", source=source)
    theirs = resume_config(source, {k: v for k, v in given_by(cfg).items()
                                    if k in RUNTIME_ONLY}, recorded)
    for key in FIELDS:
        if key in RUNTIME_ONLY or key in ignored_by(cfg.method):
            continue
        old, new = getattr(theirs, key), getattr(cfg, key)
        if not (same(key, old, new) or (new is None and key in RESOLVED)):
            raise option_error("`start_from={source}` trained {key} {old!r}, but this run has "
                               "{key} {new!r}; a run can only continue the resume point of the "
                               "same recipe.", source=source, key=key, old=old, new=new)


def given_by(cfg: TrainConfig) -> dict[str, Any]:
    """What a library caller's ``cfg`` gives: every field, but None in a :data:`RESOLVED` one
    means "left out" (the recorded, resolved value)."""
    return {k: v for k, v in cfg.to_dict().items() if not (v is None and k in RESOLVED)}


def same(key: str, old: Any, new: Any) -> bool:
    """Equal settings: equal values, the same file under two spellings, or ``mode auto``
    against the mode it resolved to when the run started."""
    if old == new:
        return True
    if key == "mode" and new in ("auto", "probe") and old in ("large", "small"):
        return True
    if isinstance(old, str) and isinstance(new, str) and key in PATHS:
        return Path(old).resolve() == Path(new).resolve()
    if key == "dataset" and isinstance(old, str) and isinstance(new, str) and all(
            v.startswith("folder:") for v in (old, new)):
        return Path(old[7:]).resolve() == Path(new[7:]).resolve()
    return False


PATHS = ("checkpoint", "layer_spec", "angles", "data_dir")


# --- input files ----------------------------------------------------------------------------

def input_files(cfg: TrainConfig, extra: Iterable[str | Path | None] = ()) -> dict[str, str]:
    """The input FILES of a run by role: those of :func:`input_roles` (checkpoint, layer
    spec, angles file), then ``extra`` (a --config file), as absolute paths. Folders (data)
    are not hashed."""
    named = {role: str(Path(p).resolve()) for role, p in input_roles(cfg).items()
             if Path(p).is_file()}
    for path in extra:
        if path and Path(path).is_file():
            named[f"file {Path(path).resolve()}"] = str(Path(path).resolve())
    return named


def input_digests(cfg: TrainConfig, extra: Iterable[str | Path | None] = ()
                  ) -> dict[str, dict[str, str]]:
    """``{role: {"path": ..., "sha256": ...}}`` for :func:`input_files`, recorded when a run
    starts."""
    return {role: {"path": path, "sha256": file_digest(path)["sha256"]}
            for role, path in input_files(cfg, extra).items()}


def check_inputs(out: str | Path, recorded: dict[str, Any] | None, cfg: TrainConfig,
                 extra: Iterable[str | Path | None] = ()) -> None:
    """Refuse to resume ``out`` when an input file it recorded changed in place since."""
    if not isinstance(recorded, dict):
        return  # a run started before inputs were recorded
    for role, path in input_files(cfg, extra).items():
        then = recorded.get(role)
        if not isinstance(then, dict) or then.get("path") != path:
            continue  # not an input of the run when it started (a path change is a setting)
        now = file_digest(path)["sha256"]
        if now != then.get("sha256"):
            what = role.split(" ", 1)[0] if role.startswith("file ") else role.replace("_", " ")
            mix = ("the base weights differ from the run's" if role == "checkpoint"
                   else "resuming would mix two inputs in one run")
            raise option_error(f"{what} {path} changed since {out} started (SHA-256 "
                               f"{str(then.get('sha256'))[:12]}... then, {now[:12]}... now), "
                               f"so {mix}; restore the file, or use `overwrite=True` or another "
                               "`out` to start again.")
