"""Multi-task inference: the shared pass equals each task's model alone; forks; errors; CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from partialft.analysis.multitask import fork_point, from_runs
from partialft.cli import main
from partialft.errors import PartialFTError
from partialft.training.runs import load_run_model

TASKS = {  # run name -> flags: which layers each task trains
    "late": ["--method", "layers", "--layers", "blocks.3.attn,blocks.4.mlp"],
    "early": ["--method", "layers", "--layers", "blocks.1.mlp"],
    "head": ["--method", "linear"],
    "stem": ["--method", "layers", "--layers", "blocks.2.attn", "--train-non-residual"],
}


def train(out: Path, checkpoint: str | None, *flags: str) -> Path:
    """A real partial fine-tuning run (one epoch) of test_vit."""
    from conftest import REAL

    base = ["--checkpoint", checkpoint] if checkpoint else []
    assert main(["train", *REAL, "--epochs", "1", *base, "--out", str(out), *flags]) == 0
    return out


@pytest.fixture(scope="module")
def runs(real_runs, tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("tasks")
    return [train(d / name, real_runs["base"], *flags) for name, flags in TASKS.items()]


def test_fork_points():
    assert fork_point(["blocks.3.attn.qkv.weight", "blocks.5.mlp.fc1.bias", "head.weight"], 6) == 3
    assert fork_point(["head.weight", "norm.weight"], 6) == 6
    assert fork_point(["pos_embed", "blocks.4.attn.qkv.weight"], 6) == -1


def test_shared_pass_equals_each_task_model_alone(runs, images):
    multi = from_runs(runs)
    assert [t["fork"] for t in multi.describe()] == [3, 1, len(multi.base.blocks), -1]
    with torch.inference_mode():
        shared = multi(images)
        for run in runs:
            alone, _ = load_run_model(run)
            assert torch.equal(shared[run.name], alone(images)), run.name
    # tasks differ from each other (the deltas matter), untrained blocks are the base's modules
    assert not torch.equal(shared["late"], shared["early"])
    assert multi.task("late").blocks[0] is multi.base.blocks[0]
    assert multi.task("late").blocks[3] is not multi.base.blocks[3]


def test_benchmark_reports_throughput_and_equality(runs):
    from partialft.analysis.multitask import benchmark

    multi = from_runs(runs[:3])
    result = benchmark(multi, torch.randn(2, 3, 32, 32), iters=1)
    assert result["equal"] and result["max_abs_diff"] == 0.0
    assert result["shared_img_s"] > 0 and result["separate_img_s"] > 0
    assert result["speedup"] > 0
    # forks 3, 1 and 6 of 6 blocks: trunk 6 + suffixes 3 + 5 + 0 = 14 block runs instead of 18
    assert result["block_ratio"] == pytest.approx(18 / 14, abs=1e-3)


def test_tasks_with_the_same_dir_name_get_distinct_names(tmp_path, real_runs):
    flags = ["--method", "layers", "--layers", "blocks.2.mlp"]
    a = train(tmp_path / "a" / "run", real_runs["base"], *flags)
    b = train(tmp_path / "b" / "run", real_runs["base"], *flags, "--seed", "1")
    assert [t["task"] for t in from_runs([a, b]).describe()] == ["run", "b/run"]


def test_refuses_other_bases_and_peft_runs(tmp_path, runs, real_runs):
    other = train(tmp_path / "other", None, "--method", "layers", "--layers", "blocks.1.mlp",
                  "--seed", "7")  # no checkpoint: weights drawn from --seed 7
    with pytest.raises(PartialFTError, match="one base model"):
        from_runs([runs[0], other])
    peft = train(tmp_path / "peft", real_runs["base"], "--method", "lora")
    with pytest.raises(PartialFTError, match="layer methods only"):
        from_runs([peft])


def test_cli_prints_speedup_and_identity(runs, capsys):
    code = main(["multitask", str(runs[0]), str(runs[1]), "--batch-size", "2", "--iters", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "forks at block 3" in out and "forks at block 1" in out
    assert "speed-up" in out and "identical" in out
