#!/usr/bin/env bash
# The reduced CPU protocol (Tables 2 and 3): backbones x five methods x three seeds, each run evaluated as it
# ends (results in <run>/eval.json as they come), then the tables over every run.
# Usage: bash apps/mnist/configs/cpu/run_all.sh [BACKBONE[:pretrained|:scratch] ...]
#   default: tf_efficientnet_lite0:pretrained (the ImageNet weights that ship in a package).
#   SEEDS="0 1 2" and THREADS=2 in the environment change the seeds and torch threads; AUG_ARGS adds
#   options to the aug runs: a backbone trained from scratch needs more, e.g.
#   AUG_ARGS="--train.epochs 6 --train.lr 3e-3" bash apps/mnist/configs/cpu/run_all.sh resnet18:scratch
# A finished run is not trained again; an interrupted one resumes from its newest intact checkpoint.
set -euo pipefail
CFG="$(dirname "$0")"
SEEDS="${SEEDS:-0 1 2}"
THREADS="${THREADS:-2}"
read -r -a AUG_EXTRA <<< "${AUG_ARGS:-}"
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(tf_efficientnet_lite0:pretrained)
lse-mnist data --data "$CFG/data.yaml" --fetch true
for SPEC in "${SPECS[@]}"; do
  B="${SPEC%%:*}"
  PRETRAINED=true
  [ "${SPEC#*:}" = scratch ] && PRETRAINED=false
  for S in $SEEDS; do
    for M in aug canon invl optim dec; do
      RUN="runs/mnist-cpu/$B/$M-s$S"
      FROM=("${AUG_EXTRA[@]}")
      [ "$M" = aug ] || FROM=(--train.init_from "runs/mnist-cpu/$B/aug-s$S")
      [ -f "$RUN/final.safetensors" ] || lse-mnist train --config "$CFG/$M.yaml" --model.backbone "$B" \
        --model.pretrained "$PRETRAINED" --train.seed "$S" --train.out_dir "$RUN" --train.resume true \
        --runtime.threads "$THREADS" --runtime.progress false "${FROM[@]}"
      lse-mnist evaluate --config "$CFG/evaluate.yaml" --runtime.threads "$THREADS" --runtime.progress false \
        --runs "$RUN" --eval.results_dir "$RUN/results"
    done
  done
done
lse-mnist evaluate --config "$CFG/evaluate.yaml" --runs runs/mnist-cpu/*/*-s*
