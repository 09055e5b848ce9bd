"""benchmarks/study_tables.py --check: RESULTS.md's study conclusions vs its stored tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "RESULTS.md"


class Result:
    """What a --check printed and its exit code."""

    def __init__(self, returncode: int, stdout: str) -> None:
        self.returncode, self.stdout = returncode, stdout


@pytest.fixture
def check(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """study_tables.main(['--check', ...]) in this process (one import for every test)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import study_tables

    def run(*args: str) -> Result:
        code = study_tables.main(["--check", *args])
        return Result(code, capsys.readouterr().out)
    return run


def check_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_tables.py"),
                           "--check", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def edited(tmp_path: Path, old: str, new: str) -> str:
    """A copy of RESULTS.md with one exact edit (asserted to apply once)."""
    text = RESULTS.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "RESULTS.md"
    path.write_text(text.replace(old, new))
    return str(path)


def test_every_quoted_number_matches_the_tables() -> None:
    """The script as the docs run it, on docs/RESULTS.md."""
    proc = check_script()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every quoted number matches the tables" in proc.stdout


def test_a_changed_table_cell_fails_and_prints_the_sentence_it_implies(tmp_path: Path,
                                                                       check) -> None:
    """first-half-blocks on digits 94.81 -> 94.91: the conclusion's Δ must change."""
    path = edited(tmp_path, "| first-half-blocks | 1,190,922 | 94.81 ± 0.42 |",
                  "| first-half-blocks | 1,190,922 | 94.91 ± 0.42 |")
    proc = check("--results", path)
    assert proc.returncode == 1
    assert "94.91 ± 0.42 vs 95.19 ± 0.16, Δ -0.28, sd ≤ 0.58: inside the noise" in proc.stdout
    assert "should say: by 1.15-30.28 points" in proc.stdout  # its gap to VPT-Deep grew too
    assert "3 problem(s)" in proc.stdout  # those two, and coverage deferred until they match


def test_a_table_that_contradicts_a_claim_fails(tmp_path: Path, check) -> None:
    """A partial run above full fine-tuning: 'no partial run has a higher mean' is false."""
    path = edited(tmp_path, "| first-half-blocks | 1,190,922 | 94.81 ± 0.42 |",
                  "| first-half-blocks | 1,190,922 | 95.31 ± 0.42 |")
    proc = check("--results", path)
    assert proc.returncode == 1
    assert "partial_vs_full: the tables no longer support it (a partial run beats full)" in (
        proc.stdout)


def test_a_number_edited_in_the_text_fails(tmp_path: Path, check) -> None:
    """The old rounded range of the first- vs last-half gaps no longer passes."""
    path = edited(tmp_path, "by 4.92-11.95 points", "by 4.9-12.0 points")
    proc = check("--results", path)
    assert proc.returncode == 1
    assert "should say: by 4.92-11.95 points on both datasets, each beyond the spread" in (
        proc.stdout)
    assert "listed once every phrase matches" in proc.stdout


def test_a_new_number_in_the_conclusions_needs_a_claim(tmp_path: Path, check) -> None:
    path = edited(tmp_path, "- **What it costs:**",
                  "- FAPFT wins by 7.5 points somewhere.\n- **What it costs:**")
    proc = check("--results", path)
    assert proc.returncode == 1
    assert "unchecked number in 'What holds here and what does not'" in proc.stdout
    assert "7.5" in proc.stdout


def test_the_most_robust_row_is_recomputed(tmp_path: Path, check) -> None:
    """Robustness: a table where the full fine-tuning soup is no longer the most robust."""
    path = edited(tmp_path, "| 76.33 ± 2.52 | 42.36 ± 1.10 |", "| 76.33 ± 2.52 | 44.36 ± 1.10 |")
    proc = check("--results", path)
    assert proc.returncode == 1
    assert "robustness: the tables no longer support it" in proc.stdout


def test_the_demo_paragraph_is_checked_too(tmp_path: Path, check) -> None:
    """The demo's full fine-tuning row 95.00 -> 96.00: its 'worth 20.3 points' must change."""
    path = edited(tmp_path, "| full | 95.00 | 94.44 |", "| full | 96.00 | 94.44 |")
    proc = check("--results", path)
    assert proc.returncode == 1
    assert "demo_digits: 'The offline demo (digits)' should say: worth 21.3 points over " in (
        proc.stdout)
