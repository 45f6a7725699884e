#!/usr/bin/env bash
# One prepared device check (GPU machine, no network): the CUDA path on the `small` checkpoint.
# Prepare here:   python -c "import argparse; from cos_runtime.bench import _prepare; _prepare(argparse.Namespace(workdir='.cache/bench-gpu', size='small', frames=[32,128], backend='longva'))"
#                 wheels for the device's Python in .whl/ (transformers 5.x, tokenizers, regex, typer, shellingham, decord)
# Run there with carry [.whl, .cache/bench-gpu]:  bash scripts/gpu_check.sh
# Prints uniform vs CoS vs release-style wall time per stage, peak GPU memory, bf16 vs fp16, shared vs batched
# prefill, sdpa vs eager (COS_GPU_EAGER=1)
# (flash-attn when installed), and writes the JSON reports and a plot under $OUT.
set -uo pipefail
OUT="${OUT:-.cache/gpu-check}"; mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" ""
W=.cache/bench-gpu
bench() { python3 -m cos_runtime bench --workdir "$W" --device cuda "$@" 2>&1 | grep -vE "Loading weights|Warning|warn\(" ; }
bench --frames 32,128 --repeats 3 --release-repeats 3 --dtype bfloat16 --out "$OUT/bench_bf16.json" --plot "$OUT/bench_bf16.png"
bench --frames 128 --repeats 3 --release-repeats 0 --dtype bfloat16 --share-prefix always --out "$OUT/bench_bf16_shared.json"
bench --frames 128 --repeats 3 --release-repeats 0 --dtype float16 --out "$OUT/bench_fp16.json"
[ -n "${COS_GPU_EAGER:-}" ] && bench --frames 128 --repeats 3 --release-repeats 0 --dtype bfloat16 --attn-implementation eager --out "$OUT/bench_bf16_eager.json"
if python3 -c "import flash_attn" 2>/dev/null; then
  bench --frames 128 --repeats 3 --release-repeats 0 --dtype bfloat16 --attn-implementation flash_attention_2 --out "$OUT/bench_bf16_fa2.json"
else
  echo "flash-attn: not installed on this machine (no wheel for its torch/CUDA can be carried; building needs the network)"
fi
