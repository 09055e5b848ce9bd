"""Layer specs with placeholders: one entry for every block (docs/layer-spec.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
import yaml
from conftest import meta_model

from partialft.core.layers import find_layers
from partialft.errors import PartialFTError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "layer-spec.md"


def docs_spec(title: str) -> dict:
    """The YAML spec under the docs section whose heading holds ``title``."""
    section = DOCS.read_text().split(title, 1)[1].split("\n## ", 1)[0]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, flags=re.S).group(1))


def direct_sum(model: nn.Module, regex: str) -> int:
    """Parameters whose names match ``regex``, summed straight from the model."""
    return sum(p.numel() for n, p in model.named_parameters() if re.fullmatch(regex, n))


def test_docs_vit_b_16_spec_on_torchvision_vit_b_16() -> None:
    with torch.device("meta"):
        model = torchvision.models.vit_b_16()
    lm = find_layers(model, docs_spec("torchvision's `vit_b_16`"))
    block = r"encoder\.layers\.encoder_layer_\d+"
    assert len(lm.layers) == 24 and {g: len(ls) for g, ls in lm.groups().items()} == {
        "attn": 12, "ffn": 12}
    attn = sum(la.num_params for la in lm.groups()["attn"])
    ffn = sum(la.num_params for la in lm.groups()["ffn"])
    assert attn == direct_sum(model, rf"{block}\.(ln_1|self_attention)\..*") == 12 * 2_363_904
    assert ffn == direct_sum(model, rf"{block}\.(ln_2|mlp)\..*") == 12 * 4_723_968
    timm_lm = find_layers(meta_model("vit_base_patch16_224"))
    assert attn == sum(la.num_params for la in timm_lm.groups()["attn"])
    assert lm.count(lm.head_params) == direct_sum(model, r"heads\.head\..*")
    assert [la.id for la in lm.layers[:3]] == [  # depth order: attn, mlp, attn, ...
        "encoder.layers.encoder_layer_0.self_attention", "encoder.layers.encoder_layer_0.mlp",
        "encoder.layers.encoder_layer_1.self_attention"]
    assert [la.index for la in lm.groups()["ffn"]] == list(range(12))


def test_docs_swin_t_spec_on_torchvision_swin_t() -> None:
    with torch.device("meta"):
        model = torchvision.models.swin_t()
    lm = find_layers(model, docs_spec("torchvision's `swin_t`"))
    assert {g: len(ls) for g, ls in lm.groups().items()} == {
        f"stage{s}.{k}": n for s, n in enumerate((2, 2, 6, 2)) for k in ("attn", "ffn")}
    for s, feature in enumerate((1, 3, 5, 7)):
        for kind, parts in (("attn", "norm1|attn"), ("ffn", "norm2|mlp")):
            got = sum(la.num_params for la in lm.groups()[f"stage{s}.{kind}"])
            assert got == direct_sum(model, rf"features\.{feature}\.\d+\.({parts})\..*")
    assert lm.count(lm.non_residual_params()) == direct_sum(
        model, r"features\.(0\..*|[246]\.(reduction|norm)\..*)|norm\..*")
    assert lm.total_params == direct_sum(model, r".*")


def test_docs_hugging_face_vit_spec() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                    intermediate_size=32, image_size=32, patch_size=8,
                                    num_labels=5)
    model = transformers.ViTForImageClassification(config)
    try:
        lm = find_layers(model, docs_spec("Hugging Face transformers' ViT"))
    except PartialFTError as exc:  # another major version names its modules differently
        pytest.skip(f"transformers {transformers.__version__}: {exc}")
    assert {g: len(ls) for g, ls in lm.groups().items()} == {"attn": 3, "ffn": 3}
    assert sum(la.num_params for la in lm.groups()["ffn"]) == direct_sum(
        model, r"vit\.layers\.\d+\.(layernorm_after|mlp)\..*")
    assert set(lm.head_params) == {"classifier.weight", "classifier.bias"}


def toy() -> nn.Module:
    """Two stages of two blocks (a, b) and a head."""
    model = nn.Module()
    model.stages = nn.ModuleList(nn.ModuleList(_block() for _ in range(2)) for _ in range(2))
    model.fc = nn.Linear(2, 3)
    return model


def _block() -> nn.Module:
    block = nn.Module()
    block.a, block.b = nn.Linear(2, 2), nn.Linear(2, 2, bias=False)
    return block


def test_two_placeholders_explicit_ids_and_stage_groups() -> None:
    spec = {"layers": {"stages.{s}.{i}.a": "stages.{s}.{i}.a.*", "stages.1.1.b": "stages.1.1.b.*",
                       "stages.{s}.0.b": "stages.{s}.0.b.*"},
            "groups": {"stage0.a": ["stages.0.{i}.a"], "stage0.b": ["stages.0.{i}.b"],
                       "stage1.a": ["stages.1.{i}.a"],
                       "stage1.b": ["stages.1.0.b", "stages.1.1.b"]}}
    lm = find_layers(toy(), spec)
    assert [la.id for la in lm.layers] == [
        "stages.0.0.a", "stages.0.0.b", "stages.0.1.a", "stages.1.0.a", "stages.1.0.b",
        "stages.1.1.a", "stages.1.1.b"]
    assert lm.non_residual_params() == ["stages.0.1.b.weight"]
    assert lm.by_id()["stages.1.1.a"].index == 1


def test_a_repeated_placeholder_takes_one_value() -> None:
    model = nn.ModuleDict({f"s{i}": nn.ModuleDict({f"b{j}": nn.Linear(1, 1) for j in range(2)})
                           for i in range(2)})
    model["head"] = nn.Linear(1, 2)
    lm = find_layers(model, {"layers": {"s{i}.b{i}": "s{i}.b{i}.*"}, "groups": {
        "block": ["s{i}.b{i}"]}})
    assert [la.id for la in lm.layers] == ["s0.b0", "s1.b1"]


GOOD = {"layers": {"stages.{s}.{i}.a": "stages.{s}.{i}.a.*"},
        "groups": {"stage0.a": ["stages.0.{i}.a"], "stage1.a": ["stages.1.{i}.a"]}}


@pytest.mark.parametrize("spec,message", [
    ({"layers": {"stages.{s}.{i}.a": ["stages.{s}.{i}.a.*", "stages.{j}.b.*"]},
      "groups": GOOD["groups"]},
     r"pattern 'stages\.\{j\}\.b\.\*' of layer stages\.\{s\}\.\{i\}\.a .* unknown placeholder "
     r"\{j\}; .* \(\{s\}, \{i\}\)"),
    ({"layers": {"stages.{s}.{i}.a": "stages.{s}.{i}.a.*"}, "groups": {"a": ["stages.{x}.0.a"]}},
     r"layer id 'stages\.\{x\}\.0\.a' of group a .* unknown placeholder \{x\}"),
    ({"layers": {"stages.{1}.a": "stages.1.*"}, "groups": {"a": ["stages.{1}.a"]}},
     r"has \{1\}, which is no placeholder"),
    ({"layers": {"stages.{s.a": "stages.*"}, "groups": {"a": ["stages.{s.a"]}},
     "has a stray brace"),
    ({"layers": {"stages.{s}.{i}.a": ["stages.{s}.0.a.*", "stages.1.{i}.a.*"]},
      "groups": GOOD["groups"]}, r"no pattern of layer stages\.\{s\}\.\{i\}\.a .* all of its"),
    ({**GOOD, "groups": {"stage{s}.a": ["stages.{s}.{i}.a"]}},
     r"group name stage\{s\}\.a .* holds a placeholder"),
    ({**GOOD, "head": "fc.{i}"}, r"head pattern 'fc\.\{i\}' .* unknown placeholder \{i\}"),
    ({"layers": {"blocks.{i}.a": "blocks.{i}.a.*"}, "groups": {"a": ["blocks.{i}.a"]}},
     r"pattern 'blocks\.\{i\}\.a\.\*' of layer blocks\.\{i\}\.a in the layer spec matches no "
     r"parameter"),
    ({"layers": {"stages.{s}.{i}.a": ["stages.{s}.{i}.a.*", "stages.{s}.{i}.b.bias"]},
      "groups": GOOD["groups"]},
     r"pattern 'stages\.0\.0\.b\.bias' of layer stages\.0\.0\.a in the layer spec matches no"),
    ({"layers": {**GOOD["layers"], "stages.0.1.a": "stages.0.1.b.*"}, "groups": GOOD["groups"]},
     r"layer id stages\.0\.1\.a comes from both stages\.\{s\}\.\{i\}\.a and stages\.0\.1\.a"),
    ({**GOOD, "groups": {"stage0.a": ["stages.0.{i}.a"], "stage1.a": ["stages.2.{i}.a"]}},
     r"group stage1\.a names layers 'stages\.2\.\{i\}\.a', which matches no layer"),
    ({**GOOD, "groups": {"stage0.a": ["stages.0.{i}.a"]}}, r"stages\.1\.0\.a, stages\.1\.1\.a "
     "are in no group"),
])
def test_placeholder_errors_are_one_clear_sentence(spec: dict, message: str) -> None:
    with pytest.raises(PartialFTError, match=message) as info:
        find_layers(toy(), spec)
    text = str(info.value)
    assert text.endswith(".") and "\n" not in text


def test_good_spec_for_the_error_cases() -> None:
    lm = find_layers(toy(), GOOD)
    assert {g: len(ls) for g, ls in lm.groups().items()} == {"stage0.a": 2, "stage1.a": 2}


def test_placeholders_in_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text('layers:\n  stages.{s}.{i}.a: stages.{s}.{i}.a.*\n'
                    'groups:\n  stage0.a: ["stages.0.{i}.a"]\n  stage1.a:\n    - stages.1.{i}.a\n')
    assert len(find_layers(toy(), path).layers) == 4
