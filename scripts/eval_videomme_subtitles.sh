#!/usr/bin/env bash
# videomme_w_subtitle (Video-MME with subtitles) with a run config (default: CoS, the paper's setting) on NPROC processes.
#   usage: bash scripts/eval_videomme_subtitles.sh [CONFIG=configs/cos_longva_128.yaml] [NPROC=1]
# Needs the videos and subtitles under $HF_HOME/videomme/{data,subtitle} (see README, "Benchmarks"). Exits non-zero when no results file appears.
exec bash "$(dirname "$0")/eval_task.sh" videomme_w_subtitle "${1:-configs/cos_longva_128.yaml}" "${2:-1}" "${@:3}"
