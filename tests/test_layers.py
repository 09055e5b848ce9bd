"""find_layers: residual layers, homogeneous groups (paper Table 6), fallbacks, layer specs."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
import yaml
from conftest import meta_model, tiny

import partialft.models.as_mlp  # noqa: F401  (registers as_mlp_* with timm)
from partialft.core.layers import FAMILIES, find_layers, load_layer_spec
from partialft.core.select import select_layers
from partialft.errors import PartialFTError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "layer-spec.md"

# family -> (expected kinds, regex every layer id matches, family name reported)
EXPECTED = {
    "vit": ({"attn", "ffn"}, r"blocks\.\d+\.(attn|mlp)", "vit"),
    "deit_distilled": ({"attn", "ffn"}, r"blocks\.\d+\.(attn|mlp)", "vit"),
    "swin": ({"attn", "ffn"}, r"layers\.\d+\.blocks\.\d+\.(attn|mlp)", "swin"),
    "swinv2": ({"attn", "ffn"}, r"layers\.\d+\.blocks\.\d+\.(attn|mlp)", "swin"),
    "convnext": ({"block"}, r"stages\.\d+\.blocks\.\d+", "convnext"),
    "convnextv2": ({"block"}, r"stages\.\d+\.blocks\.\d+", "convnext"),
    "mixer": ({"token", "channel"}, r"blocks\.\d+\.(mlp_tokens|mlp_channels)", "mlp-mixer"),
    "resmlp": ({"token", "channel"}, r"blocks\.\d+\.(linear_tokens|mlp_channels)", "mlp-mixer"),
}


def block_of(param: str) -> str | None:
    """The block path a parameter lives in (blocks.3, layers.2.blocks.5, stages.1.blocks.0)."""
    match = re.match(r"((?:layers|stages)\.\d+\.)?blocks\.\d+\.", param)
    return match.group(0)[:-1] if match else None


def test_every_family_layers_ids_kinds_and_counts(family: str) -> None:
    model = tiny(family)
    lm = find_layers(model)
    kinds, id_regex, name = EXPECTED[family]
    assert lm.family == name
    assert set(lm.kinds()) == kinds
    modules = dict(model.named_modules())
    numel = dict((n, p.numel()) for n, p in model.named_parameters())
    for layer in lm.layers:
        assert re.fullmatch(id_regex, layer.id), layer.id
        assert layer.id in modules  # the id is the dotted path of the main module
        assert layer.num_params == sum(numel[n] for n in layer.param_names) > 0
        assert all(n.startswith(block_of(layer.id + ".") + ".") for n in layer.param_names)
    assert lm.total_params == sum(numel.values())


def test_every_block_parameter_is_in_exactly_one_layer(family: str) -> None:
    model = tiny(family)
    lm = find_layers(model)
    owners = Counter(n for layer in lm.layers for n in layer.param_names)
    assert max(owners.values()) == 1
    block_params = [n for n, _ in model.named_parameters() if block_of(n)]
    assert block_params and all(n in owners for n in block_params)
    assert not [n for n in lm.non_residual_params() if block_of(n)]
    assert not set(lm.head_params) & set(owners)


def test_layer_includes_pre_norm_and_layer_scale() -> None:
    vit = find_layers(tiny("vit")).by_id()
    assert {"blocks.0.norm1.weight", "blocks.0.attn.qkv.weight"} <= set(
        vit["blocks.0.attn"].param_names)
    assert {"blocks.0.norm2.bias", "blocks.0.mlp.fc2.weight"} <= set(
        vit["blocks.0.mlp"].param_names)
    res = find_layers(tiny("resmlp")).by_id()
    tokens = res["blocks.1.linear_tokens"].param_names
    assert {"blocks.1.ls1", "blocks.1.norm1.alpha"} <= set(tokens)
    assert "blocks.1.ls2" in res["blocks.1.mlp_channels"].param_names
    layerscale = find_layers(meta_model("deit3_small_patch16_224")).by_id()
    assert "blocks.0.ls1.gamma" in layerscale["blocks.0.attn"].param_names


def test_groups_stage_and_index() -> None:
    swin = find_layers(tiny("swin"))  # depths (1, 1, 2, 1)
    assert {g: len(ls) for g, ls in swin.groups().items()} == {
        "stage0.attn": 1, "stage0.ffn": 1, "stage1.attn": 1, "stage1.ffn": 1,
        "stage2.attn": 2, "stage2.ffn": 2, "stage3.attn": 1, "stage3.ffn": 1}
    layer = swin.by_id()["layers.2.blocks.1.mlp"]
    assert (layer.kind, layer.stage, layer.index, layer.group) == ("ffn", 2, 1, "stage2.ffn")
    vit = find_layers(tiny("vit"))
    assert vit.num_stages == 1 and set(vit.groups()) == {"attn", "ffn"}
    assert [la.index for la in vit.groups()["ffn"]] == list(range(len(vit.groups()["ffn"])))


def homogeneous(lm) -> bool:
    return all(len({la.num_params for la in ls}) == 1 for ls in lm.groups().values())


@pytest.mark.parametrize("name,groups", [
    ("vit_base_patch16_224", {"attn": 12, "ffn": 12}),
    ("swin_base_patch4_window7_224",
     {f"stage{s}.{k}": n for s, n in enumerate((2, 2, 18, 2)) for k in ("attn", "ffn")}),
    ("swinv2_base_window8_256",
     {f"stage{s}.{k}": n for s, n in enumerate((2, 2, 18, 2)) for k in ("attn", "ffn")}),
    ("convnext_base", {f"stage{s}.block": n for s, n in enumerate((3, 3, 27, 3))}),
    ("convnextv2_base", {f"stage{s}.block": n for s, n in enumerate((3, 3, 27, 3))}),
    ("mixer_b16_224", {"token": 12, "channel": 12}),
])
def test_table6_homogeneous_groups_of_base_models(name: str, groups: dict[str, int]) -> None:
    lm = find_layers(meta_model(name, 100))
    assert {g: len(ls) for g, ls in lm.groups().items()} == groups
    assert homogeneous(lm)


def test_vit_b16_layer_sizes() -> None:
    lm = find_layers(meta_model("vit_base_patch16_224", 100))
    layers = lm.by_id()
    assert layers["blocks.0.attn"].num_params == 1536 + 768 * 2304 + 2304 + 768 * 768 + 768
    assert layers["blocks.11.mlp"].num_params == 1536 + 2 * 768 * 3072 + 3072 + 768
    assert lm.count(lm.head_params) == 76_900
    assert sorted(lm.non_residual_params()) == sorted(
        ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
         "norm.weight", "norm.bias"])


def test_deit_distilled_has_two_heads_and_dist_token() -> None:
    lm = find_layers(tiny("deit_distilled"))
    assert set(lm.head_params) == {"head.weight", "head.bias", "head_dist.weight",
                                   "head_dist.bias"}
    assert "dist_token" in lm.non_residual_params()


@pytest.mark.parametrize("name,kinds", [
    ("vit_small_patch16_18x2_224", {"attn", "ffn"}),  # ParallelThingsBlock: attns/ffns
    ("vit_base_patch16_xp_224", {"block"}),  # ParallelScalingBlock: fused, one layer per block
    ("swinv2_cr_tiny_224", {"attn", "ffn"}),
    ("eva02_tiny_patch14_224", {"attn", "ffn"}),
    ("beit_base_patch16_224", {"attn", "ffn"}),
])
def test_block_variants_leave_no_block_parameter_behind(name: str, kinds: set[str]) -> None:
    model = meta_model(name)
    lm = find_layers(model)
    assert set(lm.kinds()) == kinds and homogeneous(lm)
    # Swin V2-cr's norm3 normalises the main path after a block: not a residual branch
    assert not [n for n in lm.non_residual_params() if block_of(n) and ".norm3." not in n]
    owners = Counter(n for layer in lm.layers for n in layer.param_names)
    assert max(owners.values()) == 1


def test_parallel_branches_are_one_layer_each() -> None:
    lm = find_layers(meta_model("vit_small_patch16_18x2_224"))
    assert lm.layers[0].id == "blocks.0.attns" and lm.layers[1].id == "blocks.0.ffns"
    assert len(lm.layers) == 2 * 18 and homogeneous(lm)


def test_group_matcher_fallback_resnet() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    lm = find_layers(model)
    assert lm.family == "group-matcher"
    assert set(lm.kinds()) == {"block"}
    assert lm.layers[0].id == "layer1.0"
    assert [g for g in lm.groups()] == [f"stage{s}.block" for s in range(lm.num_stages)]
    assert set(lm.head_params) == {"fc.weight", "fc.bias"}


def test_group_matcher_fallback_skips_downsample_regex() -> None:
    """focalnet's first block regex attaches downsampling; the per-block one must be used."""
    lm = find_layers(meta_model("focalnet_tiny_srf"))
    assert {g: len(ls) for g, ls in lm.groups().items()} == {
        "stage0.block": 2, "stage1.block": 2, "stage2.block": 6, "stage3.block": 2}
    assert not [n for n in lm.non_residual_params() if ".blocks." in n]


def test_unknown_module_gets_a_clear_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(PartialFTError, match="layer spec"):
        find_layers(model)


def test_to_dict_is_json() -> None:
    data = json.loads(json.dumps(find_layers(tiny("swin")).to_dict()))
    assert data["family"] == "swin" and data["num_stages"] == 4
    assert data["groups"]["stage2.attn"]["layers"] == ["layers.2.blocks.0.attn",
                                                      "layers.2.blocks.1.attn"]
    assert {"id", "kind", "stage", "index", "group", "num_params"} == set(data["layers"][0])


# --- every family partialft claims, on the meta device ----------------------------------------

# family -> timm models of it (at least two sizes each, and the block variants the rule handles)
CLAIMED = {
    "vit": ["vit_tiny_patch16_224", "vit_base_patch16_224", "deit_tiny_distilled_patch16_224",
            "deit3_small_patch16_224", "vit_small_patch16_18x2_224", "eva02_tiny_patch14_224",
            "beit_base_patch16_224"],
    "swin": ["swin_tiny_patch4_window7_224", "swin_base_patch4_window7_224",
             "swinv2_tiny_window8_256", "swinv2_cr_tiny_224", "swinv2_cr_small_224"],
    "convnext": ["convnext_atto", "convnext_base", "convnextv2_atto"],
    "mlp-mixer": ["mixer_s16_224", "mixer_b16_224", "resmlp_12_224", "gmlp_s16_224"],
    "as-mlp": ["as_mlp_tiny", "as_mlp_small", "as_mlp_base"],
    "metaformer": ["poolformer_s12", "poolformer_s24", "poolformerv2_s12", "convformer_s18",
                   "convformer_s36", "caformer_s18", "caformer_s36"],
    "hiera": ["hiera_tiny_224", "hiera_small_224", "hiera_small_abswin_256"],
    "maxvit": ["maxvit_tiny_tf_224", "maxvit_small_tf_224", "maxvit_rmlp_nano_rw_256",
               "coatnet_0_rw_224", "coatnet_1_rw_224", "coatnet_nano_cc_224",
               "coatnext_nano_rw_224", "maxxvitv2_nano_rw_256"],
    "levit": ["levit_128", "levit_192", "levit_conv_128"],
}
VARIANTS = [(family, name) for family, names in CLAIMED.items() for name in names]


def test_every_claimed_family_is_tested() -> None:
    assert {f.name for f in FAMILIES} == set(CLAIMED)


@pytest.mark.parametrize("family,name", VARIANTS)
def test_every_block_parameter_is_in_one_layer_or_named_non_residual(family: str,
                                                                     name: str) -> None:
    """Each parameter of a block is in exactly one layer, or in one of the family's declared
    main-path modules (then reported non-residual); no layer is empty or shared with the head."""
    model = meta_model(name, 10)
    lm = find_layers(model)
    rule = next(f for f in FAMILIES if f.name == family)
    assert lm.family == family
    owners = Counter(n for layer in lm.layers for n in layer.param_names)
    assert owners and max(owners.values()) == 1
    assert all(layer.num_params > 0 for layer in lm.layers)
    assert not set(lm.head_params) & set(owners)
    modules = dict(model.named_modules())
    assert all(layer.id in modules for layer in lm.layers)
    blocks = [p for p in modules if re.fullmatch(rule.block_pattern, p)]
    main_path = tuple(f"{b}.{m}." for b in blocks for m in rule.main_path)
    non_residual = set(lm.non_residual_params())
    for block in blocks:
        for param in (n for n, _ in model.named_parameters() if n.startswith(block + ".")):
            if param.startswith(main_path):
                assert param in non_residual and param not in owners, param
            else:
                assert owners[param] == 1, param


def group_sizes(lm) -> dict[str, int]:
    return {g: len(ls) for g, ls in lm.groups().items()}


def per_stage(depths: tuple[int, ...], *groups: str) -> dict[str, int]:
    return {f"stage{s}.{g}": n for s, n in enumerate(depths) for g in groups}


@pytest.mark.parametrize("name,depths", [("poolformer_s12", (2, 2, 6, 2)),
                                         ("convformer_s18", (3, 3, 9, 3)),
                                         ("caformer_s18", (3, 3, 9, 3))])
def test_metaformer_token_mixer_and_mlp_layers(name: str, depths: tuple[int, ...]) -> None:
    lm = find_layers(meta_model(name, 10))
    assert group_sizes(lm) == per_stage(depths, "token", "channel") and homogeneous(lm)
    token = lm.by_id()["stages.0.blocks.1.token_mixer"].param_names
    assert "stages.0.blocks.1.norm1.weight" in token
    assert {n.rsplit(".", 1)[0] for n in lm.non_residual_params()} >= {"stem.conv",
                                                                     "stages.1.downsample.conv"}
    if name == "caformer_s18":  # attention stages scale the shortcut: res_scale1 is in the layer
        assert "stages.2.blocks.0.res_scale1.scale" in lm.by_id()[
            "stages.2.blocks.0.token_mixer"].param_names
    if name == "poolformer_s12":  # pooling has no weights: its layer is norm1 + layer scale
        assert set(token) == {"stages.0.blocks.1.norm1.weight", "stages.0.blocks.1.norm1.bias",
                              "stages.0.blocks.1.layer_scale1.scale"}


def test_hiera_stages_by_width() -> None:
    lm = find_layers(meta_model("hiera_tiny_224", 10))
    assert group_sizes(lm) == per_stage((1, 2, 7, 2), "attn", "ffn")
    first = lm.by_id()["blocks.3.attn"]  # the first block of stage 2 widens 192 -> 384
    assert (first.stage, first.index, first.group) == (2, 0, "stage2.attn")
    assert "blocks.3.proj.weight" in lm.non_residual_params()  # the shortcut's projection
    for group, layers in lm.groups().items():  # a widening attention differs, nothing else
        sizes = {la.num_params for la in (layers[1:] if group.endswith("attn") else layers)}
        assert len(sizes) <= 1, group


def test_maxvit_four_kinds_of_residual() -> None:
    lm = find_layers(meta_model("maxvit_tiny_tf_224", 10))
    assert lm.kinds() == ["ffn", "grid-attn", "mbconv", "window-attn"]
    assert group_sizes(lm) == per_stage((2, 2, 5, 2), "mbconv", "window-attn", "window-ffn",
                                        "grid-attn", "grid-ffn")
    ids = lm.by_id()
    assert [la.id for la in lm.layers[:5]] == [f"stages.0.blocks.0.{m}" for m in (
        "conv", "attn_block.attn", "attn_block.mlp", "attn_grid.attn", "attn_grid.mlp")]
    assert "stages.2.blocks.0.attn_grid.norm1.weight" in ids["stages.2.blocks.0.attn_grid.attn"
                                                             ].param_names
    assert "stages.1.blocks.0.conv.shortcut.expand.weight" in lm.non_residual_params()
    attn = select_layers(lm, "attn").layers
    assert {ids[i].kind for i in attn} == {"window-attn", "grid-attn"} and len(attn) == 22
    ffn = select_layers(lm, "ffn").layers
    assert {ids[i].group.split(".")[1] for i in ffn} == {"window-ffn", "grid-ffn"}


def test_coatnet_mbconv_then_transformer_blocks() -> None:
    lm = find_layers(meta_model("coatnet_0_rw_224", 10))
    assert group_sizes(lm) == {"stage0.mbconv": 2, "stage1.mbconv": 3, "stage2.attn": 7,
                               "stage2.ffn": 7, "stage3.attn": 2, "stage3.ffn": 2}
    assert lm.by_id()["stages.0.blocks.1"].kind == "mbconv"
    assert "stages.2.blocks.0.norm1.norm.weight" in lm.by_id()["stages.2.blocks.0.attn"
                                                               ].param_names
    assert "stages.2.blocks.0.shortcut.expand.weight" in lm.non_residual_params()


def test_levit_attention_and_mlp_sub_blocks() -> None:
    lm = find_layers(meta_model("levit_128", 10))
    assert group_sizes(lm) == per_stage((4, 4, 4), "attn", "ffn") and homogeneous(lm)
    assert "stages.0.blocks.0.attn.attention_biases" in lm.by_id()["stages.0.blocks.0.attn"
                                                                   ].param_names
    assert all(".downsample." in n or n.startswith("stem.")
               for n in lm.non_residual_params())


# --- layer specs ------------------------------------------------------------------------------


def tv_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                                num_heads=2, hidden_dim=16, mlp_dim=32,
                                                num_classes=5)


def docs_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_docs_worked_example(tmp_path: Path) -> None:
    spec_file = tmp_path / "tv-vit.yaml"
    spec_file.write_text(docs_yaml_blocks()[0])
    lm = find_layers(tv_vit(), spec_file)
    assert lm.family == "spec"
    assert {g: [la.id for la in ls] for g, ls in lm.groups().items()} == {
        "attn": ["encoder.layers.encoder_layer_0.self_attention",
                 "encoder.layers.encoder_layer_1.self_attention"],
        "ffn": ["encoder.layers.encoder_layer_0.mlp", "encoder.layers.encoder_layer_1.mlp"]}
    assert set(lm.head_params) == {"heads.head.weight", "heads.head.bias"}
    assert sorted(lm.non_residual_params()) == sorted(
        ["class_token", "conv_proj.weight", "conv_proj.bias", "encoder.pos_embedding",
         "encoder.ln.weight", "encoder.ln.bias"])
    assert lm.by_id()["encoder.layers.encoder_layer_0.self_attention"].num_params == (
        2 * 16 + 48 * 16 + 48 + 16 * 16 + 16)


def test_docs_multi_stage_example_parses() -> None:
    spec = yaml.safe_load(docs_yaml_blocks()[1])
    model = nn.Module()
    model.stages = nn.ModuleList(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)) for _ in range(2))
    model.fc = nn.Linear(2, 3)
    lm = find_layers(model, spec)
    assert lm.num_stages == 2 and set(lm.groups()) == {"stage0.block", "stage1.block"}
    assert lm.head_params == ("fc.weight", "fc.bias")  # default head: the last nn.Linear


def test_docs_python_vit_b_16_dict_matches_timm_counts() -> None:
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    spec = {
        "layers": {
            **{f"{b}.self_attention": [f"{b}.ln_1.*", f"{b}.self_attention.*"] for b in blocks},
            **{f"{b}.mlp": [f"{b}.ln_2.*", f"{b}.mlp.*"] for b in blocks},
        },
        "groups": {"attn": [f"{b}.self_attention" for b in blocks],
                   "ffn": [f"{b}.mlp" for b in blocks]},
        "head": "heads.head.*",
    }
    with torch.device("meta"):
        model = torchvision.models.vit_b_16()
    lm = find_layers(model, spec)
    timm_lm = find_layers(meta_model("vit_base_patch16_224"))
    assert sum(la.num_params for la in lm.groups()["attn"]) == sum(
        la.num_params for la in timm_lm.groups()["attn"])
    assert sum(la.num_params for la in lm.groups()["ffn"]) == sum(
        la.num_params for la in timm_lm.groups()["ffn"])


def test_spec_as_json_file(tmp_path: Path) -> None:
    spec = {"layers": {"0": "0.*", "2": ["2.weight", "2.bias"]}, "groups": {"block": ["0", "2"]},
            "head": "4.*"}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    lm = find_layers(model, path)
    assert [la.id for la in lm.layers] == ["0", "2"] and lm.head_params == ("4.weight", "4.bias")
    assert load_layer_spec(path) == spec


GOOD = {"layers": {"0": "0.*", "2": "2.*"}, "groups": {"block": ["0", "2"]}}


@pytest.mark.parametrize("spec,message", [
    ({"layers": {"0": "0.*"}}, "needs a non-empty mapping 'layers"),
    ({"layers": {}, "groups": {}}, "needs a non-empty mapping 'layers"),
    ([1, 2], "needs a non-empty mapping 'layers"),
    ({**GOOD, "stages": 2}, "unknown key.*stages"),
    ({**GOOD, "layers": {"0": 3, "2": "2.*"}}, "layer 0 .* is 3"),
    ({**GOOD, "layers": {"0": [], "2": "2.*"}}, "layer 0 .*non-empty list"),
    ({**GOOD, "groups": {"block": 5}}, "group block .*list of layer ids"),
    ({**GOOD, "head": [4]}, "head .*patterns"),
    ({**GOOD, "groups": {"block": ["0"]}}, "2 are in no group"),
    ({**GOOD, "groups": {"block": ["0", "2", "9"]}}, "group block names layer 9"),
    ({**GOOD, "groups": {"a": ["0", "2"], "b": ["2"]}}, "layer 2 is in groups a and b"),
    ({**GOOD, "layers": {"0": "0.*", "2": "9.*"}},
     r"pattern '9\.\*' of layer 2 in the layer spec matches no"),
    ({**GOOD, "layers": {"0": "0.*", "2": ["2.*", "0.bias"]}}, "0.bias is claimed by both"),
    ({**GOOD, "head": "2.*"}, "2.weight is claimed by both head and layer 2"),
    ({"layers": GOOD["layers"], "groups": {"stage0.block": ["0"], "stage2.block": ["2"]}},
     "stages 0, 2"),
])
def test_spec_validation_errors(spec: object, message: str) -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(PartialFTError, match=message):
        find_layers(model, spec)  # type: ignore[arg-type]


def test_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PartialFTError, match="does not exist"):
        load_layer_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [unclosed\n")
    with pytest.raises(PartialFTError, match="is not valid YAML at line"):
        load_layer_spec(bad)
    code = tmp_path / "code.yaml"  # safe_load refuses python tags: no code runs
    code.write_text("layers: !!python/object/apply:os.getcwd []\ngroups: {}\n")
    with pytest.raises(PartialFTError, match="is not valid YAML at line"):
        load_layer_spec(code)
