"""report.md / report.json / figures from run dirs and angles files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from partialft.cli import main
from partialft.report import group_runs, load_inputs

ATTN = [f"blocks.{i}.attn" for i in range(4)]
FFN = [f"blocks.{i}.mlp" for i in range(4)]


def write_run(root: Path, name: str, method: str, acc: float, params: int, seed: int = 0,
              test: float | None = None, **options) -> Path:
    path = root / name
    path.mkdir(parents=True)
    summary = {"method": method, "model": "vit_b", "num_classes": 100, "dataset": "cifar100",
               "seed": seed, "lr": 1e-3, "epochs": 10, "layers": [],
               "trainable_params": params, "total_params": 86_000_000, "best_acc": acc,
               "final_acc": acc, "test_acc": test, "wall_s": 5.0 + seed, "device": "cpu",
               "config": {"method": method, "seed": seed, **options}}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "selection.json").write_text(json.dumps({"method": method, **options}))
    return path


def write_angles(path: Path, scale: float) -> Path:
    angles = {i: (k + 1) * scale for k, i in enumerate(ATTN)}
    angles.update({i: 10 - k * scale for k, i in enumerate(FFN)})
    path.write_text(json.dumps({"angles": angles, "groups": {"attn": ATTN, "ffn": FFN}}))
    return path


@pytest.fixture
def runs(tmp_path) -> list[str]:
    paths = [write_run(tmp_path, "full-s0", "full", 90.0, 85_000_000, 0, test=89.0),
             write_run(tmp_path, "full-s1", "full", 92.0, 85_000_000, 1, test=91.0),
             write_run(tmp_path, "attn", "attn", 91.0, 28_000_000, test=90.5),
             write_run(tmp_path, "ffn", "ffn", 91.5, 56_000_000, test=90.0),
             write_run(tmp_path, "fha", "first-half-attn", 89.0, 14_000_000, test=88.0)]
    for k in (1, 2, 3):
        for mode, shift in (("large", 0.0), ("small", 1.0)):
            paths.append(write_run(tmp_path, f"fapft-{mode}-{k}", "fapft", 88 + k + shift,
                                   7_000_000 * k, test=87 + k + shift, topk=k, mode=mode))
    soup = write_run(tmp_path, "soup", "soup", 93.0, 170_000_000, test=92.0)
    (soup / "eval.json").write_text(json.dumps({"cifar100": {"clean_acc": 92.0,
                                                             "mean_corruption_error": 30.0}}))
    write_angles(tmp_path / "full-s0" / "angles.json", 1.0)
    paths.append(soup)
    return [str(p) for p in paths] + [str(write_angles(tmp_path / "lr2.json", 2.0))]


def test_groups_average_over_seeds(runs):
    loaded, angle_sets = load_inputs(runs)
    rows = group_runs(loaded)
    full = [r for r in rows if r.method == "full"]
    assert len(full) == 1 and full[0].n == 2 and full[0].seeds == [0, 1]
    assert full[0].val_mean == pytest.approx(91.0) and full[0].val_std == pytest.approx(2 ** 0.5)
    assert len([r for r in rows if r.method == "fapft"]) == 6  # topk/mode keep them apart
    assert [a.label for a in angle_sets] == ["full-s0", "lr2"]


def test_cli_report_files(tmp_path, runs, capsys):
    out = tmp_path / "rep"
    assert main(["report", *runs, "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 11 + 1 + 1  # header + 11 rows; robustness header + 1 row
    full_row = next(line for line in table if line.startswith("| full |"))
    cells = [c.strip() for c in full_row.strip("|").split("|")]
    assert cells[3] == "2" and cells[4] == "91.00 ± 1.41" and cells[6] == "85.00"
    assert re.search(r"\| fapft \(topk 2, mode small\) \|.*\| 91\.00 \|", md)
    report = json.loads((out / "report.json").read_text())
    assert len(report["rows"]) == 11 and report["skipped"] == {}
    for name in ("fig1_accuracy_vs_params", "fig3_manual_strategies", "fig4_angle_ranks",
                 "fig6_topk_mode"):
        image = mpimg.imread(out / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert f"({name}.png)" in md
    assert main(["report", *runs, "--out", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_cli_report_skips_figures_without_data(tmp_path, capsys):
    run = write_run(tmp_path, "only", "attn", 80.0, 1_000_000)
    out = tmp_path / "rep"
    assert main(["report", str(run), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["figures"]) == {"fig1_accuracy_vs_params"}
    assert set(report["skipped"]) == {"fig3_manual_strategies", "fig4_angle_ranks",
                                      "fig6_topk_mode"}
    assert "skipped fig4_angle_ranks" in capsys.readouterr().out


def test_cli_report_rejects_other_paths(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert main(["report", str(tmp_path / "notes"), "--out", str(tmp_path / "r")]) == 2
    assert "neither a run dir" in capsys.readouterr().err


def test_cli_report_out_may_not_sit_inside_an_input(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
