#!/usr/bin/env bash
# The DEC design probes of the reduced CPU protocol (docs/mnist/protocol.md, "DEC probes"), on the validation
# split only: short DEC fine-tunings from one aug checkpoint that differ in one setting each, every one
# followed by an evaluation on the validation scenes (eval-val.json), then a table of the learned warps'
# size (metrics.csv: warp_log_scale_mean of the last logged step), the element-equivariance error of eq. 5
# (equ_elem over the last 30 steps, logged when the batch is paired: 0 canonicalizes, 1 ignores the warp)
# and validation accuracy and InvE.
# Usage: bash apps/mnist/configs/cpu/probes.sh INIT [NAME ...]
#   INIT: the aug run folder or checkpoint to start from (e.g. runs/mnist-cpu/tf_efficientnet_lite0/aug-s0);
#   NAME: the probes to run (default: all, in the order below). A probe that has its eval-val.json is not run
#   again; an interrupted one resumes. Probes write to runs/mnist-cpu/probes/<NAME>.
#   LSE_MNIST (default lse-mnist) is the command, THREADS (default 2) the torch threads, EPOCHS (default 2)
#   the epochs of 30 steps each (960 training scenes, batch 32), EVAL_SIZE (default 300) the validation
#   scenes evaluated.
set -euo pipefail
CFG="$(dirname "$0")"
INIT="${1:?usage: probes.sh INIT [NAME ...]}"
shift
read -r -a CLI <<< "${LSE_MNIST:-lse-mnist}"
THREADS="${THREADS:-2}"
EPOCHS="${EPOCHS:-2}"
EVAL_SIZE="${EVAL_SIZE:-300}"
ROOT=runs/mnist-cpu/probes
# The base of every probe: dec_ce.yaml's objective (cross-entropy only) on 960 training scenes, batch 32.
BASE=(--config "$CFG/dec_ce.yaml" --data.dir "$ROOT/data" --data.train_size 960 --train.batch_size 32
  --train.epochs "$EPOCHS" --train.log_every 5
  --canon.freeze_backbone_epochs 0 --canon.layers '[input]' --canon.grid '[4, 4]' --canon.dec_head identity_init
  --canon.dec_view_size 48 --canon.lr 2e-3)
declare -A PROBES=(
  [base]=""
  [bounded]="--canon.dec_head bounded"
  [latent]="--canon.dec_head bounded --canon.layers [0]"
  [grid3]="--canon.dec_head bounded --canon.grid [3,1]"
  [view96]="--canon.dec_head bounded --canon.dec_view_size 96"
  [warmup]="--canon.dec_head bounded --canon.freeze_backbone_epochs 1"
  [lr1e-2]="--canon.dec_head bounded --canon.lr 1e-2"
  [consistency]="--canon.dec_head bounded --train.consistency_weight 1.0"
  [stn]="--method stn --canon.dec_head bounded"
  [stn_identity_init]="--method stn"
  [consistency_identity_init]="--train.consistency_weight 1.0"
  [aug_continued]="--method aug"
  [invl]="--method invl"
  [element]="--canon.dec_head bounded --canon.element_weight 1.0"
  [element_w4]="--canon.dec_head bounded --canon.element_weight 4.0"
  [element_identity_init]="--canon.element_weight 1.0"
  [element_stn]="--method stn --canon.dec_head bounded --canon.element_weight 1.0"
  [warm_stn]="--method stn --train.epochs 12 --canon.freeze_backbone_epochs 10 --canon.warmup_objective element --canon.element_weight 1"
  [warm_dec]="--train.epochs 12 --canon.freeze_backbone_epochs 10 --canon.warmup_objective element --canon.element_weight 1"
  [warm_dec_residual]="--train.epochs 12 --canon.freeze_backbone_epochs 10 --canon.warmup_objective element --canon.element_weight 1 --canon.dec_update residual --canon.dec_backward phantom"
  [element_id_w4]="--canon.element_weight 4.0"
  [element_stn_id_w4]="--method stn --canon.element_weight 4.0"
  [element_stn_id_w4_view96]="--method stn --canon.element_weight 4.0 --canon.dec_view_size 96"
  [element_stn_id_w4_warmup]="--method stn --canon.element_weight 4.0 --canon.freeze_backbone_epochs 1"
  [residual]="--canon.dec_update residual --canon.dec_backward phantom"
  [residual_element]="--canon.dec_update residual --canon.dec_backward phantom --canon.element_weight 1.0"
  [residual_element_w4]="--canon.dec_update residual --canon.dec_backward phantom --canon.element_weight 4.0"
  [residual_element_lr1e-2]="--canon.dec_update residual --canon.dec_backward phantom --canon.element_weight 1 --canon.lr 1e-2"
)
# the controls at the probes' budget: the same H applied once (stn), the aug objective, invl
ORDER=(base bounded latent grid3 view96 warmup lr1e-2 consistency stn aug_continued invl stn_identity_init
  consistency_identity_init element element_w4 element_identity_init element_stn element_id_w4 element_stn_id_w4
  element_stn_id_w4_view96 element_stn_id_w4_warmup warm_stn warm_dec warm_dec_residual residual residual_element
  residual_element_w4 residual_element_lr1e-2)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=("${ORDER[@]}")
for NAME in "${NAMES[@]}"; do
  [ -n "${PROBES[$NAME]+x}" ] || { echo "unknown probe $NAME (known: ${ORDER[*]})" >&2; exit 2; }
  RUN="$ROOT/$NAME"
  [ -f "$RUN/eval-val.json" ] && continue
  read -r -a EXTRA <<< "${PROBES[$NAME]}"
  [ -f "$RUN/final.safetensors" ] || "${CLI[@]}" train "${BASE[@]}" "${EXTRA[@]}" --train.init_from "$INIT" \
    --train.out_dir "$RUN" --train.resume true --runtime.threads "$THREADS" --runtime.progress false
  "${CLI[@]}" evaluate --config "$CFG/evaluate.yaml" --eval.split val --eval.curve_scales '[]' --eval.size "$EVAL_SIZE" \
    --eval.results_dir "$RUN/results" --runtime.threads "$THREADS" --runtime.progress false --runs "$RUN"
done
python - "$ROOT" "${ORDER[@]}" <<'EOF'
import csv, json, sys
from pathlib import Path
root, names = Path(sys.argv[1]), sys.argv[2:]
print("| probe | warp mean abs log slope (last step) | max | element equivariance error | val Acc % | val InvE x1e-2 |")
print("|---|---:|---:|---:|---:|---:|")
for name in names:
    run = root / name
    if not (run / "eval-val.json").is_file():
        continue
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("warp_log_scale_mean")]
    res = json.loads((run / "eval-val.json").read_text())
    warps = (
        f"{float(rows[-1]['warp_log_scale_mean']):.4f} | {float(rows[-1]['warp_log_scale_max']):.4f}"
        if rows
        else "- | -"
    )
    elem = [r["equ_elem"] for r in csv.DictReader(open(run / "metrics.csv")) if r.get("equ_elem")]
    elem = f"{sum(map(float, elem[-6:])) / len(elem[-6:]):.3f}" if elem else "-"  # the last 30 steps
    print(f"| {name} | {warps} | {elem} | {100 * res['acc']:.2f} | {100 * res['inve_paper']:.2f} |")
EOF
