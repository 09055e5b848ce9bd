"""The cost bench: CLI outputs, the efficiency claims it rests on, and its memory meters."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import IMG, tiny

from partialft.bench.memory import PeakMemory, saved_tensor_bytes
from partialft.bench.options import BenchOptions, Variant, plan_variants
from partialft.bench.steps import PlainStep
from partialft.cli import main
from partialft.errors import PartialFTError
from partialft.methods import prepare
from partialft.training.config import TrainConfig

ROW_NUMBERS = ("train_ms", "train_images_per_s", "infer_ms", "infer_images_per_s", "plain_ms",
               "overhead", "trainable_params", "total_params")


@pytest.mark.slow
def test_bench_cli_writes_json_markdown_and_chart(tmp_path, capsys):
    out = tmp_path / "bench"
    methods = ["full", "linear", "fapft", "adapter"]
    code = main(["bench", "--model", "test_vit", "--img-size", str(IMG), "--methods",
                 ",".join(methods), "--batch-size", "4", "--warmup", "1", "--steps", "2",
                 "--threads", "1", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((out / "bench.json").read_text())
    assert printed == result
    assert [r["label"] for r in result["rows"]] == methods
    for row in result["rows"]:
        for key in ROW_NUMBERS:
            assert row[key] > 0, (row["label"], key)
        assert row["saved_activations_mb"] >= 0
        if result["memory"]["kind"] == "cuda" or not result["notes"]:
            assert row["train_peak_mb"] > 0 and row["infer_peak_mb"] > 0
    rows = {r["label"]: r for r in result["rows"]}
    assert rows["linear"]["trainable_params"] < rows["fapft"]["trainable_params"] \
        < rows["full"]["trainable_params"]
    # the stand-in trains the deepest layers: test_vit has 6 blocks, Table 7 top-k is 2
    assert rows["fapft"]["layers"] == result["fapft_standin"]["layers"] == [
        "blocks.4.attn", "blocks.4.mlp", "blocks.5.attn", "blocks.5.mlp"]
    assert result["loader"]["images_per_s"] > 0
    md = (out / "bench.md").read_text()
    assert all(f"| {m} |" in md for m in methods) and "partialft / plain" in md
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run refuses to replace the files before measuring anything
    assert main(["bench", "--model", "test_vit", "--methods", "linear", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_unknown_method_is_a_one_line_error(capsys):
    assert main(["bench", "--model", "test_vit", "--methods", "full,lroa"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'lroa'" in err and "lora" in err
    with pytest.raises(PartialFTError, match="steps 0"):
        BenchOptions(steps=0)


def test_ablation_rows_follow_the_device_and_family():
    opts = BenchOptions(methods=("full", "fapft"), ablate=True)
    rows, notes = plan_variants(opts, torch.device("cpu"), "vit")
    labels = [v.label for v in rows]
    assert labels == ["full", "fapft", "last-half-blocks", "first-half-blocks",
                      "fapft (torch.compile)"]
    assert any("fused vs foreach" in n for n in notes)
    assert any("channels_last" in n for n in notes)
    rows, notes = plan_variants(opts, torch.device("cuda"), "convnext")
    by_label = {v.label: v for v in rows}
    assert by_label["full (foreach AdamW)"].optimizer == "foreach"
    assert by_label["fapft (no channels_last)"].channels_last is False
    assert not notes
    no_ablation = plan_variants(BenchOptions(methods=("lora",)), torch.device("cpu"), "vit")
    assert no_ablation == ([Variant("lora", "lora")], [])


def _saved_mb(method: str) -> float:
    prepared = prepare(tiny("vit"), method)
    model = prepared.model.train()
    x = torch.randn(8, 3, IMG, IMG)
    return saved_tensor_bytes(lambda: model(x), model.parameters())


def test_frozen_prefix_saves_no_activations():
    """Ops before the first trained layer record no graph: the deeper it is, the less is saved."""
    full, first, last, linear = (_saved_mb(m) for m in (
        "full", "first-half-blocks", "last-half-blocks", "linear"))
    assert full > first > last > linear
    # the last half saves about half of what full does (same blocks, none of the prefix)
    assert last < 0.6 * full
    # linear saves only the head's input (and the pooled/normed features), a few KiB
    assert linear < 0.05 * full


def test_frozen_params_get_no_grad_buffers_and_no_optimizer_state(tmp_path):
    from partialft.training.loop import train_step
    from partialft.training.setup import build

    cfg = TrainConfig(model="test_vit", pretrained=False, dataset="synthetic:4", img_size=IMG,
                      batch_size=8, amp="no", hflip=0.0, method="last-half-blocks",
                      out=str(tmp_path / "run"))
    s = build(cfg)
    try:
        x, y = torch.rand(8, 3, IMG, IMG), torch.randint(0, 4, (8,))
        train_step(s, x, y)
        inner = getattr(s.optimizer, "optimizer", s.optimizer)
        frozen = [(n, p) for n, p in s.prepared.model.named_parameters() if not p.requires_grad]
        trained = [p for p in s.prepared.model.parameters() if p.requires_grad]
        assert frozen and trained
        for name, p in frozen:
            assert p.grad is None, name
            assert p not in inner.state, name
        in_groups = {id(p) for g in inner.param_groups for p in g["params"]}
        assert not any(id(p) in in_groups for _, p in frozen)
        assert all(p in inner.state and "exp_avg" in inner.state[p] for p in trained)
    finally:
        s.run.close()


def test_plain_step_trains_only_the_selection():
    prepared = prepare(tiny("vit"), "last-half-blocks")
    model = prepared.model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = PlainStep(model, torch.nn.CrossEntropyLoss(), "no", 1.0, {})
    x, y = torch.randn(4, 3, IMG, IMG), torch.randint(0, 5, (4,))
    step(x, y)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != p.requires_grad, name
        assert p.grad is None, name
    assert all(p in step.optimizer.state for p in step.params)


def test_peak_memory_sees_a_large_allocation():
    meter = PeakMemory(torch.device("cpu"))
    if meter.note:
        pytest.skip(meter.note)
    meter.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so it is resident
    peak, delta = meter.stop()
    del block
    assert peak is not None and delta is not None
    assert 56 <= delta < 200 and peak > delta
