"""Bad input: every case of benchmarks/bad_inputs.py (the source of docs/errors.md) exits 2 with
one line on stderr and no traceback; a diverging run keeps its last good resume point."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from partialft.cli import main
from partialft.training.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs
_spec.loader.exec_module(bad_inputs)
CASES = {case.what: case for case in bad_inputs.CASES}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bad checkpoints, angles files, an image folder with a corrupt image, two finished runs."""
    d = tmp_path_factory.mktemp("bad")
    bad_inputs.make_fixtures(d)
    bad_inputs.make_runs(d)
    return d


@pytest.mark.parametrize("what", sorted(CASES))
def test_bad_input_is_one_clear_line_with_exit_code_2(fixtures, what):
    case = CASES[what]
    got = bad_inputs.run_case(case, fixtures)
    assert bad_inputs.problems(case, got) == []
    assert got.lines[0].startswith("partialft")


def test_the_errors_doc_lists_every_case():
    doc = (ROOT / "docs" / "errors.md").read_text()
    rows = [line.split(" | ")[0].removeprefix("| ") for line in doc.splitlines()
            if line.startswith("| ") and not line.startswith("| bad input")]
    assert rows == [case.what for case in bad_inputs.CASES]  # regenerate: benchmarks/bad_inputs.py


def _state(run: Path) -> tuple[int, dict[str, torch.Tensor]]:
    info = json.loads((run / "state" / "state.json").read_text())
    return info["global_step"], load_file(str(run / "state" / info["tensors"]))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_resume_point(fixtures, capsys):
    out = fixtures / "nan_run"
    argv = bad_inputs.fill(bad_inputs._train(str(out), "--epochs", "2", "--checkpoint-every",
                                             "1"), fixtures)
    with bad_inputs.nan_loss_after(2):
        assert main(argv) == 2
    assert "non-finite at step 3" in capsys.readouterr().err
    step, tensors = _state(out)
    assert step == 2  # the NaN step 3 was not saved over it
    assert all(t.isfinite().all() for t in tensors.values() if t.is_floating_point())
    assert not (out / "summary.json").exists()
    assert main([*argv, "--resume"]) == 0  # fixed (no more NaN): resume finishes the run
    assert json.loads((out / "summary.json").read_text())["best_acc"] is not None


def test_a_huge_learning_rate_keeps_finite_weights_in_the_resume_point(fixtures, capsys):
    out = fixtures / "huge_lr"
    argv = bad_inputs.fill(bad_inputs._train(str(out), "--lr", "1e8", "--grad-clip", "none",
                                             "--epochs", "2", "--checkpoint-every", "1"),
                           fixtures)
    assert main(argv) == 2
    assert "non-finite" in capsys.readouterr().err
    if (out / "state" / "state.json").is_file():  # it may diverge at the very first step
        _, tensors = _state(out)
        assert all(t.isfinite().all() for t in tensors.values() if t.is_floating_point())


def test_cuda_oom_suggests_half_the_batch(fixtures, capsys):
    argv = bad_inputs.fill(bad_inputs._train("{d}/oom16", "--batch-size", "16"), fixtures)
    with bad_inputs.cuda_oom():
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "--batch-size 8" in err and "--grad-accum 2" in err
    rd = RunDir(fixtures / "oom16", resume=True)  # the lock was released
    rd.close()


def test_num_classes_matching_the_data_is_accepted_and_recorded(fixtures):
    import yaml

    out = fixtures / "nc4"
    argv = bad_inputs.fill(bad_inputs._train(str(out), "--num-classes", "4", "--max-steps", "1"),
                           fixtures)
    assert main(argv) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["num_classes"] == 4


@pytest.mark.slow
def test_the_real_entry_point_prints_no_traceback(fixtures):
    """`python -m partialft` end to end: exit code 2 and one line, as main() promises."""
    done = subprocess.run([sys.executable, "-m", "partialft", "plan", "--model", "test_vit",
                           "--method", "full", "--checkpoint", str(fixtures / "evil.pth")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "refused" in done.stderr and "this pickle ran code" not in done.stdout
