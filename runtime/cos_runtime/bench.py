"""``cos bench``: stage-by-stage cost of CoS against the uniform baseline and a release-style pipeline.

Any registered backend (``--backend``, default ``longva``), on its test checkpoint (``small``: the real
token geometry; ``--smoke``: ``tiny``). Three pipelines answer the same question about the same synthetic needle video, in one process:

* ``uniform`` — the base model with uniformly sampled frames (the baseline);
* ``cos`` — Chain-of-Shot as implemented here: frames decoded and encoded once, the LLaVA scorer loaded
  once and reused, X/Sp/Sn prefilled with shared prefixes, one batched 3-stream forward per token;
* ``release`` — the same parts with the original release's costs: the scorer constructed for every
  sample, generate-mode scoring, and three separate uncached full forwards per generated token.

``cos`` and ``release`` use the same scorer mode (generate), so they see the same binary code, and the
bench asserts they produce the same tokens: a speed-up can never come from computing something else.
Timings are medians over ``--repeats`` runs after one warm-up run. Only ratios mean something on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cos.compose import gather_features, negative_map, positive_map
from cos.decoding import penalise_repetition
from cos.pipeline import CoSConfig, CoSPipeline, GenerationOptions
from cos.prefix import cache_from_tensors, crop_cache, plan_prefill
from cos.scoring import LlavaScorer, get_scorer
from cos.trace import StageTimer
from cos_runtime import registry

STAGES = ("decode_video", "preprocess", "encode", "mosaics", "score", "compose", "prefill", "decode")
PIPELINES = ("uniform", "cos", "release")


# -- memory ------------------------------------------------------------------------------------
def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:  # Linux: writing 5 resets this process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak() -> dict:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    if torch.cuda.is_available():
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# -- the release-style pipeline ----------------------------------------------------------------
def release_style_answer(backend, scorer_kwargs: dict, frames: np.ndarray, question: str, gen: GenerationOptions,
                         timer: StageTimer, config: CoSConfig) -> list[int]:
    """Our parts with the release's costs: per-sample scorer construction, generate-mode scoring, and
    three uncached full forwards per new token (fuse raw logits, then the repetition penalty)."""
    from cos.grounding import binary_code
    from cos.shots import make_mosaics

    with timer("preprocess"):
        pixels = backend.preprocess(frames)
    with timer("encode"), torch.inference_mode():
        feats = backend.encode_frames(pixels)
    with timer("mosaics"):
        mosaics, groups = make_mosaics(frames, config.shot_size, config.leftover)
    with timer("score"):
        scorer = LlavaScorer(**scorer_kwargs)  # the release built the 13B scorer inside generate_until
        scores = scorer.score(mosaics, question)
        del scorer
    with timer("compose"), torch.inference_mode():
        code = binary_code(scores.decisions, groups, len(frames))
        black = backend.encode_frames(backend.preprocess(np.zeros_like(frames[:1])))[0]
        alpha = 1.0 - float(code.sum()) / len(code)
        ids = backend.prompt_ids(question)
        streams = [backend.embed_prompt(ids, gather_features(feats, m, black))
                   for m in (np.arange(len(code)), positive_map(code), negative_map(code))]
    eos = set(backend.facts.eos_token_ids) if gen.stop_at_eos else set()
    penalty = backend.facts.repetition_penalty
    tokens: list[int] = []
    with torch.inference_mode():
        for step in range(gen.max_new_tokens):
            with timer("prefill" if step == 0 else "decode"):
                tail = backend.embed_tokens(torch.tensor([tokens])) if tokens else None
                logits = [backend.forward_logits(s if tail is None else torch.cat([s, tail], dim=1)) for s in streams]
                fused = logits[0] + alpha * (logits[1] - logits[2]) if alpha else logits[0]
                if tokens and penalty != 1.0:
                    fused = penalise_repetition(fused, torch.tensor([tokens], device=fused.device), penalty)
                token = int(fused.argmax(-1))
            tokens.append(token)
            if token in eos:
                break
    return tokens


# -- one decode step, batched vs single ---------------------------------------------------------
def decode_step_ratio(backend, streams: torch.Tensor, iters: int = 5) -> dict:
    """Median time of one cached decode step for 3 streams in one batch vs 1 stream, same context."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    out = {}
    with torch.inference_mode():
        full = backend.prefill(streams[:, :-1])  # batch-3 cache
        for batch in (1, 3):
            cache = full if batch == 3 else _crop_batch(full, 1)
            step = streams[:batch, -1:]
            times = []
            for _ in range(iters + 1):
                view = crop_cache(cache, cache.get_seq_length())
                sync()
                t = time.perf_counter()
                backend.decode_step(step, view)
                sync()
                times.append(time.perf_counter() - t)
            out[f"step_{batch}"] = statistics.median(times[1:])
    out["ratio"] = out["step_3"] / out["step_1"]
    return out


def _crop_batch(cache, batch: int):
    return cache_from_tensors((layer.keys[:batch], layer.values[:batch]) for layer in cache.layers)


# -- driver ----------------------------------------------------------------------------------------
def _prepare(args) -> tuple[Path, Path, Path, dict]:
    work = Path(args.workdir)  # built once, reused (and carried as is to a GPU machine)
    size = "tiny" if args.smoke else "small"
    ckpt = work / f"{size}-{args.backend}"
    if not (ckpt / "config.json").exists():
        registry.load_module(registry.get(args.backend)).make_test_checkpoint(ckpt, size=size, seed=0)
    scorer = work / "tiny-llava"
    if not (scorer / "config.json").exists():
        from cos_runtime.tiny_llava import build_tiny_llava

        build_tiny_llava(scorer, seed=0)
    vids = work / ("needle-smoke" if args.smoke else "needle")
    if not (vids / "questions.json").exists():
        from cos.synthetic import make_needle_videos

        frames = max(args.frames)
        make_needle_videos(vids, 1, seed=0, min_frames=max(frames, 64), max_frames=max(frames, 64) * 2,
                           size=64 if args.smoke else 224, progress=False)
    doc = json.loads((vids / "questions.json").read_text())[0]
    return ckpt, scorer, vids, doc


def _median_stages(runs: list[dict]) -> dict:
    out = {stage: statistics.median(r["timings"].get(stage, 0.0) for r in runs) for stage in STAGES}
    out["total"] = statistics.median(r["total"] for r in runs)
    for key in ("peak_rss_mib", "peak_gpu_mib"):
        if key in runs[0]:
            out[key] = statistics.median(r[key] for r in runs)
    out["streams"] = runs[0].get("streams", 1)
    out["new_tokens"] = len(runs[0]["tokens"])
    return out


def run_bench(args) -> dict:
    ckpt, scorer_dir, vids, doc = _prepare(args)
    from cos.device import normalise_device, resolve_dtype

    device = normalise_device(args.device)
    module = registry.load_module(registry.get(args.backend))
    model_options = module.Options(pretrained=str(ckpt), attn_implementation=args.attn_implementation)
    backend = module.load(model_options, device, resolve_dtype(args.dtype, device))

    def sample(path, n):  # exactly n frames, uniformly (a backend with a frame-rate rule is forced to n)
        exact = {"force_sample": True} if hasattr(model_options, "force_sample") else {}
        return module.sample_frames(path, dataclasses.replace(model_options, max_frames_num=n, video_decode_backend="auto", **exact)).frames

    scorer_kwargs = dict(pretrained=str(scorer_dir), mode="generate", device=device)
    if args.scorer == "self":  # LongVA scores its own mosaics; the release-style run keeps the LLaVA scorer
        scorer = get_scorer("self", model=backend, mode="generate")
        args.release_repeats = 0
    else:
        scorer = get_scorer("llava", **scorer_kwargs)  # loaded once, reused by every CoS run
    # The release-style pipeline drives the LM token by token through embed_tokens + forward_logits; the
    # decode-step timing and the shared-prefix figures need a cached prefill (prefill / decode_step). A
    # backend without them (Video-XL: its beacon memory is built inside generate) skips those parts.
    stepwise = all(hasattr(backend, name) for name in ("embed_tokens", "prefill", "decode_step"))
    if not hasattr(backend, "embed_tokens"):
        args.release_repeats = 0
    config = CoSConfig(shot_size=4, share_prefix=args.share_prefix)
    pipe = CoSPipeline(backend, scorer, config)
    options = "\n".join(doc["options"])
    question = f"{doc['question']}\n{options}\nAnswer with the option's letter from the given choices directly."
    # Every pipeline generates exactly --new-tokens tokens: no early stop at EOS (random weights stop
    # at arbitrary steps, and unequal token counts would make the decode stages incomparable).
    gen = GenerationOptions(max_new_tokens=args.new_tokens, stop_at_eos=False)
    video = vids / doc["video"]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else None

    def one(kind: str, n: int) -> dict:
        timer = StageTimer(sync)
        _reset_peak()
        start = time.perf_counter()
        with timer("decode_video"):
            frames = sample(video, n)
        if kind == "release":
            tokens, streams = release_style_answer(backend, scorer_kwargs, frames, question, gen, timer, config), 3
        else:
            trace = pipe.answer(frames, question, method=kind, gen=gen, timer=timer).trace
            tokens, streams = trace.answer_tokens, trace.streams
        total = time.perf_counter() - start
        timings = dict(timer.timings)
        for extra in ("prompt", "splice"):
            timings["compose"] = timings.get("compose", 0.0) + timings.pop(extra, 0.0)
        # an in-LM video memory (Video-XL): what the streams of this answer kept
        memory = backend.memory_report() if kind != "release" and hasattr(backend, "memory_report") else None
        return {"timings": timings, "total": total, "tokens": tokens, "streams": streams, "visual_memory": memory, **_peak()}

    report = {"backend": args.backend, "device": _device_name(device), "dtype": str(backend.dtype).replace("torch.", ""),
              "attn_implementation": args.attn_implementation, "share_prefix": args.share_prefix, "checkpoint": ckpt.name,
              "scorer": f"{args.backend} itself (self, generate mode)" if args.scorer == "self" else "tiny-llava (generate mode)",
              "repeats": args.repeats, "release_repeats": args.release_repeats, "new_tokens": args.new_tokens, "frames": {}}
    for n in args.frames:
        runs = {k: [] for k in PIPELINES}
        for kind in ("uniform", "cos"):
            one(kind, n)  # warm-up
            runs[kind] = [one(kind, n) for _ in range(args.repeats)]
        if args.release_repeats:
            if args.release_repeats > 1:
                one("release", n)  # warm-up only when it is repeated (each run is the slowest by far)
            runs["release"] = [one("release", n) for _ in range(args.release_repeats)]
            same = runs["release"][0]["tokens"] == runs["cos"][0]["tokens"]
            if not same:
                raise AssertionError(f"{n} frames: CoS tokens {runs['cos'][0]['tokens']} != release-style (naive) tokens "
                                     f"{runs['release'][0]['tokens']}: the optimised path computes something else")
        entry = {k: _median_stages(v) for k, v in runs.items() if v}
        frames = sample(video, n)
        with torch.inference_mode():
            feats = backend.encode_frames(backend.preprocess(frames))
            black = backend.encode_frames(backend.preprocess(np.zeros_like(frames[:1])))[0]
            ids = backend.prompt_ids(question)

            def streams_for(code, ids=ids, feats=feats, black=black, n=n):  # bound now: used within this iteration only
                return torch.cat([backend.embed_prompt(ids, gather_features(feats, m, black))
                                  for m in (np.arange(n), positive_map(code), negative_map(code))])

            needle_code = ((np.linspace(0, doc["num_frames"] - 1, n, dtype=int) >= doc["needle_start"])
                           & (np.linspace(0, doc["num_frames"] - 1, n, dtype=int) < doc["needle_end"])).astype(np.int8)
            rng = np.random.default_rng(0)
            random_codes = [np.repeat(rng.random(-(-n // 4)) < 0.3, 4)[:n].astype(np.int8) for _ in range(8)]
            prefix = None
            if stepwise:
                prefix = {"needle": plan_prefill(streams_for(needle_code)).saved_fraction,
                          "random": statistics.mean(plan_prefill(streams_for(c)).saved_fraction for c in random_codes)}
            step = decode_step_ratio(backend, streams_for(needle_code if needle_code.any() else random_codes[0])) if stepwise else None
        ratios = {"cos_over_uniform": entry["cos"]["total"] / entry["uniform"]["total"]}
        if step is not None:
            ratios["batched_step_over_single"] = step["ratio"]
        if "release" in entry:
            ratios["release_over_cos"] = entry["release"]["total"] / entry["cos"]["total"]
        for key in ("peak_rss_mib", "peak_gpu_mib"):
            if key in entry["cos"]:
                ratios[f"cos_{key.replace('_mib', '')}_over_uniform"] = entry["cos"][key] / entry["uniform"][key]
        if runs["cos"][0]["visual_memory"] is not None:
            entry["visual_memory"] = runs["cos"][0]["visual_memory"]
        entry.update(ratios=ratios, decode_step=step, prefix_saved_fraction=prefix,
                     tokens_equal_release=(runs["release"][0]["tokens"] == runs["cos"][0]["tokens"]) if runs["release"] else None)
        report["frames"][str(n)] = entry
        if args.profile:
            _profile(pipe, sample(video, n), question, gen, Path(args.workdir) / f"profile_cos_{n}.json")
    return report


def _profile(pipe, frames, question, gen, out: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, record_shapes=False) as prof:
        pipe.answer(frames, question, method="cos", gen=gen)
    prof.export_chrome_trace(str(out))
    print(f"profiler trace: {out}")


def _device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_report(report: dict) -> str:
    lines = []
    for n, entry in report["frames"].items():
        present = [k for k in PIPELINES if k in entry]
        lines.append(f"\n{n} frames — {report['checkpoint']}, {report['scorer']}, {report['device']}, {report['dtype']}, "
                     f"{report['attn_implementation']}, share_prefix={report['share_prefix']}; median of {report['repeats']} after a warm-up "
                     f"(release-style: {report['release_repeats']}); {report['new_tokens']} new tokens")
        lines.append(f"{'stage':14s}" + "".join(f"{k:>20s}" for k in present))
        for stage in STAGES:
            cells = []
            for k in present:
                t, total = entry[k][stage], entry[k]["total"]
                cells.append(f"{t:9.3f}s ({100 * t / total:4.1f}%)")
            lines.append(f"{stage:14s}" + "".join(f"{c:>20s}" for c in cells))
        lines.append(f"{'prefill/stream':14s}" + "".join(f"{entry[k]['prefill'] / entry[k]['streams']:19.3f}s" for k in present))
        lines.append(f"{'total':14s}" + "".join(f"{entry[k]['total']:19.3f}s" for k in present))
        for key, label in (("peak_rss_mib", "peak RSS"), ("peak_gpu_mib", "peak GPU mem")):
            if key in entry["uniform"]:
                lines.append(f"{label:14s}" + "".join(f"{entry[k][key]:16.0f} MiB" for k in present))
        r = entry["ratios"]
        lines.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
        p = entry["prefix_saved_fraction"]
        same = "" if entry["tokens_equal_release"] is None else f"; CoS tokens == release-style tokens: {entry['tokens_equal_release']}"
        if p is not None:
            lines.append(f"shared-prefix prefill saves {100 * p['needle']:.0f}% of prefill tokens on the needle video's true code, "
                         f"{100 * p['random']:.0f}% on random codes" + same)
        if entry.get("visual_memory"):
            m = entry["visual_memory"]
            lines.append(f"beacon memory (last CoS answer): {m['batch']} stream(s), each compressing its own video ({m['visual_tokens']} visual "
                         f"tokens -> {m['beacons']} beacons at ratio {m['beacon_ratio']}, windows of {m['beacon_window']}; nothing shared)" + same)
    return "\n".join(lines)


def plot_report(report: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(report["frames"])
    fig, axes = plt.subplots(1, len(counts), figsize=(5 * len(counts), 4), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, n in zip(axes[0], counts):
        entry = report["frames"][n]
        present = [k for k in PIPELINES if k in entry]
        bottom = np.zeros(len(present))
        for i, stage in enumerate(STAGES):
            values = np.array([entry[k][stage] for k in present])
            ax.bar(present, values, bottom=bottom, color=colours[i % 10], label=stage)
            bottom += values
        ax.set_title(f"{n} frames")
        ax.set_ylabel("seconds per video")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"time per stage — {report['checkpoint']} LongVA on {report['device']}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def bench_command(args) -> int:
    if args.smoke:
        args.frames = args.frames_given or [8, 16]
        args.new_tokens = min(args.new_tokens, 4)
    else:
        args.frames = args.frames_given or [32, 128]
    args.release_repeats = args.repeats if args.release_repeats is None else args.release_repeats
    report = run_bench(args)
    print(format_report(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"\nJSON: {args.out}")
    if args.plot:
        print(f"plot: {plot_report(report, Path(args.plot))}")
    return 0


def _frames(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(text)
    return values


def add_parser(subparsers):
    p = subparsers.add_parser("bench", help="stage-by-stage cost of CoS vs the uniform baseline vs a release-style pipeline",
                              allow_abbrev=False)
    p.add_argument("--frames", dest="frames_given", type=_frames, default=None, help="comma-separated frame counts (default 32,128)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per pipeline after one warm-up (median reported)")
    p.add_argument("--release-repeats", type=int, default=None, help="runs of the (slow) release-style pipeline (default: --repeats; 0 skips it)")
    p.add_argument("--new-tokens", type=int, default=8, help="new tokens per answer (same for every pipeline)")
    p.add_argument("--backend", choices=registry.names(), default="longva", help="base model (default longva)")
    p.add_argument("--smoke", action="store_true", help="tiny checkpoint, 8/16 frames, a few tokens: seconds")
    p.add_argument("--workdir", default=".cache/bench", help="where checkpoints and the video are built (reused)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto", help="auto: fp32 on CPU, bf16/fp16 on GPU")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--scorer", default="llava", choices=["llava", "self"], help="CoS scorer (self: no release-style run)")
    p.add_argument("--share-prefix", default="auto", choices=["auto", "always", "never"], help="CoS prefill strategy (cos.pipeline.CoSConfig)")
    p.add_argument("--out", default=None, help="write the report as JSON")
    p.add_argument("--plot", nargs="?", const="assets/bench.png", default=None, help="write a PNG of time per stage (default assets/bench.png)")
    p.add_argument("--profile", action="store_true", help="also dump a torch profiler trace of one CoS run per frame count")
    p.set_defaults(func=bench_command)
    return p
