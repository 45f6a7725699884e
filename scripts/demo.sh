#!/usr/bin/env bash
# README command 1: the main job on the embedded default, end to end on CPU.
#   tiny random LongVA + tiny LLaVA scorer (built here) -> synthetic needle videos (encoded here)
#   -> `accelerate launch -m lmms_eval` with --model longva and --model cos_longva -> one table.
# The checkpoints are random: accuracy is chance level. The demo proves the plumbing, not the method.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO"
DEMO=.cache/demo
NEEDLE=lmms-eval/cos_lmms_eval/tasks/cos_needle/data
export HF_HOME="$REPO/$DEMO/hf" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

[ -f "$DEMO/tiny-longva/config.json" ] || cos make-tiny-longva "$DEMO/tiny-longva" --size tiny
[ -f "$DEMO/tiny-llava/config.json" ] || cos make-tiny-llava "$DEMO/tiny-llava"
[ -f "$NEEDLE/questions.json" ] || cos make-needle-videos "$NEEDLE" --n 8

rm -rf "$DEMO/logs"
OUTPUT_PATH="$DEMO/logs" bash scripts/eval_task.sh cos_needle configs/demo_tiny.yaml 1 --timezone UTC
cos report "$DEMO/logs" --text

# What CoS did: one shot strip and the run report.
trace=$(ls "$DEMO"/logs/traces/cos_longva/cos_needle/*.json | head -n 1)
cos show "$trace" --out "$DEMO/strip.png"
cos report "$DEMO/logs" --out "$DEMO/report.html"
echo
echo "strip:  $DEMO/strip.png"
echo "report: $DEMO/report.html"
