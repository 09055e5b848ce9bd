"""A shortened `partialft demo` end to end on the bundled backbone (offline, CPU)."""

from __future__ import annotations

import json

import pytest

from partialft.cli import main
from partialft.training.outputs import foreign_entries
from partialft.workflows.demo import RUNS


@pytest.mark.slow
def test_short_demo_writes_six_runs_a_table_and_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    (tmp_path / "notes.txt").write_text("mine")  # a user's file beside the demo survives
    argv = ["demo", "--out", str(out), "--epochs", "1", "--max-per-split", "96", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert foreign_entries(out, "demo") == []  # --overwrite can replace all it wrote
    assert main([*argv, "--epochs", "2"]) == 2  # a rerun with other settings is refused
    assert "epochs=1" in capsys.readouterr().err
    (out / "mine.md").write_text("mine")
    assert main([*argv, "--overwrite"]) == 2  # a user's file inside: nothing is deleted
    assert (out / "mine.md").read_text() == "mine" and (out / "full" / "summary.json").exists()
    (out / "mine.md").unlink()
    assert main([*argv, "--overwrite"]) == 0  # only partialft's files: replaced
    assert (tmp_path / "notes.txt").read_text() == "mine"
    capsys.readouterr()
    for name, method, pretrained in RUNS:
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["method"] == method
        assert summary["config"]["pretrained"] is pretrained
        assert f"| {name} |" in printed
    fapft = json.loads((out / "fapft" / "selection.json").read_text())
    assert fapft["mode"] == "small" and len(fapft["layers"]) == 8  # top-4 of attn and of ffn
    demo_md = (out / "demo.md").read_text()
    assert demo_md.count("\n") == 2 + len(RUNS)
    for name, _, _ in RUNS:  # every cell re-derived from the run's own summary.json
        s = json.loads((out / name / "summary.json").read_text())
        assert (f"| {name} | {s['test_acc']:.2f} | {s['best_acc']:.2f} | "
                f"{s['trainable_params']:,} | {s['wall_s']:.1f} |") in demo_md
    report = (out / "report" / "report.md").read_text()
    assert "full (from scratch)" in report  # not averaged with the pretrained full run
    assert list((out / "report").glob("*.png"))
    assert str(out / "report") in printed


def test_demo_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_the_demo_recipe_is_the_shipped_config(tmp_path):
    """One source of truth: every setting of the demo's runs comes from configs/digits_demo.yaml
    (what `partialft train --config digits_demo` runs), apart from where it writes."""
    import dataclasses

    from partialft.training.config_files import load_config, read_yaml
    from partialft.workflows.demo import RECIPE, demo_config

    shipped = load_config(RECIPE, {"out": str(tmp_path)})
    assert dataclasses.asdict(demo_config(tmp_path)) == dataclasses.asdict(shipped)
    assert demo_config(tmp_path).epochs == read_yaml(RECIPE)["epochs"]
    assert demo_config(tmp_path, epochs=1).epochs == 1
