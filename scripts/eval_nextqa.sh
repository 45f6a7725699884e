#!/usr/bin/env bash
# nextqa_mc_test with a run config (default: CoS, the paper's setting) on NPROC processes.
#   usage: bash scripts/eval_nextqa.sh [CONFIG=configs/cos_longva_128.yaml] [NPROC=1]
# Needs the benchmark's videos under $HF_HOME (see README, "Benchmarks"). Exits non-zero when no results file appears.
exec bash "$(dirname "$0")/eval_task.sh" nextqa_mc_test "${1:-configs/cos_longva_128.yaml}" "${2:-1}" "${@:3}"
