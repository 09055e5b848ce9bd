"""The bundled backbone (timm name, shipped weights) and `partialft pretrain` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import partialft.models.backbone as backbone
from partialft.cli import main
from partialft.core.layers import find_layers
from partialft.models import create_model
from partialft.training.checkpoints import read_metadata
from partialft.training.pretrain import PretrainConfig, pretrain

TINY = ["--categories", "3", "--steps", "3", "--batch-size", "4", "--warmup-steps", "1",
        "--val-per-category", "2", "--eval-every", "2", "--log-every", "1",
        "--checkpoint-every", "1", "--chains", "16", "--iters", "6", "--threads", "1"]

needs_weights = pytest.mark.skipif(not backbone.WEIGHTS.is_file(),
                                   reason="the shipped weights are not there yet")


def test_name_is_registered_with_the_architecture() -> None:
    assert timm.is_model(backbone.NAME)
    with torch.device("meta"):
        model = timm.create_model(backbone.NAME, num_classes=10)
    assert len(model.blocks) == 12 and model.embed_dim == 128
    assert model.patch_embed.patch_size == (8, 8) and model.pretrained_cfg["input_size"] == (
        3, 32, 32)
    layer_map = find_layers(model)
    assert len(layer_map.layers) == 24 and set(layer_map.groups()) == {"attn", "ffn"}


@needs_weights
def test_shipped_weights_load_offline_and_reset_the_head() -> None:
    shipped = load_file(str(backbone.WEIGHTS))
    assert backbone.WEIGHTS.stat().st_size <= 16 * 2**20
    assert shipped["head.weight"].shape[0] == backbone.PRETRAINED_CLASSES
    model = timm.create_model(backbone.NAME, pretrained=True, num_classes=10)
    own = model.state_dict()
    assert own["head.weight"].shape == (10, 128)
    for key, value in shipped.items():
        if not key.startswith("head."):
            assert torch.equal(own[key], value.float()), key
    same = create_model(backbone.NAME, num_classes=10, pretrained=True)  # partialft's path
    assert torch.equal(same.state_dict()["blocks.11.mlp.fc2.weight"],
                       own["blocks.11.mlp.fc2.weight"])


@needs_weights
def test_shipped_weights_give_the_recorded_features() -> None:
    model = timm.create_model(backbone.NAME, pretrained=True, num_classes=0).eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model(x)
    assert feats.shape == (2, 128)
    # recorded from the committed weights (float16 storage, float32 compute)
    assert feats.abs().sum().item() == pytest.approx(288.0085, rel=1e-4)
    expected = torch.tensor([[1.52045, 0.05626, 0.66138, -0.18304],
                             [-0.41231, 0.85302, -0.45481, -0.67326]])
    assert torch.allclose(feats[:, :4], expected, atol=1e-3)


@needs_weights
def test_shipped_head_recognises_its_own_fractal_categories() -> None:
    from partialft.data.fractal import FractalConfig, FractalCorpus

    meta = read_metadata(backbone.WEIGHTS)
    corpus = FractalCorpus(meta["categories"], seed=meta["seed"], cfg=FractalConfig())
    x, y = corpus.fixed_set(1, seed=123)  # instances never seen in pretraining
    model = timm.create_model(backbone.NAME, pretrained=True).eval()
    with torch.no_grad():
        pred = model((x - 0.5) / 0.5).argmax(-1)
    assert (pred == y).float().mean() > 0.85  # chance is 1%


@needs_weights
def test_one_channel_input_adapts_the_patch_embedding() -> None:
    model = timm.create_model(backbone.NAME, pretrained=True, num_classes=10, in_chans=1)
    shipped = load_file(str(backbone.WEIGHTS))["patch_embed.proj.weight"].float()
    assert torch.allclose(model.patch_embed.proj.weight[:, 0], shipped.sum(1), atol=1e-3)


@needs_weights
def test_model_card_names_recipe_device_and_command() -> None:
    card = backbone.CARD.read_text()
    for needle in ("partialft pretrain", "cpu", "wall time", "accuracy", "date", "categories"):
        assert needle in card.lower(), needle
    meta = read_metadata(backbone.WEIGHTS)
    assert meta["format"] == "partialft-backbone"
    assert meta["categories"] == backbone.PRETRAINED_CLASSES
    assert str(meta["val_acc"]) in card


def test_pretrain_cli_writes_weights_card_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), *TINY, "--no-progress"]) == 0
    for name in ("model.safetensors", "MODEL_CARD.md", "summary.json", "metrics.jsonl",
                 "config.json"):
        assert (out / name).is_file(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["categories"] == 3 and summary["val_images"] == 6
    assert 0 <= summary["val_acc"] <= 100 and summary["device"].startswith("cpu")
    weights = load_file(str(out / "model.safetensors"))
    assert weights["head.weight"].shape == (3, 128)
    assert all(v.dtype == torch.float16 for v in weights.values())
    card = (out / "MODEL_CARD.md").read_text()
    assert "partialft pretrain --out" in card and "--categories 3" in card
    model = create_model(backbone.NAME, num_classes=5, checkpoint=out / "model.safetensors")
    assert model.head.out_features == 5
    # an existing run dir is not overwritten by accident
    assert main(["pretrain", "--out", str(out), *TINY, "--no-progress"]) == 2


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path: Path) -> None:
    kw = dict(categories=3, steps=3, batch_size=4, warmup_steps=1, val_per_category=2,
              eval_every=2, log_every=1, checkpoint_every=1, chains=16, iters=6)
    pretrain(PretrainConfig(out=str(tmp_path / "a"), **kw), progress=False)
    assert pretrain(PretrainConfig(out=str(tmp_path / "b"), max_steps=2, **kw),
                    progress=False) is None
    assert not (tmp_path / "b" / "model.safetensors").exists()
    assert main(["pretrain", "--out", str(tmp_path / "b"), "--resume", "--no-progress"]) == 0
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3]


@pytest.mark.parametrize("flags", [["--warmup-steps", "5"], ["--amp", "fp8"],
                                   ["--lr", "0"], ["--model", "no_such_model"]])
def test_bad_pretrain_flags_are_clear_errors(tmp_path: Path, flags: list[str],
                                             capsys: pytest.CaptureFixture) -> None:
    assert main(["pretrain", "--out", str(tmp_path / "x"), *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
