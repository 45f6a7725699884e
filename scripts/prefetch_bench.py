"""Time per sample with and without prefetching (``prefetch`` in ``model_args``), through lmms-eval.

Runs the offline ``cos_needle`` task with a random checkpoint of the chosen backend (``small``: the real
token geometry) on needle videos encoded here, once serially (``prefetch=0``) and once with the next
samples' videos decoded and preprocessed in a background thread (``prefetch=2``), and prints wall time per
sample (``generate_until``'s loop: the sum of the samples' own times), the decode + preprocess time that
left the critical path, and whether the predictions are identical.

    python scripts/prefetch_bench.py --model longva --frames 128 --videos 8
    python scripts/prefetch_bench.py --model cos_longva --frames 64 --device cuda

``--harness direct`` runs the same prefetcher (:mod:`cos_runtime.prefetch`) over the engine without lmms-eval (for
a machine that has no lmms-eval, e.g. a bare GPU box): the needle questions are answered in order, one engine.

Only ratios mean something on a CPU: there the model and the decoder share the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def prepare(work: Path, backend: str, size: str, videos: int, frames: int, side: int) -> tuple[Path, Path, Path]:
    from cos.synthetic import make_needle_videos
    from cos_runtime.bench import bench_checkpoints

    ckpt, scorer = bench_checkpoints(work, backend, size)
    data = work / f"needle-{videos}x{side}"
    if not (data / "questions.json").exists():
        make_needle_videos(data, videos, seed=0, min_frames=max(frames, 64), max_frames=2 * max(frames, 64), size=side, progress=False)
    return ckpt, scorer, data


def run(model: str, model_args: str, data: Path, out: Path, device: str | None) -> dict:
    from cos_lmms_eval import TASKS_DIR

    env = {**os.environ, "COS_NEEDLE_DATA": str(data), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(out / "hf")}
    shutil.rmtree(out, ignore_errors=True)  # this run's traces only
    traces = out / "traces"
    args = f"{model_args},trace_dir={traces},result_cache_dir=none,score_cache_dir=none" + (f",device={device}" if device else "")
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", args, "--tasks", "cos_needle", "--batch_size", "1",
           "--include_path", str(TASKS_DIR), "--output_path", str(out / "logs"), "--log_samples", "--verbosity", "WARNING"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = sorted((traces / "cos_needle").glob("*.json"))
    if proc.returncode != 0 or not found:
        raise SystemExit(f"lmms-eval failed ({model_args}):\n{proc.stderr[-3000:]}")
    return summarise([json.loads(p.read_text()) for p in found], wall)


def run_direct(spec, values: dict, method: str, data: Path, depth: int, device: str | None) -> dict:
    """The needle questions through one engine, with the prefetcher (depth > 0) or serially; no lmms-eval involved."""
    from cos.pipeline import GenerationOptions
    from cos_runtime.engine import build_engine
    from cos_runtime.prefetch import Prefetcher

    docs = json.loads((data / "questions.json").read_text())
    engine = build_engine(spec.name, method, {**values, "prefetch": depth}, device=device)
    items = [(str(data / d["video"]), d["question"] + "\n" + "\n".join(d["options"])) for d in docs]
    gen = GenerationOptions(max_new_tokens=16)
    engine.answer(*items[0], gen)  # warm-up (CUDA context, kernels), not counted
    records = []
    start = time.perf_counter()
    with Prefetcher(items, lambda item: (item, item), lambda item: engine.prepare(*item), depth) as ahead:
        for index, (video, question) in enumerate(items):
            pending = ahead.take(index)
            trace = engine.answer(video, question, gen, prepared=pending.prepared if pending else None).trace
            records.append(trace.to_json())
    return summarise(records, time.perf_counter() - start)


def summarise(records: list[dict], wall: float) -> dict:
    t = [r["timings"] for r in records]
    return {"samples": len(records), "process_wall_s": wall,
            "per_sample_s": statistics.mean(x["total"] for x in t),
            "decode_preprocess_s": statistics.mean(x.get("decode_video", 0.0) + x.get("preprocess", 0.0) for x in t),
            "prefetch_wait_s": statistics.mean(x.get("prefetch_wait", 0.0) for x in t),
            "answers": {r["video"]: r["answer_tokens"] for r in records}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="longva", help="an lmms-eval model of ours: longva, cos_longva, llava_vid, videoxl, ...")
    p.add_argument("--size", default="small", choices=["tiny", "small"])
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--side", type=int, default=640, help="video width and height in pixels (decoding cost grows with it)")
    p.add_argument("--prefetch", type=int, default=2, help="the prefetching run's depth (the other run is serial)")
    p.add_argument("--device", default=None)
    p.add_argument("--workdir", default=".cache/prefetch-bench")
    p.add_argument("--harness", choices=["lmms-eval", "direct"], default="lmms-eval",
                   help="lmms-eval: the task through `python -m lmms_eval`; direct: the same prefetcher over the engine, no lmms-eval")
    p.add_argument("--out", default=None, help="write the figures as JSON")
    args = p.parse_args(argv)

    from cos_runtime import registry

    spec = next((s for s in registry.specs() if args.model in s.model_ids()), None)
    if spec is None:
        p.error(f"unknown model {args.model!r}")
    work = Path(args.workdir)
    ckpt, scorer, data = prepare(work, spec.name, args.size, args.videos, args.frames, args.side)
    method = spec.model_ids()[args.model]
    values = {"pretrained": str(ckpt), "max_frames_num": args.frames, "video_decode_backend": "auto"}
    if method == "cos":
        values.update(scorer_pretrained=str(scorer), score_threshold=0.6, score_mode="logits")
    runs = {}
    for depth in (0, args.prefetch):
        if args.harness == "direct":
            runs[depth] = run_direct(spec, values, method, data, depth, args.device)
        else:
            model_args = ",".join(f"{k}={v}" for k, v in values.items()) + f",prefetch={depth}"
            runs[depth] = run(args.model, model_args, data, work / f"run-{args.model}-{args.size}-{depth}", args.device)
    serial, ahead = runs[0], runs[args.prefetch]
    same = serial["answers"] == ahead["answers"]
    print(f"{args.model} through {args.harness}, {args.size} checkpoint, {args.frames} frames, {serial['samples']} videos of {args.side}x{args.side}, "
          f"device {args.device or 'auto'}")
    print(f"{'':22s}{'serial':>12s}{f'prefetch={args.prefetch}':>14s}")
    for key, label in (("per_sample_s", "s per sample"), ("decode_preprocess_s", "decode+preprocess s"), ("prefetch_wait_s", "waited for it s"),
                       ("process_wall_s", "process wall s")):
        print(f"{label:22s}{serial[key]:12.3f}{ahead[key]:14.3f}")
    print(f"prefetched / serial time per sample: {ahead['per_sample_s'] / serial['per_sample_s']:.2f}; identical answers: {same}")
    if args.out:
        Path(args.out).write_text(json.dumps({"serial": serial, "prefetch": ahead, "identical": same}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
