#!/usr/bin/env bash
# mlvu_dev with a run config (default: CoS, the paper's setting) on NPROC processes.
#   usage: bash scripts/eval_mlvu.sh [CONFIG=configs/cos_longva_128.yaml] [NPROC=1]
# Needs the benchmark's videos under $HF_HOME (see README, "Benchmarks"). Exits non-zero when no results file appears.
exec bash "$(dirname "$0")/eval_task.sh" mlvu_dev "${1:-configs/cos_longva_128.yaml}" "${2:-1}" "${@:3}"
