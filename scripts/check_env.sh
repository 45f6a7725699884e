#!/usr/bin/env bash
# Can this environment run these benchmarks? One line per task: `ok` (the task's code imports; where its
# data is expected under $HF_HOME) or `MISSING` (which module to install, HF_HOME unset, unknown task).
#   usage: bash scripts/check_env.sh [TASK...]   (default: the paper's six benchmarks)
#          extra lmms-eval task folders: --include_path DIR
# Exits 1 when any task cannot run. scripts/eval_task.sh runs the same check before every launch.
set -euo pipefail
PY="$(command -v python || command -v python3)"
[ "$#" -gt 0 ] || set -- videomme videomme_w_subtitle mlvu_dev longvideobench_val_v nextqa_mc_test mvbench
[ -n "${HF_HOME:-}" ] || echo "note: HF_HOME is not set; scripts/eval_task.sh uses ~/.cache/huggingface" >&2
export HF_HOME="${HF_HOME:-$HOME/.cache/huggingface}"
exec "$PY" -m cos_lmms_eval.check "$@"
