"""PEFT baselines: parameter counts, initial equality, training, merging, rebuilding, errors."""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
import torch.nn as nn

from partialft.baselines import BASELINES
from partialft.baselines._common import is_own
from partialft.baselines.adapter import remove_adapters
from partialft.baselines.lora import merge_lora
from partialft.baselines.ssf import merge_ssf
from partialft.baselines.vpt import remove_prompts
from partialft.cli import main
from partialft.errors import PartialFTError
from partialft.methods import prepare
from partialft.models import create_model, load_state_dict_file
from partialft.training.checkpoints import apply_delta, save_delta

IMG = 32
SMALL_OPTIONS = {"adapter": {"reduction": 8}, "vpt-deep": {"tokens": 3}, "ssf": {},
                 "lora": {"rank": 2, "alpha": 4}}
PREFIXES = {"adapter": "adapter_", "vpt-deep": "vpt_", "ssf": "ssf_", "lora": "lora_"}
# (model kind, method) pairs every baseline supports; VPT-Deep is ViT-only.
SUPPORTED = [("vit", m) for m in PREFIXES] + [("swin", m) for m in ("adapter", "ssf", "lora")] \
    + [("convnext", m) for m in ("adapter", "ssf")]


def tiny(kind: str, seed: int = 0, **kwargs) -> nn.Module:
    """A tiny timm model of ``kind`` with 5 classes on 32x32 inputs, in eval mode."""
    torch.manual_seed(seed)
    if kind == "vit":
        model = timm.create_model("test_vit", num_classes=5, img_size=IMG, **kwargs)
    elif kind == "swin":
        model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=5, embed_dim=16,
                                  depths=(1, 1), num_heads=(1, 2), img_size=IMG, window_size=4,
                                  drop_path_rate=0.0, **kwargs)
    else:
        model = timm.create_model("test_convnext", num_classes=5, **kwargs)
    return model.eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, IMG, IMG, generator=gen), torch.arange(4)


def head_names(prepared) -> set[str]:
    return set(prepared.layer_map.head_params)


@pytest.mark.parametrize("method, options, expected, paper", [
    ("adapter", {}, 12 * (768 * 12 + 12 + 12 * 768 + 768) + 76_900, 0.31),
    ("vpt-deep", {}, 12 * 50 * 768 + 76_900, 0.54),
    ("ssf", {}, 12 * 2 * (768 * 4 + 2304 + 3072) + 2 * 2 * 768 + 76_900, 0.28),
    ("lora", {}, 12 * 8 * (768 + 2304 + 768 + 768 + 2 * (768 + 3072)) + 76_900, 1.26),
    ("vpt-deep", {"tokens": 10}, 12 * 10 * 768 + 76_900, 0.17),
])
def test_vit_base_counts_on_meta(method, options, expected, paper):
    with torch.device("meta"):
        model = create_model("vit_base_patch16_224", num_classes=100)
    prepared = prepare(model, method, baseline_options=options)
    assert prepared.summary.trainable_params == expected
    assert round(expected / 1e6, 2) == paper
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(prepared.summary.trainable_names)


def test_plan_command_reports_adapter_count(capsys):
    argv = ["plan", "--model", "vit_base_patch16_224", "--num-classes", "100", "--method",
            "adapter", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["trainable_params"] == 307_444


def test_swin_and_convnext_base_adapter_counts_match_paper():
    """Paper Table 1: adapter 0.33 M on Swin-B and 0.45 M on ConvNeXt-B (CIFAR-100)."""
    for name, paper in (("swin_base_patch4_window7_224", 0.33), ("convnext_base", 0.45)):
        with torch.device("meta"):
            model = create_model(name, num_classes=100)
        prepared = prepare(model, "adapter")
        assert round(prepared.summary.trainable_params / 1e6, 2) == paper


@pytest.mark.parametrize("kind, method", [p for p in SUPPORTED if p[1] != "vpt-deep"])
def test_initial_model_equals_base(kind, method):
    model = tiny(kind)
    x, _ = batch()
    with torch.no_grad():
        before = model(x)
        prepare(model, method, **SMALL_OPTIONS[method])
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def _train(model: nn.Module, steps: int, lr: float = 1e-2) -> list[float]:
    x, y = batch()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind, method", SUPPORTED)
def test_one_step_changes_only_own_params_and_head_then_learns(kind, method):
    model = tiny(kind)
    prepared = prepare(model, method, **SMALL_OPTIONS[method])
    own = {n for n, _ in model.named_parameters() if is_own(n, PREFIXES[method])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert own and trainable == own | head_names(prepared)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, 1)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= own | head_names(prepared)
    assert changed & own and changed & head_names(prepared)
    losses = _train(model, 4)
    assert losses[-1] < losses[0]


def _perturb_own(model: nn.Module, prefix: str) -> None:
    """Give the baseline's parameters random values so that merging has something to fold."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_own(name, prefix):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("kind, method, merge", [
    ("vit", "ssf", merge_ssf), ("swin", "ssf", merge_ssf), ("convnext", "ssf", merge_ssf),
    ("vit", "lora", merge_lora), ("swin", "lora", merge_lora),
])
def test_merge_keeps_outputs_and_restores_base_structure(kind, method, merge):
    model = tiny(kind)
    base_keys = set(model.state_dict())
    prepare(model, method, **SMALL_OPTIONS[method])
    _perturb_own(model, PREFIXES[method])
    x, _ = batch()
    with torch.no_grad():
        before = model(x)
        merged = merge(model)
        after = merged(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    keys = set(merged.state_dict())
    assert not any(is_own(k, PREFIXES[method]) for k in keys)
    assert base_keys <= keys and all(k.endswith(".bias") for k in keys - base_keys)
    if kind == "vit":  # every ViT layer has a bias: exactly the base model's tensors
        assert keys == base_keys


@pytest.mark.parametrize("method, remove", [("adapter", remove_adapters),
                                            ("vpt-deep", remove_prompts)])
def test_remove_gives_base_model_back(method, remove):
    model = tiny("vit")
    x, _ = batch()
    with torch.no_grad():
        base = model(x)
        prepare(model, method, **SMALL_OPTIONS[method])
        _perturb_own(model, PREFIXES[method])
        assert not torch.allclose(model(x), base)
        remove(model)
        torch.testing.assert_close(model(x), base)
    assert not any(is_own(k, PREFIXES[method]) for k in model.state_dict())


def test_vpt_inserts_prompts_after_prefix_tokens_and_drops_them():
    model = tiny("vit", reg_tokens=2, global_pool="avg")  # cls + 2 register tokens
    prepare(model, "vpt-deep", tokens=4)
    seen = {}
    block = model.blocks[1]
    block.norm1.register_forward_hook(lambda m, a, out: seen.setdefault("in", a[0]))
    x, _ = batch()
    with torch.no_grad():
        tokens = model.forward_features(x)
    num_patches = (IMG // 16) ** 2
    assert tokens.shape[1] == 3 + num_patches  # prompts gone after every block
    assert seen["in"].shape[1] == 3 + 4 + num_patches  # ...but present inside each block
    assert torch.equal(seen["in"][:, 3:7], block.vpt_prompts.expand(4, -1, -1))
    assert not torch.equal(seen["in"][:, :3], block.vpt_prompts[:3].expand(4, -1, -1))


def test_vpt_prompt_count_and_dropout_are_options():
    model = tiny("vit")
    prepared = prepare(model, "vpt-deep", tokens=7, dropout=0.1)
    shapes = {tuple(model.get_parameter(n).shape) for n in prepared.summary.trainable_names
              if n.endswith("vpt_prompts")}
    assert shapes == {(7, 64)} and len(model.blocks) == 6
    assert prepared.selection.to_dict()["tokens"] == 7


@pytest.mark.parametrize("method", list(PREFIXES))
def test_delta_rebuilds_trained_model(tmp_path, method):
    model = tiny("vit")
    base_state = copy.deepcopy(model.state_dict())
    prepared = prepare(model, method, **SMALL_OPTIONS[method])
    _train(model, 2)
    _perturb_own(model, PREFIXES[method])
    path = save_delta(tmp_path / "delta.safetensors", model, {"model": "test_vit"},
                      prepared.selection.to_dict())
    delta = load_state_dict_file(path)
    assert set(delta) == set(prepared.summary.trainable_names)
    assert all(is_own(k, PREFIXES[method]) or k.startswith("head.") for k in delta)
    fresh = tiny("vit", seed=7)
    fresh.load_state_dict(base_state)
    rebuilt = prepare(fresh, method, **SMALL_OPTIONS[method]).model
    apply_delta(rebuilt, delta)
    x, _ = batch()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_deepcopy_keeps_hooks_working():
    model = tiny("vit")
    prepare(model, "ssf")
    _perturb_own(model, "ssf_")
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.blocks[0].attn.qkv.ssf_shift.add_(1.0)  # must not leak into the original
        x, _ = batch()
        assert not torch.allclose(clone(x), model(x))
        torch.testing.assert_close(merge_ssf(copy.deepcopy(model))(x), model(x), atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.parametrize("method, options, fragment", [
    ("adapter", {"rank": 8}, "'adapter' does not take the option rank"),
    ("adapter", {"reduction": 0}, "reduction=0"),
    ("adapter", {"reduction": 2.5}, "reduction=2.5"),
    ("vpt-deep", {"tokens": "many"}, "tokens=many"),
    ("vpt-deep", {"prompts": 5}, "prompts of vpt-deep is now called tokens"),
    ("vpt-deep", {"dropout": 1.0}, "dropout=1.0"),
    ("ssf", {"scale": 1}, "its options: none"),
    ("lora", {"alpha": 0}, "alpha=0"),
    ("lora", {"rank": True}, "rank=True"),
    ("lora", {"ranks": 4}, "did you mean rank"),
])
def test_bad_options_raise(method, options, fragment):
    with pytest.raises(PartialFTError, match=fragment):
        prepare(tiny("vit"), method, **options)


def test_options_given_as_strings_are_accepted():
    prepared = prepare(tiny("vit"), "lora", rank="4", alpha="8")
    assert prepared.summary.groups["head"]["trainable"] == 64 * 5 + 5
    assert tuple(prepared.model.blocks[0].attn.qkv.lora_A["default"].weight.shape) == (4, 64)


def test_vpt_on_swin_is_a_clear_error():
    with pytest.raises(PartialFTError, match="VisionTransformer models only"):
        prepare(tiny("swin"), "vpt-deep")


@pytest.mark.parametrize("method", list(PREFIXES))
def test_applying_twice_is_refused(method):
    model = tiny("vit")
    prepare(model, method, **SMALL_OPTIONS[method])
    with pytest.raises(PartialFTError, match="fresh base model"):
        BASELINES[method].apply(model, prepare(tiny("vit"), "linear").layer_map)
