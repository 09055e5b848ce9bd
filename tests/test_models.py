"""Model creation and safe weight loading: safetensors, weights-only .pth, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from partialft.errors import PartialFTError
from partialft.models import (
    check_fits,
    create_model,
    input_size,
    load_into,
    load_state_dict_file,
)


class Evil:
    """Unpickling this would create a directory (and call os.getcwd): it must be refused."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class GetCwd:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in create_model("test_vit", num_classes=3).state_dict().items()}


def test_unknown_model_suggests() -> None:
    with pytest.raises(PartialFTError, match=r"unknown model 'test_vitt' \(did you mean test_vit"):
        create_model("test_vitt")


def test_checkpoint_safetensors_roundtrip(tmp_path: Path, state) -> None:
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = create_model("test_vit", num_classes=3, checkpoint=path)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_checkpoint_with_other_head_size_keeps_fresh_head(tmp_path: Path, state) -> None:
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = create_model("test_vit", num_classes=7, checkpoint=path)
    assert model.head.weight.shape == (7, state["head.weight"].shape[1])
    assert torch.equal(model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module-prefix"])
def test_pth_weights_only(tmp_path: Path, state, wrap: str) -> None:
    obj = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3},
           "model": {"model": state}, "module-prefix": {f"module.{k}": v for k, v in state.items()}
           }[wrap]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(state)
    assert torch.equal(loaded["blocks.1.mlp.fc1.weight"], state["blocks.1.mlp.fc1.weight"])


def test_pickle_that_would_run_code_is_refused_not_executed(tmp_path: Path, state) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({**state, "payload": Evil(marker)}, path)
    with pytest.raises(PartialFTError, match="refused to load .*could run code"):
        load_state_dict_file(path)
    assert not marker.exists()
    cwd_path = tmp_path / "cwd.pt"
    torch.save({"x": GetCwd()}, cwd_path)
    with pytest.raises(PartialFTError, match="refused"):
        create_model("test_vit", checkpoint=cwd_path)


def test_truncated_and_missing_files(tmp_path: Path, state) -> None:
    good = tmp_path / "w.safetensors"
    save_file(state, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PartialFTError, match="truncated or not a safetensors file"):
        load_state_dict_file(cut)
    pth = tmp_path / "w.pth"
    torch.save(state, pth)
    cut_pth = tmp_path / "cut.pth"
    cut_pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(PartialFTError, match="truncated or corrupt"):
        load_state_dict_file(cut_pth)
    with pytest.raises(PartialFTError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.safetensors")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(PartialFTError):
        load_state_dict_file(empty)


def test_non_tensor_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pth"
    torch.save({"a": 1, "b": [2, 3]}, path)
    with pytest.raises(PartialFTError, match="holds no state dict of tensors"):
        load_state_dict_file(path)


def test_checkpoint_of_another_model_names_keys(state) -> None:
    with torch.device("meta"):
        convnext = create_model("test_convnext", num_classes=3)
    with pytest.raises(PartialFTError, match=r"does not fit the model: missing stem\.0\.weight"):
        check_fits(convnext, state)
    bad = {**state, "blocks.0.attn.qkv.weight": torch.zeros(2, 2)}
    model = create_model("test_vit", num_classes=3)
    with pytest.raises(PartialFTError, match=r"mis-shaped blocks\.0\.attn\.qkv\.weight"):
        load_into(model, bad)
    with pytest.raises(PartialFTError, match=r"unexpected extra\.w"):
        load_into(model, {**state, "extra.w": torch.zeros(1)})


def test_pretrained_without_network_is_a_clear_error(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PartialFTError, match="weights of 'test_vit' are not on this machine"):
        create_model("test_vit", pretrained=True)


def test_input_size() -> None:
    assert input_size(create_model("test_vit")) == (3, 160, 160)


def test_a_timm_train_checkpoint_loads_safely(tmp_path):
    """timm's train.py saves args (a Namespace) and a NumPy metric beside the weights: they are
    plain data, read with weights_only; a pickled object that runs code still is not."""
    import argparse

    import numpy as np

    model = create_model("test_vit")
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "test_vit", "state_dict": model.state_dict(),
                "state_dict_ema": {}, "args": argparse.Namespace(lr=0.1, model="test_vit"),
                "metric": np.float64(81.5), "version": 2}, path)
    state = load_state_dict_file(path)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.save({"state_dict": model.state_dict(), "args": Evil(tmp_path / "boom")}, path)
    with pytest.raises(PartialFTError, match="refused"):
        load_state_dict_file(path)
    assert not (tmp_path / "boom").exists()
