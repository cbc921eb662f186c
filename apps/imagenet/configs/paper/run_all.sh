#!/usr/bin/env bash
# The paper's ImageNet protocol (Tables 5, 6, A5, Fig. 8): four backbone families x five methods, then the tables.
# Usage: bash apps/imagenet/configs/paper/run_all.sh WEIGHTS_DIR [NPROC]
#   WEIGHTS_DIR holds <backbone>.safetensors (timm checkpoints, fetched by you: nothing is downloaded here);
#   NPROC processes per run through torchrun (default 1; set train.batch_size to 80 / NPROC for the paper's 80).
# The backbones are our reading of Table A5's scale-1 accuracies (ViT-B/16, DeiT-Ti, Swin-T, BEiT-B).
set -euo pipefail
WEIGHTS="${1:?usage: run_all.sh WEIGHTS_DIR [NPROC]}"
NPROC="${2:-1}"
CFG="$(dirname "$0")"
BACKBONES=(vit_base_patch16_224 deit_tiny_patch16_224 swin_tiny_patch4_window7_224 beit_base_patch16_224)
run() { torchrun --standalone --nproc_per_node "$NPROC" -m lse_imagenet train "$@"; }
for B in "${BACKBONES[@]}"; do
  OUT="runs/imagenet/$B"
  run --config "$CFG/base.yaml" --model.backbone "$B" --model.weights "$WEIGHTS/$B.safetensors" --train.out_dir "$OUT/base-s0"
  for M in aug invl canon dec; do
    run --config "$CFG/$M.yaml" --model.backbone "$B" --train.init_from "$OUT/base-s0" --train.out_dir "$OUT/$M-s0"
  done
  torchrun --standalone --nproc_per_node "$NPROC" -m lse_imagenet evaluate --config "$CFG/evaluate.yaml" \
    --runs "$OUT"/*-s0 --eval.results_dir "$OUT/results"
done
