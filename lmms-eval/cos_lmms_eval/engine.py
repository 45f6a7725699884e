"""Options → loaded model, scorer and pipeline; visuals → frames → answer.

Shared by the lmms-eval models and ``cos run``, so the command line and the harness do the same thing.
Everything heavy (LongVA, the scorer) is loaded once, when the engine is built.

Inputs the engine refuses (each a :class:`~cos.errors.CosError`, which the lmms-eval adapter turns into
a per-sample error record): an unreadable video (:class:`~cos.errors.VideoDecodeError`), an empty
question (:class:`EmptyQuestionError`: there is nothing to answer, and an answer would be a guess
about an unasked question), and a prompt longer than LongVA's ``tokenizer_model_max_length``
(:class:`ContextBudgetError`: LongVA would cut the end of the prompt, i.e. the question, and answer
something else). Both checks run before the video is decoded. Legitimately decodable inputs are
answered: videos shorter than ``max_frames_num`` (indices repeat), single frames, grayscale, odd sizes,
variable frame rate, any path, and lists of images (sampled like frames, see :func:`frames_from_images`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from cos.cache import ScoreCache, file_identity, make_key
from cos.errors import ConfigError, ContextBudgetError, EmptyQuestionError, VideoDecodeError
from cos.pipeline import Answer, CoSConfig, CoSPipeline, GenerationOptions
from cos.scoring import get_scorer
from cos.trace import StageTimer
from cos.video import frame_indices, sample_frames
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


def _open_image(item, position: int) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as im:
                im.load()
                return im.copy()
        except (OSError, ValueError) as err:
            raise VideoDecodeError(item, f"image {position} of the list cannot be read: {type(err).__name__}: {err}") from None
    try:
        array = np.asarray(item)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise TypeError(f"expected a uint8 (H, W[, C]) array, got {array.dtype} {array.shape}")
        return Image.fromarray(array)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"image {position} of the list is not an image ({type(item).__name__}): {err}") from None


def frames_from_images(images: Sequence, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A list of images (PIL, arrays or image files) as a frame stack, sampled like a video's frames.

    With ``num_frames``, the images at :func:`cos.video.frame_indices` ``(len(images), num_frames)`` are
    taken (so a list longer than ``num_frames`` is thinned uniformly and a shorter one repeats images,
    exactly as a video with that many frames). Images of another size than the first are resized to it.
    Returns ``(frames uint8 (N, H, W, 3), indices)``.
    """
    if not images:
        raise VideoDecodeError("<images>", "empty image list")
    indices = frame_indices(len(images), num_frames) if num_frames else np.arange(len(images))
    opened: dict[int, Image.Image] = {}
    for i in sorted(set(indices.tolist())):
        opened[i] = _open_image(images[i], i).convert("RGB")
    size = opened[int(indices[0])].size
    frames = np.stack([np.asarray(opened[i] if opened[i].size == size else opened[i].resize(size)) for i in indices.tolist()])
    return frames, indices


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
            config = CoSConfig(shot_size=opts.shot_size, leftover=opts.leftover, alpha=opts.alpha, negative_order=opts.negative_order,
                               share_prefix=opts.share_prefix)
        else:
            scorer, config = None, CoSConfig()
        self.pipeline = CoSPipeline(self.backend, scorer, config)
        if self.method == "cos" and opts.score_cache_dir and opts.scorer != "uniform":
            self.pipeline.score_cache = ScoreCache(opts.score_cache_dir)

    # -- identities and checks -----------------------------------------------------------------
    def scorer_identity(self) -> dict | None:
        """What determines the scorer's output besides its input (the score cache's scorer part): its
        checkpoint, decision rule, and the numbers it computes with (the dtype actually loaded, 4-bit)."""
        o = self.opts
        if self.method != "cos":
            return None
        ident = {"name": o.scorer, "mode": o.score_mode, "threshold": float(o.score_threshold)}
        if o.scorer == "llava":
            scorer = self.pipeline.scorer
            ident.update(pretrained=o.identity()["scorer_pretrained"], load_in_4bit=o.scorer_load_in_4bit,
                         dtype=str(getattr(scorer, "dtype", None)))
        elif o.scorer == "self":
            ident.update(pretrained=o.identity()["pretrained"], dtype=str(self.backend.dtype), attn_implementation=o.attn_implementation)
        return ident

    def score_cache_key(self, info: dict, frames: np.ndarray, question: str) -> str | None:
        """Key of the scorer's result for these sampled frames and this question (None: no score cache)."""
        if self.pipeline.score_cache is None:
            return None
        if info.get("video"):
            video = file_identity(info["video"])
        else:  # images in memory: their pixels are their identity
            video = {"frames_sha256": hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest(), "shape": list(frames.shape)}
        # The decoder is part of the key: decord and PyAV may give different pixels for the same frame index.
        return make_key({"kind": "shot_scores", "v": 2, "video": video, "decoder": info.get("decoder"),
                         "frame_indices": [int(i) for i in info["frame_indices"]], "scorer": self.scorer_identity(),
                         "shot_size": self.opts.shot_size, "leftover": self.opts.leftover, "question": question})

    def context_budget(self) -> tuple[int | None, int]:
        """``(tokenizer_model_max_length or None, visual tokens per frame)`` of the loaded model."""
        model = getattr(self.backend, "model", None)
        config = getattr(model, "config", None)
        limit = getattr(config, "tokenizer_model_max_length", None)
        per_frame = getattr(model, "tokens_per_frame", None) or getattr(config, "tokens_per_frame", None) or 0
        return (int(limit) if limit else None), int(per_frame)

    def check_question(self, question, num_frames: int) -> None:
        """Refuse an empty question and a prompt LongVA would truncate (before any decoding)."""
        if not isinstance(question, str) or not question.strip():
            raise EmptyQuestionError(f"empty question ({question!r}): the task's prompt has no text, so there is nothing to answer")
        limit, per_frame = self.context_budget()
        if limit is None:
            return
        text_tokens = int(self.backend.prompt_ids(question).shape[-1]) - 1  # minus the image placeholder
        total = text_tokens + num_frames * per_frame
        if total > limit:
            raise ContextBudgetError(
                f"prompt too long: {text_tokens} text tokens + {num_frames} frames x {per_frame} visual tokens = {total} > "
                f"tokenizer_model_max_length {limit}; LongVA would cut the end of the prompt (the question) and answer "
                f"something else (question of {len(question)} characters)"
            )

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
                frames, indices = frames_from_images(visual, self.opts.max_frames_num)
                return frames, {"video": None, "frame_indices": indices.tolist(), "total_frames": len(visual), "decoder": "images"}
        raise ConfigError(f"unsupported visual of type {type(visual).__name__}: expected a video path or a list of images")

    def answer(self, visual, question: str, gen: GenerationOptions | None = None) -> Answer:
        timer = StageTimer(self.pipeline._sync)
        start = time.perf_counter()
        self.check_question(question, self.opts.max_frames_num)
        frames, info = self.load_frames(visual, timer)
        key = self.score_cache_key(info, frames, question) if self.method == "cos" else None
        result = self.pipeline.answer(frames, question, method=self.method, gen=gen, timer=timer, score_cache_key=key)
        result.trace = {**info, **result.trace}
        result.trace["timings"]["total"] = time.perf_counter() - start
        return result
