"""The selectors by name: ``run_selector("grad", cfg, out)``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError, suggest
from partialft.selectors.greedy import greedy_selector
from partialft.selectors.scores import angle_selector, grad_selector, probe_angle_selector
from partialft.selectors.task import SelectorResult
from partialft.training.config import TrainConfig

Selector = Callable[..., SelectorResult]
SELECTORS: dict[str, Selector] = {"angle": angle_selector, "probe-angle": probe_angle_selector,
                                  "grad": grad_selector, "greedy": greedy_selector}


def run_selector(name: str, cfg: TrainConfig, out: str | Path, **options: Any
                 ) -> SelectorResult:
    """Run selector ``name`` for ``cfg``, working under ``out``; cost includes all its work."""
    if name not in SELECTORS:
        raise PartialFTError(f"unknown selector {name!r}{suggest(name, SELECTORS)}; valid "
                             f"selectors: {', '.join(SELECTORS)}.")
    start = time.perf_counter()
    result = SELECTORS[name](cfg, Path(out), **options)
    result.cost["wall_s"] = round(time.perf_counter() - start, 3)
    return result
