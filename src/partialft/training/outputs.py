"""Where partialft may write, and what ``--overwrite`` may delete.

Every directory partialft creates for its outputs (a run dir, a fapft pipeline, a soup, a
report, ...) gets a marker file, ``.partialft``, before anything else is written into it. The
marker names the directory's *kind* and, for pipelines, the settings a rerun must match.

The rules every verb follows (one sentence and exit code 2 when one is broken):

- ``--out`` is never the current directory or one of its parents, never an input of the
  command (checkpoint, config, layer spec, angles, data dir, ingredient, reference) and never
  inside or above one;
- an existing ``--out`` is used only when it is empty or carries the marker;
- ``--overwrite`` clears a marked directory only when everything in it is something partialft
  writes there (the patterns in :data:`OWNED`); a file of the user's stops it, untouched.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError, article

MARKER = ".partialft"
LOCK = ".lock"

# Files partialft writes, per directory kind, as '/'-separated glob patterns relative to the
# marked directory; "x/**" is anything under x. Marked subdirectories are checked on their own.
_RUN = ("config.yaml", "selection.json", "metrics.jsonl", "summary.json", "delta.safetensors",
        "model.safetensors", "split.json", "eval.json", "wall_s.json", "state/state.json",
        "state/tensors-*.safetensors", "tensorboard/**", "wandb/**", "log.csv")
OWNED: dict[str, tuple[str, ...]] = {
    "train": _RUN,
    "soup": _RUN,
    "fapft": ("angles.json", "scores.json", "summary.json", "comparison.md", "selector/*.json"),
    "select": ("scores.json", "selection.json", "comparison.md", "comparison.json",
               "auto_mode.json", "*/scores.json", "*/wall_s.json"),
    "demo": ("demo.md", "fapft-angles.json"),
    "report": ("report.md", "report.json", "*.png"),
    "bench": ("bench.json", "bench.md", "bench.png"),
    "pretrain": ("config.json", "metrics.jsonl", "summary.json", "model.safetensors",
                 "MODEL_CARD.md", "state/state.json", "state/tensors-*.safetensors"),
    "export": ("config.json", "model.safetensors", "adapter_config.json",
               "adapter_model.safetensors"),
}
_ALWAYS = (MARKER, LOCK, "README.md")
# atomic_write's temporary files: '.' + target name + '.' + 8 mkstemp characters + '.tmp'
_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The marker of directory ``path``, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in OWNED else None


def write_marker(path: Path, kind: str, settings: dict[str, Any] | None = None) -> None:
    from partialft.utils.io import atomic_write_json

    atomic_write_json(path / MARKER, {"kind": kind, "settings": settings or {}})


def check_out_path(out: str | Path, inputs: Iterable[str | Path | None] = (),
                   flag: str = "--out") -> Path:
    """Refuse an output path that is the working directory (or above it) or meets an input."""
    if str(out).strip() == "":
        raise PartialFTError(f"{flag} is empty; name a new directory such as runs/my-run.")
    path = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        where = "the current directory" if path == cwd else "a parent of the current directory"
        raise PartialFTError(f"{flag} {out} is {where}; name a new directory inside it, such as "
                             f"{flag} runs/my-run.")
    for given in inputs:
        if given is None or str(given) == "":
            continue
        src = Path(given).expanduser().resolve()
        if src == path:
            raise PartialFTError(f"{flag} {out} is also an input of this command ({given}); "
                                 "choose a new directory.")
        if src in path.parents:
            raise PartialFTError(f"{flag} {out} is inside the input {given}; choose a directory "
                                 "outside it.")
        if path in src.parents:
            raise PartialFTError(f"{flag} {out} contains the input {given}; choose a directory "
                                 "that does not.")
    return path


def check_out_file(out: str | Path, *, overwrite: bool, inputs: Iterable[str | Path | None],
                   ours: Callable[[Path], bool], what: str, flag: str = "--out") -> Path:
    """Check a single output file: not an input, and replaced only when partialft wrote it."""
    path = check_out_path(out, inputs, flag)
    if path.is_dir():
        raise PartialFTError(f"{flag} {out} is a directory; name a file, such as {what}.json.")
    if path.exists():
        if not overwrite:
            raise PartialFTError(f"{flag} {out} already exists; pass --overwrite to replace it.")
        if not ours(path):
            raise PartialFTError(f"{flag} {out} is not a partialft {what} file; --overwrite "
                                 "replaces only files partialft wrote, so choose another name.")
    return path


def foreign_entries(path: str | Path, kind: str) -> list[Path]:
    """Everything under marked directory ``path`` that partialft did not write (sorted)."""
    root = Path(path)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in list(dirnames):
            sub = here / name
            marker = read_marker(sub)
            if sub.is_symlink():
                found.append(sub)
                dirnames.remove(name)
            elif marker is not None:  # a run dir of its own (fapft/full, demo/report, ...)
                found += foreign_entries(sub, marker["kind"])
                dirnames.remove(name)
        for name in filenames:
            rel = (here / name).relative_to(root).as_posix()
            if not _owned(rel, kind):
                found.append(here / name)
    return sorted(found)


def _owned(rel: str, kind: str) -> bool:
    parts = rel.split("/")
    if _TMP.match(parts[-1]) or rel in _ALWAYS:
        return True
    for pattern in OWNED[kind]:
        pat = pattern.split("/")
        if pat[-1] == "**":
            if len(parts) > len(pat) - 1 and _segments(parts[:len(pat) - 1], pat[:-1]):
                return True
        elif len(pat) == len(parts) and _segments(parts, pat):
            return True
    return False


def _segments(parts: list[str], pattern: list[str]) -> bool:
    return all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern))


def check_claim(out: str | Path, kind: str, *, overwrite: bool = False, reuse: bool = False,
                inputs: Iterable[str | Path | None] = (), flag: str = "--out") -> bool:
    """Check ``out`` may be written as a ``kind`` directory; True when it must be cleared first.

    Nothing is created or deleted here: a verb calls this before minutes of work.
    """
    path = check_out_path(out, inputs, flag)
    if not path.exists() and not path.is_symlink():
        return False
    if not path.is_dir() or path.is_symlink():
        raise PartialFTError(f"{flag} {out} exists and is not a directory; partialft replaces "
                             "only directories it wrote, so choose another path.")
    entries = [p for p in path.iterdir() if p.name not in (MARKER, LOCK)]
    marker = read_marker(path)
    if marker is None:
        if entries:
            raise PartialFTError(
                f"{flag} {out} holds files partialft did not write (such as "
                f"{sorted(entries)[0].name}); partialft never writes into or deletes them, even "
                "with --overwrite, so choose a new directory.")
        return False
    if not entries:
        return False
    if overwrite:
        foreign = foreign_entries(path, marker["kind"])
        if foreign:
            raise PartialFTError(
                f"{flag} {out} holds {foreign[0].relative_to(path)}, which partialft did not "
                "write; --overwrite replaces only what partialft wrote, so move that file out "
                "first or choose another directory.")
        return True
    if reuse and marker["kind"] == kind:
        return False
    if marker["kind"] != kind:
        raise PartialFTError(f"{flag} {out} is a partialft {marker['kind']} directory, not "
                             f"{article(kind)} {kind} one; pass --overwrite to replace it or "
                             "choose another directory.")
    raise PartialFTError(_exists_message(flag, out, kind))


def _exists_message(flag: str, out: str | Path, kind: str) -> str:
    if kind in ("train", "pretrain"):
        return (f"run dir {out} already exists; pass --resume to continue it or --overwrite to "
                "replace it.")
    return f"{flag} {out} already exists; pass --overwrite to replace it."


def make_dir(path: Path, flag: str = "--out") -> None:
    """``mkdir -p`` with one clear sentence when the system refuses."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PartialFTError(f"cannot create {flag} {path}: {reason}; choose a writable "
                             "directory.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PartialFTError(f"cannot write into {flag} {path}: permission denied; choose a "
                             "writable directory.")


def clear(path: Path, kind: str) -> None:
    """Delete what partialft wrote in ``path`` (checked again: nothing else may be there)."""
    foreign = foreign_entries(path, kind)
    if foreign:
        raise PartialFTError(f"{path} holds {foreign[0].relative_to(path)}, which partialft did "
                             "not write; it was left untouched, move it out first.")
    for child in path.iterdir():
        if child.name == LOCK:
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def remove_stale_tmp(path: Path) -> None:
    """Remove temporary files a killed write left in ``path`` and its unmarked subfolders."""
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if read_marker(here / d) is None]
        for name in filenames:
            if _TMP.match(name):
                (here / name).unlink(missing_ok=True)


def remove_marked(path: Path) -> None:
    """Delete directory ``path`` only when it is a marked partialft directory."""
    if path.is_dir() and not path.is_symlink() and read_marker(path) is not None:
        shutil.rmtree(path)
