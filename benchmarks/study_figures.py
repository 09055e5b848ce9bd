"""Redraw the study's figures in docs/study/ from its stored results, without training.

    PYTHONPATH=src python benchmarks/study_figures.py            # rewrites docs/study/*.png
    PYTHONPATH=src python benchmarks/study_figures.py --out DIR  # somewhere else

The study's run dirs were not kept; what is stored is docs/RESULTS.md's tables (mean ± std over
the 3 seeds, read by study_stored.py) and the ranks of the Fig. 4a angle sets
(docs/study/fig4a_ranks.json). The figures are drawn by partialft's own plotting code
(partialft.analysis.plots, the code ``partialft report`` uses) from rows built out of them.
Fig. 4c (the two datasets, seed 0) is not redrawn: its angles are not stored.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from study_stored import ROOT, Cell, Study, load

from partialft.analysis import plots
from partialft.analysis.rows import AngleSet, Row

MODEL = "partialft_vit_tiny"
DATASETS = {"digits": 2, "fashion-mnist": 3}  # dataset -> column of the methods table
FIG6_COLUMNS = {("digits", "large"): 2, ("digits", "small"): 3,
                ("fashion-mnist", "large"): 4, ("fashion-mnist", "small"): 5}
RANKS = ROOT / "docs" / "study" / "fig4a_ranks.json"


def row(method: str, dataset: str, acc: Cell, params: int, **options: object) -> Row:
    """One configuration's row as ``partialft report`` builds it, from a table cell."""
    return Row(method=method, model=MODEL, dataset=dataset, n=3, val_mean=None, val_std=None,
               test_mean=acc.mean, test_std=acc.std, trainable_params=params,
               options=dict(options), seeds=[0, 1, 2], runs=[])


def method_rows(study: Study) -> list[Row]:
    """Table 1's rows, both datasets (FAPFT as the auto run it is: top-k 4, mode large)."""
    rows = []
    for dataset, col in DATASETS.items():
        for cells in study.methods.rows:
            name, params = cells[0], int(cells[1].replace(",", ""))
            fapft = name.startswith("fapft")
            extra = {"topk": 4, "mode": "large"} if fapft else {}
            rows.append(row("fapft" if fapft else name, dataset, study.methods.get(name, col),
                            params, **extra))
    return rows


def fig6_rows(study: Study) -> list[Row]:
    """Fig. 6's table: top-k x mode per dataset, and full fine-tuning."""
    rows = []
    for (dataset, mode), col in FIG6_COLUMNS.items():
        for cells in study.fig6.rows:
            if cells[0].isdigit():
                rows.append(row("fapft", dataset, study.fig6.get(cells[0], col),
                                int(cells[1].replace(",", "")), topk=int(cells[0]), mode=mode))
    for dataset in DATASETS:
        full = study.fig6.row("full fine-tuning")
        col = 2 if dataset == "digits" else 4
        rows.append(row("full", dataset, study.fig6.get(full[0], col),
                        int(full[1].replace(",", ""))))
    return rows


def angle_sets(path: Path = RANKS) -> list[AngleSet]:
    """The Fig. 4a sets in learning-rate order; a rank r is drawn as the angle -r."""
    stored = json.loads(path.read_text())
    ordered = sorted(stored["ranks"].items(), key=lambda item: float(item[0]))
    return [AngleSet(label=f"lr {float(lr):g}", angles={k: -float(r) for k, r in ranks.items()},
                     groups=stored["groups"]) for lr, ranks in ordered]


def draw(out: Path) -> list[Path]:
    """Fig. 1, 3, 4a and 6 into ``out``, named as in docs/study/."""
    study = load()
    out.mkdir(parents=True, exist_ok=True)
    made = [out / "fig1_accuracy_vs_params.png", out / "fig3_manual_strategies.png",
            out / "fig4_angle_ranks_fashion_lr.png", out / "fig6_topk_mode.png"]
    plots.accuracy_vs_params(method_rows(study), made[0])
    plots.manual_strategies(method_rows(study), made[1])
    plots.angle_ranks(angle_sets(), made[2])
    plots.topk_mode(fig6_rows(study), made[3])
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "study",
                        help="folder for the PNGs (default docs/study)")
    args = parser.parse_args(argv)
    for path in draw(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
