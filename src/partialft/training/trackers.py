"""Where a run's metrics are logged, through accelerate's trackers: TensorBoard, Weights &
Biases, or a CSV file that needs no extra package (``--log-with``).

Every run has one log: a resumed run clears it and the loop replays ``metrics.jsonl`` into it,
so event files and rows never pile up across resumes.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

from partialft.errors import PartialFTError

CSV = "log.csv"
LOG_DIRS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> folder in the run dir
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
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(c) for c in self.columns])


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


def start(acc: Any, run_dir: Path, config: dict[str, Any]) -> None:
    """Clear the run's old log (main process) and start the trackers afresh."""
    if acc.is_main_process:
        for folder in LOG_DIRS.values():
            if (run_dir / folder).is_dir():
                shutil.rmtree(run_dir / folder)
        (run_dir / CSV).unlink(missing_ok=True)
    acc.wait_for_everyone()
    kwargs = {"wandb": {"dir": str(run_dir)}}
    acc.init_trackers("partialft", config=config, init_kwargs=kwargs)
