"""`partialft multitask`: several task run dirs on one base, one shared forward pass."""

from __future__ import annotations

import argparse

from partialft.cli.common import add_base_mismatch_arg, existing_path, positive_int, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "multitask", help="shared multi-task inference over run dirs, and its throughput",
        description="Load several partial fine-tuning run dirs trained from the same base ViT, "
        "run the layers they share once and branch at each task's first trained block "
        "(SubTuning-style multi-task inference), check the outputs equal each task's model run "
        "alone, and print images/s of the shared pass against the separate models.")
    p.add_argument("runs", nargs="+", type=existing_path, metavar="RUN_DIR",
                   help="finished run dirs of layer methods (not PEFT baselines), one per task")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per forward pass (default 32)")
    p.add_argument("--iters", type=positive_int, default=10,
                   help="timed forward passes per variant (default 10)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_base_mismatch_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from partialft.analysis.multitask import benchmark, from_runs
    from partialft.utils.limits import check_batch_memory

    multi = from_runs(args.runs, device=args.device,
                      allow_base_mismatch=args.allow_base_mismatch)
    embed = multi.base.patch_embed  # the size the base was built for (pretrained_cfg may differ)
    # the random input batch, and the shared and separate passes over it, must fit in memory
    check_batch_memory(args.batch_size, max(embed.img_size), channels=embed.proj.in_channels,
                       device=args.device)
    x = torch.randn(args.batch_size, embed.proj.in_channels, *embed.img_size,
                    generator=torch.Generator().manual_seed(0)).to(args.device)
    result = benchmark(multi, x, args.iters)
    if args.json:
        print_json(result)
        return 0
    for t in result["tasks"]:
        where = "no sharing (stem trained)" if t["fork"] < 0 else (
            f"shares blocks 0..{t['fork'] - 1}" if t["fork"] else "shares the stem only")
        print(f"  {t['task']}: forks at block {t['fork']} of {t['depth']}: {where}")
    print(f"shared: {result['shared_img_s']:.1f} images/s, separate: "
          f"{result['separate_img_s']:.1f} images/s, speed-up {result['speedup']:.2f}x "
          f"(ideal from block counts {result['block_ratio']:.2f}x; batch "
          f"{result['batch_size']}, median of {result['iters']} alternating passes); outputs "
          f"{'identical' if result['equal'] else 'differ by ' + str(result['max_abs_diff'])}")
    return 0
