#!/usr/bin/env bash
# Everything in partialft that needs a GPU, in one device call: the GPU-marked tests,
# `partialft bench` on ViT-B/16 and Swin-B (batch 128, bf16), a short bf16 `partialft train
# --compile` on Fashion-MNIST, 100 steps of `partialft pretrain` and a one-process torchrun
# training, at most 8 minutes of commands (budgets 475 s in all, no step started after 480 s);
# then, until 570 s (--deadline), a stronger fractal backbone is pretrained (1,000 categories,
# as many steps as the measured speed allows; killed at the deadline) and its float16 weights
# exported. The logic is in benchmarks/gpu_check.py and gpu_check_backbone.py. Runs from the
# source tree against the machine's own packages (PYTHONPATH=src; nothing is installed); a
# missing package fails the steps that need it with its name, see docs/RESULTS.md (GPU section).
#
# Writes 8 files (a device call brings back at most 8) into $OUT (or --out DIR):
# gpu_check.json, gpu_check.md, gpu_check.log, bench_vit.json, bench_swin.json,
# backbone.safetensors, backbone.md (its model card), backbone_metrics.jsonl; exit code 1 if
# any step failed.
#
#   benchmarks/gpu_check.sh                     # on a GPU machine (the device: see below)
#   benchmarks/gpu_check.sh --cpu-smoke --out /tmp/gc   # tiny sizes on a CPU, a few minutes
#   benchmarks/gpu_check.sh --dry-run           # the steps, budgets and commands
#   GPU_CHECK_FAIL=bench-swin benchmarks/gpu_check.sh ...   # force a step to fail (tests)
#
# Fashion-MNIST is not on the device machine. It travels as a carried folder, .data, that git
# ignores through .git/info/exclude (not .gitignore); once, in the repo root here:
#
#   mkdir -p .data/fashion-mnist .git/info
#   cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .data/fashion-mnist/   # or the 4 idx .gz
#   grep -qx '/.data/' .git/info/exclude || echo '/.data/' >> .git/info/exclude
#
# (the four .gz files are 30 MB; the device call carries at most 64 MiB with the tree). Then
# call the device tool `run` with command "bash benchmarks/gpu_check.sh", carry [".data"] and
# timeout_s 600 (with less than 14 minutes of device time left, add --deadline: the seconds
# left minus about 5 minutes for the machine's start and the transfers). Without the files (or without the carry) the train and torchrun steps use
# scikit-learn's digits as a stand-in and gpu_check.json says so under "data".
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
