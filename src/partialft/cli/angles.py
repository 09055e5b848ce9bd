"""`partialft angles PRETRAINED FINETUNED --model M`: per-layer fine-tuned angles (Eq. 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from partialft.cli.common import add_model_args, model_from_args, print_json
from partialft.training.outputs import check_out_file

if TYPE_CHECKING:
    from partialft.models import StateDict


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("angles", help="fine-tuned angle of every layer",
                       description="Compute the fine-tuned angle (paper Eq. 2, degrees, float64) "
                       "between pretrained and fine-tuned weights for every residual layer, shown "
                       "per homogeneous group from largest to smallest.")
    p.add_argument("pretrained", metavar="PRETRAINED",
                   help="pretrained weights: .safetensors/.pth file")
    p.add_argument("finetuned", metavar="FINETUNED",
                   help="fine-tuned weights: .safetensors/.pth file or a partialft run dir")
    add_model_args(p)
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the angles as JSON ({'angles': {layer id: degrees}, ...})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def read_weights(path: str, base: StateDict | None = None) -> StateDict:
    """Weights from a file, or from a run dir (its delta laid over ``base``)."""
    from partialft.models import load_state_dict_file
    from partialft.training.checkpoints import load_run_weights

    if Path(path).is_dir():
        tensors, _meta = load_run_weights(path)
        return {**(base or {}), **tensors}
    return load_state_dict_file(path)


def run(args: argparse.Namespace) -> int:
    from partialft.core.angles import compute_angles, is_angles_file, save_angles
    from partialft.core.layers import find_layers

    if args.out:
        check_out_file(args.out, overwrite=args.overwrite, what="angles", ours=is_angles_file,
                       inputs=[args.pretrained, args.finetuned, args.checkpoint, args.layer_spec])
    layer_map = find_layers(model_from_args(args, meta=True), args.layer_spec)
    pretrained = read_weights(args.pretrained)
    finetuned = read_weights(args.finetuned, base=pretrained)
    angles = compute_angles(pretrained, finetuned, layer_map)
    if args.out:
        save_angles(args.out, angles, layer_map, model=args.model)
    if args.json:
        print_json({"model": args.model, "angles": angles})
        return 0
    for group, layers in layer_map.groups().items():
        print(f"{group}:")
        for la in sorted(layers, key=lambda la: -angles[la.id]):
            print(f"  {la.id:<34} {angles[la.id]:8.4f} deg")
    if args.out:
        print(f"wrote {args.out}")
    return 0
