#!/usr/bin/env bash
# The paper's Fig. 5 setting: ViT-B/16, batch 128, mixed precision, all nine methods, plus the
# ablation rows (no-grad prefix depth, fused vs foreach AdamW, eager vs compiled).
# Needs a CUDA GPU; writes runs/bench-vitb16/bench.{json,md,png}.
set -euo pipefail
partialft bench --model vit_base_patch16_224 --batch-size 128 --amp bf16 --num-classes 1000 \
  --methods full,linear,attn,ffn,fapft,adapter,vpt-deep,ssf,lora --ablate \
  --out runs/bench-vitb16 "$@"
