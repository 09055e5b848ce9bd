"""Selection: manual strategies (paper Fig. 3), explicit ids, FAPFT top-k, Table 7 defaults."""

from __future__ import annotations

import pytest
from conftest import meta_model, tiny

from partialft.core.layers import find_layers
from partialft.core.select import METHODS, default_topk, parse_topk, select_layers
from partialft.errors import PartialFTError

FIG3 = ["full", "attn", "ffn", "first-half-attn", "last-half-attn", "first-half-ffn",
        "last-half-ffn", "first-half-blocks", "last-half-blocks"]


@pytest.fixture(scope="module")
def vit():
    return find_layers(tiny("vit"))  # 6 blocks: blocks.{0..5}.attn / .mlp


def ids(selection) -> list[str]:
    return list(selection.layers)


def test_registry_has_every_manual_strategy() -> None:
    assert set(FIG3 + ["linear", "layers", "fapft"]) <= set(METHODS)


def test_manual_strategies_on_vit(vit) -> None:
    n = len(vit.groups()["attn"])
    half = n // 2
    attn = [f"blocks.{i}.attn" for i in range(n)]
    ffn = [f"blocks.{i}.mlp" for i in range(n)]
    expected = {
        "attn": attn, "ffn": ffn,
        "first-half-attn": attn[:half], "last-half-attn": attn[half:],
        "first-half-ffn": ffn[:half], "last-half-ffn": ffn[half:],
        "first-half-blocks": [x for i in range(half) for x in (attn[i], ffn[i])],
        "last-half-blocks": [x for i in range(half, n) for x in (attn[i], ffn[i])],
    }
    for method, want in expected.items():
        sel = select_layers(vit, method)
        assert ids(sel) == want, method
        assert not sel.train_all and sel.method == method
    full = select_layers(vit, "full")
    assert full.train_all and ids(full) == [la.id for la in vit.layers]
    linear = select_layers(vit, "linear")
    assert ids(linear) == [] and not linear.train_all


def test_halves_span_stages_in_depth_order() -> None:
    swin = find_layers(tiny("swin"))  # depths (1, 1, 2, 1): 5 blocks, middle one in no half
    assert ids(select_layers(swin, "first-half-attn")) == ["layers.0.blocks.0.attn",
                                                           "layers.1.blocks.0.attn"]
    assert ids(select_layers(swin, "last-half-ffn")) == ["layers.2.blocks.1.mlp",
                                                         "layers.3.blocks.0.mlp"]


def test_mixer_token_and_channel_layers_play_attn_and_ffn() -> None:
    mixer = find_layers(tiny("mixer"))
    assert ids(select_layers(mixer, "attn")) == [f"blocks.{i}.mlp_tokens" for i in range(3)]
    assert ids(select_layers(mixer, "ffn")) == [f"blocks.{i}.mlp_channels" for i in range(3)]


def test_attn_on_convnext_is_a_clear_error() -> None:
    convnext = find_layers(tiny("convnext"))
    with pytest.raises(PartialFTError, match="only has layers of kind block"):
        select_layers(convnext, "attn")
    assert len(ids(select_layers(convnext, "last-half-blocks"))) == 4  # 9 blocks -> 4


def test_explicit_layers(vit) -> None:
    sel = select_layers(vit, "layers", layers=["blocks.3.mlp", "blocks.0.attn"])
    assert ids(sel) == ["blocks.0.attn", "blocks.3.mlp"]  # depth order
    with pytest.raises(PartialFTError, match=r"unknown layer id 'blocks\.3\.ml'.*did you mean "
                       r"blocks\.3\.mlp"):
        select_layers(vit, "layers", layers=["blocks.3.ml"])
    with pytest.raises(PartialFTError, match="needs layer ids"):
        select_layers(vit, "layers")


def test_unknown_method() -> None:
    with pytest.raises(PartialFTError, match=r"unknown method 'atn' \(did you mean attn"):
        select_layers(find_layers(tiny("vit")), "atn")


def angles_by_depth(lm) -> dict[str, float]:
    """Angles that grow with depth inside every group."""
    return {la.id: float(i) for i, la in enumerate(lm.layers)}


def test_fapft_large_and_small(vit) -> None:
    angles = angles_by_depth(vit)
    large = select_layers(vit, "fapft", angles=angles, topk=2, mode="large")
    assert ids(large) == ["blocks.4.attn", "blocks.4.mlp", "blocks.5.attn", "blocks.5.mlp"]
    small = select_layers(vit, "fapft", angles=angles, topk=2, mode="small")
    assert ids(small) == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert large.options == {"topk": [2], "mode": "large"}
    mixed = dict(angles, **{"blocks.2.attn": 100.0})
    assert "blocks.2.attn" in ids(select_layers(vit, "fapft", angles=mixed, topk=1, mode="large"))


def test_fapft_topk_per_stage_applies_to_every_group_of_the_stage() -> None:
    swin = find_layers(tiny("swin"))  # depths (1, 1, 2, 1)
    sel = select_layers(swin, "fapft", angles=angles_by_depth(swin), topk="0,1,1,0",
                        mode="large")
    assert ids(sel) == ["layers.1.blocks.0.attn", "layers.1.blocks.0.mlp",
                        "layers.2.blocks.1.attn", "layers.2.blocks.1.mlp"]
    same = select_layers(swin, "fapft", angles=angles_by_depth(swin), topk=[0, 1, 1, 0],
                         mode="large")
    assert ids(same) == ids(sel)
    zero = select_layers(swin, "fapft", angles=angles_by_depth(swin), topk=0, mode="large")
    assert ids(zero) == []


def test_fapft_default_topk_is_table7(vit) -> None:
    sel = select_layers(vit, "fapft", angles=angles_by_depth(vit), mode="large")
    assert sel.options["topk"] == default_topk(vit, "large") == [2]  # ceil(6 / 3)
    assert len(sel.layers) == 4


@pytest.mark.parametrize("name,small,large", [
    ("vit_base_patch16_224", [4], [4]),
    ("swin_base_patch4_window7_224", [2, 2, 6, 1], [0, 0, 6, 2]),
    ("convnext_base", [3, 3, 9, 1], [0, 0, 9, 3]),
    ("mixer_b16_224", [4], [4]),
])
def test_table7_defaults(name: str, small: list[int], large: list[int]) -> None:
    lm = find_layers(meta_model(name, 100))
    assert default_topk(lm, "small") == small
    assert default_topk(lm, "large") == large


@pytest.mark.parametrize("topk,message", [
    (7, r"top-k 7 for group attn is larger than the group, which has 6 layers; use 0\.\.6"),
    (-1, "negative"),
    ("1,2", "has 2 values but the model has 1 stage"),
    ("two", "not a whole number"),
    (2.5, "not a whole number"),
    (True, "not a whole number"),
    ("1,,2", "not a whole number"),
])
def test_fapft_bad_topk(vit, topk, message: str) -> None:
    with pytest.raises(PartialFTError, match=message):
        select_layers(vit, "fapft", angles=angles_by_depth(vit), topk=topk, mode="large")


def test_fapft_bad_topk_per_stage() -> None:
    swin = find_layers(tiny("swin"))
    with pytest.raises(PartialFTError, match="has 3 values but the model has 4 stage"):
        select_layers(swin, "fapft", angles=angles_by_depth(swin), topk="0,0,1", mode="large")
    with pytest.raises(PartialFTError, match="group stage0.attn is larger than the group"):
        select_layers(swin, "fapft", angles=angles_by_depth(swin), topk=2, mode="large")


def test_fapft_has_no_default_mode(vit) -> None:
    """The task decides (paper App. B.2): without --mode fapft names the choices."""
    with pytest.raises(PartialFTError, match="needs mode: large .* small .* or auto") as err:
        select_layers(vit, "fapft", angles=angles_by_depth(vit), topk=1)
    assert "needs --mode: large" in err.value.for_cli()  # the CLI's words


def test_fapft_needs_angles_of_this_model_and_a_valid_mode(vit) -> None:
    with pytest.raises(PartialFTError, match="needs fine-tuned angles"):
        select_layers(vit, "fapft", topk=1)
    with pytest.raises(PartialFTError, match="mode 'big' is not valid"):
        select_layers(vit, "fapft", angles=angles_by_depth(vit), topk=1, mode="big")
    partial = dict(list(angles_by_depth(vit).items())[:-1])
    with pytest.raises(PartialFTError, match=r"angles lack layer\(s\) blocks\.5\.mlp"):
        select_layers(vit, "fapft", angles=partial, topk=1, mode="large")


def test_parse_topk_forms(vit) -> None:
    assert parse_topk(" 3 ", vit, "large") == [3]
    assert parse_topk(None, vit, "small") == [2]
    assert parse_topk("", vit, "small") == [2]
