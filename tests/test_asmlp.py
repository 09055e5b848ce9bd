"""AS-MLP: the axial shift against a slow reference, the authors' checkpoint names, timm
registration, Table 6 layers, Table 7's default top-k and Table 8e's exact counts."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from partialft.core.layers import find_layers
from partialft.core.select import default_topk, select_layers
from partialft.errors import PartialFTError
from partialft.models import create_model
from partialft.models.as_mlp import AxialShift, AxialShiftedBlock, axial_shift, shift_groups

# name -> (embed_dim, depths), from the authors' configs/as_{tiny,small,base}_patch4_shift5_224
AUTHORS = {"as_mlp_tiny": (96, (2, 2, 6, 2)), "as_mlp_small": (96, (2, 2, 18, 2)),
           "as_mlp_base": (128, (2, 2, 18, 2))}


def reference_shift(x: torch.Tensor, shift_size: int, axis: int) -> torch.Tensor:
    """The authors' shift kernel, one channel and one position at a time: channel c is in group
    g = c // ceil(C / shift_size) and output position p reads input p + (shift_size // 2 - g)."""
    channels, length = x.shape[1], x.shape[axis]
    per_group = math.ceil(channels / shift_size)
    out = torch.zeros_like(x)
    for c in range(channels):
        offset = shift_size // 2 - c // per_group
        for p in range(length):
            if 0 <= p + offset < length:
                src = x[:, c].select(axis - 1, p + offset)
                out[:, c].select(axis - 1, p).copy_(src)
    return out


def shift(x: torch.Tensor, shift_size: int, axis: int) -> torch.Tensor:
    return axial_shift(x, shift_groups(x.shape[1], shift_size), shift_size // 2, axis)


@pytest.mark.parametrize("channels", [1, 3, 5, 6, 7, 12, 13, 96])
@pytest.mark.parametrize("shift_size", [3, 5, 7])
@pytest.mark.parametrize("axis", [2, 3])
def test_axial_shift_matches_the_slow_reference(channels: int, shift_size: int,
                                                axis: int) -> None:
    x = torch.randn(2, channels, 4, 6, generator=torch.Generator().manual_seed(channels))
    assert torch.equal(shift(x, shift_size, axis), reference_shift(x, shift_size, axis))


def test_axial_shift_direction_by_hand() -> None:
    """Five channels, shift 5, one row 1..5: group 0 reads 2 ahead, group 4 reads 2 behind."""
    x = torch.arange(1.0, 6.0).expand(1, 5, 1, 5).clone()
    out = shift(x, 5, axis=3)[0, :, 0]
    assert out.tolist() == [[3, 4, 5, 0, 0], [2, 3, 4, 5, 0], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4],
                            [0, 0, 1, 2, 3]]
    assert torch.equal(shift(x.transpose(2, 3), 5, axis=2)[0, :, :, 0], out)


def test_axial_shift_gradient_matches_the_reference() -> None:
    x = torch.randn(2, 7, 5, 5, requires_grad=True)
    weight = torch.randn(2, 7, 5, 5)
    (shift(x, 5, 3) * weight).sum().backward()
    fast = x.grad.clone()
    x.grad = None
    (reference_shift(x, 5, 3) * weight).sum().backward()
    assert torch.equal(fast, x.grad)


def test_as_module_wiring() -> None:
    """conv1 -> norm1 -> GELU, shift along W into conv2_1 and along H into conv2_2, GELU each,
    sum, norm2, conv3 (the authors' order), recomputed with the reference shift."""
    torch.manual_seed(0)
    module = AxialShift(12, 5).eval()
    x = torch.randn(2, 12, 6, 6)
    h = F.gelu(module.norm1(module.conv1(x)))
    w_branch = F.gelu(module.conv2_1(reference_shift(h, 5, 3)))
    h_branch = F.gelu(module.conv2_2(reference_shift(h, 5, 2)))
    expected = module.conv3(module.norm2(w_branch + h_branch))
    torch.testing.assert_close(module(x), expected)


def test_block_compiles_in_one_graph() -> None:
    """No data-dependent control flow: dynamo traces a whole block with fullgraph=True."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = AxialShiftedBlock(10, 5).eval()
    x = torch.randn(2, 10, 8, 8)
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x))


def authors_keys(embed_dim: int, depths: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Every state-dict name and shape of the authors' AS_MLP (models/as_mlp.py), 1000 classes."""
    keys = {"patch_embed.proj.weight": (embed_dim, 3, 4, 4), "patch_embed.proj.bias": (embed_dim,),
            "patch_embed.norm.weight": (embed_dim,), "patch_embed.norm.bias": (embed_dim,)}
    for s, depth in enumerate(depths):
        dim = embed_dim * 2 ** s
        for b in range(depth):
            block = f"layers.{s}.blocks.{b}"
            for norm in ("norm1", "norm2", "axial_shift.norm1", "axial_shift.norm2"):
                keys |= {f"{block}.{norm}.weight": (dim,), f"{block}.{norm}.bias": (dim,)}
            for conv in ("conv1", "conv2_1", "conv2_2", "conv3"):
                keys |= {f"{block}.axial_shift.{conv}.weight": (dim, dim, 1, 1),
                         f"{block}.axial_shift.{conv}.bias": (dim,)}
            keys |= {f"{block}.mlp.fc1.weight": (4 * dim, dim, 1, 1),
                     f"{block}.mlp.fc1.bias": (4 * dim,),
                     f"{block}.mlp.fc2.weight": (dim, 4 * dim, 1, 1),
                     f"{block}.mlp.fc2.bias": (dim,)}
        if s < len(depths) - 1:
            keys |= {f"layers.{s}.downsample.norm.weight": (4 * dim,),
                     f"layers.{s}.downsample.norm.bias": (4 * dim,),
                     f"layers.{s}.downsample.reduction.weight": (2 * dim, 4 * dim, 1, 1)}
    width = embed_dim * 2 ** (len(depths) - 1)
    return keys | {"norm.weight": (width,), "norm.bias": (width,),
                   "head.weight": (1000, width), "head.bias": (1000,)}


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_state_dict_names_and_shapes_are_the_authors(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == authors_keys(*AUTHORS[name])


def test_an_authors_checkpoint_loads_with_checkpoint_file(tmp_path) -> None:
    """A file shaped like the authors' release ({'model': state dict, 'epoch', ...}) loads with
    no missing or unexpected key; another class count keeps a fresh head."""
    torch.manual_seed(0)
    state = {k: torch.randn(shape) for k, shape in authors_keys(*AUTHORS["as_mlp_tiny"]).items()}
    path = tmp_path / "asmlp_tiny.pth"
    torch.save({"model": state, "epoch": 299, "max_accuracy": 81.3}, path)
    model = create_model("as_mlp_tiny", checkpoint=path)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    fresh = create_model("as_mlp_tiny", num_classes=10, checkpoint=path)
    assert fresh.head.weight.shape == (10, 768)
    assert torch.equal(fresh.layers[2].blocks[5].axial_shift.conv2_2.weight,
                       state["layers.2.blocks.5.axial_shift.conv2_2.weight"])


def test_registered_with_timm_and_trains_at_small_sizes() -> None:
    create_model("test_vit")  # registers partialft's architectures
    assert {"as_mlp_tiny", "as_mlp_small", "as_mlp_base"} <= set(timm.list_models("as_mlp*"))
    torch.manual_seed(0)
    model = create_model("as_mlp_tiny", num_classes=3, img_size=32)
    for size in (32, 64):
        logits = model(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 3)
    logits.sum().backward()
    assert model.layers[0].blocks[0].axial_shift.conv2_1.weight.grad is not None
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


def test_pretrained_offline_is_a_clear_error() -> None:
    # the authors' weights are downloaded by hand: say how to pass them, not where to cache them
    with pytest.raises(PartialFTError, match="'as_mlp_base' have no download address; pass the "
                       "released weights file with checkpoint=FILE, or pretrained=False") as err:
        create_model("as_mlp_base", pretrained=True)
    assert "HF_HOME" not in str(err.value)
    assert "with --checkpoint FILE, or --no-pretrained" in err.value.for_cli()  # the CLI's words


def base_layers():
    with torch.device("meta"):
        return find_layers(create_model("as_mlp_base", num_classes=100))


def test_table6_layers_and_groups() -> None:
    lm = base_layers()
    assert lm.family == "as-mlp" and lm.kinds() == ["as", "ffn"]
    assert {g: len(ls) for g, ls in lm.groups().items()} == {
        f"stage{s}.{k}": n for s, n in enumerate((2, 2, 18, 2)) for k in ("as", "ffn")}
    assert all(len({la.num_params for la in ls}) == 1 for ls in lm.groups().values())
    layer = lm.by_id()["layers.2.blocks.17.axial_shift"]
    assert (layer.kind, layer.stage, layer.index) == ("as", 2, 17)
    assert "layers.2.blocks.17.norm1.weight" in layer.param_names
    assert layer.num_params == 4 * 512 * 512 + 10 * 512  # 4 convs, 3 norms (norm1 + 2 inside)
    assert "layers.0.blocks.0.norm2.bias" in lm.by_id()["layers.0.blocks.0.mlp"].param_names
    assert {n.rsplit(".", 1)[0] for n in lm.non_residual_params()} == {
        "patch_embed.proj", "patch_embed.norm", "norm", *(f"layers.{s}.downsample.{m}"
                                                          for s in range(3)
                                                          for m in ("norm", "reduction"))}


def test_attn_and_ffn_methods_mean_as_and_mlp_layers() -> None:
    lm = base_layers()
    attn = select_layers(lm, "attn").layers
    ffn = select_layers(lm, "ffn").layers
    assert len(attn) == len(ffn) == 24
    assert all(i.endswith(".axial_shift") for i in attn) and all(i.endswith(".mlp") for i in ffn)


def test_table7_default_topk() -> None:
    assert default_topk(base_layers(), "small") == [2, 2, 6, 1]


# Table 8e (AS-MLP-B on CIFAR-100): top-k -> (exact count, the paper's M); Table 1: full 86.83
TABLE_8E = {"1,1,6,1": (32_618_980, 32.62), "1,1,6,2": (45_219_300, 45.22),
            "2,2,6,1": (33_608_548, 33.61), "2,2,6,2": (46_208_868, 46.21)}
FULL = (86_830_308, 86.83)


def plan(capsys, *args: str) -> dict:
    from partialft.cli import main

    assert main(["plan", "--model", "as_mlp_base", "--num-classes", "100", *args,
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("topk", sorted(TABLE_8E))
def test_table8e_exact_counts(capsys, topk: str) -> None:
    exact, paper = TABLE_8E[topk]
    assert round(exact / 1e6, 2) == paper
    assert plan(capsys, "--method", "fapft", "--topk", topk)["trainable_params"] == exact


def test_table1_full_fine_tuning_count(capsys) -> None:
    exact, paper = FULL
    assert round(exact / 1e6, 2) == paper
    out = plan(capsys, "--method", "full")
    assert out["trainable_params"] == out["total_params"] == exact
