"""The files the TensorBoard and W&B trackers make in the folder a run gives them, by their own
names: what partialft records as its own when a tracker closes, and what it recognises as the
tracker's in a folder claimed for it when a kill came first (see :mod:`.trackers`)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

LOG_DIRS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> folder in the run dir
# the names those trackers give their files, relative to their folder ('*' crosses no '/')
WRITTEN = {"tensorboard": ("events.out.tfevents.*", "*/events.out.tfevents.*", "*/hparams.yml",
                           "hparams.yml"),
           "wandb": ("latest-run", "debug.log", "debug-internal.log", "run-*/**",
                     "offline-run-*/**")}


def claims(claim: dict[str, Any], rel: str, path: Path) -> bool:
    """True when ``path`` (``rel`` inside a tracker's folder) is something that tracker makes,
    made since it started: TensorBoard event files carry the process id, and its folders are
    named by their creation time; W&B's are its run folders, links and logs."""
    writer, since = claim.get("writer"), claim.get("since")
    if writer not in WRITTEN or not isinstance(since, (int, float)):
        return False
    try:
        if path.lstat().st_mtime < since:
            return False
    except OSError:
        return False
    if path.is_dir() and not path.is_symlink():
        if writer == "wandb":
            return fnmatch.fnmatchcase(rel.split("/")[0], "*run-*")
        return "/" not in rel and _is_time(rel, since)
    if writer == "tensorboard" and path.name.startswith("events.out.tfevents."):
        if path.name.rsplit(".", 2)[-2] != str(claim.get("pid")):
            return False
    return any(match(rel, pattern) for pattern in WRITTEN[writer])


def _is_time(name: str, since: float) -> bool:
    try:
        return float(name) >= since
    except ValueError:
        return False


def match(rel: str, pattern: str) -> bool:
    """``rel`` matches ``pattern`` ("x/**": anything under folders named x; "*" crosses no "/")."""
    if pattern.endswith("/**"):
        head = pattern[:-3]
        return "/" in rel and fnmatch.fnmatchcase(rel.split("/", 1)[0], head)
    return rel.count("/") == pattern.count("/") and fnmatch.fnmatchcase(rel, pattern)
