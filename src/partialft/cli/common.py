"""Argument groups and helpers shared by several verbs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from partialft.errors import PartialFTError

# partialft.methods.all_methods(), written out so that --help needs no torch (a test compares)
METHOD_NAMES = ("full", "linear", "attn", "first-half-attn", "last-half-attn", "ffn",
                "first-half-ffn", "last-half-ffn", "first-half-blocks", "last-half-blocks",
                "layers", "fapft", "adapter", "vpt-deep", "ssf", "lora")

if TYPE_CHECKING:
    import torch.nn as nn


def add_model_args(parser: argparse.ArgumentParser, positional: bool = False,
                   pretrained_default: bool = False, required: bool = True) -> None:
    """MODEL or --model, --num-classes, --checkpoint, --pretrained/--no-pretrained, --layer-spec."""
    model_help = "timm model name, e.g. vit_base_patch16_224"
    if positional:
        parser.add_argument("model", metavar="MODEL", help=model_help)
    else:
        parser.add_argument("--model", required=required, default=None, help=model_help)
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes of the new head (default: the model's own)")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="weights to start from (.safetensors, or .pth/.pt read with "
                        "weights_only=True)")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction,
                        default=pretrained_default,
                        help="load timm's pretrained weights from the hub (needs network)")
    parser.add_argument("--layer-spec", default=None, metavar="FILE",
                        help="YAML/JSON file naming the residual layers of a model partialft "
                        "does not know (see docs/layer-spec.md)")


def model_from_args(args: argparse.Namespace, meta: bool = False) -> nn.Module:
    """Build the model the arguments name; ``meta`` builds it without memory (counts only)."""
    import torch

    from partialft.models import check_fits, create_model, load_state_dict_file

    if meta:
        with torch.device("meta"):
            model = create_model(args.model, num_classes=args.num_classes)
        if getattr(args, "checkpoint", None):  # still check the file exists and fits the model
            check_fits(model, load_state_dict_file(args.checkpoint), source=str(args.checkpoint))
        return model
    return create_model(args.model, num_classes=args.num_classes, pretrained=args.pretrained,
                        checkpoint=args.checkpoint)


def _whole(text: str, low: int, words: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is not a {words}")
    return value


def positive_int(text: str) -> int:
    return _whole(text, 1, "positive whole number")


def non_negative_int(text: str) -> int:
    return _whole(text, 0, "whole number >= 0")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    """--threads N: CPU threads for torch (default: the cores other processes leave free)."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch (default: one per core no other process "
                        "is using; see docs/bench.md)")


def add_base_mismatch_arg(parser: argparse.ArgumentParser) -> None:
    """--allow-base-mismatch: apply a run's delta to base weights other than those it recorded."""
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="apply the run's delta even when the base weights differ from "
                        "those the run recorded (SHA-256); a warning is printed instead")


def apply_threads(args: argparse.Namespace) -> None:
    from partialft.utils.threads import set_threads

    set_threads(getattr(args, "threads", None))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise PartialFTError(f"{text} does not exist.")
    return path


def fmt_params(n: int) -> str:
    """Human count: 85,875,556 (85.88 M)."""
    return f"{n:,} ({n / 1e6:.2f} M)"
