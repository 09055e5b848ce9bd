"""Fine-tuned angles (paper Eq. 2) and Kendall tau between angle rankings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny
from scipy.stats import kendalltau

from partialft.core.angles import (
    compute_angles,
    kendall_tau,
    layer_angle,
    load_angles,
    rank,
    save_angles,
)
from partialft.core.layers import find_layers
from partialft.errors import PartialFTError


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def reference_angle(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Eq. 2 in float64 numpy, for comparison."""
    x = np.concatenate([t.double().flatten().numpy() for t in a])
    y = np.concatenate([t.double().flatten().numpy() for t in b])
    cos = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
    return math.degrees(math.acos(np.clip(cos, -1.0, 1.0)))


def test_identical_negated_scaled() -> None:
    w = [rand(64, 32), rand(32, seed=1)]
    assert layer_angle(w, w) == pytest.approx(0.0, abs=1e-5)
    assert layer_angle(w, [-t for t in w]) == pytest.approx(180.0, abs=1e-5)
    assert layer_angle(w, [3.7 * t for t in w]) == pytest.approx(0.0, abs=1e-5)
    assert layer_angle(w, [-0.01 * t for t in w]) == pytest.approx(180.0, abs=1e-5)


def test_cosine_is_clamped_and_result_in_range() -> None:
    for seed in range(20):  # identical vectors whose float cosine may round above 1
        w = [rand(257, seed=seed) * 1e3]
        angle = layer_angle(w, [t.clone() for t in w])
        assert 0.0 <= angle < 1e-5
        neg = layer_angle(w, [-t for t in w])
        assert 180.0 - 1e-5 < neg <= 180.0


def test_matches_float64_reference_for_half_precision_inputs() -> None:
    a = [rand(100, 10, dtype=torch.bfloat16), rand(10, seed=2, dtype=torch.float16)]
    b = [t.float() + 0.3 * rand(*t.shape, seed=9) for t in a]
    b = [b[0].to(torch.bfloat16), b[1].to(torch.float16)]
    assert layer_angle(a, b) == pytest.approx(reference_angle(a, b), abs=1e-9)
    assert 0.0 < layer_angle(a, b) < 90.0


def test_orthogonal_is_90_and_zero_vectors() -> None:
    assert layer_angle([torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])]) == 90.0
    zero = [torch.zeros(3)]
    assert layer_angle(zero, zero) == 0.0
    assert layer_angle(zero, [torch.ones(3)]) == 90.0


def test_compute_angles_per_layer_only_changed_layer_moves() -> None:
    model = tiny("vit")
    lm = find_layers(model)
    pre = {k: v.clone() for k, v in model.state_dict().items()}
    ft = {k: v.clone() for k, v in pre.items()}
    ft["blocks.1.mlp.fc1.weight"] += 0.5 * rand(*ft["blocks.1.mlp.fc1.weight"].shape)
    angles = compute_angles(pre, ft, lm)
    assert list(angles) == [la.id for la in lm.layers]
    moved = {k for k, v in angles.items() if v > 1e-6}
    assert moved == {"blocks.1.mlp"}
    names = lm.by_id()["blocks.1.mlp"].param_names
    assert angles["blocks.1.mlp"] == pytest.approx(
        reference_angle([pre[n] for n in names], [ft[n] for n in names]), abs=1e-9)


def test_compute_angles_ignores_head_and_non_residual_differences() -> None:
    pre_model, other = tiny("convnext", num_classes=5), tiny("convnext", num_classes=7, seed=1)
    lm = find_layers(pre_model)
    pre = pre_model.state_dict()
    ft = {**{k: v.clone() for k, v in pre.items()}, **{
        k: v for k, v in other.state_dict().items() if k.startswith(("head", "stem"))}}
    assert max(compute_angles(pre, ft, lm).values()) < 1e-6


def test_missing_key_error_names_first_keys() -> None:
    model = tiny("vit")
    lm = find_layers(model)
    pre = model.state_dict()
    ft = {k: v for k, v in pre.items() if not k.startswith("blocks.0.attn")}
    with pytest.raises(PartialFTError, match=r"fine-tuned weights lack 4 tensor\(s\).*first: "
                       r"blocks\.0\.attn\.qkv\.weight"):
        compute_angles(pre, ft, lm)
    with pytest.raises(PartialFTError, match="pretrained weights lack"):
        compute_angles(ft, pre, lm)


def test_shape_mismatch_error_names_key() -> None:
    model = tiny("vit")
    lm = find_layers(model)
    pre = model.state_dict()
    ft = {**pre, "blocks.2.mlp.fc2.bias": torch.zeros(3)}
    with pytest.raises(PartialFTError, match=r"tensor blocks\.2\.mlp\.fc2\.bias has shape"):
        compute_angles(pre, ft, lm)


def test_nan_weights_are_an_error() -> None:
    model = tiny("vit")
    lm = find_layers(model)
    pre = model.state_dict()
    ft = {k: v.clone() for k, v in pre.items()}
    ft["blocks.0.attn.proj.bias"][0] = float("nan")
    with pytest.raises(PartialFTError, match=r"blocks\.0\.attn hold NaN"):
        compute_angles(pre, ft, lm)


def test_kendall_tau() -> None:
    a = {"x": 1.0, "y": 5.0, "z": 3.0, "w": 0.5}
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, {k: -v for k, v in a.items()}) == pytest.approx(-1.0)
    b = {"x": 2.0, "y": 1.0, "z": 3.0, "w": 0.1}
    ids = sorted(a)
    expected = kendalltau([a[i] for i in ids], [b[i] for i in ids]).statistic
    assert kendall_tau(a, b) == pytest.approx(expected)
    assert kendall_tau(b, a) == pytest.approx(expected)
    with pytest.raises(PartialFTError, match="different layers"):
        kendall_tau(a, {"x": 1.0, "y": 2.0, "z": 3.0, "v": 4.0})
    with pytest.raises(PartialFTError, match="at least 2"):
        kendall_tau({"x": 1.0}, {"x": 2.0})


def test_rank_largest_first() -> None:
    assert rank({"a": 3.0, "b": 9.0, "c": 1.0}, ["a", "b", "c"]) == [2, 1, 3]


def test_save_load_roundtrip_and_checks(tmp_path: Path) -> None:
    model = tiny("vit")
    lm = find_layers(model)
    angles = {la.id: float(i) for i, la in enumerate(lm.layers)}
    path = tmp_path / "angles.json"
    save_angles(path, angles, lm, model="test_vit")
    data = json.loads(path.read_text())
    assert data["model"] == "test_vit" and set(data["groups"]) == {"attn", "ffn"}
    assert load_angles(path, lm) == angles
    with pytest.raises(PartialFTError, match="does not match the model's layers"):
        load_angles(path, find_layers(tiny("mixer")))
    with pytest.raises(PartialFTError, match="does not exist"):
        load_angles(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"angles": [1, 2]}')
    with pytest.raises(PartialFTError, match="key 'angles' maps"):
        load_angles(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text('{"angles": {"blocks.0.attn": NaN}}')
    with pytest.raises(PartialFTError, match="from 0 to 180"):
        load_angles(tmp_path / "nan.json")


def test_scores_of_other_selectors_need_only_be_finite(tmp_path):
    from partialft.core.angles import load_angles
    from partialft.errors import PartialFTError

    path = tmp_path / "grad.json"
    path.write_text(json.dumps({"angles": {"a": 250.0, "b": -1.0}, "selector": "grad"}))
    assert load_angles(path) == {"a": 250.0, "b": -1.0}
    path.write_text(json.dumps({"angles": {"a": 250.0}, "selector": "probe-angle"}))
    with pytest.raises(PartialFTError, match="0 to 180"):
        load_angles(path)
    path.write_text('{"angles": {"a": NaN}, "selector": "grad"}')
    with pytest.raises(PartialFTError, match="finite"):
        load_angles(path)
