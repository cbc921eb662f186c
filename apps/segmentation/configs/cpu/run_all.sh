#!/usr/bin/env bash
# The reduced CPU protocol (Table 1): backbones x methods x seeds on the small data set, each run evaluated as
# it ends (results in <run>/eval.json as they come), then Table 1 over every run.
# Usage: bash apps/segmentation/configs/cpu/run_all.sh [BACKBONE[:pretrained|:scratch] ...]
#   default: tf_efficientnet_lite0:pretrained (the ImageNet weights that ship in a package).
#   SEEDS="0 1 2", METHODS="aug augl canon dec" and THREADS=2 in the environment change the seeds, methods and
#   torch threads; MODEL_ARGS adds options to every run of a backbone and AUG_ARGS to its aug runs (e.g. a
#   small ViT from scratch, 8x8 patches on the 64x64 images:
#   MODEL_ARGS="--model.patch_size 8 --model.depth 6" AUG_ARGS="--train.epochs 12" \
#     bash apps/segmentation/configs/cpu/run_all.sh vit_tiny_patch16_224:scratch).
# A finished run is not trained again; an interrupted one resumes from its newest intact checkpoint.
set -euo pipefail
CFG="$(dirname "$0")"
SEEDS="${SEEDS:-0}"
METHODS="${METHODS:-aug augl canon dec}"
THREADS="${THREADS:-2}"
ROOT="${ROOT:-runs/seg-cpu}"
read -r -a EXTRA <<< "${MODEL_ARGS:-}"
read -r -a AUG_EXTRA <<< "${AUG_ARGS:-}"
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(tf_efficientnet_lite0:pretrained)
lse-segmentation data --data "$CFG/data.yaml" --runtime.progress false
for SPEC in "${SPECS[@]}"; do
  B="${SPEC%%:*}"
  PRETRAINED=true
  [ "${SPEC#*:}" = scratch ] && PRETRAINED=false
  for S in $SEEDS; do
    for M in $METHODS; do
      RUN="$ROOT/$B/$M-s$S"
      FROM=("${AUG_EXTRA[@]}")
      [ "$M" = aug ] || FROM=(--train.init_from "$ROOT/$B/aug-s$S")
      [ -f "$RUN/final.safetensors" ] || lse-segmentation train --config "$CFG/$M.yaml" \
        --model.backbone "$B" --model.pretrained "$PRETRAINED" --train.seed "$S" --train.out_dir "$RUN" \
        --train.resume true --runtime.threads "$THREADS" --runtime.progress false "${EXTRA[@]}" "${FROM[@]}"
      lse-segmentation evaluate --config "$CFG/evaluate.yaml" --runtime.threads "$THREADS" \
        --runtime.progress false --runs "$RUN" --eval.results_dir "$RUN/results"
    done
  done
done
lse-segmentation evaluate --config "$CFG/evaluate.yaml" --eval.results_dir "$ROOT/results" --runs "$ROOT"/*/*-s*
