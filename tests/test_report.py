"""report.md / report.json / figures, from run dirs written by real `partialft` commands.

Every value class the report prints is re-derived here from the run dirs' raw files
(metrics.jsonl, delta tensors, the ingredients' summaries, the angles files)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from safetensors.torch import load_file

from partialft.analysis.report import group_runs, load_inputs
from partialft.cli import main

FIGURES = ("fig1_accuracy_vs_params", "fig3_manual_strategies", "fig4_angle_ranks",
           "fig6_topk_mode")


def _summary(run: str) -> dict:
    return json.loads((Path(run) / "summary.json").read_text())


def _metrics(run: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _runs(real_runs: dict[str, str]) -> list[str]:
    return [v for k, v in real_runs.items() if k != "base"]


@pytest.fixture(scope="module")
def report(real_runs, tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("report") / "rep"
    assert main(["report", *_runs(real_runs), "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def _row(report_json: dict, label_start: str) -> dict:
    rows = [r for r in report_json["rows"] if r["label"].startswith(label_start)]
    assert len(rows) == 1, [r["label"] for r in report_json["rows"]]
    return rows[0]


def test_two_recipes_are_two_rows_with_their_own_mean_and_std(real_runs, report):
    _, data, md = report
    for recipe, lr in (("a", "0.0003"), ("b", "0.001")):
        row = _row(data, f"full (lr {lr})")
        seeds = [_summary(real_runs[f"full-{recipe}-s{s}"]) for s in (0, 1, 2)]
        # best val acc = the best epoch of metrics.jsonl, re-derived from the raw file
        for s in (0, 1, 2):
            best = max(m["val_acc"] for m in _metrics(real_runs[f"full-{recipe}-s{s}"]))
            assert seeds[s]["best_acc"] == pytest.approx(best)
        tests = [s["test_acc"] for s in seeds]
        assert row["n"] == 3 and sorted(row["seeds"]) == [0, 1, 2]
        assert row["test_mean"] == pytest.approx(statistics.fmean(tests))
        assert row["test_std"] == pytest.approx(statistics.stdev(tests))
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| full (lr {lr}) |"))
        mean, std = statistics.fmean(tests), statistics.stdev(tests)
        assert f"{mean:.2f} ± {std:.2f}" in line


def test_a_repeated_seed_is_a_duplicate_not_a_fourth_seed(real_runs, report):
    _, data, md = report
    row = _row(data, "full (lr 0.0003)")
    assert row["duplicates"] == [real_runs["full-a-s0-again"]]
    assert "| 3 (+1 duplicate) |" in md
    assert f"{real_runs['full-a-s0-again']} repeats the configuration and seed" in md


def test_single_runs_show_no_plus_minus(report):
    _, data, md = report
    attn = _row(data, "attn")
    assert attn["n"] == 1 and attn["test_std"] is None
    line = next(ln for ln in md.splitlines() if ln.startswith("| attn |"))
    assert "±" not in line


def test_trainable_params_are_the_delta_tensors(real_runs, report):
    _, data, _ = report
    for name in ("attn", "ffn", "first-half-attn", "fapft-large-k1"):
        delta = load_file(str(Path(real_runs[name]) / "delta.safetensors"))
        label = name if not name.startswith("fapft") else "fapft (k=1, large)"
        assert _row(data, label)["trainable_params"] == sum(t.numel() for t in delta.values())


def test_uniform_and_greedy_soups_are_told_apart_and_counted_as_table_3(real_runs, report):
    _, data, md = report
    uniform, greedy = _row(data, "uniform soup"), _row(data, "greedy soup")
    ingredients = {real_runs[f"full-a-s{s}"]: _summary(real_runs[f"full-a-s{s}"]) for s in range(3)}
    used = _summary(real_runs["soup-greedy"])["used"]
    assert uniform["trainable_params"] == sum(s["trainable_params"] for s in ingredients.values())
    assert greedy["trainable_params"] == sum(ingredients[u]["trainable_params"] for u in used)
    # named by what went in (three full runs of one recipe), not by their paths
    assert "| uniform soup (3 full) |" in md
    assert f"| greedy soup ({len(used)} full) |" in md


def test_runs_and_soups_are_grouped_by_what_their_angles_and_ingredients_were(real_runs,
                                                                             tmp_path):
    # seed 1's fapft uses seed 1's angles (another file): still one row with seed 0's run,
    # whose angles came from seed 0's run of the same recipe
    common = ["--checkpoint", real_runs["base"], "--no-progress"]
    seed1 = tmp_path / "fapft-large-k1-s1"
    config = _summary(real_runs["fapft-large-k1"])["config"]
    argv = ["train", "--model", "test_vit", "--no-pretrained", "--dataset", config["dataset"],
            "--img-size", "32", "--max-per-split", "30", "--batch-size", "8", "--epochs", "2",
            "--warmup-epochs", "0.5", "--hflip", "0", "--amp", "no", "--lr", "3e-4",
            "--method", "fapft", "--angles", real_runs["angles-s1"], "--topk", "1",
            "--mode", "large", "--seed", "1", "--out", str(seed1), *common]
    assert main(argv) == 0
    origin = _summary(str(seed1))["angles_from"]
    assert origin["seed"] == 1 and origin["method"] == "full"
    assert origin == {**_summary(real_runs["fapft-large-k1"])["angles_from"], "seed": 1}
    # soups of FAPFT runs of each mode: two rows, named by mode and top-k
    soups = {}
    for mode in ("large", "small"):
        soups[mode] = tmp_path / f"soup-{mode}"
        assert main(["soup", real_runs[f"fapft-{mode}-k1"], real_runs[f"fapft-{mode}-k2"],
                     "--out", str(soups[mode]), "--no-eval"]) == 0
    out = tmp_path / "rep"
    assert main(["report", real_runs["fapft-large-k1"], str(seed1), *map(str, soups.values()),
                 "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    row = _row(data, "fapft (k=1, large)")
    assert row["n"] == 2 and sorted(row["seeds"]) == [0, 1]
    for mode in ("large", "small"):
        _row(data, f"uniform soup (2 fapft, {mode}; topk 1,2)")


def test_wall_time_is_the_last_epoch_of_metrics(real_runs):
    for name in ("full-a-s0", "attn"):
        assert _summary(real_runs[name])["wall_s"] == pytest.approx(
            _metrics(real_runs[name])[-1]["elapsed_s"], abs=2e-3)


def test_every_figure_is_drawn_from_real_runs(report):
    out, data, md = report
    assert data["skipped"] == {}
    for name in FIGURES:
        image = mpimg.imread(out / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert f"({name}.png)" in md


def test_fig6_points_and_labels(real_runs, report):
    from partialft.analysis.plots import fapft_points

    runs, _ = load_inputs(_runs(real_runs))
    rows = group_runs(runs)
    points = sorted((k, r.options["mode"]) for k, r in fapft_points(rows))
    assert points == [(1, "large"), (1, "small"), (2, "large"), (2, "small")]
    _, data, _ = report
    assert {r["label"] for r in data["rows"] if r["method"] == "fapft"} == {
        "fapft (k=1, large)", "fapft (k=1, small)", "fapft (k=2, large)", "fapft (k=2, small)"}


def test_fig4_tau_is_kendall_tau_of_the_two_angle_files(real_runs):
    from scipy.stats import kendalltau

    from partialft.analysis.plots import mean_tau

    _, sets = load_inputs([real_runs["angles-s0"], real_runs["angles-s1"]])
    files = [json.loads(Path(real_runs[f"angles-s{s}"]).read_text()) for s in (0, 1)]
    ids = files[0]["groups"]["attn"]
    by_hand = kendalltau([files[0]["angles"][i] for i in ids],
                         [files[1]["angles"][i] for i in ids]).statistic
    assert mean_tau(sets, ids) == pytest.approx(by_hand)


def test_both_evaluations_are_kept_and_named(real_runs, report):
    _, data, md = report
    evals = json.loads((Path(real_runs["full-a-s0"]) / "eval.json").read_text())
    whole, first8 = evals["synthetic:10"], evals["synthetic:10 first 8"]
    assert whole["images"] == 30 and first8["images"] == 8
    assert whole["spec"]["max_images"] is None and first8["spec"]["max_images"] == 8
    corrupted = next(v for k, v in evals.items() if "corruptions" in k)
    assert corrupted["relative_corruption_error"] == pytest.approx(
        corrupted["mean_corruption_error"] - (100 - corrupted["clean_acc"]))
    assert "mce_vs_alexnet" not in corrupted  # 2 corruptions of a 10-class task: no mCE
    header = next(ln for ln in md.splitlines() if ln.startswith("| method | evaluation |"))
    assert "relative corruption error" in header and "mCE" not in header
    lines = [ln for ln in md.splitlines() if ln.startswith("| full (lr 0.0003) | synthetic:10")]
    assert len(lines) == 3  # the whole test split, its first 8 images, the corruptions
    whole_line = next(ln for ln in lines if ln.startswith("| full (lr 0.0003) | synthetic:10 |"))
    assert f"{whole['clean_acc']:.2f} (1 of 3 seeds)" in whole_line


def test_test_acc_of_training_matches_a_hand_written_pass(real_runs):
    """summary test_acc re-derived: base + delta, the test split, argmax, by hand."""
    import torch

    from partialft.cli.eval import eval_preprocess
    from partialft.training.runs import load_run_model, read_config, run_datasets

    run = real_runs["attn"]
    model, summary = load_run_model(run)
    data = run_datasets(run, "test")
    pre = eval_preprocess(model, read_config(run), "cpu")
    correct = 0
    with torch.no_grad():
        for i in range(len(data)):
            x, y = data[i]
            correct += int(model(pre(x.unsqueeze(0))).argmax(-1).item() == int(y))
    assert summary["test_acc"] == pytest.approx(100 * correct / len(data))


def test_cli_report_skips_figures_without_data(real_runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", real_runs["attn"], "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert set(data["figures"]) == {"fig1_accuracy_vs_params"}
    assert set(data["skipped"]) == {"fig3_manual_strategies", "fig4_angle_ranks",
                                    "fig6_topk_mode"}
    assert "skipped fig4_angle_ranks" in capsys.readouterr().out
    assert main(["report", real_runs["attn"], "--out", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err


def test_cli_report_rejects_other_paths(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert main(["report", str(tmp_path / "notes"), "--out", str(tmp_path / "r")]) == 2
    assert "neither a run dir" in capsys.readouterr().err


def test_cli_report_out_may_not_sit_inside_an_input(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
