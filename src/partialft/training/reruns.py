"""Outputs a killed command can be rerun into: the marker records the verb's settings and, once
everything is written (and checked), ``"complete": true``.

A directory of the same kind, made with the same settings and not complete, is what a killed
run of the same command left: the rerun reuses it without ``--overwrite`` (each verb then
resumes what it can, such as finished trainings, and rewrites the rest). A complete one, or one
made with other settings, needs ``--overwrite`` as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from partialft.errors import option_error
from partialft.training.outputs import EMBEDDED_KINDS, MARKER, check_claim, read_marker
from partialft.training.rundir import RunDir
from partialft.utils.embedded import CARD, embed
from partialft.utils.io import atomic_write_json


def normalized(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as the marker stores them (JSON: tuples become lists, keys strings)."""
    return json.loads(json.dumps(settings, default=str))


def resumable(out: str | Path, kind: str, settings: dict[str, Any]) -> bool:
    """True when ``out`` is an incomplete ``kind`` output made with ``settings``."""
    marker = read_marker(out) if Path(out).is_dir() else None
    return (marker is not None and marker["kind"] == kind and not marker.get("complete")
            and marker.get("settings") == normalized(settings))


def check_output(out: str | Path, kind: str, settings: dict[str, Any], *, overwrite: bool,
                 inputs: Iterable[str | Path | None] = ()) -> None:
    """Before any work: ``out`` may be written (new, resumable, or replaced)."""
    reuse = not overwrite and resumable(out, kind, settings)
    check_claim(out, kind, overwrite=overwrite, reuse=reuse, inputs=list(inputs))


def open_output(out: str | Path, kind: str, settings: dict[str, Any], *, overwrite: bool,
                inputs: Iterable[str | Path | None] = ()) -> RunDir:
    """Open (lock) ``out`` for writing: new, an incomplete rerun of the same settings, or
    replaced with ``overwrite``; close it with :func:`finish` once everything is written."""
    reuse = not overwrite and resumable(out, kind, settings)
    run = RunDir(out, kind=kind, overwrite=overwrite, resume=reuse, inputs=list(inputs),
                 settings=normalized(settings))
    marker = read_marker(run.path)
    if reuse and marker is not None and marker.get("complete"):  # finished while we waited
        run.close()
        raise option_error(f"`out={out}` already exists; pass `overwrite=True` to replace it.")
    return run


def finish(run: RunDir) -> None:
    """Declare ``run``'s output complete (its last write): a rerun now needs --overwrite.

    An export's marker moves into its model card (see :mod:`partialft.utils.embedded`), so the
    finished folder holds no partialft file."""
    marker = read_marker(run.path)
    if marker is None:
        return
    if marker["kind"] in EMBEDDED_KINDS and (run.path / CARD).is_file():
        embed(run.path, {**marker, "complete": True})
        (run.path / MARKER).unlink(missing_ok=True)  # the embedded one is in force now
    else:
        atomic_write_json(run.path / MARKER, {**marker, "complete": True})
