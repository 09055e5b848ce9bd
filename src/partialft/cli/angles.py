"""`partialft angles RUN` or `partialft angles PRETRAINED FINETUNED --model M`: per-layer
fine-tuned angles (Eq. 2)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from partialft.cli.common import (
    add_base_mismatch_arg,
    add_model_args,
    model_from_args,
    print_json,
)
from partialft.errors import PartialFTError
from partialft.training.outputs import check_out_file

if TYPE_CHECKING:
    from partialft.core.layermap import LayerMap
    from partialft.models import StateDict


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("angles", help="fine-tuned angle of every layer",
                       description="Compute the fine-tuned angle (paper Eq. 2, degrees, float64) "
                       "between pretrained and fine-tuned weights for every residual layer, shown "
                       "per homogeneous group from largest to smallest. A run dir alone is "
                       "compared with the base weights it recorded (no --model needed); two "
                       "weights files need --model.")
    p.add_argument("pretrained", metavar="PRETRAINED|RUN",
                   help="pretrained weights (.safetensors/.pth file), or, alone, a partialft "
                   "run dir: its recorded base (bundled, timm or checkpoint) is loaded")
    p.add_argument("finetuned", metavar="FINETUNED", nargs="?", default=None,
                   help="fine-tuned weights: .safetensors/.pth file or a partialft run dir")
    add_model_args(p)
    _optional(p, "model")  # a run dir names its own model
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the angles as JSON ({'angles': {layer id: degrees}, ...})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_base_mismatch_arg(p)
    p.set_defaults(func=run)


def _optional(parser: argparse.ArgumentParser, dest: str) -> None:
    """Make an option of a shared argument group optional for this verb."""
    for action in parser._actions:
        if action.dest == dest:
            action.required = False
            action.help = f"{action.help} (required with PRETRAINED FINETUNED)"


def read_weights(path: str, base: StateDict | None = None) -> StateDict:
    """Weights from a file, or from a run dir (its delta laid over ``base``)."""
    from partialft.models import load_state_dict_file
    from partialft.training.checkpoints import load_run_weights

    if Path(path).is_dir():
        tensors, _meta = load_run_weights(path)
        return {**(base or {}), **tensors}
    return load_state_dict_file(path)


def _from_files(args: argparse.Namespace) -> tuple[str, LayerMap, StateDict, StateDict]:
    """PRETRAINED FINETUNED: two weights files (or a run dir) for model --model."""
    from partialft.core.layers import find_layers

    if not args.model:
        raise PartialFTError("--model is needed to compare two weights files; name the timm "
                             "model, e.g. --model vit_base_patch16_224 (a run dir alone needs "
                             "none).")
    layer_map = find_layers(model_from_args(args, meta=True), args.layer_spec)
    pretrained = read_weights(args.pretrained)
    return args.model, layer_map, pretrained, read_weights(args.finetuned, base=pretrained)


def _from_run(args: argparse.Namespace) -> tuple[str, LayerMap, StateDict, StateDict]:
    """RUN alone: the run's trained weights against the base weights it recorded."""
    from partialft.core.layers import find_layers
    from partialft.training.runs import checked_base_model, delta_info

    run = args.pretrained
    if not Path(run).is_dir():
        raise PartialFTError(f"{run} is not a run dir; pass a partialft run dir alone, or "
                             "PRETRAINED FINETUNED weights files with --model.")
    base = delta_info(run)["base"]
    if args.model and args.model != base["model"]:
        raise PartialFTError(f"--model {args.model} does not match run {run}, which fine-tuned "
                             f"{base['model']}; leave --model out.")
    if args.checkpoint:
        raise PartialFTError(f"--checkpoint is not used with a run dir alone: run {run} "
                             "records its base weights; pass PRETRAINED FINETUNED to compare "
                             "other weights.")
    # what training.runs.base_state reads, built once (the layer map needs the model too)
    model = checked_base_model(base, args.allow_base_mismatch)
    layer_map = find_layers(model, args.layer_spec or base.get("layer_spec"))
    pretrained = model.state_dict()
    return base["model"], layer_map, pretrained, read_weights(run, base=pretrained)


def run(args: argparse.Namespace) -> int:
    from partialft.core.angles import compute_angles, is_angles_file, save_angles

    before = None
    if args.out:
        check_out_file(args.out, overwrite=args.overwrite, what="angles", ours=is_angles_file,
                       inputs=[args.pretrained, args.finetuned, args.checkpoint, args.layer_spec])
        before = _stamp(args.out)
    read = _from_run if args.finetuned is None else _from_files
    model, layer_map, pretrained, finetuned = read(args)
    angles = compute_angles(pretrained, finetuned, layer_map)
    if args.out:
        from partialft.training.runs import is_run_dir, reference_info

        measured = args.finetuned or args.pretrained  # a run dir: recorded for reports
        source = reference_info(measured) if is_run_dir(measured) else {}
        _write_unchanged(args.out, before, lambda: save_angles(args.out, angles, layer_map,
                                                               model=model, **source))
    if args.json:
        print_json({"model": model, "angles": angles})
        return 0
    for group, layers in layer_map.groups().items():
        print(f"{group}:")
        for la in sorted(layers, key=lambda la: -angles[la.id]):
            print(f"  {la.id:<34} {angles[la.id]:8.4f} deg")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _stamp(path: str) -> tuple[int, int, int] | None:
    """What ``path`` is now (inode, mtime, size), or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write_unchanged(out: str, before: tuple[int, int, int] | None, write: Callable[[], None]
                     ) -> None:
    """Write --out only if no other process wrote it since it was checked (two `angles --out
    SAME` at once: the first to finish writes, the other is refused)."""
    from partialft.training.locks import briefly
    from partialft.training.reruns import remove_stale_tmp_of

    parent = Path(out).resolve().parent
    with briefly(parent):
        if _stamp(out) != before:
            raise PartialFTError(f"--out {out} was written by another process while these "
                                 "angles were computed; it is kept as that process wrote it, so "
                                 "choose another --out (or rerun with --overwrite).")
        remove_stale_tmp_of(out)  # a write killed before its rename left one
        write()
