"""`partialft export RUN --out DIR [--format timm|peft|merged|onnx] [--push-to-hub REPO]`: a run
as a timm folder, a peft LoRA adapter or an ONNX file, also on the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from partialft.cli.common import add_base_mismatch_arg, add_threads_arg, apply_threads
from partialft.errors import PartialFTError

if TYPE_CHECKING:
    from partialft.analysis.export import Export

FORMATS = ("timm", "peft", "merged", "onnx")  # analysis.export.FORMATS (no torch for --help)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run for timm, PEFT, ONNX Runtime or the Hub",
                       description="Write a finished run dir (base + delta) as a folder other "
                       "libraries load without partialft: timm (config.json, model.safetensors, "
                       "README.md; SSF and LoRA merged into the weights), merged (the same, "
                       "named for the merge) or peft (a LoRA adapter for "
                       "peft.PeftModel.from_pretrained) or onnx (model.onnx for ONNX "
                       "Runtime). The export is loaded back and its "
                       "outputs compared with the run's model before it is reported.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run dir")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the export to")
    p.add_argument("--format", default="timm", choices=FORMATS,
                   help="timm (default): a timm model folder; merged: the same, SSF/LoRA "
                   "folded into the weights; peft: a LoRA adapter (lora runs); onnx: "
                   "model.onnx with a dynamic batch axis, any run (pip install "
                   "'partialft[onnx]')")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="also upload the folder to this Hugging Face Hub repo (created if "
                   "needed; needs a token: hf auth login or HF_TOKEN)")
    p.add_argument("--private", action="store_true",
                   help="create the --push-to-hub repo as private")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_base_mismatch_arg(p)
    add_threads_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.analysis.export import complete_export, export_run
    from partialft.analysis.hub import check_hub, push_to_hub
    from partialft.training.runs import is_run_dir

    if not Path(args.run_dir).is_dir():
        raise PartialFTError(f"run dir {args.run_dir} does not exist; pass a run dir partialft "
                             "train wrote.")
    if not is_run_dir(args.run_dir):
        raise PartialFTError(f"run dir {args.run_dir} is not a finished partialft run (it needs "
                             "summary.json and delta.safetensors); pass a run dir partialft "
                             "train wrote.")
    if args.push_to_hub:
        check_hub(args.push_to_hub)  # before any work
    apply_threads(args)
    done = export_run(args.run_dir, args.out, args.format, overwrite=args.overwrite,
                      allow_base_mismatch=args.allow_base_mismatch, repo=args.push_to_hub,
                      complete=not args.push_to_hub)
    _print(args.run_dir, done)
    if args.push_to_hub:
        url = push_to_hub(done.out, args.push_to_hub, private=args.private)
        complete_export(done.out)  # a kill before this: the same command exports and pushes
        print(f"pushed to {url}")
    return 0


def _print(run_dir: str, done: Export) -> None:
    """What was written, what was checked, how to load it."""
    print(f"exported {done.method} run {run_dir} as {done.format} to {done.out}")
    width = max(len(name) for name in done.files)
    for name, what in done.files.items():
        print(f"  {name:<{width}}  {what}")
    if done.labels:
        print(f"  label names: {done.labels} classes of the run's dataset")
    for note in done.notes:
        print(f"  note: {note}")
    print(f"checked: loaded back, logits within {done.max_diff:.1e} of the run's model")
    print(f"load it with: {done.load}")
