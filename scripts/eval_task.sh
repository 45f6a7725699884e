#!/usr/bin/env bash
# Run one lmms-eval task with a run config through `accelerate launch`, and fail loudly.
#   usage: scripts/eval_task.sh TASK [CONFIG=configs/cos_longva_128.yaml] [NPROC=1] [extra lmms_eval args...]
# env: OUTPUT_PATH (default ./logs), PORT (default 12345), LMMS_EVAL_EXTRA (extra args),
#      LOG (default $OUTPUT_PATH/eval_<task>_<time>.log: the launcher's whole output),
#      STRICT=1 (exit 3 when any sample failed).
#
# Exit status: 0  results written, every process finished (failed samples, if any, are counted below)
#              1  the run failed: a process crashed or exited non-zero, lmms-eval reported an error
#                 (its CLI exits 0 even then), or no new results file appeared
#              2  bad usage (config missing, bad NPROC)
#              3  STRICT=1 and at least one sample failed (error records in errors.jsonl)
# Resuming: run the same command again. With trace_dir in the config's model_args every finished sample
# is in <trace_dir>/result_cache and is not recomputed (see README, "Long runs").
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
LOG="${LOG:-$OUTPUT_PATH/eval_${TASK}_$(date +%Y%m%d_%H%M%S).log}"
marker="$(mktemp)"; trap 'rm -f "$marker"' EXIT
echo "[eval] task=$TASK config=$CONFIG processes=$NPROC output=$OUTPUT_PATH log=$LOG"
set +e
# shellcheck disable=SC2086
"${launch[@]}" -m lmms_eval --config "$CONFIG" --tasks "$TASK" --output_path "$OUTPUT_PATH" "$@" ${LMMS_EVAL_EXTRA:-} 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e

# Per-process summaries printed by the cos models (COS-SUMMARY lines) and their error records.
PY="$(command -v python || command -v python3)"
summary=$("$PY" - "$LOG" <<'EOF'
import json, re, sys
answered = failed = cached = 0
files = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.search(r"COS-SUMMARY .*?answered=(\d+) failed=(\d+) from_cache=(\d+) .*?errors=(\S+)", line)
    if m:
        answered += int(m[1]); failed += int(m[2]); cached += int(m[3])
        if m[4] != "-" and m[4] not in files:
            files.append(m[4])
records = {}
for path in files:
    try:
        for row in open(path, encoding="utf-8"):
            r = json.loads(row)
            records[(r.get("task"), r.get("split"), r.get("doc_id"))] = r
    except OSError:
        pass
failed_unique = len(records) if files else failed
print(answered, failed_unique, cached, ",".join(files) or "-")
EOF
) || summary="0 0 0 -"
read -r n_answered n_failed n_cached error_files <<<"$summary"

if [ "$rc" -ne 0 ]; then
  why=""; [ "$rc" -eq 70 ] && why=" (a process hit an unexpected error; see FATAL above)"
  echo "[eval] FAILED: the launcher exited with $rc$why; a process crashed or was killed. Log: $LOG" >&2
  exit 1
fi
if grep -aqE "Error during evaluation|\] FATAL: |ChildFailedError" "$LOG"; then
  echo "[eval] FAILED: a process reported an error (lmms-eval exits 0 anyway); see $LOG" >&2
  grep -aE "Error during evaluation|\] FATAL: " "$LOG" | head -n 5 >&2 || true
  exit 1
fi
results=$(find "$OUTPUT_PATH" -name '*_results.json' -newer "$marker" 2>/dev/null | sort)
if [ -z "$results" ]; then
  echo "[eval] FAILED: no results file was written under $OUTPUT_PATH (lmms-eval exits 0 on errors; see $LOG)" >&2
  exit 1
fi
echo "[eval] results: $results"
echo "[eval] samples: $n_answered answered, $n_failed failed ($n_cached of them from the result cache)"
if [ "$n_failed" -gt 0 ]; then
  echo "[eval] WARNING: $n_failed samples failed and were answered with an empty prediction; records: $error_files" >&2
  [ "${STRICT:-0}" = "1" ] && exit 3
fi
exit 0
