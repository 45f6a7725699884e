"""Options → loaded model, scorer and pipeline; visuals → frames → answer. For every registered backend.

Shared by the lmms-eval models and ``cos run``, so the command line and the harness do the same thing.
Everything heavy (the base model, the scorer) is loaded once, when the engine is built.

Inputs the engine refuses (each a :class:`~cos.errors.CosError`, which the lmms-eval adapter turns into
a per-sample error record): an unreadable video (:class:`~cos.errors.VideoDecodeError`), an empty
question (:class:`EmptyQuestionError`: there is nothing to answer, and an answer would be a guess
about an unasked question), and a prompt longer than the model's context budget
(:class:`ContextBudgetError`: LongVA would cut the end of the prompt, i.e. the question, and answer
something else). Both checks run before the video is decoded (the lmms-eval models' prefetching checks the
question before it decodes a video ahead, too). Legitimately decodable inputs are
answered: videos shorter than the frame count (indices repeat), single frames, grayscale, odd sizes,
variable frame rate, any path, folders of frame images, and lists of images (sampled like frames, see
:func:`cos.video.frames_from_images`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from cos import options as opt
from cos.cache import JsonDirCache, ScoreCache, file_identity, make_key
from cos.device import normalise_device, resolve_dtype
from cos.errors import ConfigError, ContextBudgetError, EmptyQuestionError
from cos.pipeline import Answer, CoSPipeline, GenerationOptions, check_frames
from cos.protocol import VideoInfo
from cos.selector import FrameSelector, frame_times
from cos.trace import StageTimer
from cos.video import BACKENDS, frames_from_images, sample_frames
from cos_runtime import registry
from cos_runtime.options import ModelOptions


@dataclass
class PreparedVisual:
    """A sample's visual decoded and preprocessed ahead of its turn (:meth:`Engine.prepare`): the frames, the
    video facts, the model's pixel values, the seconds each took, or the error that stopped it (raised
    when the sample's turn comes, as the serial path would raise it)."""

    frames: np.ndarray | None = None
    info: dict | None = None
    pixels: object = None  # torch.Tensor in host memory (``backend.preprocess_host``), or None
    timings: dict = field(default_factory=dict)
    error: Exception | None = None


class Engine:
    """A backend's model (+ scorer) loaded once; ``answer(visual, question, gen)`` per sample."""

    def __init__(self, opts: ModelOptions, device: str | None = None):
        self.opts = opts
        self.method = opts.method
        self.spec = registry.get(opts.backend_name)
        self.module = registry.load_module(self.spec)
        run = opts.run
        self.device = normalise_device(device or run.device or run.device_map)
        self.dtype = resolve_dtype(run.torch_dtype, self.device)  # the numbers the model computes with
        self.backend = self.module.load(opts.backend, self.device, self.dtype)
        scorer = opts.scorer.build(model=self.backend, device=self.backend.device) if self.method == "cos" else None
        self.pipeline = CoSPipeline(self.backend, scorer, opts.cos)
        if self.method == "cos" and run.score_cache_dir and opts.scorer.scorer != "uniform":
            self.pipeline.score_cache = ScoreCache(run.score_cache_dir)
        self.selector = None  # selector=uniform: the backend's own sampling rule
        if opts.selector.active:
            cache = JsonDirCache(run.score_cache_dir) if run.score_cache_dir else None
            self.selector = FrameSelector(opts.selector, device=self.backend.device, cache=cache)

    @property
    def facts(self):
        return self.backend.facts

    # -- identities and checks -----------------------------------------------------------------
    def scorer_identity(self) -> dict | None:
        """What determines the scorer's output besides its input (the score cache's scorer part): its
        checkpoint, decision rule, and the numbers it computes with (the dtype actually loaded, 4-bit); for
        the oracle, its truth file (path, size, mtime)."""
        if self.method != "cos":
            return None
        o = self.opts.scorer
        ident = opt.identity(o)  # the scorer, its checkpoint, 4-bit, decision rule (not its batch size)
        ident.pop("scorer_truth", None)  # read by the oracle only (below, with its content's identity)
        if o.scorer == "oracle":  # its decisions are the truth file's: a rewritten file is a new identity
            ident.update(scorer_truth=file_identity(o.scorer_truth))
        elif o.scorer == "llava":
            ident["dtype"] = str(getattr(self.pipeline.scorer, "dtype", None))
        elif o.scorer == "self":
            ident.update(backend=self.spec.name, model=opt.identity(self.opts.backend), dtype=str(self.dtype))
        return ident

    def score_cache_key(self, info: dict, frames: np.ndarray, question: str) -> str | None:
        """Key of the scorer's result for these sampled frames and this question (None: no score cache)."""
        if self.pipeline.score_cache is None:
            return None
        if info.get("video"):
            video = file_identity(info["video"])
        else:  # images in memory: their pixels are their identity
            video = {"frames_sha256": hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest(), "shape": list(frames.shape)}
        cfg = self.opts.cos
        # The decoder is part of the key: decord and PyAV may give different pixels for the same frame index.
        return make_key({"kind": "shot_scores", "v": 4, "video": video, "decoder": info.get("decoder"),
                         "frame_indices": [int(i) for i in info["frame_indices"]], "scorer": self.scorer_identity(),
                         "shot_size": cfg.shot_size, "leftover": cfg.leftover, "question": question})

    def check_question(self, question, num_frames: int) -> None:
        """Refuse an empty question and a prompt the model would truncate (before any decoding)."""
        if not isinstance(question, str) or not question.strip():
            raise EmptyQuestionError(f"empty question ({question!r}): the task's prompt has no text, so there is nothing to answer")
        facts = self.backend.facts
        if facts.context_budget is None:
            return
        text_tokens = int(self.backend.prompt_ids(question).shape[-1]) - 1  # minus the video placeholder
        visual = facts.visual_tokens(num_frames)
        total = text_tokens + visual
        if total > facts.context_budget:
            raise ContextBudgetError(
                f"prompt too long: {text_tokens} text tokens + {num_frames} frames x {facts.tokens_per_frame} visual tokens = {total} > "
                f"tokenizer_model_max_length {facts.context_budget}; {self.spec.name} would cut the end of the prompt (the question) "
                f"and answer something else (question of {len(question)} characters)"
            )

    def load_frames(self, visual, timer: StageTimer, question: str | None = None) -> tuple[np.ndarray, dict]:
        """A video path (or a one-element list of it), or a list of images -> frames and video facts. With a
        selector (not ``uniform``), a video's frames are the ones it chooses for ``question``."""
        if isinstance(visual, (list, tuple)) and len(visual) == 1 and isinstance(visual[0], (str, os.PathLike)):
            visual = visual[0]
        if isinstance(visual, (str, os.PathLike)):
            chosen = None
            if self.selector is not None:
                if question is None:
                    raise ConfigError("a frame selector chooses frames for a question, but none was given")
                chosen = self.selector.select(visual, question, self.opts.backend.max_frames_num,
                                              decoder=self.opts.backend.video_decode_backend)
            with timer("decode_video"):
                if chosen is None or chosen.indices is None:
                    video = self.module.sample_frames(visual, self.opts.backend)
                else:
                    picked = chosen.indices
                    # the decoder that read the candidates (a frame folder, "frames", is read as one whatever it is told)
                    decoder = chosen.decoder if chosen.decoder in BACKENDS else self.opts.backend.video_decode_backend
                    video = sample_frames(visual, None, backend=decoder, rule=lambda total, fps: picked)
                    video.times = frame_times(picked, video.fps)
            info = {"video": str(visual), "frame_indices": video.indices.tolist(), "total_frames": int(video.total_frames),
                    "fps": float(video.fps), "duration": float(video.duration), "decoder": video.backend}
            if video.times is not None:
                info["frame_times"] = [float(t) for t in video.times]
            if chosen is not None:
                info["selector"] = chosen.to_trace()
                for stage, seconds in chosen.timings.items():
                    timer.add(stage, seconds)
            return video.frames, info
        if isinstance(visual, (list, tuple)):
            if self.selector is not None:
                raise ConfigError(f"selector={self.opts.selector.selector} chooses frames of a video file or frame folder; this visual is "
                                  f"a list of {len(visual)} images (use selector=uniform)")
            with timer("decode_video"):
                frames, indices = frames_from_images(visual, self.opts.backend.max_frames_num)
            return frames, {"video": None, "frame_indices": indices.tolist(), "total_frames": len(visual), "decoder": "images"}
        raise ConfigError(f"unsupported visual of type {type(visual).__name__}: expected a video path or a list of images")

    def prepare(self, visual, question: str | None = None) -> PreparedVisual:
        """Decode ``visual`` (its frames chosen for ``question`` when there is a selector) and preprocess its frames
        into host memory (any thread): what :meth:`answer` does first, done ahead. Nothing here touches the GPU except a
        frame selector's text–image model, which scores the candidates on the model's device (its kernels then overlap
        the current sample's, whose stage timings include the wait). Only a
        decoding error is kept (raised by :meth:`answer` in the sample's turn, where the serial path raises it);
        frames the pipeline refuses, or whose preprocessing fails, are left unprocessed, so the sample's turn does it,
        and fails, exactly as without prefetching."""
        timer = StageTimer(None)
        try:
            frames, info = self.load_frames(visual, timer, question)
        except Exception as err:  # noqa: BLE001 - re-raised by answer(), in the sample's turn
            return PreparedVisual(timings=dict(timer.timings), error=err)
        pixels = None
        host = getattr(self.backend, "preprocess_host", None)  # a VideoLM without it is preprocessed in its turn
        if host is not None:
            try:
                check_frames(frames)
                with timer("preprocess"):
                    pixels = host(frames)
            except Exception:  # noqa: BLE001 - redone (and raised) by the pipeline in the sample's turn
                pixels = None
        return PreparedVisual(frames=frames, info=info, pixels=pixels, timings=dict(timer.timings))

    def answer(self, visual, question: str, gen: GenerationOptions | None = None, prepared=None) -> Answer:
        """Answer ``question`` about ``visual``. ``prepared``: :meth:`prepare`'s result for this visual (a
        :class:`PreparedVisual`, or a future of one), computed ahead; the answer and any error are the same."""
        timer = StageTimer(self.pipeline.sync)
        start = time.perf_counter()
        self.check_question(question, self.opts.backend.max_frames_num)
        pixels = None
        if prepared is None:
            frames, info = self.load_frames(visual, timer, question)
        else:
            if hasattr(prepared, "result"):  # a future: wait for the background thread
                with timer("prefetch_wait"):
                    prepared = prepared.result()
            for stage, seconds in prepared.timings.items():
                timer.add(stage, seconds)
            if prepared.error is not None:
                raise prepared.error
            frames, info = prepared.frames, prepared.info
            if prepared.pixels is not None:  # host pixel values: to the model's device here, in the calling thread
                with timer("preprocess"):
                    pixels = self.backend.pixels_to_model(prepared.pixels)
        key = self.score_cache_key(info, frames, question) if self.method == "cos" else None
        times = info.get("frame_times")
        video = VideoInfo(frame_indices=tuple(info["frame_indices"]), fps=float(info.get("fps") or 0.0),
                          duration=float(info.get("duration") or 0.0), total_frames=int(info["total_frames"]),
                          times=None if times is None else tuple(times), source=info.get("video"))
        result = self.pipeline.answer(frames, question, method=self.method, gen=gen, timer=timer, score_cache_key=key, video=video,
                                      pixels=pixels)
        result.trace.update(backend=self.spec.name, prefetched=prepared is not None, **info)
        report = getattr(self.backend, "memory_report", None)  # models with an in-LM video memory (Video-XL)
        if report is not None:
            result.trace.update(visual_memory=report())
        result.trace.timings["total"] = time.perf_counter() - start
        return result


def build_engine(backend: str, method: str, values: dict, device: str | None = None) -> Engine:
    """An engine from a backend name, a method and a flat mapping of option values."""
    return Engine(ModelOptions.parse(backend, method, values), device=device)
