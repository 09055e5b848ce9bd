"""The study's stored tables: docs/RESULTS.md's Markdown tables read back as numbers.

The study's run dirs are not kept (400 tasks, several GB); what is stored is the tables in
docs/RESULTS.md (mean ± sample std over 3 seeds) and the figures in docs/study/. This module
reads those tables so that the conclusions (study_claims.py) and the figures (study_figures.py)
are computed from one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "RESULTS.md"

CELL = re.compile(r"^\*{0,2}(-?[\d,]+(?:\.\d+)?)\*{0,2}(?:\s*±\s*(\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class Cell:
    """One table cell: mean and sample std over the seeds (std None when not given)."""

    mean: float
    std: float | None = None

    def __str__(self) -> str:
        return f"{self.mean:.2f}" + (f" ± {self.std:.2f}" if self.std is not None else "")


def cell(text: str) -> Cell | None:
    """'95.19 ± 0.16' -> Cell(95.19, 0.16); '2,407,818' -> Cell(2407818); else None."""
    m = CELL.match(text.strip())
    if not m:
        return None
    return Cell(float(m.group(1).replace(",", "")), float(m.group(2)) if m.group(2) else None)


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading (exact title, any level) up to the next heading."""
    m = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    if m is None:
        raise KeyError(f"docs/RESULTS.md has no heading {heading!r}")
    return m.group(1)


def table(text: str, heading: str) -> list[list[str]]:
    """The first Markdown table under a heading: its rows (header and rule left out) as cells."""
    lines = [ln for ln in section(text, heading).splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[2:]]


class Table:
    """A table looked up by row label (or its start) and column index."""

    def __init__(self, rows: list[list[str]]) -> None:
        self.rows = rows

    def row(self, label: str) -> list[str]:
        exact = [r for r in self.rows if r[0] == label]
        found = exact or [r for r in self.rows if r[0].startswith(label)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} rows named {label!r}")
        return found[0]

    def get(self, label: str, col: int) -> Cell:
        value = cell(self.row(label)[col])
        if value is None:
            raise KeyError(f"row {label!r} column {col} is not a number")
        return value

    def where(self, **match: str) -> list[str]:
        """The one row whose leading cells equal the given values (keys c0, c1, ...)."""
        found = [r for r in self.rows if all(r[int(k[1:])] == v for k, v in match.items())]
        if len(found) != 1:
            raise KeyError(f"{len(found)} rows match {match}")
        return found[0]


@dataclass
class Study:
    """The study's tables in docs/RESULTS.md (and the page, for the demos' tables)."""

    methods: Table  # method | params | digits | fashion | time (s) | x full
    fig6: Table  # top-k | params | digits large | digits small | fashion large | fashion small
    taus: Table  # dataset | what varies | attn mean (min-max) | ffn mean (min-max)
    soups: Table  # dataset | ingredients | params | best | uniform | greedy | kept
    robust: Table  # run | d clean | d mCE | d rel | f clean | f mCE | f rel
    text: str  # the whole page (for tables outside the study)


def load(path: Path = RESULTS) -> Study:
    """Read the study's tables from docs/RESULTS.md."""
    text = path.read_text()
    return Study(Table(table(text, "Table 1 / Fig. 3: methods")),
                 Table(table(text, "Fig. 6: FAPFT top-k and angle magnitude")),
                 Table(table(text, "Fig. 4: is the angle ranking a property of the task?")),
                 Table(table(text, "Table 3: model soups")),
                 Table(table(text, "Robustness: the 15 corruptions x 5 severities "
                             "(Table 4 style)")), text)


def tau_cell(text: str) -> tuple[float, float, float]:
    """'0.455 (0.212-0.667)' -> (0.455, 0.212, 0.667); negative bounds allowed."""
    m = re.match(r"(-?[\d.]+) \((-?[\d.]+)-(-?[\d.]+)\)", text)
    if m is None:
        raise ValueError(f"not a tau cell: {text!r}")
    return float(m.group(1)), float(m.group(2)), float(m.group(3))
