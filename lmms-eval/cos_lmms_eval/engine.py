"""Options → loaded model, scorer and pipeline; visuals → frames → answer.

Shared by the lmms-eval models and ``cos run``, so the command line and the harness do the same thing.
Everything heavy (LongVA, the scorer) is loaded once, when the engine is built.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
from PIL import Image

from cos.errors import ConfigError, VideoDecodeError
from cos.pipeline import Answer, CoSConfig, CoSPipeline, GenerationOptions
from cos.scoring import get_scorer
from cos.trace import StageTimer
from cos.video import sample_frames

from cos_lmms_eval.backend import load_longva
from cos_lmms_eval.options import CoSLongVAOptions, LongVAOptions


def build_scorer(opts: CoSLongVAOptions, backend):
    if opts.scorer == "uniform":
        return get_scorer("uniform")
    if opts.scorer == "self":
        return get_scorer("self", model=backend, mode=opts.score_mode, threshold=opts.score_threshold)
    return get_scorer(
        "llava",
        pretrained=opts.scorer_pretrained,
        mode=opts.score_mode,
        threshold=opts.score_threshold,
        batch_size=opts.scorer_batch_size,
        load_in_4bit=opts.scorer_load_in_4bit,
        device=str(backend.device),
    )


def frames_from_images(images: Sequence) -> np.ndarray:
    """A list of images (PIL or arrays) as a frame stack; sizes differing from the first are resized to it."""
    if not images:
        raise VideoDecodeError("<images>", "empty image list")
    pil = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    size = pil[0].convert("RGB").size
    return np.stack([np.asarray(im.convert("RGB").resize(size) if im.size != size else im.convert("RGB")) for im in pil])


class Engine:
    """LongVA (+ scorer) loaded once; ``answer(visual, question, gen)`` per sample."""

    def __init__(self, opts: LongVAOptions):
        self.opts = opts
        self.method = "cos" if isinstance(opts, CoSLongVAOptions) else "uniform"
        self.backend = load_longva(
            opts.pretrained,
            device=opts.device or opts.device_map,
            torch_dtype=opts.torch_dtype,
            attn_implementation=opts.attn_implementation,
            encode_chunk_size=opts.encode_chunk_size,
        )
        if self.method == "cos":
            scorer = build_scorer(opts, self.backend)
            config = CoSConfig(shot_size=opts.shot_size, leftover=opts.leftover, alpha=opts.alpha, negative_order=opts.negative_order)
        else:
            scorer, config = None, CoSConfig()
        self.pipeline = CoSPipeline(self.backend, scorer, config)

    def load_frames(self, visual, timer: StageTimer) -> tuple[np.ndarray, dict]:
        """A video path (or a one-element list of it), or a list of images -> frames and video facts."""
        if isinstance(visual, (list, tuple)) and len(visual) == 1 and isinstance(visual[0], (str, os.PathLike)):
            visual = visual[0]
        with timer("decode_video"):
            if isinstance(visual, (str, os.PathLike)):
                video = sample_frames(visual, self.opts.max_frames_num, backend=self.opts.video_decode_backend)
                info = {"video": str(visual), "frame_indices": video.indices.tolist(), "total_frames": int(video.total_frames),
                        "fps": float(video.fps), "duration": float(video.duration), "decoder": video.backend}
                return video.frames, info
            if isinstance(visual, (list, tuple)):
                frames = frames_from_images(visual)
                return frames, {"video": None, "frame_indices": list(range(len(frames))), "total_frames": len(frames)}
        raise ConfigError(f"unsupported visual of type {type(visual).__name__}: expected a video path or a list of images")

    def answer(self, visual, question: str, gen: GenerationOptions | None = None) -> Answer:
        timer = StageTimer(self.pipeline._sync)
        start = time.perf_counter()
        frames, info = self.load_frames(visual, timer)
        result = self.pipeline.answer(frames, question, method=self.method, gen=gen, timer=timer)
        result.trace = {**info, **result.trace}
        result.trace["timings"]["total"] = time.perf_counter() - start
        return result
