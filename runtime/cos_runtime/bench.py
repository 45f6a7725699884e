"""``cos bench``: stage-by-stage cost of CoS against the uniform baseline and a release-style pipeline.

Any registered backend (``--backend``, default ``longva``), at ``--size``: ``small`` (the default: the real
token geometry, 4 layers × 256), ``tiny`` (``--smoke``), or ``full`` (the 7B model's exact shapes with random
weights drawn directly on the GPU in bf16/fp16, and a scorer with LLaVA-1.5-13B's shapes; GPU only). Three
pipelines answer the same question about the same synthetic needle video, in one process:

* ``uniform`` — the base model with uniformly sampled frames (the baseline);
* ``cos`` — Chain-of-Shot as implemented here: frames decoded and encoded once, the LLaVA scorer loaded
  once and reused, X/Sp/Sn prefilled with shared prefixes, one batched 3-stream forward per token;
* ``release`` — the same parts with the original release's costs: the scorer constructed for every
  sample, generate-mode scoring, and three separate uncached full forwards per generated token.

``cos`` and ``release`` use the same scorer mode (generate), so they see the same binary code, and the
bench asserts they produce the same tokens: a speed-up can never come from computing something else.
Timings are medians over ``--repeats`` runs after one warm-up run. Only ratios mean something on a CPU.

Per frame count the report also gives the **floor** of exact co-reasoning — what no implementation can skip:
the baseline's video decoding, preprocessing and encoding, the scorer pass, three prefills (3 × the
baseline's) and the 3-stream decode — and ``cos_over_floor``; prefill and decode tokens per second; and, with
``--scorer-profile``, the scorer's cost per video by batch size, mode (generate / logits) and precision.

**Frame selectors** (``--selector aks|bolt|qframe``, after the pipelines, or alone with ``--selector-only``): what
choosing the frames costs per minute of video. A synthetic H.264 video of ``--selector-seconds`` (default 60) at
30 fps, 640×360 (a drifting texture whose brightness changes every frame, plus moving tiles of fresh noise; x264
``veryfast``, its default GOP of 250 frames, so one candidate per second means decoding nearly every frame; built
once in ``--workdir``) goes through :class:`cos.selector.FrameSelector` with ``candidate_fps=1`` and no score cache,
for each ``--frames`` count: candidates, decoding, scoring (the text–image model), the rule and the total (medians
over ``--repeats`` after one warm-up run), the same per minute of video, candidates per second, peak memory. The
scoring model has the released model's shapes with random weights at ``--size small`` / ``full``
(:func:`cos_runtime.tiny_text_image.build_text_image_shapes`: CLIP ViT-L/14 for BOLT, CLIP ViT-L/14-336 for
Q-Frame, BLIP ITM large for AKS; float32 on a CPU, float16 on a GPU), the tiny checkpoint at ``--size tiny``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cos.compose import gather_features, negative_map, positive_map
from cos.decoding import penalise_repetition
from cos.pipeline import CoSConfig, CoSPipeline, GenerationOptions
from cos.prefix import cache_from_tensors, crop_cache, plan_prefill
from cos.scoring import LlavaScorer, ShotScorer, ShotScores, get_scorer
from cos.selector import DEFAULT_MODELS
from cos.shots import shot_groups
from cos.trace import StageTimer
from cos_runtime import registry

STAGES = ("decode_video", "preprocess", "encode", "mosaics", "score", "compose", "prefill", "decode")
PIPELINES = ("uniform", "cos", "release")
#: checkpoint sizes: tiny (--smoke), small (real token geometry), full (the 7B model's shapes, random weights on a GPU)
SIZES = ("tiny", "small", "full")
#: scorer batch sizes tried by --scorer-profile
PROFILE_BATCHES = (1, 4, 8, 16, 32)
#: --selector: the text-image model each selector scores with at --size small/full: (kind, image side, the released checkpoint)
SELECTOR_MODELS = {name: (kind, side, DEFAULT_MODELS[name].split("/")[-1])  # each selector's default model (cos.selector)
                   for name, kind, side in (("aks", "blip", 384), ("bolt", "clip", 224), ("qframe", "clip", 336))}
#: the selector bench's synthetic video: frame rate, size and x264 settings (its default GOP, 250 frames)
SELECTOR_VIDEO = {"fps": 30, "width": 640, "height": 360, "preset": "veryfast", "crf": 26}
#: the question the selector bench scores the candidates against (its question line is the query)
SELECTOR_QUESTION = ("Which colour is the shape that appears in the middle of the video?\nA. red\nB. green\nC. blue\nD. yellow\n"
                     "Answer with the option's letter from the given choices directly.")


# -- memory ------------------------------------------------------------------------------------
def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:  # Linux: writing 5 resets this process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _resident() -> dict:
    """GPU memory held before a run starts (the weights of everything loaded): what its peak is measured above."""
    return {"resident_gpu_mib": torch.cuda.memory_allocated() / 2**20} if torch.cuda.is_available() else {}


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
def release_style_answer(backend, make_scorer, frames: np.ndarray, question: str, gen: GenerationOptions,
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
        scorer = make_scorer()  # the release built the 13B scorer inside generate_until
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


# -- the code the bench composes with ------------------------------------------------------------
def needle_code(doc: dict, n: int, shot_size: int) -> np.ndarray:
    """Per sampled frame (``linspace(0, total - 1, n)``), 1 where the needle shows. When no sampled frame hits it,
    the shot holding the frame nearest the needle's middle is marked, so the code is never all zero."""
    idx = np.linspace(0, doc["num_frames"] - 1, n, dtype=int)
    code = ((idx >= doc["needle_start"]) & (idx < doc["needle_end"])).astype(np.int8)
    if not code.any():
        nearest = int(np.abs(idx - (doc["needle_start"] + doc["needle_end"]) / 2).argmin())
        start = nearest // shot_size * shot_size
        code[start : start + shot_size] = 1
    return code


class GroundTruthDecisions(ShotScorer):
    """Runs ``inner`` (its whole cost is timed) and then decides by the needle's ground truth: a mosaic is relevant
    when one of its frames shows the needle (``code``, set per frame count). A scorer with random weights answers
    all-no (or all-yes), which makes Sp = Sn and CoS the baseline; with the true code CoS always runs its three
    streams, and the release-style pipeline sees the same code. ``--decisions scorer`` keeps the scorer's own."""

    def __init__(self, inner: ShotScorer, shot_size: int, leftover: str):
        self.inner, self.shot_size, self.leftover = inner, shot_size, leftover
        self.name = getattr(inner, "name", "scorer")
        self.code: np.ndarray | None = None

    def score(self, mosaics: list, question: str) -> ShotScores:
        real = self.inner.score(mosaics, question)
        groups = shot_groups(len(self.code), self.shot_size, self.leftover)
        if len(groups) != len(mosaics):
            raise ValueError(f"{len(mosaics)} mosaics but the code has {len(groups)} shots")
        decisions = [int(self.code[g].any()) for g in groups]
        return ShotScores(scores=decisions, decisions=decisions, responses=real.responses)


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
def bench_checkpoints(work: Path, backend: str, size: str) -> tuple[Path, Path]:
    """The backend's random test checkpoint of ``size`` (``full``: config + tokenizer only, the weights are drawn on
    the device) and the tiny LLaVA scorer, under ``work``; built once, then reused."""
    ckpt = work / f"{size}-{backend}"
    if not (ckpt / "config.json").exists():
        registry.load_module(registry.get(backend)).make_test_checkpoint(ckpt, size=size, seed=0)
    scorer = work / "tiny-llava"
    if not (scorer / "config.json").exists():
        from cos_runtime.tiny_llava import build_tiny_llava

        build_tiny_llava(scorer, seed=0)
    return ckpt, scorer


def _prepare(args) -> tuple[Path, Path, Path, dict]:
    work = Path(args.workdir)  # built once, reused (and carried as is to a GPU machine)
    size = args.size
    ckpt, scorer = bench_checkpoints(work, args.backend, size)
    vids = work / ("needle-smoke" if size == "tiny" else "needle")
    if not (vids / "questions.json").exists():
        from cos.synthetic import make_needle_videos

        frames = max(args.frames)
        make_needle_videos(vids, 1, seed=0, min_frames=max(frames, 64), max_frames=max(frames, 64) * 2,
                           size=64 if size == "tiny" else 224, progress=False)
    doc = json.loads((vids / "questions.json").read_text())[0]
    return ckpt, scorer, vids, doc


def _median_stages(runs: list[dict]) -> dict:
    out = {stage: statistics.median(r["timings"].get(stage, 0.0) for r in runs) for stage in STAGES}
    out["total"] = statistics.median(r["total"] for r in runs)
    for key in ("peak_rss_mib", "peak_gpu_mib", "resident_gpu_mib"):
        if key in runs[0]:
            out[key] = statistics.median(r[key] for r in runs)
    out["streams"] = runs[0].get("streams", 1)
    out["new_tokens"] = len(runs[0]["tokens"])
    out["sequence_length"] = runs[0].get("sequence_length")
    return out


def floor_and_rates(entry: dict) -> dict:
    """The floor of exact co-reasoning from the measured stages (seconds) and tokens per second.

    floor = the baseline's video decoding + preprocessing + encoding, the scorer pass (mosaics + score),
    one baseline prefill per stream (3 when co-reasoning ran, 1 when nothing was relevant and CoS ran the
    baseline), and CoS's own batched decode. Prefill tokens/s: prompt tokens per second of prefill stage (the
    stage runs to the first new token); decode tokens/s: the new tokens after the first, per second of decode.
    """
    uni, cos = entry["uniform"], entry["cos"]
    floor = {"video": uni["decode_video"] + uni["preprocess"] + uni["encode"], "scorer": cos["mosaics"] + cos["score"],
             "prefills": cos["streams"] * uni["prefill"], "decode": cos["decode"]}
    floor["total"] = sum(floor.values())
    rates = {}
    for kind in ("uniform", "cos", "release"):
        e = entry.get(kind)
        if e is None:
            continue
        length = e.get("sequence_length") or uni.get("sequence_length")
        if length and e["prefill"] > 0:
            rates[f"{kind}_prefill_tokens_per_s"] = e["streams"] * length / e["prefill"]
        if e["new_tokens"] > 1 and e["decode"] > 0:
            rates[f"{kind}_decode_tokens_per_s"] = (e["new_tokens"] - 1) / e["decode"]
    return {"floor": floor, "throughput": rates}


def scorer_factory(args, scorer_dir: Path | None, device: str):
    """A zero-argument callable building the LLaVA scorer the bench uses (generate mode, as the release): the tiny
    checkpoint from disk, or at ``--size full`` LLaVA-1.5-13B's shapes with random weights on the device (fp16)."""
    if args.size == "full":
        from cos_runtime.tiny_llava import build_full_llava_scorer

        return lambda: build_full_llava_scorer(device, torch.float16, mode="generate", batch_size=args.scorer_batch_size,
                                               load_in_4bit=args.scorer_4bit)
    return lambda: LlavaScorer(pretrained=str(scorer_dir), mode="generate", device=device, batch_size=args.scorer_batch_size,
                               load_in_4bit=args.scorer_4bit)


def four_bit_available() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def scorer_profile(args, scorer, scorer_dir: Path | None, device: str, frames: np.ndarray, question: str, config: CoSConfig) -> list[dict]:
    """Seconds to score one video's mosaics, per precision (``scorer``, the one already loaded; then 4-bit when
    bitsandbytes and a GPU are there and ``scorer`` is not 4-bit already), mode (generate: 5 greedy tokens; logits:
    one forward) and batch size. Every mosaic gets the same prompt, so a batch is never padded. Median of 2 after
    a warm-up. ``scorer`` is left as it was found."""
    from cos.shots import make_mosaics

    mosaics, _ = make_mosaics(frames, config.shot_size, config.leftover)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    candidates = [(scorer, "4-bit" if args.scorer_4bit else str(scorer.dtype).replace("torch.", ""))]
    if four_bit_available() and not args.scorer_4bit:
        candidates.append((None, "4-bit"))
    rows = []
    for candidate, precision in candidates:
        if candidate is None:  # built only now, and dropped after its rows
            candidate = scorer_factory(_with(args, scorer_4bit=True), scorer_dir, device)()
        saved = candidate.mode, candidate.batch_size
        for mode in ("generate", "logits"):
            for batch in PROFILE_BATCHES:
                candidate.mode, candidate.batch_size = mode, batch
                _reset_peak()
                candidate.score(mosaics, question)  # warm-up
                times = []
                for _ in range(2):
                    sync()
                    start = time.perf_counter()
                    candidate.score(mosaics, question)
                    sync()
                    times.append(time.perf_counter() - start)
                rows.append({"precision": precision, "mode": mode, "batch": batch, "mosaics": len(mosaics),
                             "seconds": statistics.median(times), **_peak()})
        candidate.mode, candidate.batch_size = saved
        del candidate
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def _with(args, **changes):
    import argparse

    return argparse.Namespace(**{**vars(args), **changes})


# -- frame selectors ---------------------------------------------------------------------------------
def _selector_frames(count: int, width: int, height: int, fps: int, seed: int):
    """``count`` RGB frames, each unlike the one before: a smooth texture drifting along a closed path (20 s), one
    brightness level brighter per frame (wrapping at 256), under four 64-px tiles of coarse noise (8-px cells) drawn
    afresh every frame from a seeded bank, moving on their own paths."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : 3 * height, 0 : 3 * width].astype(np.float32)
    texture = np.stack([127 + 120 * np.sin(2 * np.pi * (x / 310 + y / 470)), 127 + 120 * np.sin(2 * np.pi * (x / 190 - y / 260)),
                        127 + 120 * np.cos(2 * np.pi * (x / 520 + y / 150))], axis=-1).astype(np.uint8)
    side, cell = 64, 8
    bank = rng.integers(0, 256, (64, side // cell, side // cell, 3), dtype=np.uint8).repeat(cell, axis=1).repeat(cell, axis=2)
    for t in range(count):
        a = 2 * np.pi * t / (20 * fps)
        dy, dx = int(height * (1 + np.sin(a))), int(width * (1 + np.sin(0.7 * a)))
        frame = texture[dy : dy + height, dx : dx + width] + np.uint8(t % 256)  # a new array; uint8 wraps
        for k in range(4):
            b = 2 * np.pi * (t / ((3 + k) * fps) + k / 4)
            cy, cx = int((height - side) / 2 * (1 + np.sin(b))), int((width - side) / 2 * (1 + np.cos(1.3 * b)))
            frame[cy : cy + side, cx : cx + side] = bank[rng.integers(len(bank))]
        yield frame


def selector_video(work: Path, seconds: float, seed: int = 0) -> Path:
    """The selector bench's video of ``seconds`` under ``work`` (:data:`SELECTOR_VIDEO`: 30 fps, 640×360), built once: a
    real H.264 mp4 (libx264 ``veryfast``, CRF 26, yuv420p, x264's default GOP of 250 frames, B-frames, CABAC) of
    :func:`_selector_frames`, about 10 MB a minute, so decoding costs about what a real video of that size does."""
    from cos.synthetic import write_mp4

    v = SELECTOR_VIDEO
    count = int(round(seconds * v["fps"]))
    if count < 1:
        raise ValueError(f"--selector-seconds {seconds}: expected at least one frame's worth")
    path = Path(work) / f"selector-{seconds:g}s-{v['width']}x{v['height']}-{v['fps']}fps.mp4"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(path, _selector_frames(count, v["width"], v["height"], v["fps"], seed), v["width"], v["height"], v["fps"],
                     options={"preset": v["preset"], "crf": str(v["crf"])}, threads=0)  # every core: building it is not measured


def selector_checkpoint(work: Path, selector: str, size: str, device=None) -> Path:
    """The text-image checkpoint ``selector`` scores with in the bench, under ``work``, built once: at ``tiny`` the tiny
    random one of its kind (:func:`~cos_runtime.tiny_text_image.build_tiny_text_image`), else the released model's shapes
    (:data:`SELECTOR_MODELS`) with random weights drawn on ``device`` and saved in float16 (about 0.9 GB)."""
    import os
    import shutil

    from cos_runtime.tiny_text_image import build_text_image_shapes, build_tiny_text_image

    kind, side, name = SELECTOR_MODELS[selector]
    ckpt = Path(work) / (f"tiny-text-image-{kind}" if size == "tiny" else f"shapes-{name}")
    if (ckpt / "model.safetensors").exists():
        return ckpt
    tmp = ckpt.with_name(ckpt.name + ".part")  # renamed when complete: an interrupted build is never taken for one
    shutil.rmtree(tmp, ignore_errors=True)
    if size == "tiny":
        build_tiny_text_image(tmp, kind, seed=0)
    else:
        build_text_image_shapes(tmp, kind, image_size=side, seed=0, device=device)
    shutil.rmtree(ckpt, ignore_errors=True)
    os.replace(tmp, ckpt)
    return ckpt


def describe_text_image(model) -> str:
    """A :class:`cos.text_image.TextImageModel`'s shapes in words (from its config)."""
    cfg = model.model.config
    v, t = cfg.vision_config, cfg.text_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    params = sum(p.numel() for p in model.model.parameters())
    text = "text (attending to the image)" if model.kind == "blip" else "text"
    return (f"vision {v.hidden_size} wide x {v.num_hidden_layers} layers, {v.num_attention_heads} heads, "
            f"MLP {v.intermediate_size}, {v.image_size} px / patch {v.patch_size} ({tokens} tokens); {text} {t.hidden_size} wide x "
            f"{t.num_hidden_layers} layers, {t.num_attention_heads} heads, vocab {t.vocab_size}; {params / 1e6:,.1f}M parameters in "
            f"{str(model.dtype).replace('torch.', '')}")


def selector_bench(args, device) -> dict:
    """``--selector``: one :class:`cos.selector.FrameSelector` (``candidate_fps=1``, no score cache) on the synthetic video
    of ``--selector-seconds``, for each ``--frames`` count: stage seconds (medians over ``--repeats`` after one
    warm-up run), the same per minute of video, candidates per second, peak memory. A frame count above the number of
    candidates is skipped (the selector would fall back to the backend's sampling and score nothing)."""
    from cos.selector import FrameSelector, SelectorConfig

    work = Path(args.workdir)
    seconds = float(args.selector_seconds)
    video = selector_video(work, seconds)
    ckpt = selector_checkpoint(work, args.selector, args.size, device)
    kind, _, name = SELECTOR_MODELS[args.selector]
    start = time.perf_counter()
    selector = FrameSelector(SelectorConfig(selector=args.selector, selector_model=str(ckpt), candidate_fps=1.0), device=device,
                             dtype=None if args.dtype == "auto" else args.dtype, cache=None)
    load = time.perf_counter() - start

    def one(n: int) -> dict:
        _reset_peak()
        resident = _resident()
        start = time.perf_counter()
        out = selector.select(video, SELECTOR_QUESTION, n)
        return {"out": out, "total": time.perf_counter() - start, **resident, **_peak()}

    warm = one(min(args.frames))
    first = warm["out"]
    report = {"selector": args.selector, "model": f"tiny random {kind}" if args.size == "tiny" else f"random {name} shapes",
              "checkpoint": ckpt.name, "shapes": describe_text_image(selector.model), "score_kind": selector.model.score_kind,
              "device": _device_name(device), "dtype": str(selector.model.dtype).replace("torch.", ""),
              "video": {**SELECTOR_VIDEO, "seconds": seconds, "frames": first.total_frames, "mib": video.stat().st_size / 2**20,
                        "file": video.name, "decoder": first.decoder},
              "candidate_fps": selector.config.candidate_fps, "batch_size": selector.config.selector_batch_size, "query": first.query,
              "repeats": args.repeats, "load_s": load, "warmup_s": warm["total"], "frames": {}}
    per_min = 60.0 / seconds
    for n in args.frames:
        candidates = len(first.candidates)
        if n > candidates:
            why = f"{n} frames > {candidates} candidates (the selector would fall back to the backend's sampling and score nothing)"
            report["frames"][str(n)] = {"candidates": candidates, "skipped": why}
            continue
        runs = [one(n) for _ in range(args.repeats)]

        def median(key: str, runs=runs) -> float:
            return statistics.median(r["out"].timings.get(key, 0.0) for r in runs)

        entry = {"candidates": len(runs[0]["out"].candidates), "decode_s": median("select_decode"), "score_s": median("select_score"),
                 "rule_s": median("select_rule"), "total_s": statistics.median(r["total"] for r in runs)}
        entry.update({f"{k}_per_min": entry[k] * per_min for k in ("decode_s", "score_s", "total_s")})
        entry["candidates_per_s"] = entry["candidates"] / entry["total_s"]
        for key in ("peak_rss_mib", "peak_gpu_mib", "resident_gpu_mib"):
            if key in runs[0]:
                entry[key] = statistics.median(r[key] for r in runs)
        entry["fallback"] = runs[0]["out"].fallback
        report["frames"][str(n)] = entry
    return report


def format_selector(sel: dict) -> list[str]:
    """The text report's section of ``--selector``."""
    v = sel["video"]
    lines = [f"\nselector {sel['selector']} — {sel['model']} ({sel['shapes']}) on {sel['device']}; score {sel['score_kind']}, "
             f"batch {sel['batch_size']}",
             f"video {v['seconds']:g} s at {v['fps']} fps, {v['width']}x{v['height']} H.264 ({v['mib']:.1f} MiB, decoder {v['decoder']}), "
             f"{sel['candidate_fps']:g} candidate/s; median of {sel['repeats']} after a warm-up ({sel['warmup_s']:.2f} s); "
             f"model load {sel['load_s']:.2f} s",
             f"{'frames':>7s}{'cands':>7s}{'decode s':>10s}{'score s':>10s}{'rule s':>9s}{'total s':>10s}   per min of video:"
             f"{'decode':>8s}{'score':>9s}{'total':>9s}{'cands/s':>9s}  peak"]
    for n, e in sel["frames"].items():
        if "skipped" in e:
            lines.append(f"{n:>7s}{e['candidates']:7d}  skipped: {e['skipped']}")
            continue
        peak = ", ".join(f"{label} {e[key]:.0f} MiB" for key, label in (("peak_rss_mib", "RSS"), ("peak_gpu_mib", "GPU")) if key in e)
        lines.append(f"{n:>7s}{e['candidates']:7d}{e['decode_s']:10.3f}{e['score_s']:10.3f}{e['rule_s']:9.4f}{e['total_s']:10.3f}"
                     f"{'':20s}{e['decode_s_per_min']:8.2f}{e['score_s_per_min']:9.2f}{e['total_s_per_min']:9.2f}"
                     f"{e['candidates_per_s']:9.1f}  {peak}" + (f"  (fallback: {e['fallback']})" if e.get("fallback") else ""))
    return lines


def run_bench(args) -> dict:
    ckpt, scorer_dir, vids, doc = _prepare(args)
    from cos.device import normalise_device, resolve_dtype

    device = normalise_device(args.device)
    module = registry.load_module(registry.get(args.backend))
    model_options = module.Options(pretrained=str(ckpt), attn_implementation=args.attn_implementation)
    full = args.size == "full"
    backend = module.load(model_options, device, resolve_dtype(args.dtype, device), random_weights=0 if full else None)

    def sample(path, n):  # exactly n frames, uniformly (a backend with a frame-rate rule is forced to n)
        exact = {"force_sample": True} if hasattr(model_options, "force_sample") else {}
        return module.sample_frames(path, dataclasses.replace(model_options, max_frames_num=n, video_decode_backend="auto", **exact)).frames

    make_scorer = scorer_factory(args, scorer_dir, device)
    scorer_mib, raw_scorer = 0.0, None
    if args.scorer == "self":  # LongVA scores its own mosaics; the release-style run keeps the LLaVA scorer
        scorer = get_scorer("self", model=backend, mode="generate")
        args.release_repeats = 0
    else:
        scorer = raw_scorer = make_scorer()  # loaded once, reused by every CoS run
        scorer_mib = sum(p.numel() * p.element_size() for p in scorer.model.parameters()) / 2**20
    # The release-style pipeline drives the LM token by token through embed_tokens + forward_logits; the
    # decode-step timing and the shared-prefix figures need a cached prefill (prefill / decode_step). A
    # backend without them (Video-XL: its beacon memory is built inside generate) skips those parts.
    stepwise = all(hasattr(backend, name) for name in ("embed_tokens", "prefill", "decode_step"))
    if not hasattr(backend, "embed_tokens"):
        args.release_repeats = 0
    config = CoSConfig(shot_size=4, share_prefix=args.share_prefix)
    truth = None
    if args.decisions == "truth":
        truth = GroundTruthDecisions(scorer, config.shot_size, config.leftover)
        scorer_for_release = make_scorer

        def make_scorer():  # the release-style run: a new scorer per sample, the same ground-truth code
            wrapped = GroundTruthDecisions(scorer_for_release(), config.shot_size, config.leftover)
            wrapped.code = truth.code
            return wrapped

        scorer = truth
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
        resident = _resident()
        start = time.perf_counter()
        with timer("decode_video"):
            frames = sample(video, n)
        if kind == "release":
            tokens, streams = release_style_answer(backend, make_scorer, frames, question, gen, timer, config), 3
            length = None
        else:
            trace = pipe.answer(frames, question, method=kind, gen=gen, timer=timer).trace
            tokens, streams, length = trace.answer_tokens, trace.streams, trace.sequence_length
        total = time.perf_counter() - start
        timings = dict(timer.timings)
        for extra in ("prompt", "splice"):
            timings["compose"] = timings.get("compose", 0.0) + timings.pop(extra, 0.0)
        # an in-LM video memory (Video-XL): what the streams of this answer kept
        memory = backend.memory_report() if kind != "release" and hasattr(backend, "memory_report") else None
        return {"timings": timings, "total": total, "tokens": tokens, "streams": streams, "sequence_length": length,
                "visual_memory": memory, **resident, **_peak()}

    report = {"backend": args.backend, "device": _device_name(device), "dtype": str(backend.dtype).replace("torch.", ""),
              "attn_implementation": args.attn_implementation, "share_prefix": args.share_prefix, "checkpoint": ckpt.name,
              "size": args.size, "date": time.strftime("%Y-%m-%d"),
              "parameters": sum(p.numel() for p in backend.model.parameters()), "scorer_weights_mib": scorer_mib,
              "scorer": f"{args.backend} itself (self, generate mode)" if args.scorer == "self"
              else f"{'random llava-1.5-13b shapes' if full else 'tiny-llava'}{' (4-bit)' if args.scorer_4bit else ''} (generate mode, "
                   f"batch {args.scorer_batch_size})",
              "repeats": args.repeats, "release_repeats": args.release_repeats, "new_tokens": args.new_tokens, "frames": {}}
    for n in args.frames:
        if truth is not None:
            truth.code = needle_code(doc, n, config.shot_size)
        runs = {k: [] for k in PIPELINES}
        for kind in ("uniform", "cos"):
            one(kind, n)  # warm-up
            runs[kind] = [one(kind, n) for _ in range(args.repeats)]
        if args.release_repeats:
            if args.release_repeats > 1:
                one("release", n)  # warm-up only when it is repeated (each run is the slowest by far)
            runs["release"] = [one("release", n) for _ in range(args.release_repeats)]
            same = runs["release"][0]["tokens"] == runs["cos"][0]["tokens"]
            if not same and backend.dtype == torch.float32:
                raise AssertionError(f"{n} frames: CoS tokens {runs['cos'][0]['tokens']} != release-style (naive) tokens "
                                     f"{runs['release'][0]['tokens']}: the optimised path computes something else")
            if not same:  # bf16/fp16: a cached and an uncached forward may round a near-tie either way; reported
                print(f"warning: {n} frames: CoS tokens {runs['cos'][0]['tokens']} != release-style tokens {runs['release'][0]['tokens']} "
                      f"in {backend.dtype} (near-tie rounding of cached vs uncached forwards; exact in float32)", file=sys.stderr)
        entry = {k: _median_stages(v) for k, v in runs.items() if v}
        frames = sample(video, n)
        with torch.inference_mode():
            feats = backend.encode_frames(backend.preprocess(frames))
            black = backend.encode_frames(backend.preprocess(np.zeros_like(frames[:1])))[0]
            ids = backend.prompt_ids(question)

            def streams_for(code, ids=ids, feats=feats, black=black, n=n):  # bound now: used within this iteration only
                return torch.cat([backend.embed_prompt(ids, gather_features(feats, m, black))
                                  for m in (np.arange(n), positive_map(code), negative_map(code))])

            true_code = needle_code(doc, n, config.shot_size)
            rng = np.random.default_rng(0)
            random_codes = [np.repeat(rng.random(-(-n // 4)) < 0.3, 4)[:n].astype(np.int8) for _ in range(8)]
            prefix = None
            if stepwise:
                prefix = {"needle": plan_prefill(streams_for(true_code)).saved_fraction,
                          "random": statistics.mean(plan_prefill(streams_for(c)).saved_fraction for c in random_codes)}
            step = decode_step_ratio(backend, streams_for(true_code)) if stepwise else None
        ratios = {"cos_over_uniform": entry["cos"]["total"] / entry["uniform"]["total"]}
        if step is not None:
            ratios["batched_step_over_single"] = step["ratio"]
        if "release" in entry:
            ratios["release_over_cos"] = entry["release"]["total"] / entry["cos"]["total"]
        for key in ("peak_rss_mib", "peak_gpu_mib"):
            if key in entry["cos"]:
                ratios[f"cos_{key.replace('_mib', '')}_over_uniform"] = entry["cos"][key] / entry["uniform"][key]
        if "peak_gpu_mib" in entry["cos"]:  # the same process holds the scorer during the uniform runs too
            uni, cos = entry["uniform"], entry["cos"]
            # a baseline process holds no scorer: CoS's peak against the baseline's without the scorer's weights
            ratios["cos_peak_gpu_over_uniform_process"] = cos["peak_gpu_mib"] / max(uni["peak_gpu_mib"] - scorer_mib, 1e-9)
            # the working memory (activations, caches, frames) above the weights
            ratios["cos_working_gpu_over_uniform"] = ((cos["peak_gpu_mib"] - cos["resident_gpu_mib"])
                                                      / max(uni["peak_gpu_mib"] - uni["resident_gpu_mib"], 1e-9))
        entry.update(floor_and_rates(entry))
        ratios["cos_over_floor"] = entry["cos"]["total"] / entry["floor"]["total"]
        if runs["cos"][0]["visual_memory"] is not None:
            entry["visual_memory"] = runs["cos"][0]["visual_memory"]
        entry.update(ratios=ratios, decode_step=step, prefix_saved_fraction=prefix,
                     tokens_equal_release=(runs["release"][0]["tokens"] == runs["cos"][0]["tokens"]) if runs["release"] else None)
        report["frames"][str(n)] = entry
        _write(report, args.out)  # what is measured so far survives a later step that runs out of time
        if args.scorer_profile and args.scorer != "self":
            entry["scorer_profile"] = scorer_profile(args, raw_scorer, scorer_dir, device, sample(video, n), question, config)
            _write(report, args.out)
        if args.profile:
            _profile(pipe, sample(video, n), question, gen, Path(args.workdir) / f"profile_cos_{n}.json")
    return report


def _write(report: dict, out) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1))


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
        for key, label in (("peak_rss_mib", "peak RSS"), ("peak_gpu_mib", "peak GPU mem"), ("resident_gpu_mib", "GPU at start")):
            if key in entry["uniform"]:
                lines.append(f"{label:14s}" + "".join(f"{entry[k][key]:16.0f} MiB" for k in present))
        f = entry["floor"]
        lines.append(f"floor (unavoidable): {f['total']:.3f}s = video {f['video']:.3f} + scorer {f['scorer']:.3f} + "
                     f"{entry['cos']['streams']} prefills {f['prefills']:.3f} + 3-stream decode {f['decode']:.3f}; "
                     f"prompt {entry['uniform']['sequence_length']} tokens")
        if entry["throughput"]:
            lines.append("tokens/s: " + ", ".join(f"{k.replace('_tokens_per_s', '')} {v:,.0f}" for k, v in entry["throughput"].items()))
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
        if entry.get("scorer_profile"):
            rows = entry["scorer_profile"]
            lines.append(f"scorer, {rows[0]['mosaics']} mosaics per video (seconds; median of 2 after a warm-up; no padding: one prompt):")
            for precision in dict.fromkeys(r["precision"] for r in rows):
                for mode in ("generate", "logits"):
                    cells = [f"b{r['batch']} {r['seconds']:.3f}" for r in rows if r["precision"] == precision and r["mode"] == mode]
                    peak = max((r.get("peak_gpu_mib", r.get("peak_rss_mib", 0)) for r in rows if r["precision"] == precision), default=0)
                    lines.append(f"  {precision:9s}{mode:9s}" + "  ".join(cells) + f"   (peak {peak:.0f} MiB)")
    if report.get("selector"):
        lines += format_selector(report["selector"])
    return "\n".join(lines)


def plot_report(report: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(report["frames"])
    sel = report.get("selector")
    measured = [n for n, e in sel["frames"].items() if "skipped" not in e] if sel else []
    panels = len(counts) + bool(measured)
    if not panels:
        raise ValueError("nothing to plot: no frame count was measured")
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    if measured:  # the selector's seconds per minute of video, per frame count
        ax = axes[0][-1]
        bottom = np.zeros(len(measured))
        for i, stage in enumerate(("decode", "score", "rule")):
            values = np.array([sel["frames"][n][f"{stage}_s"] * 60.0 / sel["video"]["seconds"] for n in measured])
            ax.bar(measured, values, bottom=bottom, color=colours[i], label=stage)
            bottom += values
        ax.set_title(f"selector {sel['selector']} ({sel['model']})", fontsize=9)
        ax.set_xlabel("frames chosen")
        ax.set_ylabel("seconds per minute of video")
        ax.legend(fontsize=8, loc="upper left")
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
    if counts:
        axes[0][len(counts) - 1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"time per stage — {report.get('checkpoint') or report['selector']['checkpoint']} on {report['device']}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def bench_command(args) -> int:
    from cos.device import normalise_device

    if args.selector_only and args.selector is None:
        print("cos bench --selector-only needs --selector aks|bolt|qframe", file=sys.stderr)
        return 2
    if args.selector_seconds <= 0:
        print(f"cos bench --selector-seconds {args.selector_seconds}: expected a positive number of seconds", file=sys.stderr)
        return 2
    if args.smoke:
        args.size = "tiny"
        args.frames = args.frames_given or [8, 16]
        args.new_tokens = min(args.new_tokens, 4)
    elif args.size == "full":
        device = normalise_device(args.device)
        if not (str(device).startswith("cuda") and torch.cuda.is_available()):
            if args.selector_only:
                print(f"cos bench --size full --selector-only: runs the selector's scoring model at its released shapes in float16 on a "
                      f"GPU; there is no CUDA device here (device {device}). On a CPU use --size small (the same shapes, in float32).",
                      file=sys.stderr)
                return 2
            print(f"cos bench --size full: builds {args.backend}'s real 7B shapes (about 16 GB in bf16) and LLaVA-1.5-13B's (26 GB in "
                  f"fp16) with random weights on a GPU; there is no CUDA device here (device {device}). On a CPU use --size small "
                  f"(the real token geometry, 4 layers x 256), whose ratios the README reports.", file=sys.stderr)
            return 2
        args.frames = args.frames_given or [128]
    else:
        args.frames = args.frames_given or [32, 128]
    args.release_repeats = args.repeats if args.release_repeats is None else args.release_repeats
    device = normalise_device(args.device)
    if args.selector_only:
        report = {"device": _device_name(device), "size": args.size, "date": time.strftime("%Y-%m-%d"), "frames": {}}
    else:
        report = run_bench(args)
    if args.selector:
        import gc

        gc.collect()  # the pipelines' models are gone: the selector's peak memory is its own
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        report["selector"] = selector_bench(args, device)
    print(format_report(report))
    if args.out:
        _write(report, args.out)
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
    p.add_argument("--size", choices=SIZES, default="small",
                   help="small: real token geometry, 4 layers x 256 (default); tiny: seconds; full: the 7B model's shapes and a "
                        "LLaVA-1.5-13B-shaped scorer, random weights drawn on the GPU (GPU only; default frames 128)")
    p.add_argument("--smoke", action="store_true", help="--size tiny, 8/16 frames, a few tokens: seconds")
    p.add_argument("--workdir", default=".cache/bench", help="where checkpoints and the video are built (reused)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto", help="auto: fp32 on CPU, bf16/fp16 on GPU")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--scorer", default="llava", choices=["llava", "self"], help="CoS scorer (self: no release-style run)")
    p.add_argument("--share-prefix", default="auto", choices=["auto", "always", "never"], help="CoS prefill strategy (cos.pipeline.CoSConfig)")
    p.add_argument("--decisions", choices=["truth", "scorer"], default="truth",
                   help="truth: the scorer runs (and is timed) but the needle's ground truth decides, so CoS always runs three "
                        "streams (random scorers answer all-no); scorer: its own decisions")
    p.add_argument("--scorer-batch-size", type=int, default=16, help="mosaics per scorer forward (the default of scorer_batch_size)")
    p.add_argument("--scorer-4bit", action="store_true", help="4-bit scorer (bitsandbytes, GPU), the paper's setting")
    p.add_argument("--scorer-profile", action="store_true",
                   help=f"also time the scorer alone per batch size {PROFILE_BATCHES}, generate vs logits, fp16 vs 4-bit (when available)")
    p.add_argument("--out", default=None, help="write the report as JSON")
    p.add_argument("--plot", nargs="?", const="assets/bench.png", default=None, help="write a PNG of time per stage (default assets/bench.png)")
    p.add_argument("--profile", action="store_true", help="also dump a torch profiler trace of one CoS run per frame count")
    p.add_argument("--selector", choices=tuple(SELECTOR_MODELS), default=None,
                   help="also measure a frame selector (candidates at 1/s, scored, the rule) per --frames count on a synthetic 640x360 "
                        "H.264 video: its cost per minute of video (the scoring model: tiny at --size tiny, else the released shapes)")
    p.add_argument("--selector-seconds", type=float, default=60.0, help="length of the selector's video in seconds (default 60)")
    p.add_argument("--selector-only", action="store_true", help="measure only the --selector (none of the pipelines)")
    p.set_defaults(func=bench_command)
    return p
