#!/usr/bin/env bash
# The reduced CPU protocol (Tables 2 and 3, docs/mnist/protocol.md section 5): for each seed and backbone, the
# aug run, then each method fine-tuned from it for the same budget, each run evaluated on the 10,000 test
# scenes as soon as it ends (<run>/eval.json, reused for the same weights), then the tables over every
# evaluated run with the paired differences per seed against aug_continued and invl.
# Usage: bash apps/mnist/configs/cpu/run_all.sh [BACKBONE[:pretrained|:scratch] ...]
#   default: tf_efficientnet_lite0:pretrained resnet18:scratch (seeds outermost, so that every seed's
#   comparison is complete before the next seed starts).
# Environment:
#   SEEDS="0 1 2"    the seeds;
#   METHODS="aug_continued invl dec_ce dec stn dec_eq"  the fine-tuned rows (the configs of this folder; canon and
#                    optim are there too);
#   THREADS=2        torch threads;
#   LSE_MNIST=lse-mnist  the command (e.g. "python -m lse_mnist");
#   SCRATCH_AUG_ARGS="--train.epochs 48 --train.lr 3e-3"  what a backbone trained from scratch adds to its
#                    aug run (it needs more epochs than a pretrained one).
# Two grids can run side by side, one per backbone and core (THREADS=1 bash run_all.sh resnet18:scratch); the
# data are made once, so make them first (the first line below) when starting both at once.
# Everything is resumable: a finished run is not trained again, an interrupted one resumes from its newest
# intact checkpoint, a stored evaluation is reused; run the same command again to continue. Start it in the
# background with its log, e.g.
#   nohup nice -n 19 bash apps/mnist/configs/cpu/run_all.sh > runs/mnist-cpu/run_all.log 2>&1 &
set -euo pipefail
CFG="$(dirname "$0")"
SEEDS="${SEEDS:-0 1 2}"
METHODS="${METHODS:-aug_continued invl dec_ce dec stn dec_eq}"
THREADS="${THREADS:-2}"
read -r -a CLI <<< "${LSE_MNIST:-lse-mnist}"
read -r -a SCRATCH <<< "${SCRATCH_AUG_ARGS:---train.epochs 48 --train.lr 3e-3}"
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(tf_efficientnet_lite0:pretrained resnet18:scratch)
ROOT=runs/mnist-cpu
"${CLI[@]}" data --data "$CFG/data.yaml" --fetch true --runtime.progress false
EVAL=(--config "$CFG/evaluate.yaml" --runtime.threads "$THREADS" --runtime.progress false)
runs_so_far() {  # the run folders with weights of every backbone folder that holds an aug run (so that
  # grids of different backbones run side by side each write the tables of all of them)
  local B R
  for B in "$ROOT"/*/; do
    compgen -G "$B/aug-s[0-9]*" > /dev/null || continue
    for R in "$B"*-s[0-9]*/; do
      [ -f "$R/final.safetensors" ] && echo "${R%/}"
    done
  done
  return 0
}
for S in $SEEDS; do
  for SPEC in "${SPECS[@]}"; do
    B="${SPEC%%:*}"
    PRETRAINED=true
    EXTRA=()
    if [ "${SPEC#*:}" = scratch ]; then PRETRAINED=false; EXTRA=("${SCRATCH[@]}"); fi
    for M in aug $METHODS; do
      RUN="$ROOT/$B/$M-s$S"
      FROM=("${EXTRA[@]}")
      [ "$M" = aug ] || FROM=(--train.init_from "$ROOT/$B/aug-s$S")
      echo "$(date +%T) $RUN"
      [ -f "$RUN/final.safetensors" ] || "${CLI[@]}" train --config "$CFG/$M.yaml" --model.backbone "$B" \
        --model.pretrained "$PRETRAINED" --train.seed "$S" --train.out_dir "$RUN" --train.resume true \
        --runtime.threads "$THREADS" --runtime.progress false "${FROM[@]}"
      "${CLI[@]}" evaluate "${EVAL[@]}" --runs "$RUN" --eval.results_dir "$RUN/results" > /dev/null
    done
    # the tables over everything evaluated so far (stored results are reused)
    mapfile -t DONE < <(runs_so_far)
    "${CLI[@]}" evaluate "${EVAL[@]}" --runs "${DONE[@]}" --eval.results_dir "$ROOT/results" > /dev/null
  done
done
mapfile -t DONE < <(runs_so_far)
"${CLI[@]}" evaluate "${EVAL[@]}" --runs "${DONE[@]}" --eval.results_dir "$ROOT/results"
