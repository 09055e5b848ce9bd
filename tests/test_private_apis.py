"""Every private API of another library that partialft uses is listed here and checked.

A private name (``_reset_state``, ``timm.models._hub``) can move in any release without notice.
Each one partialft uses is in ``PRIVATE``; a test resolves it and checks the behaviour
partialft relies on, failing with a sentence that says where partialft uses it and what to do.
A scan of the source makes sure no new private use slips in without an entry here.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "partialft"

# private name -> (the object that has it, where partialft uses it under src/partialft)
PRIVATE = {
    "_reset_state": ("accelerate.state.AcceleratorState accelerate.state.GradientState",
                     "training/setup.py"),
    "generate_readme": ("timm.models._hub", "analysis/export.py"),
    "_forward_hooks": ("torch.nn.Module", "baselines/_common.py"),
    "_forward_pre_hooks": ("torch.nn.Module", "baselines/_common.py"),
    "_BatchNorm": ("torch.nn.modules.batchnorm", "baselines/_common.py, baselines/ssf.py, "
                   "core/freeze.py"),
    "_ConvNd": ("torch.nn.modules.conv", "baselines/_common.py"),
    "_pos_embed": ("timm.models.vision_transformer.VisionTransformer", "analysis/multitask.py"),
    "_actions": ("argparse.ArgumentParser", "cli/angles.py"),
    "_SubParsersAction": ("argparse", "cli/*.py (type annotations of add_parser)"),
    "_core": ("numpy", "models/loading.py"),  # NumPy 2's name; NumPy 1 has numpy.core
}

# receivers whose private attributes are partialft's own (or Python's own protocol)
_OWN = {"self", "cls", "super"}


def _resolve(path: str) -> object:
    """Import ``a.b.C`` as module ``a.b`` and attribute ``C`` (or the module itself)."""
    try:
        return importlib.import_module(path)
    except ImportError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _private_uses() -> set[tuple[str, str]]:
    """(file, private name) for every ``x._name`` and ``from a._b import`` outside partialft."""
    uses = set()
    for file in SRC.rglob("*.py"):
        rel = file.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                base = node.value
                if isinstance(base, ast.Name) and base.id in _OWN:
                    continue
                if isinstance(base, ast.Attribute) and base.attr.startswith("_") is False \
                        and isinstance(base.value, ast.Name) and base.value.id in _OWN:
                    continue  # self.x._y: an attribute of partialft's own object
                if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) \
                        and base.func.id == "super":
                    continue
                uses.add((rel, node.attr))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and not node.module.startswith("partialft"):
                private = [p for p in node.module.split(".")
                           if p.startswith("_") and not p.startswith("__")]
                uses.update((rel, n.name) for n in node.names if private)
    return uses


def test_every_private_use_in_the_source_is_listed_here():
    missing = {use for use in _private_uses() if use[1] not in PRIVATE}
    assert not missing, (
        f"partialft uses private names of other libraries that tests/test_private_apis.py "
        f"does not check: {sorted(missing)}; add each to PRIVATE with a check of what partialft "
        f"relies on, or use a public API instead.")


def test_every_listed_private_use_is_still_in_the_source():
    used = {name for _, name in _private_uses()}
    stale = sorted(set(PRIVATE) - used)
    assert not stale, f"PRIVATE lists names the source no longer uses: {stale}; remove them."


def _check(owner: str, attr: str, where: str) -> None:
    """Fail with one sentence when ``owner`` (an import path) no longer has ``attr``."""
    if (owner, attr) == ("numpy", "_core"):
        import numpy as np

        if not hasattr(np, "_core"):  # NumPy 1: the code falls back to numpy.core
            owner, attr = "numpy.core.multiarray", "scalar"
    try:
        obj = _resolve(owner)
    except (ImportError, AttributeError, ValueError):
        obj = None
    if isinstance(obj, type) and not hasattr(obj, attr) and owner in _INSTANCE_ATTRS:
        obj = obj()  # instance attributes (nn.Module's hook dicts, a parser's actions)
    if obj is None or not hasattr(obj, attr):
        pytest.fail(f"{owner}.{attr}, a private API partialft uses in src/partialft/{where}, "
                    f"is gone in the installed version; port that code to its replacement and "
                    f"update tests/test_private_apis.py.")


_INSTANCE_ATTRS = {"torch.nn.Module", "argparse.ArgumentParser"}


@pytest.mark.parametrize("attr", sorted(PRIVATE))
def test_the_private_api_still_exists(attr):
    owners, where = PRIVATE[attr]
    for owner in owners.split():
        _check(owner, attr, where)


def test_a_vanished_private_api_fails_with_a_sentence_naming_it():
    with pytest.raises(pytest.fail.Exception, match=r"argparse\._gone, a private API .* "
                       r"src/partialft/cli/x\.py, is gone"):
        _check("argparse", "_gone", "cli/x.py")
    with pytest.raises(pytest.fail.Exception, match="no_such_module._x"):
        _check("no_such_module", "_x", "a.py")


def test_resetting_accelerates_state_lets_one_process_change_precision_and_accumulation():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    Accelerator(cpu=True, gradient_accumulation_steps=1)
    AcceleratorState._reset_state()
    GradientState._reset_state()
    acc = Accelerator(cpu=True, mixed_precision="bf16", gradient_accumulation_steps=3)
    assert acc.mixed_precision == "bf16"
    assert acc.gradient_accumulation_steps == 3
    AcceleratorState._reset_state()
    GradientState._reset_state()


def test_timms_generate_readme_writes_a_card_with_front_matter():
    from timm.models._hub import generate_readme

    card = {"tags": ["partialft"], "library_name": "timm", "details": {"Classes": 3},
            "license": "other", "description": "a test card"}
    text = generate_readme(card, "my-model")
    assert text.startswith("---\n") and "my-model" in text and "partialft" in text


def test_module_hook_dicts_hold_registered_hooks():
    import torch.nn as nn

    m = nn.Linear(2, 2)

    def hook(*_):
        return None

    m.register_forward_hook(hook)
    m.register_forward_pre_hook(hook)
    assert list(m._forward_hooks.values()) == [hook]
    assert list(m._forward_pre_hooks.values()) == [hook]


def test_vit_pos_embed_is_the_step_between_patch_embed_and_the_blocks():
    import timm
    import torch

    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=3).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        h = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        by_hand = vit.norm(vit.blocks(h))
        assert torch.equal(by_hand, vit.forward_features(x))


def test_parser_actions_list_each_option_with_its_dest():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--angles", required=True)
    assert [a.dest for a in p._actions if a.dest == "angles"] == ["angles"]
