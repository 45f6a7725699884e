#!/usr/bin/env bash
# The full-size device check, one prepared script (GPU machine, no network, no weights): every registered base
# model's real 7B shapes with random weights drawn on the GPU, a LLaVA-1.5-13B-shaped scorer, 128 frames:
# uniform vs CoS vs release-style wall time per stage, floor, tokens/s, peak GPU memory; the scorer's cost by
# batch size / mode / precision; prefetching (decode + preprocess in a background thread) on and off; and, on what
# is left of the 9 min 10 s, the frame selectors BOLT and AKS (`cos bench --selector-only`: cost per minute of video).
#
# Prepare here (once):  bash scripts/gpu_full_bench.sh --prepare   (the weightless full configs + tokenizers and the
#                       needle video in .cache/bench-full, 1 MB; the small LongVA and six needle videos in .cache/prefetch-gpu,
#                       22 MB); and wheels for the device's Python in .whl/ (transformers 5.x, tokenizers, regex, typer,
#                       shellingham, decord, av; bitsandbytes too for the 4-bit scorer rows). The selector rows' video
#                       (300 s of 640x360 H.264, ~50 MB) and scoring models (the released shapes, random fp16 weights,
#                       0.9 GB each) are too big to carry: their steps build them there, in the same folder, before measuring.
# Run there with carry [.whl, .cache/bench-full, .cache/prefetch-gpu]:  bash scripts/gpu_full_bench.sh   (at most 9 min 10 s of steps)
# Each step has its own time limit and writes its JSON under $OUT as it goes (a step that runs out of time keeps what it
# measured); the script exits 1 naming the failed steps. The selector steps run on what the steps before them left of
# the 550 s (spare_step): the script never runs longer, and they are skipped (named, not failed) when too little is left.
set -uo pipefail
W=.cache/bench-full P=.cache/prefetch-gpu
if [ "${1:-}" = "--prepare" ]; then
  source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
  for b in longva llava_video videoxl; do
    python -c "import argparse, sys; from cos_runtime.bench import _prepare; _prepare(argparse.Namespace(workdir='$W', size='full', frames=[128], backend='$b'))" || exit 1
  done
  python -c "import sys; sys.path.insert(0, 'scripts'); from prefetch_bench import prepare; prepare(__import__('pathlib').Path('$P'), 'longva', 'small', 6, 128, 640)" || exit 1
  du -sh "$W" "$P"; exit 0
fi
OUT="${OUT:-.cache/gpu-full}"; mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" "$OUT/gpu.txt"
FAILED=() SKIPPED=() BUDGET=550 START=$SECONDS
# step NAME SECONDS COMMAND...: run with a time limit, keep its output in $OUT/full.txt, remember a failure
step() {
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$OUT/full.txt"
  timeout "$limit" "$@" 2>&1 | grep -vE "Loading weights|Warning|warn\(" | tee -a "$OUT/full.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { FAILED+=("$name (exit $rc)"); echo "== $name failed: exit $rc" | tee -a "$OUT/full.txt"; }
}
# spare_step NAME SECONDS COMMAND...: a step on what is left of $BUDGET seconds of steps (at most SECONDS; skipped under 30)
spare_step() {
  local name=$1 limit=$2 left=$((BUDGET - (SECONDS - START))); shift 2
  if [ "$left" -lt 30 ]; then SKIPPED+=("$name"); echo "== $name skipped: ${left}s left of ${BUDGET}s" | tee -a "$OUT/full.txt"; return; fi
  step "$name" $((left < limit ? left : limit)) "$@"
}
bench=(python3 -m cos_runtime bench --workdir "$W" --device cuda --size full --frames 128 --repeats 1 --release-repeats 1 --new-tokens 8)
# LongVA-7B first (the paper's main model), with the scorer profile; then the other two base models.
step longva 200 "${bench[@]}" --backend longva --scorer-profile --out "$OUT/full_longva.json"
step llava_video 120 "${bench[@]}" --backend llava_video --out "$OUT/full_llava_video.json"
step videoxl 150 "${bench[@]}" --backend videoxl --out "$OUT/full_videoxl.json"
# Prefetching on the GPU (small checkpoint: there decoding and preprocessing are most of a sample's time).
step prefetch 80 python3 scripts/prefetch_bench.py --model longva --size small --frames 128 --videos 6 --side 640 --device cuda \
  --harness direct --workdir "$P" --out "$OUT/prefetch.json"
# Frame selectors at 128 frames on a 300-s video (300 candidates at 1/s; 600 s would not fit 60 s: decord decodes nearly
# every frame, single-threaded, ~15 s a run there, and each step runs twice: a warm-up and a timed run). First the video
# and the two scoring models' shapes (CLIP ViT-L/14 for BOLT, BLIP ITM large for AKS: drawn on the GPU, saved in fp16).
spare_step selector_prepare 45 python3 -c "from cos_runtime.bench import selector_video as v, selector_checkpoint as c; \
v('$W', 300); c('$W', 'bolt', 'full', 'cuda'); c('$W', 'aks', 'full', 'cuda')"
sel=(python3 -m cos_runtime bench --workdir "$W" --device cuda --size full --frames 128 --repeats 1 --selector-only --selector-seconds 300)
spare_step selector_bolt 45 "${sel[@]}" --selector bolt --out "$OUT/selector_bolt.json"
spare_step selector_aks 45 "${sel[@]}" --selector aks --out "$OUT/selector_aks.json"
[ ${#SKIPPED[@]} -eq 0 ] || echo "skipped steps (out of the ${BUDGET}s): ${SKIPPED[*]}"
[ ${#FAILED[@]} -eq 0 ] || { echo "failed steps: ${FAILED[*]}"; exit 1; }
