#!/usr/bin/env bash
# The paper's MNIST protocol (Tables 2 and 3): six backbone families x five methods x five seeds, then the tables.
# Usage: bash apps/mnist/configs/paper/run_all.sh [NPROC]   (NPROC processes per run through torchrun, default 1)
set -euo pipefail
NPROC="${1:-1}"
CFG="$(dirname "$0")"
BACKBONES=(resnet50 vit_base_patch16_224 deit_base_patch16_224 swin_base_patch4_window7_224 beit_base_patch16_224 vit_base_patch14_reg4_dinov2)
run() { torchrun --standalone --nproc_per_node "$NPROC" -m lse_mnist train "$@"; }
lse-mnist data --config "$CFG/aug.yaml"
for B in "${BACKBONES[@]}"; do
  MODE=invariant
  case "$B" in vit_base_patch16*|deit*|beit*) MODE=equivariant ;; esac
  for S in 0 1 2 3 4; do
    run --config "$CFG/aug.yaml" --backbone "$B" --seed "$S" --resume
    for M in canon invl optim dec; do
      run --config "$CFG/$M.yaml" --backbone "$B" --seed "$S" --canon-mode "$MODE" \
          --init-from "runs/mnist/$B/aug-s$S" --resume
    done
  done
done
lse-mnist evaluate --config "$CFG/evaluate.yaml" --runs runs/mnist/*/*-s*
