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


def read_weights(path: str, base: StateDict | None = None, model: str | None = None,
                 layer_names: set[str] | None = None, allow_base_mismatch: bool = False
                 ) -> StateDict:
    """Weights from a file, or from a run dir (its delta laid over ``base``, which must be
    weights of the run's architecture: ``model`` when given). Every tensor of the run must be
    one ``base`` has, of the same shape where it is a layer's (in ``layer_names``; a head for
    other classes may differ). A LoRA or SSF run is merged into its base first."""
    from partialft.models import load_state_dict_file
    from partialft.training.checkpoints import load_run_weights
    from partialft.training.runs import delta_info

    if not Path(path).is_dir():
        return load_state_dict_file(path)
    meta = delta_info(path)  # checks the metadata and that the delta is the run's own
    method = check_measurable(path, meta)
    recorded = meta["base"]["model"]
    if model is not None and recorded != model:
        raise PartialFTError(f"run {path} fine-tuned {recorded}, not --model {model}; angles "
                             "compare weights of one architecture.")
    if method in MERGEABLE:
        tensors = merged_weights(path, method, allow_base_mismatch)
    else:
        tensors = load_run_weights(path)[0]
    if base is not None:
        odd = [k for k, v in tensors.items() if k not in base or (
            base[k].shape != v.shape and k in (layer_names or ()))]
        if odd:
            raise PartialFTError(f"run {path} holds {odd[0]}, which the pretrained weights "
                                 f"{'lack' if odd[0] not in base else 'shape differently'}; "
                                 f"it fine-tuned {recorded}, so compare it with that model's "
                                 "weights.")
    return {**(base or {}), **tensors}


# PEFT baselines whose update folds into the weights it modulates: angles are measured on the
# merged weights (W + BA for LoRA, scaled and shifted weights for SSF)
MERGEABLE = ("lora", "ssf")


def check_measurable(run: str, meta: dict) -> str | None:
    """Adapters and VPT train modules of their own (bottlenecks, prompts) that no weight of a
    residual layer absorbs, so the layers' angles would all be 0: refuse such runs. Returns the
    run's method."""
    from partialft.baselines import BASELINES

    method = (meta.get("selection") or {}).get("method")
    if method in BASELINES and method not in MERGEABLE:
        raise PartialFTError(f"run {run} used the PEFT baseline {method!r}, which leaves the "
                             "residual layers' weights unchanged (its angles would all be 0); "
                             "measure angles of a layer method's, a LoRA or an SSF run.")
    return method


def merged_weights(run: str, method: str, allow_base_mismatch: bool) -> StateDict:
    """The run's model with its LoRA or SSF update merged into the weights (the base model's
    names again)."""
    import torch

    from partialft.baselines.lora import merge_lora
    from partialft.baselines.ssf import merge_ssf
    from partialft.training.runs import load_run_model

    model, _ = load_run_model(run, allow_base_mismatch=allow_base_mismatch)
    merge = merge_lora if method == "lora" else merge_ssf
    with torch.no_grad():
        return {k: v.detach().clone() for k, v in merge(model).state_dict().items()}


def _from_files(args: argparse.Namespace) -> tuple[str, LayerMap, StateDict, StateDict]:
    """PRETRAINED FINETUNED: two weights files (or a run dir) for model --model."""
    from partialft.core.layers import find_layers

    if not args.model:
        raise PartialFTError("--model is needed to compare two weights files; name the timm "
                             "model, e.g. --model vit_base_patch16_224 (a run dir alone needs "
                             "none).")
    layer_map = find_layers(model_from_args(args, meta=True), args.layer_spec)
    pretrained = read_weights(args.pretrained, model=args.model)
    names = {n for la in layer_map.layers for n in la.param_names}
    finetuned = read_weights(args.finetuned, base=pretrained, model=args.model,
                             layer_names=names, allow_base_mismatch=args.allow_base_mismatch)
    return args.model, layer_map, pretrained, finetuned


def _from_run(args: argparse.Namespace) -> tuple[str, LayerMap, StateDict, StateDict]:
    """RUN alone: the run's trained weights against the base weights it recorded."""
    from partialft.core.layers import find_layers
    from partialft.training.runs import checked_base_model, delta_info

    run = args.pretrained
    if not Path(run).is_dir():
        raise PartialFTError(f"{run} is not a run dir; pass a partialft run dir alone, or "
                             "PRETRAINED FINETUNED weights files with --model.")
    meta = delta_info(run)
    check_measurable(run, meta)
    base = meta["base"]
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
    return base["model"], layer_map, pretrained, read_weights(
        run, base=pretrained, allow_base_mismatch=args.allow_base_mismatch)


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
    from partialft.utils.io import make_parents, remove_stale_tmp_of

    make_parents(Path(out).resolve())  # --out may name a new folder
    with briefly(Path(out).resolve().parent):
        if _stamp(out) != before:
            raise PartialFTError(f"--out {out} was written by another process while these "
                                 "angles were computed; it is kept as that process wrote it, so "
                                 "choose another --out (or rerun with --overwrite).")
        remove_stale_tmp_of(out)  # a write killed before its rename left one
        write()
