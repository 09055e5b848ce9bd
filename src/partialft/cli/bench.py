"""`partialft bench`: training/test latency and memory per method (the paper's Fig. 5)."""

from __future__ import annotations

import argparse
import sys

from partialft.cli.common import positive_int, print_json

DEFAULTS = "full,linear,attn,ffn,fapft,adapter,vpt-deep,ssf,lora"


def _clip(text: str) -> float | None:
    if text.lower() in ("none", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'none'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure training/test latency and memory of each method",
        description="Per method: median training step time (the real 'partialft train' step), "
        "images/s, peak training memory, test latency and peak test memory, plus a "
        "hand-written PyTorch step timed alternately on the same model (overhead ratio). "
        "Writes bench.json, bench.md and bench.png (like the paper's Fig. 5) into --out. "
        "Weights are random (cost does not depend on them); data is one random batch.")
    p.add_argument("--model", default="partialft_vit_tiny", help="timm model name "
                   "(default: partialft_vit_tiny)")
    p.add_argument("--methods", default=DEFAULTS,
                   help=f"comma-separated methods to measure (default: {DEFAULTS})")
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    p.add_argument("--img-size", type=positive_int, default=None,
                   help="input size (default: the model's)")
    p.add_argument("--num-classes", type=positive_int, default=100,
                   help="classes of the head (default 100)")
    p.add_argument("--amp", default="no", choices=["no", "bf16", "fp16"],
                   help="mixed precision for training and test (default: no)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--warmup", type=positive_int, default=3,
                   help="untimed warm-up steps per phase (default 3)")
    p.add_argument("--steps", type=positive_int, default=10,
                   help="timed steps per phase; medians are reported (default 10)")
    p.add_argument("--angles", default=None, metavar="FILE",
                   help="angles JSON for fapft (default: a depth-order stand-in, see "
                   "docs/bench.md)")
    p.add_argument("--topk", default=None, metavar="K",
                   help="fapft layers per group (default: paper Table 7)")
    p.add_argument("--layer-spec", default=None, metavar="FILE",
                   help="layer spec for models partialft does not know")
    p.add_argument("--grad-clip", type=_clip, default=1.0,
                   help="gradient clipping in both steps, as 'partialft train' (default 1.0; "
                   "'none' = off)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads while measuring (default: torch's own choice; 1 "
                   "gives steadier CPU timings on a busy machine)")
    p.add_argument("--ablate", action="store_true",
                   help="add rows that show each efficiency measure: full vs last-half vs "
                   "first-half blocks, foreach vs fused AdamW (CUDA), eager vs compiled, "
                   "contiguous vs channels_last (ConvNeXt, CUDA)")
    p.add_argument("--out", default="runs/bench", help="folder for bench.json, bench.md and "
                   "bench.png (default runs/bench)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier bench files")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the "
                   "table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from partialft.bench.measure import run_bench
    from partialft.bench.options import BenchOptions
    from partialft.bench.output import check_free, markdown, open_out, write_outputs
    from partialft.training.reruns import finish

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    opts = BenchOptions(model=args.model, methods=methods, batch_size=args.batch_size,
                        img_size=args.img_size, num_classes=args.num_classes, amp=args.amp,
                        compile=args.compile, warmup=args.warmup, steps=args.steps,
                        angles=args.angles, topk=args.topk, layer_spec=args.layer_spec,
                        grad_clip=args.grad_clip, ablate=args.ablate,
                        threads=args.threads)
    inputs = [args.angles, args.layer_spec]
    settings = dataclasses.asdict(opts)  # a bench killed half-way reruns with the same ones
    check_free(Path(args.out), args.overwrite, inputs, settings)  # before minutes of measuring
    folder = open_out(args.out, args.overwrite, inputs, settings)
    try:
        result = run_bench(opts, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                           scratch=folder.path)
        paths = write_outputs(result, folder.path)
        finish(folder)
    except BaseException:
        folder.abandon()  # a new bench dir is removed again; an earlier one keeps its files
        raise
    folder.close()
    if args.json:
        print_json(result)
    else:
        print(markdown(result), end="")
        print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
