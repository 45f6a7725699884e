#!/usr/bin/env bash
# Run one lmms-eval task with a run config through `accelerate launch`, and fail loudly.
#   usage: scripts/eval_task.sh TASK[,TASK...] [CONFIG=configs/cos_longva_128.yaml] [NPROC=1] [extra lmms_eval args...]
# NPROC is the number of processes on this machine (one per GPU).
# env: OUTPUT_PATH (default ./logs), HF_HOME (default ~/.cache/huggingface: where the benchmarks' videos are),
#      LMMS_EVAL_EXTRA (extra args), LOG (default $OUTPUT_PATH/eval_<task>_<time>[_node<R>].log: the launcher's
#      whole output), STRICT=1 (exit 3 when any sample failed), COS_SKIP_CHECK=1 (skip the task check),
#      several machines (torchrun's names): NNODES (default 1), NODE_RANK (default 0), MASTER_ADDR (default
#      127.0.0.1), MASTER_PORT (default $PORT, else 12345). Run the same command on every machine with its own
#      NODE_RANK; NPROC stays the per-machine count (see README, "Several machines").
#
# Exit status: 0  results written, every process finished (failed samples, if any, are counted below)
#              1  the run failed: a process crashed or exited non-zero, lmms-eval reported an error
#                 (its CLI exits 0 even then), no new results file appeared (node 0), or the task check
#                 found the task not runnable here (a module it imports is missing, HF_HOME unset, ...)
#              2  bad usage (config missing, bad NPROC/NNODES/NODE_RANK)
#              3  STRICT=1 and at least one sample failed (error records in errors.jsonl)
# On machines other than node 0, the status is that of this machine's processes (only node 0 writes results).
# Resuming: run the same command again. With trace_dir in the config's model_args every finished sample
# is in <trace_dir>/result_cache and is not recomputed (see README, "Long runs").
set -euo pipefail
TASK="${1:?usage: $0 TASK[,TASK...] [CONFIG] [NPROC] [extra lmms_eval args...]}"
CONFIG="${2:-configs/cos_longva_128.yaml}"
NPROC="${3:-1}"
shift $(( $# < 3 ? $# : 3 ))
OUTPUT_PATH="${OUTPUT_PATH:-./logs}"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-${PORT:-12345}}"
export HF_HOME="${HF_HOME:-$HOME/.cache/huggingface}"  # lmms-eval's tasks read it at import (nextqa fails without it)
[ -f "$CONFIG" ] || { echo "error: config $CONFIG not found" >&2; exit 2; }
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "error: NPROC must be a positive integer, got $NPROC" >&2; exit 2; }
[[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || { echo "error: NNODES must be a positive integer, got $NNODES" >&2; exit 2; }
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] && [ "$NODE_RANK" -lt "$NNODES" ] || { echo "error: NODE_RANK must be in [0, NNODES=$NNODES), got $NODE_RANK" >&2; exit 2; }
PY="$(command -v python || command -v python3)"

# The task's own code must import here (lmms-eval would print the error and exit 0 hours later).
if [ "${COS_SKIP_CHECK:-0}" != "1" ]; then
  include=(); prev=""
  for arg in "$@" ${LMMS_EVAL_EXTRA:-}; do
    [ "$prev" = "--include_path" ] && include+=(--include_path "$arg")
    case "$arg" in --include_path=*) include+=(--include_path "${arg#--include_path=}");; esac
    prev="$arg"
  done
  "$PY" -m cos_lmms_eval.check --quiet --config "$CONFIG" "${include[@]}" "$TASK" || {
    echo "[eval] FAILED: task $TASK cannot run in this environment (see above; COS_SKIP_CHECK=1 skips this check)" >&2; exit 1; }
fi

# accelerate's --num_processes is the total over all machines.
launch=(accelerate launch --num_processes "$(( NPROC * NNODES ))" --num_machines "$NNODES" --mixed_precision no --dynamo_backend no
        --main_process_port "$MASTER_PORT")
[ "$NNODES" -gt 1 ] && launch+=(--machine_rank "$NODE_RANK" --main_process_ip "$MASTER_ADDR")
# `--cpu --num_processes N` silently runs one process; --multi_gpu starts N (gloo on CPU, NCCL on GPUs).
[ "$(( NPROC * NNODES ))" -gt 1 ] && launch+=(--multi_gpu)

mkdir -p "$OUTPUT_PATH"
node_tag=""; [ "$NNODES" -gt 1 ] && node_tag="_node$NODE_RANK"
LOG="${LOG:-$OUTPUT_PATH/eval_${TASK//,/+}_$(date +%Y%m%d_%H%M%S)${node_tag}.log}"
marker="$(mktemp)"; trap 'rm -f "$marker"' EXIT
echo "[eval] task=$TASK config=$CONFIG processes=$NPROC machines=$NNODES node_rank=$NODE_RANK output=$OUTPUT_PATH log=$LOG"
set +e
# shellcheck disable=SC2086
"${launch[@]}" -m lmms_eval --config "$CONFIG" --tasks "$TASK" --output_path "$OUTPUT_PATH" "$@" ${LMMS_EVAL_EXTRA:-} 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e

# Per-process summaries printed by the cos models (COS-SUMMARY lines) and their error records.
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
            records[(path, r.get("task"), r.get("split"), r.get("doc_id"))] = r
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
if [ "$NODE_RANK" -ne 0 ]; then  # only node 0 writes results; this machine's processes finished cleanly
  echo "[eval] node $NODE_RANK: processes finished; results are written by node 0"
  exit 0
fi
results=$(find "$OUTPUT_PATH" -name '*_results.json' -newer "$marker" 2>/dev/null | sort)
if [ -z "$results" ]; then
  echo "[eval] FAILED: no results file was written under $OUTPUT_PATH (lmms-eval exits 0 on errors; see $LOG)" >&2
  exit 1
fi
echo "[eval] results: $results"
where=""; [ "$NNODES" -gt 1 ] && where=" by this machine's processes (failed: all machines, from the error records)"
echo "[eval] samples$where: $n_answered answered, $n_failed failed ($n_cached of them from the result cache)"
if [ "$n_failed" -gt 0 ]; then
  echo "[eval] WARNING: $n_failed samples failed and were answered with an empty prediction; records: $error_files" >&2
  [ "${STRICT:-0}" = "1" ] && exit 3
fi
exit 0
