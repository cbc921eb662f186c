#!/usr/bin/env bash
# The reduced ImageNet protocol on CPUs: data, Base, the four methods from it, a label-free DEC, the tables.
# Usage: bash apps/imagenet/configs/cpu/run_all.sh TRAIN_IMAGEFOLDER TEST_IMAGEFOLDER
set -euo pipefail
CFG="$(dirname "$0")"
lse-imagenet data --data.input_dir "${1:?train ImageFolder}" --data.out_dir data/imagenet-ls-small-train
lse-imagenet data --data.input_dir "${2:?test ImageFolder}" --data.out_dir data/imagenet-ls-small-test
OUT=runs/imagenet/tf_efficientnet_lite0
lse-imagenet train --config "$CFG/base.yaml" --train.out_dir "$OUT/base-s0"
for M in aug invl canon; do
  lse-imagenet train --config "$CFG/base.yaml" --method "$M" --aug.enabled true --train.init_from "$OUT/base-s0" \
    --train.out_dir "$OUT/$M-s0"
done
lse-imagenet train --config "$CFG/dec.yaml" --train.init_from "$OUT/base-s0" --train.out_dir "$OUT/dec-s0"
lse-imagenet train --config "$CFG/dec_label_free.yaml" --train.out_dir "$OUT/dec-lf-s0"
lse-imagenet evaluate --config "$CFG/evaluate.yaml" --runs "$OUT"/*-s0 --eval.results_dir "$OUT/results"
