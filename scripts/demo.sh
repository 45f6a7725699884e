#!/usr/bin/env bash
# README command 1: the main job on the embedded default, end to end on CPU.
#   the small LongVA and LLaVA scorer trained here (assets/, re-created by `cos train-tiny`) -> the needle task's test
#   split with 4 distractors per video (200 real H.264 videos, encoded here) -> `accelerate launch -m lmms_eval` with
#   the baseline and CoS with the trained, the oracle and the uniform scorer -> one table with paired intervals.
# usage: scripts/demo.sh [CONFIG]   (default configs/demo_needle.yaml; configs/demo_selectors.yaml: the frame
#   selectors AKS, BOLT and Q-Frame with and without CoS, in .cache/demo-selectors). A config's trace_dir and
#   output_path lie under .cache/demo (default) or .cache/demo-<name> for configs/demo_<name>.yaml.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO"
CONFIG="${1:-configs/demo_needle.yaml}"
[ -f "$CONFIG" ] || { echo "error: config $CONFIG not found" >&2; exit 2; }
name="$(basename "$CONFIG" .yaml)"; name="${name#demo_}"
DEMO=.cache/demo; [ "$name" = needle ] || DEMO=".cache/demo-$name"
NEEDLE=lmms-eval/cos_lmms_eval/tasks/cos_needle/data
export HF_HOME="$REPO/$DEMO/hf" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# the test split (never seen in training); rebuilt when the folder holds other needle videos
SPEC="--n 200 --split test --question mark --distractors 4 --min-frames 48 --max-frames 160 --size 64"
if [ "$(cat "$NEEDLE/.made-with" 2>/dev/null)" != "$SPEC" ]; then
  rm -rf "$NEEDLE"
  # shellcheck disable=SC2086
  cos make-needle-videos "$NEEDLE" $SPEC
  echo "$SPEC" > "$NEEDLE/.made-with"
fi

rm -rf "$DEMO/logs"
OUTPUT_PATH="$DEMO/logs" bash scripts/eval_task.sh cos_needle "$CONFIG" 1 --timezone UTC
cos report "$DEMO/logs" --text

# What CoS did: one shot strip and the run report.
traces=("$DEMO"/logs/traces/cos_llava/cos_needle/*.json)  # (not `ls | head`: SIGPIPE under pipefail)
trace="${traces[0]}"
cos show "$trace" --out "$DEMO/strip.png"
cos report "$DEMO/logs" --out "$DEMO/report.html"
echo
echo "strip:  $DEMO/strip.png"
echo "report: $DEMO/report.html"
