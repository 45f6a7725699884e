#!/usr/bin/env bash
# vnbench (VNBench, our lmms-eval task in lmms-eval/cos_lmms_eval/tasks/vnbench) with a run config (default: CoS at
# VNBench's 64 frames) on NPROC processes.
#   usage: bash scripts/eval_vnbench.sh [CONFIG=configs/cos_longva_64.yaml] [NPROC=1] [extra lmms_eval args...]
# Data: $VNBENCH_DIR (default $HF_HOME/vnbench) holding VNBench-main-4try.json (else downloaded from the hub dataset
# videoniah/VNBench) and videos/ with the 1350 .mp4 files (Google Drive link in the VideoNIAH README); see README, "VNBench".
# Frames: the config's max_frames_num. VNBench's official setting samples 64 (configs/cos_longva_64.yaml and
# configs/longva_uniform_64.yaml); any other config works too (the paper's CoS configs sample 128).
# The task is found through --include_path (the folder `python -m cos_lmms_eval.tasks` prints). Exits non-zero when
# no results file appears (missing VNBench data is reported in the log and fails the run).
set -euo pipefail
PY="$(command -v python || command -v python3)"
TASKS_DIR="$("$PY" -m cos_lmms_eval.tasks)"
exec bash "$(dirname "$0")/eval_task.sh" vnbench "${1:-configs/cos_longva_64.yaml}" "${2:-1}" --include_path "$TASKS_DIR" "${@:3}"
