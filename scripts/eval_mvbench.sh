#!/usr/bin/env bash
# mvbench (the group of its 20 sub-tasks) with a run config (default: CoS, the paper's setting) on NPROC processes.
#   usage: bash scripts/eval_mvbench.sh [CONFIG=configs/cos_longva_128.yaml] [NPROC=1]
# Needs the videos under $HF_HOME/mvbench_video (see README, "Benchmarks"). Exits non-zero when no results file appears.
exec bash "$(dirname "$0")/eval_task.sh" mvbench "${1:-configs/cos_longva_128.yaml}" "${2:-1}" "${@:3}"
