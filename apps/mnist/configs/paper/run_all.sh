#!/usr/bin/env bash
# The paper's MNIST protocol (Tables 2 and 3): six backbone families x five methods x five seeds, then the tables.
# Usage: bash apps/mnist/configs/paper/run_all.sh [NPROC]   (NPROC processes per run through torchrun, default 1)
# Across machines, replace --standalone by --nnodes N --node-rank K --rdzv-backend c10d --rdzv-endpoint HOST:PORT.
set -euo pipefail
NPROC="${1:-1}"
CFG="$(dirname "$0")"
BACKBONES=(resnet50 vit_base_patch16_224 deit_base_patch16_224 swin_base_patch4_window7_224 beit_base_patch16_224 vit_base_patch14_reg4_dinov2)
run() { torchrun --standalone --nproc_per_node "$NPROC" -m lse_mnist train "$@"; }
lse-mnist data --data "$CFG/data.yaml" --fetch true
for B in "${BACKBONES[@]}"; do
  MODE=invariant
  case "$B" in vit_base_patch16*|deit*|beit*) MODE=equivariant ;; esac
  for S in 0 1 2 3 4; do
    AUG="runs/mnist/$B/aug-s$S"
    [ -f "$AUG/final.safetensors" ] || run --config "$CFG/aug.yaml" --model.backbone "$B" --train.seed "$S" \
      --train.out_dir "$AUG" --train.resume true
    for M in canon invl optim dec; do
      RUN="runs/mnist/$B/$M-s$S"
      [ -f "$RUN/final.safetensors" ] || run --config "$CFG/$M.yaml" --model.backbone "$B" --train.seed "$S" \
        --canon.mode "$MODE" --train.init_from "$AUG" --train.out_dir "$RUN" --train.resume true
    done
  done
done
torchrun --standalone --nproc_per_node "$NPROC" -m lse_mnist evaluate --config "$CFG/evaluate.yaml" \
  --runs runs/mnist/*/*-s*
