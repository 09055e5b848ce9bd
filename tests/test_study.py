"""benchmarks/study.py: the plan; ``--smoke`` end to end, and a rerun that skips all done."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "study.py"
FIGURES = ("table1/fig1_accuracy_vs_params.png", "table1/fig3_manual_strategies.png",
           "fig6/fig6_topk_mode.png", "fig4-digits-lr-s0/fig4_angle_ranks.png",
           "fig4-digits-epochs-s0/fig4_angle_ranks.png")


def study(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the study script in a fresh Python; (the finished process, seconds)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, time.monotonic() - start


def tables(out: Path) -> str:
    """study.md without its last section (this invocation's counts and times)."""
    return (out / "study.md").read_text().split("## This invocation")[0]


def outputs(out: Path) -> dict[str, float]:
    """Modification times of every run's summary.json, eval.json and angles file."""
    files = [*out.rglob("summary.json"), *out.rglob("eval.json"), *out.rglob("*angles*.json")]
    return {str(f): f.stat().st_mtime_ns for f in files if "report" not in f.parts}


def test_plan_prints_the_grid_and_fits_the_budget(tmp_path: Path) -> None:
    """--plan prints the counts per task kind and an estimate within 150 min; runs nothing."""
    proc, _ = study("--plan", "--out", str(tmp_path / "study"))
    text = proc.stdout
    for line in ("Table 1 / Fig. 3 runs", "Fig. 6 fapft runs", "soups (Table 3)",
                 "corruption evals (Table 4)", "full, other lr", "full, other epochs"):
        assert line in text
    assert re.search(r"Table 1 / Fig. 3 runs\s+14\s+84\s", text)  # 14 per dataset and seed
    assert re.search(r"Fig. 6 fapft runs \(top-k x mode\)\s+12\s+72\s", text)
    minutes = int(re.search(r"about (\d+) min on 2 worker", text).group(1))
    assert minutes <= 150
    assert not (tmp_path / "study").exists()  # --plan writes nothing


@pytest.mark.slow
def test_smoke_writes_tables_and_figures_and_a_rerun_skips_everything_done(
        tmp_path: Path) -> None:
    """--smoke runs every stage; a second run redoes nothing and rewrites the same tables."""
    out = tmp_path / "study"
    first, first_s = study("--smoke", "--out", str(out))
    assert "0 task(s) not done" in first.stdout
    md = tables(out)
    for heading in ("Table 1 / Fig. 3", "Fig. 6", "Table 3: model soups", "Robustness",
                    "Fig. 4", "Kendall tau"):
        assert heading in md
    for row in ("| full | 2,407,818 |", "| attn | 796,938 |", "| fapft (auto -> ",
                "| full FT, lr 0.001, 0.002 |", "| FAPFT large, top-k 1, 2 |",
                "| FAPFT small, top-k 1, 2 |", "| uniform soup fft |",
                "| digits | epochs (1, 2) |"):
        assert row in md, row
    for figure in FIGURES:
        assert (out / "report" / figure).stat().st_size > 0, figure
    report = (out / "report" / "table1" / "report.md").read_text()
    assert "Robustness and OOD" in report and "gaussian_noise" in report
    before = outputs(out)
    reports = {p: p.read_text() for p in (out / "report").glob("*/report.md")}

    second, second_s = study("--smoke", "--out", str(out))
    n_reports = len(reports)
    assert re.search(rf"(\d+) tasks: (\d+) already done \(skipped\), {n_reports} to run",
                     second.stdout), second.stdout[:500]
    assert outputs(out) == before  # no run, angles file or evaluation was redone
    assert tables(out) == md
    assert {p: p.read_text() for p in reports} == reports
    assert second_s < 0.6 * first_s, (first_s, second_s)
