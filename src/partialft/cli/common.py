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


def check_common_args(args: argparse.Namespace) -> None:
    """The settings many verbs take, checked before any verb does work (one sentence each):
    --threads and --workers against this machine's CPUs, --device against its devices,
    --img-size against the stated maximum, --amp fp16 against a GPU, and bench's batch of
    random images against free memory. TrainConfig applies the same rules to its fields."""
    from partialft.utils.limits import check_img_size, check_threads, check_workers

    check_threads(getattr(args, "threads", None))
    check_workers(getattr(args, "workers", None))
    check_img_size(getattr(args, "img_size", None))
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if getattr(args, "amp", None) == "fp16":
        from partialft.training.rules import check_amp_device

        check_amp_device("fp16")
    if args.command == "bench":
        from partialft.models import default_input_size
        from partialft.utils.limits import check_batch_memory

        size = args.img_size or default_input_size(args.model)[-1]
        check_batch_memory(args.batch_size, size, device=getattr(args, "device", None) or (
            "cuda" if _cuda() else None))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_device(name: str) -> None:
    """A torch device this machine has: cpu, cuda / cuda:N with a GPU, mps on a Mac."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise PartialFTError(f"--device {name!r} is not a device; use cpu or cuda (cuda:N for "
                             "one GPU of several).") from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PartialFTError(f"--device {name} needs a CUDA GPU, and this machine has none "
                                 "that torch can use; use --device cpu.")
        if device.index is not None and device.index >= count:
            raise PartialFTError(f"--device {name} names GPU {device.index}, but this machine "
                                 f"has {count} (cuda:0 to cuda:{count - 1}).")
        return
    if device.type == "mps" and torch.backends.mps.is_available():
        return
    raise PartialFTError(f"--device {name} cannot run models here (it is not cpu or an "
                         "available GPU); use cpu or cuda.")


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
