"""The backbone that ships with partialft: a compact ViT pretrained on synthetic fractals.

Importing this module registers ``partialft_vit_tiny`` with timm, so the name works wherever a
timm name does::

    timm.create_model("partialft_vit_tiny", pretrained=True, num_classes=10)

loads the packaged weights (``weights/partialft_vit_tiny.safetensors``, no network) and gives a
fresh 10-class head. Architecture: 32x32 input, patch 8 (16 tokens + class token), width 128,
12 blocks of 4 heads, MLP ratio 4, 2.4 M parameters. ``weights/MODEL_CARD.md`` tells how the
weights were made (``partialft pretrain``, see :mod:`partialft.training.pretrain`).

Kept import-light (timm only): :func:`partialft.models.create_model` imports it on every call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

NAME = "partialft_vit_tiny"
WEIGHTS = Path(__file__).parent / "weights" / f"{NAME}.safetensors"
CARD = WEIGHTS.parent / "MODEL_CARD.md"
PRETRAINED_CLASSES = 100  # fractal categories of the shipped head (checked by a test)
MEAN = STD = (0.5, 0.5, 0.5)
ARCH: dict[str, Any] = dict(img_size=32, patch_size=8, embed_dim=128, depth=12, num_heads=4,
                            mlp_ratio=4.0)


def _cfg() -> dict[str, Any]:
    cfg = dict(num_classes=PRETRAINED_CLASSES, input_size=(3, 32, 32), pool_size=None,
               crop_pct=1.0, interpolation="bicubic", fixed_input_size=True, mean=MEAN,
               std=STD, first_conv="patch_embed.proj", classifier="head",
               license="apache-2.0", origin_url="partialft pretrain (see weights/MODEL_CARD.md)")
    if WEIGHTS.is_file():  # without the file timm reports that no pretrained weights exist
        cfg["file"] = str(WEIGHTS)
    return cfg


# timm's register_model reads this module-level name to attach the pretrained cfg.
default_cfgs = generate_default_cfgs({f"{NAME}.fractal": _cfg()})


@register_model
def partialft_vit_tiny(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT, 12 blocks x width 128, patch 8 at 32x32; bundled weights pretrained on fractals."""
    return build_model_with_cfg(
        VisionTransformer, NAME, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=3, feature_cls="getter"), **{**ARCH, **kwargs})
