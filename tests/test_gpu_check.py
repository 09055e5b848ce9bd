"""benchmarks/gpu_check.sh: its CPU smoke run writes the report, a failed step fails it, and
the rest of the call pretrains a backbone whose weights come back (killed or finished)."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["preflight", "gpu-tests", "bench-vit", "bench-swin", "train", "pretrain", "torchrun"]
ENTRY = {"name", "title", "command", "exit_code", "seconds", "budget_s", "status", "reason",
         "numbers", "log_tail"}


@pytest.fixture(scope="module")
def gc() -> SimpleNamespace:
    """benchmarks/gpu_check.py and its two modules (steps, judge), imported as the script does."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return SimpleNamespace(main=importlib.import_module("gpu_check"),
                               steps=importlib.import_module("gpu_check_steps"),
                               judge=importlib.import_module("gpu_check_judge"),
                               backbone=importlib.import_module("gpu_check_backbone"))
    finally:
        sys.path.remove(str(SCRIPT.parent))


def smoke(out: Path, *args: str, fail: str | None = None) -> tuple[int, dict[str, Any], str]:
    """Run gpu_check.sh --cpu-smoke; (exit code, gpu_check.json, gpu_check.md)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_FAIL")}
    env |= {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if fail:
        env["GPU_CHECK_FAIL"] = fail
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "gpu_check.json").read_text())
    return done.returncode, report, (out / "gpu_check.md").read_text()


@pytest.mark.slow
def test_smoke_run_keeps_going_after_a_forced_failure_and_exits_1(tmp_path: Path) -> None:
    code, report, md = smoke(tmp_path, fail="bench-swin")  # the slowest smoke step
    assert code == 1 and report["mode"] == "cpu-smoke" and report["passed"] is False
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == [*STEPS, "backbone"] and all(set(s) == ENTRY for s in steps.values())
    forced = steps.pop("bench-swin")
    assert forced["status"] == "fail" and forced["exit_code"] == 1
    assert "forced" in forced["reason"] and "GPU_CHECK_FAIL" in forced["log_tail"]
    failed = {n: s["reason"] + s["log_tail"][-800:] for n, s in steps.items()
              if s["status"] != "pass"}
    assert not failed, failed  # every later step still ran and passed
    assert all(s["exit_code"] == 0 and s["seconds"] > 0 for s in steps.values())
    train = steps["train"]["numbers"]
    assert train["train_loss"][-1] < train["train_loss"][0] and train["images_per_s_last_epoch"]
    assert steps["pretrain"]["numbers"]["loss"][-1] < steps["pretrain"]["numbers"]["loss"][0]
    assert steps["torchrun"]["numbers"]["processes"] == 1
    vit = steps["bench-vit"]["numbers"]
    assert [r["label"] for r in vit["rows"]] == ["full", "fapft"]
    assert all(r["overhead"] > 0 for r in vit["rows"])
    assert "FAILED" in md.splitlines()[0]
    for name in [*STEPS, "backbone"]:
        assert re.search(rf"^\| {name} \| (pass|fail) \|", md, re.M), name
    assert steps["gpu-tests"]["numbers"]["skipped"] >= 2  # no CUDA here
    backbone = steps["backbone"]["numbers"]
    assert backbone["finished"] is True and backbone["stopped_at_deadline"] is False
    assert backbone["steps_done"] == backbone["planned_steps"] > 0
    assert backbone["loss_last"] < backbone["loss_first"] and backbone["weights_mb"] < 60
    assert_loads_into_the_backbone(tmp_path / "backbone.safetensors", backbone["categories"])
    # what comes back from a device call: at most 8 files (bench_swin.json is the eighth: that
    # step was forced to fail here)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backbone.md", "backbone.safetensors", "backbone_metrics.jsonl", "bench_vit.json",
        "gpu_check.json", "gpu_check.log", "gpu_check.md"]


def assert_loads_into_the_backbone(path: Path, categories: int) -> None:
    """The exported file is partialft_vit_tiny's whole state dict (fractal head included)."""
    import timm
    from safetensors.torch import load_file

    import partialft.models.backbone  # noqa: F401  (registers the name with timm)

    model = timm.create_model("partialft_vit_tiny", num_classes=categories)
    result = model.load_state_dict(load_file(str(path)))
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.slow
def test_smoke_run_of_passing_steps_exits_0(tmp_path: Path) -> None:
    code, report, md = smoke(tmp_path, "--only", "preflight")  # the other steps: test above
    assert code == 0 and report["passed"] is True and "PASSED" in md.splitlines()[0]
    (step,) = report["steps"]
    assert step["name"] == "preflight" and step["status"] == "pass" and step["reason"] == "ok"
    assert step["numbers"]["cuda_available"] is False and step["numbers"]["torch"]


def test_the_check_fits_eight_minutes_and_the_call_ends_before_its_timeout(
        gc: SimpleNamespace) -> None:
    """Check steps <= 8 minutes; the backbone is killed and exported inside a 600 s call."""
    steps, backbone = gc.steps, gc.backbone
    assert sum(steps.BUDGETS.values()) <= steps.TOTAL_S - steps.RESERVE_S and steps.TOTAL_S <= 480
    assert set(gc.steps.BUDGETS) == set(STEPS)
    assert steps.TOTAL_S + backbone.MIN_BACKBONE_S + backbone.EXPORT_S <= backbone.DEADLINE_S
    assert backbone.DEADLINE_S <= 600 - 30  # the run tool's longest call, with a margin


def test_the_backbone_is_sized_to_the_time_left(gc: SimpleNamespace) -> None:
    """Steps x batch at the measured speed fill at most 3/4 of the time after the set-up."""
    plan = gc.backbone.plan_size
    measured = {"images_per_s_last_interval": 8000.0, "categories": 100, "seconds": 15.0,
                "wall_s": 10.0}
    size = plan(300.0, measured, smoke=False)
    assert (size.categories, size.batch) == (1000, 256)  # 10x the bundled corpus
    setup = 10.0 + 5.0 * 10  # python start + 10x the measured set-up of 100 categories
    assert size.steps * size.batch / 8000.0 <= 0.75 * (300.0 - setup) + 1e-9
    assert size.steps > 1000 and size.checkpoint_every == size.steps // 10
    assert plan(600.0, measured, smoke=False).steps > 2 * size.steps
    tiny = plan(300.0, {}, smoke=True)
    assert tiny.steps <= 32 and tiny.categories == 2 and "--threads" in tiny.argv()


def test_core_packages_are_pyprojects_dependencies(gc: SimpleNamespace) -> None:
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {re.split(r"[<>=!~ \[;]", d)[0] for d in deps} == set(gc.steps.CORE.values())


def test_dry_run_lists_every_step_and_refuses_unknown_names(gc: SimpleNamespace, capsys) -> None:
    assert gc.main.main(["--dry-run"]) == 0
    listed = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert listed == [*STEPS[1:], "backbone"]
    with pytest.raises(SystemExit) as stop:
        gc.main.main(["--dry-run", "--fail", "nope"])
    assert stop.value.code == 2 and "unknown step(s) nope" in capsys.readouterr().err


def test_a_step_past_its_budget_is_killed(gc: SimpleNamespace, tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    code, seconds = gc.main.run_command(argv, tmp_path / "log", 1.0, tmp_path)
    assert code is None and seconds < 30 and "started" in (tmp_path / "log").read_text()


def test_loss_check_and_last_epoch_throughput(gc: SimpleNamespace) -> None:
    assert gc.judge.loss_falls([2.0, 1.5]) is None
    assert "did not fall" in gc.judge.loss_falls([1.0, 1.2])
    assert "non-finite" in gc.judge.loss_falls([2.0, float("nan")])
    assert "two" in gc.judge.loss_falls([1.0])
    # 10 steps of 10 images in 1 s, then 10 more in 0.5 s: the running average is 133.33/s
    metrics = [{"step": 10, "images_per_s": 100.0}, {"step": 20, "images_per_s": 200 / 1.5}]
    assert gc.judge.epoch_images_per_s(metrics, 10) == pytest.approx(200.0, rel=1e-3)


def test_blocked_steps_name_what_is_missing(gc: SimpleNamespace, tmp_path: Path) -> None:
    data = gc.steps.Data("digits", None, "")
    ctx = gc.steps.Ctx(False, tmp_path, tmp_path, data, set(), facts={"cuda_available": False})
    step = gc.steps.Step("bench-vit", "bench", ["x"], 1.0, ("peft",))
    assert "no CUDA device" in gc.main.blocked(ctx, step)
    ctx.missing = {"peft": "peft"}
    assert "peft (peft)" in gc.main.blocked(ctx, step)
    ctx.smoke, ctx.missing = True, {}
    assert gc.main.blocked(ctx, step) is None


def test_fashion_mnist_files_or_the_digits_stand_in(gc: SimpleNamespace, tmp_path: Path) -> None:
    assert gc.steps.choose_data(str(tmp_path), smoke=False).dataset == "digits"
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
    data = gc.steps.choose_data(str(tmp_path), smoke=False)
    assert (data.dataset, data.data_dir) == ("fashion-mnist", str(raw.resolve()))
    assert gc.steps.choose_data(str(tmp_path), smoke=True).dataset == "digits"


@pytest.mark.slow
def test_a_backbone_killed_at_the_deadline_is_exported_from_its_last_resume_point(
        gc: SimpleNamespace, tmp_path: Path) -> None:
    """A run stopped mid-schedule (as the deadline's kill leaves it: resume points, no final
    weights) still brings back loadable float16 weights and says it did not finish."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(ROOT / "src")}
    size = gc.backbone.plan_size(60.0, {}, smoke=True)
    run, out = tmp_path / "run", tmp_path / "out"
    subprocess.run([sys.executable, "-m", "partialft", "pretrain", *size.argv(), "--max-steps",
                    str(2 * size.checkpoint_every + 1), "--no-progress", "--out", str(run)],
                   env=env, check=True, capture_output=True, timeout=600)
    assert not (run / "model.safetensors").exists()
    out.mkdir()
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "gpu_check_backbone.py"), "export",
                           str(run), str(out)], env=env, capture_output=True, text=True,
                          check=True, timeout=300)
    facts = json.loads(done.stdout.split(gc.backbone.MARK, 1)[1])
    assert facts["finished"] is False and facts["steps_done"] == 2 * size.checkpoint_every + 1
    assert facts["planned_steps"] == size.steps and facts["weights_mb"] < 60
    assert_loads_into_the_backbone(out / "backbone.safetensors", size.categories)
    assert "did not finish" in (out / "backbone.md").read_text()
    assert (out / "backbone_metrics.jsonl").read_text().count("\n") >= 2
