"""Selectors (probe-angle, grad, greedy, angle), auto mode, comparison and the select CLI."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from conftest import tiny_run

from partialft.cli import main
from partialft.core.layers import find_layers
from partialft.errors import PartialFTError
from partialft.selectors.probe import linear_probe, probe_rule, resolve_probe_mode
from partialft.selectors.run import run_selector
from partialft.selectors.task import load_task
from partialft.training.config import TrainConfig
from partialft.training.runs import is_run_dir

TINY = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "40", "--epochs", "2", "--batch-size", "8", "--amp", "no",
        "--hflip", "0", "--warmup-epochs", "0.5"]


tiny = tiny_run


def layer_ids(cfg: TrainConfig) -> set[str]:
    task = load_task(cfg)
    return {la.id for la in find_layers(task.model()).layers}


def test_grad_scores_cover_every_layer_finite_positive_and_select(tmp_path):
    cfg = tiny(tmp_path / "g")
    result = run_selector("grad", cfg, tmp_path / "g", batches=2)
    assert set(result.scores) == layer_ids(cfg)
    assert all(math.isfinite(v) and v > 0 for v in result.scores.values())
    assert result.cost["backward_passes"] == 2 and result.cost["wall_s"] > 0
    layer_map = find_layers(load_task(cfg).model())
    large = result.choose(layer_map, topk=1, mode="large")
    small = result.choose(layer_map, topk=1, mode="small")
    assert len(large) == len(small) == 2  # one per homogeneous group (attn, ffn)
    by_group = {g: [la.id for la in ls] for g, ls in layer_map.groups().items()}
    for group, ids in by_group.items():
        top = max(ids, key=result.scores.get)
        assert top in large and min(ids, key=result.scores.get) in small, group


def test_grad_scores_depend_on_the_head_fit(tmp_path):
    cfg = tiny(tmp_path / "g")
    fitted = run_selector("grad", cfg, tmp_path / "a", batches=1).scores
    raw = run_selector("grad", cfg, tmp_path / "b", batches=1, fit_head=False).scores
    assert fitted != raw


def test_probe_angle_trains_a_fraction_of_the_schedule(tmp_path):
    cfg = tiny(tmp_path / "p")
    result = run_selector("probe-angle", cfg, tmp_path / "p", fraction=0.25)
    assert result.cost["steps"] == math.ceil(0.25 * result.info["total_steps"]) == 3
    assert set(result.scores) == layer_ids(cfg)
    assert all(0.0 < v < 180.0 for v in result.scores.values())  # the probe moved every layer
    assert not is_run_dir(tmp_path / "p" / "probe")  # stopped early by max_steps
    with pytest.raises(PartialFTError, match="probe fraction"):
        run_selector("probe-angle", cfg, tmp_path / "q", fraction=0.0)


@pytest.mark.slow
def test_greedy_stops_by_epsilon_and_reports_its_cost(tmp_path):
    cfg = tiny(tmp_path / "gr")
    stop = run_selector("greedy", cfg, tmp_path / "gr", steps=1, epsilon=1000.0, unit="block")
    assert stop.layers == [] and stop.info["stop"].startswith("gain")
    assert stop.cost["trainings"] == 1 + 6  # head only, then each of test_vit's 6 blocks
    assert stop.cost["steps"] == 7 and stop.cost["wall_s"] > 0
    grow = run_selector("greedy", cfg, tmp_path / "gr2", steps=1, epsilon=-1000.0,
                        max_layers=1, unit="block")
    assert grow.info["stop"] == "max_layers" and grow.cost["trainings"] == 1 + 6
    assert len(grow.layers) == 2  # one block: attn + ffn
    history = grow.info["history"]
    assert [h["round"] for h in history] == [0, 1] and history[1]["added"] == grow.layers
    assert grow.choose(find_layers(load_task(cfg).model())) == grow.layers


@pytest.mark.parametrize(("acc", "classes", "mode"), [
    (88.70, 100, "small"), (97.90, 102, "small"), (86.20, 120, "small"),   # paper: easy
    (82.04, 1000, "large"), (85.30, 200, "large"), (75.90, 555, "large"),  # paper: hard
    (51.30, 196, "large"), (25.0, 4, "large"), (99.0, 2, "small"),
])
def test_probe_mode_rule(acc, classes, mode):
    got, reason = probe_rule(acc, classes)
    assert got == mode
    assert f"{acc:.1f}%" in reason and ("easy" if mode == "small" else "hard") in reason


def test_probe_mode_errors_and_threshold():
    with pytest.raises(PartialFTError, match="2 classes"):
        probe_rule(50.0, 1)
    assert probe_rule(60.0, 10, threshold=0.5)[0] == "small"
    assert probe_rule(60.0, 10)[0] == "large"


def test_linear_probe_fits_the_head_and_resolves_a_mode(tmp_path):
    cfg = tiny(tmp_path / "lp")
    task = load_task(cfg)
    model = task.model()
    before = model.get_classifier().weight.detach().clone()
    acc = linear_probe(task, model, steps=5)
    assert 0.0 <= acc <= 100.0
    assert not model.get_classifier().weight.detach().equal(before)
    mode, reason, seconds = resolve_probe_mode(cfg, task)
    assert mode in ("large", "small") and "linear probe" in reason and seconds > 0


def test_unknown_selector_is_a_clear_error(tmp_path):
    with pytest.raises(PartialFTError, match="unknown selector 'gard'"):
        run_selector("gard", tiny(tmp_path), tmp_path)


def test_cli_select_writes_scores_and_selection(tmp_path, capsys):
    out = tmp_path / "sel"
    args = ["select", "--selector", "grad", "--batches", "1", "--mode", "large", "--topk", "1",
            *TINY, "--out", str(out)]
    assert main(args) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["selector"] == "grad" and len(scores["angles"]) == 12
    assert scores["cost"]["wall_s"] > 0
    selection = json.loads((out / "selection.json").read_text())
    assert selection["mode"] == "large" and len(selection["layers"]) == 2
    assert selection["topk"] == [1]  # the top-k per stage the selection used, as a list
    assert "partialft train --method layers" in capsys.readouterr().out
    assert main(args) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_select_mode_auto_trains_pilots_and_records_the_decision(tmp_path, capsys):
    out = tmp_path / "sa"
    args = ["select", "--selector", "grad", "--batches", "1", "--mode", "auto", "--topk", "1",
            *TINY, "--pilot-fraction", "0.5", "--out", str(out)]
    assert main(args) == 0
    selection = json.loads((out / "selection.json").read_text())
    decision = selection["mode_decision"]
    assert decision["rule"] == "validation pilots" and decision["fraction"] == 0.5
    assert selection["mode"] == decision["mode"] and selection["mode_reason"] == decision[
        "reason"]
    accs = {m: p["val_acc"] for m, p in decision["pilots"].items()}
    assert selection["mode"] == max(accs, key=lambda m: (accs[m], m == "small"))
    for mode, pilot in decision["pilots"].items():  # 1 of 2 epochs, kept (resumable)
        pdir = out / f"pilot-{mode}"
        assert pilot["epochs"] == 1 and (pdir / "state" / "state.json").is_file()
        assert len((pdir / "metrics.jsonl").read_text().splitlines()) == 1
    # `partialft train --resume` of the chosen pilot finishes the run select recommends
    chosen = out / f"pilot-{selection['mode']}"
    assert main(["train", "--resume", "--out", str(chosen), "--no-progress"]) == 0
    finished = json.loads((chosen / "summary.json").read_text())
    assert finished["layers"] == selection["layers"] and finished["epochs"] == 2
    assert f"({selection['mode']}: pilots of 1 of 2 epochs" in capsys.readouterr().out
    probe = tmp_path / "sp"  # the old rule, on request
    assert main(["select", "--selector", "grad", "--batches", "1", "--mode", "probe", "--topk",
                 "1", *TINY, "--out", str(probe)]) == 0
    chosen = json.loads((probe / "selection.json").read_text())
    assert chosen["mode_decision"]["rule"] == "linear probe" and "linear probe" in chosen[
        "mode_reason"]
    assert not (probe / "pilot-large").exists()


@pytest.mark.slow
def test_compare_runs_full_selector_and_partial_runs(tmp_path):
    from partialft.selectors.compare import compare_selectors

    out = tmp_path / "cmp"
    summary = compare_selectors(tiny(out, epochs=1), out, ["angle", "grad"],
                                {"grad": {"batches": 1}}, topk="1")
    names = [(r["selector"], r["mode"].split()[0]) for r in summary["rows"]]
    assert names == [("full", "-"), ("angle", "large"), ("angle", "small"), ("grad", "large"),
                     ("grad", "small")]
    angle_row = summary["rows"][1]
    assert angle_row["tau"] == pytest.approx(1.0)  # the reference against itself
    assert angle_row["select_s"] == summary["rows"][0]["train_s"]  # angles cost a full run
    assert all(len(r["layers"]) == 2 for r in summary["rows"][1:])
    assert set(summary["auto_picks_better"]) == {"angle", "grad"}
    for sel in ("angle", "grad"):  # (auto): the better validation accuracy, ties small
        rows = {r["mode"].split()[0]: r for r in summary["rows"] if r["selector"] == sel}
        auto = next(m for m, r in rows.items() if r["mode"].endswith("(auto)"))
        assert auto == max(rows, key=lambda m: (rows[m]["best_val_acc"], m == "small"))
        assert summary["auto_picks_better"][sel] == (
            rows[auto]["test_acc"] >= max(r["test_acc"] for r in rows.values()))
    assert summary["probe_mode"] in ("large", "small")
    assert "Kendall tau" in (out / "comparison.md").read_text()
    assert is_run_dir(out / "grad" / "partial-small")


@pytest.mark.slow
def test_fapft_with_a_selector_skips_the_full_run(tmp_path, capsys):
    out = tmp_path / "fp"
    args = ["fapft", "--selector", "grad", "--mode", "auto", "--topk", "1", *TINY,
            "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mode auto -> " in printed and "pilots of 1 of 1 epochs" in printed
    assert "FAPFT trained 2 layers (top-k 1 per group, mode " in printed
    scores = json.loads((out / "scores.json").read_text())
    assert scores["selector"] == "grad" and len(scores["chosen"]) == 2
    assert not (out / "full").exists() and is_run_dir(out / "fapft")
    summary = json.loads((out / "fapft" / "summary.json").read_text())
    assert summary["layers"] == scores["chosen"]
    # the pilots trained the layers each mode picks from the grad scores, inside the output
    decision = json.loads((out / "summary.json").read_text())["mode_decision"]
    assert decision == scores["mode_decision"] and decision["mode"] == scores["mode"]
    pilot = json.loads((out / f"pilot-{decision['mode']}" / "summary.json").read_text())
    assert pilot["layers"] == scores["chosen"] and pilot["method"] == "layers"
    other = "small" if decision["mode"] == "large" else "large"
    assert decision["pilots"][decision["mode"]]["val_acc"] >= decision["pilots"][other][
        "val_acc"]


def test_fapft_pipeline_mode_auto_pilots_after_the_angles_and_reuses_them(tmp_path, capsys):
    out = tmp_path / "fa"
    args = ["fapft", "--mode", "auto", "--pilot-fraction", "0.5", "--topk", "1", *TINY,
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "mode auto -> " in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    decision = summary["mode_decision"]
    assert summary["mode"] == decision["mode"]
    partial = json.loads((out / "fapft" / "summary.json").read_text())
    assert partial["config"]["mode"] == decision["mode"]
    full_wall = json.loads((out / "full" / "summary.json").read_text())["wall_s"]
    other = "large" if decision["mode"] == "small" else "small"
    assert decision["cost"]["x_full_wall"] == pytest.approx(  # what auto adds: the other pilot
        decision["pilots"][other]["wall_s"] / full_wall, abs=1e-3)
    for mode in ("large", "small"):  # pilots select from the pipeline's own angles
        pilot = yaml.safe_load((out / f"pilot-{mode}" / "config.yaml").read_text())
        assert pilot["angles"] == str(out / "angles.json") and pilot["mode"] == mode
        assert decision["pilots"][mode]["epochs"] == 1
    # the partial run is the chosen pilot continued: it trained 2 epochs, the first the pilot's
    metrics = (out / "fapft" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2 and metrics[0] == (
        out / f"pilot-{decision['mode']}" / "metrics.jsonl").read_text().splitlines()[0]
    stamp = (out / "pilot-small" / "metrics.jsonl").stat().st_mtime_ns
    assert main(args) == 0  # a rerun reuses the finished stages, pilots included
    assert (out / "pilot-small" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert json.loads((out / "summary.json").read_text())["mode_decision"] == decision
