"""Video-XL's memory grows with beacons, not raw visual tokens: peak memory per frame count, uniform and CoS.

    python scripts/videoxl_memory.py [--size small] [--frames 128 512] [--ratio 8] [--device cpu]

Builds the random ``small`` (or ``tiny``) Video-XL checkpoint (``cos make-tiny-videoxl``), then for each frame
count and method answers one question about random frames in a fresh process and prints: the process's peak
memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on a GPU), the K/V the LM keeps after the prefill
(beacons + text) next to what a plain cache of the raw visual tokens would hold, and the time. CoS runs with a
fixed half-relevant code (no scorer cost: this measures the base model's three beacon memories).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(ckpt: str, frames: int, method: str, ratio: int, device: str) -> dict:
    import numpy as np
    import torch

    from cos.pipeline import CoSConfig, CoSPipeline, GenerationOptions
    from cos.scoring import ShotScores
    from cos_runtime.backends.videoxl import Options, load

    class HalfRelevant:
        name = "fixed"

        def score(self, mosaics, question):
            d = (np.arange(len(mosaics)) % 2).astype(np.int64)
            return ShotScores(d.astype(float), d, [""] * len(d))

    backend = load(Options(pretrained=ckpt, beacon_ratio=ratio), device, torch.float32 if device == "cpu" else torch.float16)
    video = np.random.default_rng(0).integers(0, 256, (frames, 240, 320, 3), dtype=np.uint8)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trace = CoSPipeline(backend, HalfRelevant(), CoSConfig()).answer(video, "What happens?", method=method,
                                                                      gen=GenerationOptions(max_new_tokens=4, stop_at_eos=False)).trace
    seconds = time.perf_counter() - start
    memory = backend.memory_report()
    lm = backend.model.language_model.config
    per_token = 2 * lm.num_hidden_layers * lm.num_key_value_heads * (lm.hidden_size // lm.num_attention_heads) * backend.dtype.itemsize
    kept = memory["sink"] + memory["beacons"] + memory["text_after"]
    raw = memory["sink"] + memory["visual_tokens"] + memory["text_after"]
    peak = (torch.cuda.max_memory_allocated() if device != "cpu" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"frames": frames, "method": method, "streams": trace.streams, "visual_tokens": memory["visual_tokens"], "beacons": memory["beacons"],
            "kv_kept_mb": memory["batch"] * kept * per_token / 2**20, "kv_raw_mb": memory["batch"] * raw * per_token / 2**20,
            "peak_mb": peak / 2**20, "peak_over_loaded_mb": (peak - (0 if device != "cpu" else rss0 * 1024)) / 2**20, "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "small"), default="small")
    p.add_argument("--frames", type=int, nargs="+", default=[128, 512])
    p.add_argument("--methods", nargs="+", default=["uniform", "cos"], choices=("uniform", "cos"))
    p.add_argument("--ratio", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", help="an existing Video-XL checkpoint (default: build the random one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        frames, method = args.child.split(":")
        print(json.dumps(_child(args.checkpoint, int(frames), method, args.ratio, args.device)))
        return 0
    ckpt = args.checkpoint
    if ckpt is None:
        from videoxl import build_tiny_videoxl

        ckpt = str(build_tiny_videoxl(Path(tempfile.mkdtemp(prefix="videoxl-mem-")) / args.size, seed=0, size=args.size))
    rows = []
    for frames in args.frames:
        for method in args.methods:
            out = subprocess.run([sys.executable, __file__, "--child", f"{frames}:{method}", "--checkpoint", ckpt, "--ratio", str(args.ratio),
                                  "--device", args.device], capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                return out.returncode
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"Video-XL {args.size} ({ckpt}), beacon ratio {args.ratio}, device {args.device}")
    print(f"{'frames':>6} {'method':>7} {'streams':>7} {'visual':>7} {'beacons':>7} {'K/V kept MB':>11} {'raw K/V MB':>10} "
          f"{'peak MB':>8} {'peak-loaded':>11} {'s':>6}")
    for r in rows:
        print(f"{r['frames']:>6} {r['method']:>7} {r['streams']:>7} {r['visual_tokens']:>7} {r['beacons']:>7} {r['kv_kept_mb']:>11.2f} "
              f"{r['kv_raw_mb']:>10.2f} {r['peak_mb']:>8.0f} {r['peak_over_loaded_mb']:>11.0f} {r['seconds']:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
