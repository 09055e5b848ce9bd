"""`partialft export --format onnx`: model.onnx with a dynamic batch axis whose ONNX Runtime
logits match PyTorch's (max |diff| <= 1e-4) at batch sizes 1 and 3, for a layer method, a
merged LoRA and an adapter run (which timm cannot hold); the missing extra is one sentence."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, cli

from partialft.cli import main
from partialft.training.runs import load_run_model

TRAIN = ["train", "--model", "test_vit", "--no-pretrained", "--img-size", "32", "--batch-size",
         "4", "--dataset", "synthetic:3", "--max-per-split", "8", "--epochs", "1",
         "--warmup-epochs", "0", "--amp", "no", "--no-progress", "--lr", "1e-2"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx_runs")
    found = {}
    for method in ("attn", "lora", "adapter"):
        found[method] = root / method
        assert main([*TRAIN, "--method", method, "--out", str(found[method])]) == 0
    return found


@pytest.mark.slow  # torch's exporter takes seconds per model on a CPU
@pytest.mark.parametrize("method", ["attn", "lora", "adapter"])
def test_onnx_runtime_matches_pytorch_at_any_batch_size(capsys, runs, tmp_path, method) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / method
    code, text, err = cli(capsys, "export", runs[method], "--out", out, "--format", "onnx")
    assert code == 0, err
    assert f"as onnx to {out}" in text and "checked: loaded back" in text
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [
        "README.md", "config.json", "model.onnx"]
    graph = onnx.load(str(out / "model.onnx")).graph
    (batch, *rest), = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                       for i in graph.input]
    assert isinstance(batch, str) and rest == [3, 32, 32]  # a named, dynamic batch axis
    config = json.loads((out / "config.json").read_text())
    assert config["input_size"] == [3, 32, 32] and config["num_classes"] == 3
    model, _ = load_run_model(runs[method])
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            want = model.eval()(x)
        (got,) = session.run([config["output_name"]], {config["input_name"]: x.numpy()})
        assert got.shape == (n, 3)
        assert float((torch.from_numpy(got) - want).abs().max()) <= ATOL


def test_a_missing_onnx_extra_is_one_sentence(capsys, monkeypatch, runs, tmp_path) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    out = tmp_path / "x"
    assert_user_error(*cli(capsys, "export", runs["attn"], "--out", out, "--format",
                           "onnx")[::2], "onnxruntime", "pip install 'partialft[onnx]'")
    assert not out.exists()  # refused before any work
