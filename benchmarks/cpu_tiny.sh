#!/usr/bin/env bash
# The CPU measurement in docs/bench.md: the bundled partialft_vit_tiny (32 px), batch 64,
# one torch thread (steadier on a shared machine), all nine methods and the ablation rows.
set -euo pipefail
partialft bench --model partialft_vit_tiny --batch-size 64 --threads 1 --ablate \
  --steps 15 --warmup 3 --out runs/bench-cpu "$@"
