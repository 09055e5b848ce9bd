"""A run dir being written: exclusive lock, overwrite/resume rules, crash-safe resume state.

Resume state lives in ``state/``: ``tensors-<step>.safetensors`` (trainable weights, EMA,
optimizer tensors, RNG states) and ``state.json`` (counters, scheduler, optimizer param groups,
Python/NumPy RNG), written last and atomically, so a crash at any point leaves the previous
complete state in force.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from partialft.errors import PartialFTError, option_error
from partialft.training.checkpoints import SUMMARY, save_tensors
from partialft.training.outputs import (
    check_claim,
    clear,
    hold,
    make_dir,
    own_stage,
    read_marker,
    remove_stale_tmp,
    write_marker,
)
from partialft.utils.io import atomic_write_json, is_tmp

STATE_DIR = "state"


class RunDir:
    """Open ``path`` for writing a ``kind`` directory: check the output rules, lock it, and
    apply ``overwrite``/``resume`` (see :mod:`partialft.training.outputs`).

    ``settings`` are recorded in the marker of a new directory; reusing one (``resume``) with
    other settings is refused, so a rerun never mixes results made two different ways.
    """

    def __init__(self, path: str | Path, *, kind: str = "train", overwrite: bool = False,
                 resume: bool = False, main_process: bool = True,
                 inputs: Iterable[str | Path | None] = (),
                 settings: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.main = main_process
        self._lock_fh = None
        self._created = False  # this call made the directory
        self._new = False  # this call marked it (new, or replaced with --overwrite)
        if main_process:
            self._prepare(kind, overwrite, resume, list(inputs), settings)

    def _prepare(self, kind: str, overwrite: bool, resume: bool, inputs: list,
                 settings: dict[str, Any] | None) -> None:
        claim = dict(overwrite=overwrite, reuse=resume, inputs=inputs)
        check_claim(self.path, kind, **claim)  # before creating anything
        self._created = not self.path.exists()
        own_stage(self.path, kind)  # a pipeline's stage: recorded in its parent before it exists
        make_dir(self.path)
        self._lock()
        try:
            if check_claim(self.path, kind, **claim):  # again, now that we hold the lock
                clear(self.path)
            marker = read_marker(self.path)
            if marker is None:
                write_marker(self.path, kind, settings)
                self._new = True
            elif settings is not None and marker.get("settings") != settings:
                raise option_error(_settings_changed(self.path, marker["settings"], settings))
            remove_stale_tmp(self.path)
            hold(self.path, lambda: self._lock_fh is not None)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        from partialft.training.locks import acquire

        self._lock_fh = acquire(self.path)  # exclusive, for the run's lifetime

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.abandon() if exc_type is not None else self.close()

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.release()
            self._lock_fh = None

    def abandon(self) -> None:
        """Close the output of a command that failed (bad settings or data, missing weights, an
        error or Ctrl-C mid-run). A new one is undone, so the same command, corrected, needs no
        --overwrite: what partialft wrote is deleted, and the directory too when this call made
        it. Kept: a reused one (--resume, a rerun), a finished one, one holding resume state
        (its own or a stage's), and one a file of the user's landed in."""
        if self.main and self._new and not self.finished and not holds_progress(self.path):
            try:
                clear(self.path)  # what partialft wrote, checked
                self.close()  # removes the lock files, before the directory goes
                if self._created:
                    self.path.rmdir()
            except (PartialFTError, OSError):
                pass  # something not ours is there: leave it all (the original error stands)
        self.close()

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    # --- resume state -----------------------------------------------------------------------

    def save_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Write one resume point; older tensor files are removed after the new one is live."""
        if not self.main:
            return
        state = self.path / STATE_DIR
        step = int(info["global_step"])
        name = f"tensors-{step}.safetensors"
        rng = rng_state()
        save_tensors(state / name, {**tensors, **rng["tensors"]}, {})
        atomic_write_json(state / "state.json", {**info, "tensors": name, "rng": rng["json"]})
        for old in state.glob("tensors-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The last complete resume point, or None when the run has none yet."""
        return read_state(self.path)


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The last complete resume point of the run dir ``path`` (its RNG states restored), or None
    when it has none; a damaged one is refused."""
    state = Path(path) / STATE_DIR
    if not (state / "state.json").is_file():
        return None
    try:
        info = json.loads((state / "state.json").read_text(encoding="utf-8"))
        tensors = load_file(str(state / info["tensors"]))
        set_rng_state(tensors, info["rng"])
    except (ValueError, KeyError, TypeError, IndexError, OSError, SafetensorError) as exc:
        why = "a file is missing" if isinstance(exc, FileNotFoundError) else (
            "a file is truncated or malformed")
        raise option_error(f"the resume point in {state} is damaged ({why}); start the "
                           "run again with `overwrite=True` instead of `resume=True`."
                           ) from None
    return tensors, info


def holds_progress(path: Path) -> bool:
    """True when ``path`` or a stage inside it (a pipeline's run) holds resume state, or such a
    stage finished: work a rerun continues rather than redoes."""
    for dirpath, dirnames, _ in os.walk(path):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not is_tmp(d)]  # a bench's scratch runs
        if (here / STATE_DIR / "state.json").is_file() or (
                here != path and (here / SUMMARY).is_file()):
            return True
    return False


def _settings_changed(path: Path, old: dict[str, Any], new: dict[str, Any]) -> str:
    key = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    return (f"{path} was made with {key}={old.get(key)!r}, not {new.get(key)!r}; rerun with the "
            "same settings, or pass `overwrite=True` (or another `out`) to start again.")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                 dict[str, Any]]:
    """An optimizer's state as tensors (``optim.<param>.<key>``) + JSON (scalars, groups)."""
    optim = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in optim["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": optim["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`optimizer_tensors`: a state dict for ``load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in info["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    return {"state": state, "param_groups": info["param_groups"]}


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python RNG states as tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    return {"tensors": tensors,
            "json": {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
                     "python": [version, list(internal), gauss_next]}}


def set_rng_state(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = saved["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, gauss))
    version, internal, gauss_next = saved["python"]
    random.setstate((version, tuple(internal), gauss_next))
