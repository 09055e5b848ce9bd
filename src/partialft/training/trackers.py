"""Where a run's metrics are logged, through accelerate's trackers: TensorBoard, Weights &
Biases, or a CSV file that needs no extra package (``--log-with``).

Every run has one log: a resumed run clears it and the loop replays ``metrics.jsonl`` into it,
so event files and rows never pile up across resumes. Clearing removes only the log files the
run dir's manifest records (see :mod:`partialft.utils.io`): the TensorBoard and W&B files are
recorded by name once their writer created them (matched by those writers' own file names,
made since the tracker started) and by their bytes when the tracker closes (:func:`finish`).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import time
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

from partialft.errors import PartialFTError
from partialft.training.logfiles import LOG_DIRS, WRITTEN, match
from partialft.training.outputs import remove_recorded
from partialft.utils.io import (
    append_line,
    atomic_write_text,
    record_claim,
    record_file,
    record_open,
)

CSV = "log.csv"
PROJECT = "partialft"  # the tracker project when wandb_project is not given
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
class CSVTracker(GeneralTracker):
    """Appends each logged step as a row of ``RUN/log.csv`` (columns: step, then the metrics)."""

    name = "csv"
    requires_logging_directory = False

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(run_dir) / CSV
        self.columns: list[str] | None = None

    @property
    def tracker(self) -> Path:
        return self.path

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        row = {"step": step, **values}
        if self.columns is None:
            self.columns = list(row)
            atomic_write_text(self.path, _csv_line(self.columns))  # recorded in the manifest
        append_line(self.path, _csv_line([row.get(c) for c in self.columns]))


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def resolve(log_with: str) -> str:
    """``auto`` -> tensorboard when installed, else csv; a named tracker must be installed."""
    if log_with == "auto":
        return "tensorboard" if importlib.util.find_spec("tensorboard") else "csv"
    package = PACKAGES.get(log_with)
    if package and importlib.util.find_spec(package) is None:
        raise PartialFTError(f"log_with {log_with} needs the {package} package, which is not "
                             f"installed; pip install {package}, or use csv (no extra package) "
                             "or none.")
    return log_with


def make(log_with: str, run_dir: str | Path) -> list[Any] | None:
    """What ``Accelerator(log_with=...)`` takes for ``log_with``."""
    kind = resolve(log_with)
    if kind == "none":
        return None
    if kind == "tensorboard":  # its folder is the run dir's tensorboard/, whatever the project
        from accelerate.tracking import TensorBoardTracker

        return [TensorBoardTracker(LOG_DIRS["tensorboard"], str(run_dir))]
    return [CSVTracker(run_dir)] if kind == "csv" else [kind]


def start(acc: Any, run_dir: Path, config: dict[str, Any]) -> float:
    """Clear the run's old log (main process: only what the manifest records, unchanged) and
    start the trackers afresh; the files they create are recorded by name."""
    if acc.is_main_process:
        for folder in LOG_DIRS.values():
            remove_recorded(run_dir, folder)
        remove_recorded(run_dir, CSV)
    acc.wait_for_everyone()
    since = time.time() - 1.0  # file times may be coarser than this clock
    if acc.is_main_process:  # recorded before the trackers make anything (a kill may follow)
        for tracker in _active(acc):
            record_claim(run_dir / LOG_DIRS[tracker], {"writer": tracker, "pid": os.getpid(),
                                                       "since": since})
    project, kwargs = init_args(run_dir, config.get("wandb_project"), config.get("run_name"))
    acc.init_trackers(project, config=config, init_kwargs=kwargs)
    if acc.is_main_process:
        for path in written(run_dir, since):
            record_open(path)
    return since


def init_args(run_dir: Path, project: str | None, run_name: str | None
              ) -> tuple[str, dict[str, dict[str, Any]]]:
    """``Accelerator.init_trackers``' project name and init kwargs: W&B writes into the run
    dir, under ``project`` (default ``partialft``) and ``run_name`` (default: W&B's own). The
    TensorBoard and CSV trackers are made with their folder (:func:`make`); they get the run
    name in the config they store (TensorBoard's hparams)."""
    wandb: dict[str, Any] = {"dir": str(run_dir)}
    if run_name is not None:
        wandb["name"] = run_name
    return project or PROJECT, {"wandb": wandb}


def _active(acc: Any) -> list[str]:
    """Which of the trackers that write a folder ``acc`` runs (instances or LoggerType names)."""
    names = {str(getattr(t, "value", getattr(t, "name", t))).lower() for t in acc.log_with}
    return [tracker for tracker in LOG_DIRS if tracker in names]


def finish(acc: Any, run_dir: Path, since: float) -> None:
    """Record the trackers' files by their final bytes (call after ``acc.end_training()``)."""
    if acc.is_main_process:
        for path in written(run_dir, since):
            record_file(path)
        for folder in LOG_DIRS.values():
            if (run_dir / folder).is_dir():
                record_claim(run_dir / folder, None)  # every file is recorded now


def written(run_dir: Path, since: float) -> list[Path]:
    """Files the TensorBoard and W&B trackers made in ``run_dir`` (their names, changed since
    ``since``)."""
    found = []
    for tracker, folder in LOG_DIRS.items():
        root = run_dir / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if (path.is_file() or path.is_symlink()) and path.lstat().st_mtime >= since and any(
                    match(rel, pattern) for pattern in WRITTEN[tracker]):
                found.append(path)
    return found
