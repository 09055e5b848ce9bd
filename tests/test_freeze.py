"""Freezing: only selected layers + head train; BatchNorm stats; exact reference counts."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from conftest import IMG, meta_model, tiny

from partialft.core.freeze import apply_selection
from partialft.core.layers import find_layers
from partialft.core.select import select_layers
from partialft.methods import prepare


def count(name: str, classes: int, method: str, **options) -> int:
    """Trainable parameters of ``method`` on a meta-device timm model."""
    model = meta_model(name, classes)
    if method == "fapft":  # counts do not depend on which layers of a group are picked
        options["angles"] = {la.id: float(i) for i, la in enumerate(find_layers(model).layers)}
        options.setdefault("mode", "large")  # nor on the mode, once top-k is given
    return prepare(model, method, **options).summary.trainable_params


@pytest.mark.parametrize("method,expected", [
    ("full", 85_875_556), ("linear", 76_900), ("attn", 28_443_748), ("ffn", 56_764_516)])
def test_design_reference_counts_vit_b16(method: str, expected: int) -> None:
    assert count("vit_base_patch16_224", 100, method) == expected


def test_design_reference_counts_fapft() -> None:
    assert round(count("vit_base_patch16_224", 100, "fapft", topk=2) / 1e6, 2) == 14.25
    assert round(count("vit_base_patch16_224", 100, "fapft", topk=7) / 1e6, 2) == 49.69
    # 14,944,744 = 14.9447 M: the paper's 14.95 M (Table 3a) is rounded to 14.945, then 14.95
    imagenet = count("vit_base_patch16_224", 1000, "fapft", topk=2)
    assert imagenet == 14_944_744 and round(round(imagenet / 1e6, 3), 2) == 14.95
    assert count("swin_base_patch4_window7_224", 100, "fapft", topk="2,2,6,1",
                 mode="small") == 33_614_780


@pytest.mark.parametrize("topk,paper", [
    ("0,0,3,2", 35.69), ("0,0,4,2", 38.85), ("0,0,5,2", 42.01), ("0,0,6,2", 45.16)])
def test_paper_table8a_swin_counts(topk: str, paper: float) -> None:
    # exact for 3 rows; 0,0,5,2 is 42,003,704, which the paper (Tables 1, 8a) prints as 42.01
    n = count("swin_base_patch4_window7_224", 1000, "fapft", topk=topk)
    assert abs(round(n / 1e6, 2) - paper) <= 0.0100001


def test_paper_table8b_convnext_counts_include_non_residual_modules() -> None:
    """The paper's ConvNeXt-B counts match only with stem + downsampling trained too."""
    for topk, paper in (("0,0,6,3", 41.89), ("0,0,9,3", 48.28)):
        n = count("convnext_base", 1000, "fapft", topk=topk, train_non_residual=True)
        assert round(n / 1e6, 2) == paper
    assert round(count("convnext_base", 1000, "fapft", topk="0,0,9,3") / 1e6, 2) == 45.51


METHOD_OF = {"convnext": "last-half-blocks", "convnextv2": "fapft"}


def one_step(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One SGD step over every parameter (frozen ones get no grad); returns weights before."""
    with torch.no_grad():  # timm zero-inits some heads (Mixer): no gradient would reach layers
        for name, param in model.named_parameters():
            if name.startswith("head"):
                param.normal_(0, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    outs = model(images)
    outs = outs if isinstance(outs, tuple) else (outs,)  # DeiT distilled: (head, head_dist)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sum((out - 1).square().mean() for out in outs).backward()  # heads may start at zero
    opt.step()
    return before


def test_one_step_changes_exactly_selected_layers_and_head(family: str,
                                                           images: torch.Tensor) -> None:
    model = tiny(family)
    lm = find_layers(model)
    method = METHOD_OF.get(family, "last-half-attn" if "attn" in lm.kinds() else "ffn")
    if family in ("mixer", "resmlp"):
        method = "first-half-ffn"
    angles = {la.id: float(-i) for i, la in enumerate(lm.layers)}
    options = dict(angles=angles, topk=1, mode="large") if method == "fapft" else {}
    sel = select_layers(lm, method, **options)
    summary = apply_selection(model, lm, sel)
    selected = {n for la in lm.layers if la.id in sel.layers for n in la.param_names}
    assert sel.layers and set(summary.trainable_names) == selected | set(lm.head_params)
    before = one_step(model, images)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed <= selected | set(lm.head_params)
    assert set(lm.head_params) <= changed
    for layer_id in sel.layers:  # every selected layer really trained
        assert changed & set(lm.by_id()[layer_id].param_names), layer_id
    assert summary.trainable_params == lm.count(selected) + lm.count(lm.head_params)


def test_summary_per_group_and_totals() -> None:
    model = tiny("vit")
    lm = find_layers(model)
    summary = apply_selection(model, lm, select_layers(lm, "last-half-ffn"))
    ffn = lm.groups()["ffn"]
    assert summary.groups["ffn"] == {"trainable": sum(la.num_params for la in ffn[3:]),
                                     "total": sum(la.num_params for la in ffn)}
    assert summary.groups["attn"]["trainable"] == 0
    assert summary.groups["head"]["trainable"] == summary.groups["head"]["total"] > 0
    assert summary.groups["non_residual"]["trainable"] == 0
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    assert summary.trainable_params == sum(p.numel() for p in model.parameters()
                                           if p.requires_grad)
    assert summary.to_dict()["trainable_params"] == summary.trainable_params


def test_train_non_residual_option() -> None:
    model = tiny("swin")
    lm = find_layers(model)
    apply_selection(model, lm, select_layers(lm, "linear"), train_non_residual=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lm.non_residual_params()) | set(lm.head_params)
    assert "layers.1.downsample.reduction.weight" in trainable


def test_full_trains_everything_and_reapplying_refreezes() -> None:
    model = tiny("convnext")
    lm = find_layers(model)
    apply_selection(model, lm, select_layers(lm, "full"))
    assert all(p.requires_grad for p in model.parameters())
    apply_selection(model, lm, select_layers(lm, "linear"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lm.head_params)


def test_deit_distilled_trains_both_heads(images: torch.Tensor) -> None:
    model = tiny("deit_distilled")
    lm = find_layers(model)
    apply_selection(model, lm, select_layers(lm, "linear"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    model.set_distilled_training(True)
    before = one_step(model, images)
    assert not torch.equal(before["head_dist.weight"], model.head_dist.weight)


def bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if "running_mean" in n}


def test_frozen_batchnorm_keeps_running_stats(images: torch.Tensor) -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    lm = find_layers(model)
    sel = select_layers(lm, "layers", layers=[lm.layers[-1].id])
    apply_selection(model, lm, sel)
    before = bn_stats(model)
    model.train()
    model(images * 3 + 1)
    moved = {n for n, b in bn_stats(model).items() if not torch.equal(before[n], b)}
    assert moved and all(n.startswith(lm.layers[-1].id + ".") for n in moved)
    assert model.training  # the model stays in train mode; only frozen BN layers run in eval


def test_parameterless_batchnorm_follows_its_layer(images: torch.Tensor) -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False)),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, affine=False)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    spec = {"layers": {"0": "0.*", "1": "1.*"}, "groups": {"block": ["0", "1"]}}
    lm = find_layers(model, spec)
    apply_selection(model, lm, select_layers(lm, "layers", layers=["1"]))
    before = bn_stats(model)
    model.train()
    model(images[:, :, :IMG // 2, :IMG // 2])
    after = bn_stats(model)
    assert torch.equal(before["0.1.running_mean"], after["0.1.running_mean"])
    assert not torch.equal(before["1.1.running_mean"], after["1.1.running_mean"])


def test_prepare_unpacks_like_get_peft_model_and_prints_a_summary(capsys) -> None:
    import partialft

    model, summary = partialft.prepare(meta_model("vit_base_patch16_224", 100), "attn")
    assert summary.trainable_params == 28_443_748
    text = str(summary)
    assert text.startswith("trainable params: 28,443,748 || all params: 85,875,556 || "
                           "trainable%: 33.1221")
    assert "attn" in text and "ffn" in text and "head" in text
    summary.print_trainable_parameters()
    assert capsys.readouterr().out == text + "\n"
