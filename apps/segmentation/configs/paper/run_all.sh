#!/usr/bin/env bash
# The paper's Table 1: ViT-B/16, Swin-B and DINOv2-B x (aug, canon, augl, dec), each run evaluated as it ends,
# then Table 1. Pretrained weights: WEIGHTS_<family>=FILE (vit, swin, dinov2) in the environment, passed as
# --model.weights (no download at run time). NPROC=8 trains with torchrun on 8 GPUs.
# Usage: bash apps/segmentation/configs/paper/run_all.sh
set -euo pipefail
CFG="$(dirname "$0")"
SEEDS="${SEEDS:-0}"
NPROC="${NPROC:-1}"
lse-segmentation data --data "$CFG/data.yaml"
declare -A BACKBONES=(
  [vit]="vit_base_patch16_224"
  [swin]="swin_base_patch4_window8_256"
  [dinov2]="vit_base_patch14_reg4_dinov2"
)
for FAM in vit swin dinov2; do
  B="${BACKBONES[$FAM]}"
  W_VAR="WEIGHTS_${FAM}"
  WEIGHTS=()
  [ -n "${!W_VAR:-}" ] && WEIGHTS=(--model.weights "${!W_VAR}")
  for S in $SEEDS; do
    for M in aug canon augl dec; do
      RUN="runs/seg/$B/$M-s$S"
      FROM=()
      [ "$M" = aug ] || FROM=(--train.init_from "runs/seg/$B/aug-s$S")
      [ -f "$RUN/final.safetensors" ] || torchrun --nproc_per_node "$NPROC" -m lse_segmentation train \
        --config "$CFG/$M.yaml" --model.backbone "$B" --train.seed "$S" \
        --train.out_dir "$RUN" --train.resume true --runtime.progress false "${WEIGHTS[@]}" "${FROM[@]}"
      torchrun --nproc_per_node "$NPROC" -m lse_segmentation evaluate --config "$CFG/evaluate.yaml" \
        --runtime.progress false --runs "$RUN" --eval.results_dir "$RUN/results"
    done
  done
done
lse-segmentation evaluate --config "$CFG/evaluate.yaml" --runs runs/seg/*/*-s*
