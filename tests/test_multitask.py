"""Multi-task inference: the shared pass equals each task's model alone; forks; errors; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from partialft.checkpoints import save_delta
from partialft.cli import main
from partialft.errors import PartialFTError
from partialft.multitask import fork_point, from_runs
from partialft.runs import base_model, load_run_model

BASE = {"model": "test_vit", "num_classes": 3, "pretrained": False, "checkpoint": None,
        "img_size": 32, "layer_spec": None, "init_seed": 0}


def make_run(path: Path, prefixes: tuple[str, ...], seed: int, base: dict | None = None,
             method: str = "layers") -> Path:
    """A run dir whose delta perturbs the tensors under ``prefixes`` (and the head)."""
    model = base_model(base or BASE)
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, _ in model.named_parameters() if n.startswith(prefixes + ("head.",))]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in names:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    path.mkdir(parents=True)
    save_delta(path / "delta.safetensors", model, base or BASE, {"method": method}, names)
    (path / "summary.json").write_text(json.dumps({"method": method}))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [make_run(tmp_path / "late", ("blocks.3.attn.", "blocks.4.mlp."), 1),
            make_run(tmp_path / "early", ("blocks.1.mlp.",), 2),
            make_run(tmp_path / "head", (), 3),
            make_run(tmp_path / "stem", ("patch_embed.", "blocks.2.attn."), 4)]


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
    from partialft.multitask import benchmark

    multi = from_runs(runs[:3])
    result = benchmark(multi, torch.randn(2, 3, 32, 32), iters=1)
    assert result["equal"] and result["max_abs_diff"] == 0.0
    assert result["shared_img_s"] > 0 and result["separate_img_s"] > 0
    assert result["speedup"] > 0
    # forks 3, 1 and 6 of 6 blocks: trunk 6 + suffixes 3 + 5 + 0 = 14 block runs instead of 18
    assert result["block_ratio"] == pytest.approx(18 / 14, abs=1e-3)


def test_tasks_with_the_same_dir_name_get_distinct_names(tmp_path):
    a = make_run(tmp_path / "a" / "run", ("blocks.2.mlp.",), 1)
    b = make_run(tmp_path / "b" / "run", ("blocks.2.mlp.",), 2)
    assert [t["task"] for t in from_runs([a, b]).describe()] == ["run", "b/run"]


def test_refuses_other_bases_and_peft_runs(tmp_path, runs):
    other = make_run(tmp_path / "other", ("blocks.1.mlp.",), 5, base={**BASE, "init_seed": 7})
    with pytest.raises(PartialFTError, match="init_seed=7 .* one base model"):
        from_runs([runs[0], other])
    peft = make_run(tmp_path / "peft", ("blocks.1.mlp.",), 6, method="lora")
    with pytest.raises(PartialFTError, match="layer methods only"):
        from_runs([peft])


def test_cli_prints_speedup_and_identity(runs, capsys):
    code = main(["multitask", str(runs[0]), str(runs[1]), "--batch-size", "2", "--iters", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "forks at block 3" in out and "forks at block 1" in out
    assert "speed-up" in out and "identical" in out
