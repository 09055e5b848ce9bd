"""AS-MLP (Lian et al., "AS-MLP: An Axial Shifted MLP Architecture for Vision", ICLR 2022),
registered with timm as ``as_mlp_tiny``, ``as_mlp_small`` and ``as_mlp_base``.

Written from the paper and the authors' public architecture (svip-lab/AS-MLP,
``models/as_mlp.py``): four stages of axial shifted blocks on a channels-first (B, C, H, W)
map, GroupNorm with one group as every norm, 1x1 convolutions as every projection, patch
merging at the end of each stage but the last. Module names follow the authors', so their
released ImageNet-1K checkpoints load with ``--checkpoint FILE`` (no missing or unexpected
keys). The axial shift is plain PyTorch (pad and slice), not the authors' CuPy kernel, and has
no data-dependent control flow, so ``torch.compile`` traces it in one graph.

Each block holds two residual layers (paper Table 6): the AS layer (``norm1`` + ``axial_shift``)
and the MLP layer (``norm2`` + ``mlp``); partialft's ``as-mlp`` family finds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, GroupNorm1, Mlp, PatchEmbed, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

# name -> (embed_dim, depths); shift size 5 and MLP ratio 4 for all three (the authors' configs)
ARCHS: dict[str, tuple[int, tuple[int, ...]]] = {
    "as_mlp_tiny": (96, (2, 2, 6, 2)),
    "as_mlp_small": (96, (2, 2, 18, 2)),
    "as_mlp_base": (128, (2, 2, 18, 2)),
}


def shift_groups(channels: int, shift_size: int) -> tuple[tuple[int, int, int], ...]:
    """(first channel, end channel, offset) of each channel group of an axial shift.

    Channels are cut into groups of ``ceil(channels / shift_size)`` (the last may be smaller,
    and there may be fewer than ``shift_size`` groups); group ``g`` reads its input ``pad - g``
    positions further along the axis (``pad = shift_size // 2``), zeros past the edge.
    """
    size = -(-channels // shift_size)
    pad = shift_size // 2
    return tuple((start, min(start + size, channels), pad - g)
                 for g, start in enumerate(range(0, channels, size)))


def axial_shift(x: torch.Tensor, groups: Sequence[tuple[int, int, int]], pad: int,
                axis: int) -> torch.Tensor:
    """Shift channel groups of a (B, C, H, W) map along ``axis`` (2: H, 3: W), zero-filled.

    ``out[:, c, h] = x[:, c, h + offset]`` (0 outside the map), with ``groups`` from
    :func:`shift_groups`: one pad and one slice per group, no custom kernel.
    """
    padded = F.pad(x, (pad, pad) if axis == 3 else (0, 0, pad, pad))
    length = x.shape[axis]
    return torch.cat([padded[:, start:end].narrow(axis, pad + offset, length)
                      for start, end, offset in groups], dim=1)


class AxialShift(nn.Module):
    """The AS module: project, shift along W and along H, mix each shift, sum, project."""

    def __init__(self, dim: int, shift_size: int, as_bias: bool = True) -> None:
        super().__init__()
        self.dim, self.shift_size, self.pad = dim, shift_size, shift_size // 2
        self.groups = shift_groups(dim, shift_size)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=as_bias)
        self.conv2_1 = nn.Conv2d(dim, dim, 1, bias=as_bias)  # after the shift along W
        self.conv2_2 = nn.Conv2d(dim, dim, 1, bias=as_bias)  # after the shift along H
        self.conv3 = nn.Conv2d(dim, dim, 1, bias=as_bias)
        self.actn = nn.GELU()
        self.norm1 = GroupNorm1(dim)
        self.norm2 = GroupNorm1(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = self.actn(self.norm1(self.conv1(x)))
        along_w = self.actn(self.conv2_1(axial_shift(x, self.groups, self.pad, 3)))
        along_h = self.actn(self.conv2_2(axial_shift(x, self.groups, self.pad, 2)))
        return self.conv3(self.norm2(along_w + along_h))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, shift_size={self.shift_size}"


class AxialShiftedBlock(nn.Module):
    """Two pre-norm residuals: ``x + AS(norm1(x))``, then ``x + MLP(norm2(x))``."""

    def __init__(self, dim: int, shift_size: int, mlp_ratio: float = 4.0, as_bias: bool = True,
                 drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.axial_shift = AxialShift(dim, shift_size, as_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = GroupNorm1(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, use_conv=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = x + self.drop_path(self.axial_shift(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halve H and W, double C: stack each 2x2 neighbourhood's pixels as channels, norm, 1x1.

    Written by hand: timm's ``PatchMerging`` is channels-last with a Linear; this one keeps the
    authors' channels-first layout and channel order ((0,0), (1,0), (0,1), (1,1) offsets).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = GroupNorm1(4 * dim)
        self.reduction = nn.Conv2d(4 * dim, 2 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 2C, H/2, W/2); H and W must be even."""
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2],
                       x[:, :, 1::2, 1::2]], dim=1)
        return self.reduction(self.norm(x))


class ASMLPStage(nn.Module):
    """The blocks of one stage, then (all stages but the last) patch merging."""

    def __init__(self, dim: int, depth: int, shift_size: int, mlp_ratio: float, as_bias: bool,
                 drop: float, drop_path: Sequence[float], downsample: bool) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.Sequential(*[
            AxialShiftedBlock(dim, shift_size, mlp_ratio, as_bias, drop, drop_path[i])
            for i in range(depth)])
        self.downsample = PatchMerging(dim) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the next stage's input."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.downsample(x)


def _drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 to ``rate`` over all blocks, split by stage.

    Plain Python rather than ``torch.linspace`` so the model also builds on the meta device.
    """
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[s:s + d] for s, d in zip(starts, depths, strict=True)]


class ASMLP(nn.Module):
    """AS-MLP: patch embedding (4x4, GroupNorm), four stages of axial shifted blocks, final
    norm, global average pooling and a linear head (timm's model interface)."""

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 4,
                 in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), shift_size: int = 5,
                 mlp_ratio: float = 4.0, as_bias: bool = True, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, patch_norm: bool = True,
                 global_pool: str = "avg") -> None:
        super().__init__()
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.head_hidden_size = embed_dim * 2 ** (len(depths) - 1)
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim,
                                      norm_layer=GroupNorm1 if patch_norm else None,
                                      flatten=False, output_fmt="NCHW", strict_img_size=False)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = _drop_path_rates(drop_path_rate, depths)
        self.layers = nn.ModuleList(
            ASMLPStage(embed_dim * 2 ** i, depth, shift_size, mlp_ratio, as_bias, drop_rate,
                       rates[i], downsample=i < len(depths) - 1)
            for i, depth in enumerate(depths))
        self.norm = GroupNorm1(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.apply(_init_weights)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups: stem, then blocks (downsampling joins its stage)."""
        blocks = r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.downsample", (0,)), (r"^layers\.(\d+)\.blocks\.(\d+)", None),
            (r"^norm", (99999,))]
        return {"stem": r"^patch_embed", "blocks": blocks}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classification head."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for ``num_classes`` classes (0: none); only 'avg' pooling exists."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            _init_weights(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> normalised features (B, C, H/32, W/32)."""
        x = self.pos_drop(self.patch_embed(x))
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> pooled (``pre_logits``) or logits."""
        x = x.mean(dim=(2, 3)) if self.global_pool else x
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> logits."""
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    """Linear layers: truncated normal (std 0.02), zero bias; convolutions keep PyTorch's init."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """Pretrained config of the authors' ImageNet-1K weights (no download address: load the
    released file with ``--checkpoint FILE``)."""
    return {"num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
            "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": False,
            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "patch_embed.proj", "classifier": "head", "license": "mit",
            "origin_url": "https://github.com/svip-lab/AS-MLP", "paper_ids": "arXiv:2107.08391",
            **kwargs}


# timm's register_model reads this module-level name to attach the pretrained configs.
default_cfgs = generate_default_cfgs({f"{name}.in1k": _cfg() for name in ARCHS})


def _create(name: str, pretrained: bool, **kwargs: Any) -> ASMLP:
    """Build ``name`` with timm (pretrained config attached); ``kwargs`` override the arch."""
    embed_dim, depths = ARCHS[name]
    arch = {"embed_dim": embed_dim, "depths": depths, "shift_size": 5, "mlp_ratio": 4.0}
    return build_model_with_cfg(ASMLP, name, pretrained, **{**arch, **kwargs})


@register_model
def as_mlp_tiny(pretrained: bool = False, **kwargs: Any) -> ASMLP:
    """AS-MLP-T: width 96, depths 2-2-6-2, shift size 5 (28 M parameters)."""
    return _create("as_mlp_tiny", pretrained, **kwargs)


@register_model
def as_mlp_small(pretrained: bool = False, **kwargs: Any) -> ASMLP:
    """AS-MLP-S: width 96, depths 2-2-18-2, shift size 5 (50 M parameters)."""
    return _create("as_mlp_small", pretrained, **kwargs)


@register_model
def as_mlp_base(pretrained: bool = False, **kwargs: Any) -> ASMLP:
    """AS-MLP-B: width 128, depths 2-2-18-2, shift size 5 (88 M parameters)."""
    return _create("as_mlp_base", pretrained, **kwargs)
