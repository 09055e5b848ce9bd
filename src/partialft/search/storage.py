"""Optuna storage for ``partialft search``: SQLite inside ``--out`` by default, or any URL.

The default ``OUT/search.db`` belongs to one search dir, which one process holds at a time
(the dir's lock): a trial left RUNNING there was killed, and is failed and re-queued with the
same choices when the search is rerun. A ``--storage`` URL (``sqlite:///...``,
``postgresql://...``, ``mysql://...``, or ``journal:PATH`` for a journal file on shared disk) can
be shared by several worker processes or machines: heartbeats (SQL storages) mark a killed
worker's trial failed after ``GRACE_S`` and Optuna's retry callback re-queues it; rerunning the
killed worker does it at once for the trials whose run dirs lie in its output.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError
from partialft.utils.extras import require

DB_NAME = "search.db"
HEARTBEAT_S = 10
GRACE_S = 60


def optuna_module() -> Any:
    """optuna, or one sentence naming the missing extra."""
    require("optuna", "partialft search")
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_url(out: str | Path) -> str:
    return f"sqlite:///{(Path(out).resolve() / DB_NAME).as_posix()}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``; one sentence when it cannot be opened."""
    for attempt in range(OPEN_TRIES):
        try:
            return _open(url)
        except PartialFTError:
            raise
        except Exception as exc:  # sqlalchemy / driver errors of every kind
            if attempt + 1 < OPEN_TRIES and _racing(exc):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise PartialFTError(f"storage {url!r} cannot be opened ({type(exc).__name__}); "
                                 "give an Optuna storage URL that is reachable, such as "
                                 "sqlite:///PATH.db in an existing folder, or journal:PATH."
                                 ) from None
    raise AssertionError("unreachable")  # pragma: no cover


# Workers started together on a new database all create Optuna's tables and its version row:
# the losers of that race get an IntegrityError (the row exists) or an OperationalError (a table
# appeared or the file is locked meanwhile). Opening again finds the schema made.
OPEN_TRIES = 5


def _racing(exc: Exception) -> bool:
    name = type(exc).__name__
    return name == "IntegrityError" or (name == "OperationalError"
                                        and "unable to open" not in str(exc))


def _open(url: str) -> Any:
    optuna = optuna_module()
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        if not path.parent.is_dir():
            raise FileNotFoundError(path.parent)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {})
