"""The study's figures redrawn from its stored tables (benchmarks/study_figures.py) and the
plotting fixes behind them: Fig. 1's spread of near-equal parameter counts, Fig. 3's labels and
axis, Fig. 4a's column order and title, the full fine-tuning band of Figs. 3 and 6."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from partialft.analysis import plots

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import study_figures

    return study_figures


def test_dodge_spreads_near_equal_counts_and_leaves_the_rest() -> None:
    """0.793, 0.794, 0.797 M (within 5%) move apart in order; 0.4 and 2.4 M stay put."""
    xs = [0.797, 0.4, 0.793, 2.4, 0.794]
    out = plots.dodge(xs)
    assert out[1] == 0.4 and out[3] == 2.4
    cluster = [out[2], out[4], out[0]]  # in parameter order
    gaps = [math.log10(b / a) for a, b in zip(cluster, cluster[1:])]
    assert gaps == pytest.approx([0.045, 0.045])  # a marker apart on a log axis
    centre = sum(math.log10(x) for x in (0.793, 0.794, 0.797)) / 3
    assert math.log10(cluster[1]) == pytest.approx(centre)


def test_fig3_labels_carry_parameters_and_the_difference_to_full(figures) -> None:
    rows = [r for r in figures.method_rows(figures.load()) if r.dataset == "digits"]
    full = next(r for r in rows if r.method == "full")
    fhb = next(r for r in rows if r.method == "first-half-blocks")
    assert plots._strategy_label(fhb, full) == "first-half-blocks, 1.19 M, Δ -0.38"
    assert plots._strategy_label(full, full) == "full, 2.41 M"


def test_fig4a_sets_are_in_learning_rate_order_and_keep_the_stored_tau(figures) -> None:
    """The ranks read off the study's figure give back its seed-0 mean tau (0.703 attn)."""
    sets = figures.angle_sets()
    assert [s.label for s in sets] == ["lr 0.0005", "lr 0.0007", "lr 0.001", "lr 0.0014",
                                       "lr 0.002"]
    assert plots.mean_tau(sets, sets[0].groups["attn"]) == pytest.approx(0.703, abs=5e-4)
    assert plots.mean_tau(sets, sets[0].groups["ffn"]) == pytest.approx(0.812, abs=5e-4)


def test_the_figures_are_redrawn_from_the_stored_tables(figures, tmp_path: Path) -> None:
    made = figures.draw(tmp_path)
    assert [p.name for p in made] == ["fig1_accuracy_vs_params.png",
                                      "fig3_manual_strategies.png",
                                      "fig4_angle_ranks_fashion_lr.png", "fig6_topk_mode.png"]
    for path in made:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
