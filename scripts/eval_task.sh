#!/usr/bin/env bash
# Run one lmms-eval task with a run config through `accelerate launch`, and fail loudly.
#   usage: scripts/eval_task.sh TASK [CONFIG=configs/cos_longva_128.yaml] [NPROC=1] [extra lmms_eval args...]
# env: OUTPUT_PATH (default ./logs), PORT (default 12345), LMMS_EVAL_EXTRA (extra args).
# lmms-eval's CLI exits 0 even when the evaluation failed; this script exits 1 unless a new
# results file appeared, and prints how many samples failed (errors.jsonl under the trace dirs).
set -euo pipefail
TASK="${1:?usage: $0 TASK [CONFIG] [NPROC] [extra lmms_eval args...]}"
CONFIG="${2:-configs/cos_longva_128.yaml}"
NPROC="${3:-1}"
shift $(( $# < 3 ? $# : 3 ))
OUTPUT_PATH="${OUTPUT_PATH:-./logs}"
PORT="${PORT:-12345}"
[ -f "$CONFIG" ] || { echo "error: config $CONFIG not found" >&2; exit 2; }
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "error: NPROC must be a positive integer, got $NPROC" >&2; exit 2; }

launch=(accelerate launch --num_processes "$NPROC" --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port "$PORT")
# `--cpu --num_processes N` silently runs one process; --multi_gpu starts N (gloo on CPU, NCCL on GPUs).
[ "$NPROC" -gt 1 ] && launch+=(--multi_gpu)

mkdir -p "$OUTPUT_PATH"
marker="$(mktemp)"; trap 'rm -f "$marker"' EXIT
echo "[eval] task=$TASK config=$CONFIG processes=$NPROC output=$OUTPUT_PATH"
set +e
"${launch[@]}" -m lmms_eval --config "$CONFIG" --tasks "$TASK" --output_path "$OUTPUT_PATH" "$@" ${LMMS_EVAL_EXTRA:-}
rc=$?
set -e
results=$(find "$OUTPUT_PATH" -name '*_results.json' -newer "$marker" 2>/dev/null | sort)
failed=$(find "$OUTPUT_PATH" . -maxdepth 6 -name errors.jsonl -newer "$marker" 2>/dev/null | sort -u | xargs -r cat | wc -l)
if [ "$rc" -ne 0 ]; then
  echo "[eval] FAILED: the launcher exited with $rc" >&2; exit "$rc"
fi
if [ -z "$results" ]; then
  echo "[eval] FAILED: no results file was written under $OUTPUT_PATH (lmms-eval exits 0 on errors; see its log above)" >&2
  exit 1
fi
echo "[eval] results: $results"
[ "$failed" -gt 0 ] && echo "[eval] WARNING: $failed samples failed and were answered with an empty prediction (see errors.jsonl in the trace dir)" >&2
exit 0
