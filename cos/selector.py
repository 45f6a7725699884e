"""Frame selectors: choose the ``n`` frames a video model sees, instead of sampling them uniformly.

CoS re-weights the frames it is given; a *selector* chooses them. Both the baseline and the CoS models take
one: ``selector=uniform`` (the default) keeps the backend's own sampling rule; ``aks``, ``bolt`` and
``qframe`` replace it for one video with

1. **candidates** — source frames at ``candidate_fps`` per second (:func:`cos.video.rate_indices`, as BOLT's
   extractor; every frame when the frame rate is unknown), decoded as a stream of ``selector_batch_size``
   frames at a time (:func:`cos.video.open_stream`), so memory stays bounded for hour-long videos;
2. **scores** — each candidate against the question's text by a text–image model loaded once per process
   (:mod:`cos.text_image`: BLIP ITM for AKS, CLIP ViT-L/14 for BOLT, CLIP ViT-L/14-336 for Q-Frame by default),
   cached per (video, decoder, candidates, model, query) beside the CoS scores; or, on the synthetic needle
   task, the ground truth (``selector_model=oracle``: 1 on the needle's frames, else 0 — the selector's ceiling);
3. **the rule** — :func:`cos.selection.select` (AKS, BOLT, Q-Frame as their papers define them, the releases'
   variants one option away);
4. the chosen frames are decoded (one more pass) and handed to the model in temporal order.

The **query** is the question line of the task's prompt (``selector_query=question``, :func:`question_line`):
what the peers score against (Q-Frame cuts the question out of each task's prompt; AKS and BOLT read the
benchmark's question field), and what fits a CLIP text encoder's 77 tokens. ``selector_query=prompt`` scores
against the whole prompt (cut to the text model's length).

**Fewer frames than asked.** When a video has fewer candidates than ``n`` (shorter than ``n / candidate_fps``
seconds), or a rule returns fewer than ``n`` frames (AKS with ``budget=release``), the video gets the
backend's own rule, as AKS's evaluator does, and the trace says why (``selector.fallback``); nothing is
scored in the first case. BOLT with ``duplicates=keep`` feeds a repeated frame twice, as its release does.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cos.errors import ConfigError
from cos.options import choice, non_negative_int, number, option, optional_path, positive_int, validate
from cos.selection import AKS_BUDGETS, BOLT_DUPLICATES, QFRAME_NOISE, RULE_PARAMS, SELECTORS, Selection, select, valid_power
from cos.text_image import SCORE_KINDS

__all__ = ["DEFAULT_MODELS", "FrameSelector", "SelectedFrames", "SelectorConfig", "question_line"]

#: the text–image model each selector scores with by default (hub ids; a local folder of the same format works)
DEFAULT_MODELS = {
    "aks": "Salesforce/blip-itm-large-coco",  # AKS: LAVIS blip_image_text_matching "large" (ITM head)
    "bolt": "openai/clip-vit-large-patch14",  # BOLT: CLIP ViT-L/14, 224 px
    "qframe": "openai/clip-vit-large-patch14-336",  # Q-Frame: Long-CLIP-L@336 (not in transformers' format): its base
}
ORACLE = "oracle"
QUERIES = ("question", "prompt")
#: Q-Frame's resolution groups: reported in the trace, never change the frames a fixed-resolution base sees
TRACE_ONLY = ("high", "mid", "low")


def _power(name: str, value: Any) -> float:
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not valid_power(x):
        raise ConfigError(f"{name}={value!r}: expected -1 (no power) or a number >= 0")
    return x


@dataclass
class SelectorConfig:
    """Which frames a model sees (options of every model, baseline and CoS; names as in ``model_args``)."""

    selector: str = option("uniform", read=choice(SELECTORS), identity=False,
                           help="uniform (the backend's own sampling rule), aks, bolt or qframe (choose frames by their match "
                                "with the question)")
    selector_model: str | None = option(None, identity=False,
                                        help="text-image model scoring the candidates (CLIP, BLIP ITM or SigLIP; hub id or folder), "
                                             "or 'oracle' (the needle task's truth); default per selector: "
                                             + ", ".join(f"{k} {v}" for k, v in DEFAULT_MODELS.items()))
    selector_truth: str | None = option(None, read=optional_path, identity=False,
                                        help="selector_model=oracle: OUT/questions.json of `cos make-needle-videos OUT`")
    selector_score: str = option("auto", read=choice(SCORE_KINDS), identity=False,
                                 help="auto (BLIP: itm; CLIP/SigLIP: logits, the scaled cosine), logits, dot (raw feature "
                                      "product: the Q-Frame release), itm")
    selector_query: str = option("question", read=choice(QUERIES), identity=False,
                                 help="question (the question line of the prompt) or prompt (the whole prompt)")
    candidate_fps: float = option(1.0, read=number(1e-3, 1000.0), identity=False, help="candidate frames per second")
    selector_batch_size: int = option(16, read=positive_int, identity=False, help="candidate frames decoded and scored at a time")
    # AKS
    t1: float = option(0.8, read=number(-1e6, 1e6), identity=False, help="AKS: a segment is a leaf when its top-k mean exceeds its mean by more")
    t2: float = option(-100.0, read=number(-1e6, 1e6), identity=False, help="AKS: ... and its standard deviation exceeds t2")
    all_depth: int = option(5, read=non_negative_int, identity=False, help="AKS: maximum split depth")
    budget: str = option("paper", read=choice(AKS_BUDGETS), identity=False,
                         help="AKS: paper (each segment its own budget) or release (int(n / 2**depth) per leaf)")
    # BOLT
    power: float = option(3.0, read=_power, identity=False, help="BOLT: exponent on the normalised scores (-1: none)")
    duplicates: str = option("replace", read=choice(BOLT_DUPLICATES), identity=False,
                             help="BOLT: replace (n distinct frames) or keep (the release's repeats)")
    # Q-Frame
    tau: float = option(0.8, read=number(1e-6, 1e6), identity=False, help="Q-Frame: softmax temperature")
    noise: str = option("on", read=choice(QFRAME_NOISE), identity=False, help="Q-Frame: Gumbel noise on (seeded) or off")
    seed: int = option(0, read=non_negative_int, identity=False, help="Q-Frame: seed of the Gumbel noise")
    high: int = option(0, read=non_negative_int, identity=False, help="Q-Frame: frames of the high-resolution group (trace only)")
    mid: int = option(0, read=non_negative_int, identity=False, help="Q-Frame: frames of the mid-resolution group (trace only)")
    low: int = option(0, read=non_negative_int, identity=False, help="Q-Frame: frames of the low-resolution group (trace only)")

    def __post_init__(self):
        validate(self)
        if self.selector_model is not None:
            self.selector_model = str(self.selector_model).strip() or None
        defaults = {f: type(self).__dataclass_fields__[f].default for rule in RULE_PARAMS.values() for f in rule}
        stray = [f"{name}={getattr(self, name)!r} (a parameter of selector={rule})" for rule, names in RULE_PARAMS.items()
                 if rule != self.selector for name in names if getattr(self, name) != defaults[name]]
        if stray:
            raise ConfigError(f"selector={self.selector} does not take {', '.join(stray)}")
        if self.selector == "uniform":
            return
        if self.model == ORACLE and self.selector_truth is None:
            raise ConfigError("selector_model=oracle needs selector_truth=<questions.json> (`cos make-needle-videos OUT` writes "
                              "OUT/questions.json)")

    @property
    def active(self) -> bool:
        return self.selector != "uniform"

    @property
    def model(self) -> str | None:
        """The scoring model actually used (the selector's default when ``selector_model`` is not given)."""
        return self.selector_model or DEFAULT_MODELS.get(self.selector)

    def rule_params(self) -> dict:
        return {name: getattr(self, name) for name in RULE_PARAMS.get(self.selector, ())}

    def identity(self) -> dict:
        """What changes the chosen frames: nothing for ``uniform`` (existing result-cache keys stay valid), else
        the selector, its model (a folder made absolute), query, candidate rate and rule parameters (not Q-Frame's
        trace-only resolution groups)."""
        if not self.active:
            return {}
        model = self.model
        if model != ORACLE and os.path.isdir(os.path.expanduser(model)):
            model = os.path.abspath(os.path.expanduser(model))
        params = {k: v for k, v in self.rule_params().items() if k not in TRACE_ONLY}
        out = {"selector": self.selector, "selector_model": model, "selector_query": self.selector_query,
               "candidate_fps": self.candidate_fps, **params}
        if model == ORACLE:
            out["selector_truth"] = self.selector_truth
        else:
            out["selector_score"] = self.selector_score
        return out


# -- the query ---------------------------------------------------------------------------------------------
_OPTION = re.compile(r"^\s*(\(?[A-Ha-h]\)|[A-H][.:：)])\s*\S")
_INSTRUCTION = re.compile(r"^\s*(select the best answer|answer with|respond with|please (answer|respond|select)|the best answer is|"
                          r"answer the question|answer:|best option|carefully watch|based on your observations|only give the best option|"
                          r"this video's subtitles)", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(question|q)\s*[:：]\s*", re.IGNORECASE)


def question_line(prompt: str) -> str:
    """The question of a multiple-choice (or open) task prompt, for a text–image model to score frames against.

    Lines are split; option lines (``A. …``, ``(A) …``, ``A) …``) and instruction lines (``Select the best
    answer …``, ``Answer with …``, ``Respond with …``) are dropped, and a ``Question:`` prefix is cut. The
    question is the last remaining line before the first option line; without options, the last remaining
    line with a ``?``, else the longest remaining line; the whole prompt (stripped) when nothing remains.

    >>> question_line("Select the best answer.\\nWhat colour is the car?\\nA. red\\nB. blue\\nAnswer with the option's letter.")
    'What colour is the car?'
    >>> question_line("Question: Where is the cat?\\nOptions:\\n(A) sofa\\n(B) bed")
    'Where is the cat?'
    """
    lines = [line.strip() for line in str(prompt).splitlines()]
    first_option = next((i for i, line in enumerate(lines) if _OPTION.match(line)), None)

    def keep(line: str) -> bool:
        return bool(line) and not _OPTION.match(line) and not _INSTRUCTION.match(line) and line.lower().rstrip(":") != "options"

    if first_option is not None:
        before = [line for line in lines[:first_option] if keep(line)]
        if before:
            return _PREFIX.sub("", before[-1]).strip()
    rest = [_PREFIX.sub("", line).strip() for line in lines if keep(line)]
    rest = [line for line in rest if line]
    asking = [line for line in rest if "?" in line]
    if asking:
        return asking[-1]
    if rest:
        return max(rest, key=len)
    return str(prompt).strip()


# -- one selection -----------------------------------------------------------------------------------------
@dataclass
class SelectedFrames:
    """Which source frames a selector chose for one video, and how.

    ``indices`` is None when the backend's own rule is to be used (``fallback`` says why)."""

    indices: np.ndarray | None  #: source frame indices handed to the model (non-decreasing), or None: the backend's rule
    method: str
    model: str | None
    query: str
    candidate_fps: float
    candidates: list[int]  #: source frame of each candidate
    scores: list[float] | None  #: one per candidate (None when nothing was scored)
    selection: Selection | None
    fallback: str | None = None
    stream_note: str | None = None  #: the video ended before the last candidate
    cache_hit: bool = False
    total_frames: int = 0
    decoder: str | None = None
    timings: dict = field(default_factory=dict)

    def to_trace(self) -> dict:
        sel = self.selection
        return {"method": self.method, "model": self.model, "query": self.query, "candidate_fps": self.candidate_fps,
                "candidates": self.candidates, "scores": self.scores,
                "selected": None if sel is None else sel.selected, "requested": None if sel is None else sel.requested,
                "params": None if sel is None else sel.params, "note": None if sel is None else sel.note,
                "groups": None if sel is None else sel.groups, "fallback": self.fallback, "stream_note": self.stream_note,
                "cache_hit": self.cache_hit,
                "timings": dict(self.timings)}


class FrameSelector:
    """Candidates → scores → rule, for one configuration, its model loaded once (see the module docstring).

    Args:
        config: the :class:`SelectorConfig` (not ``uniform``).
        device, dtype: where the text–image model runs (default: the accelerator when there is one, else CPU).
        cache: a :class:`cos.cache.JsonDirCache` for candidate scores, or None.
    """

    def __init__(self, config: SelectorConfig, device=None, dtype=None, cache=None):
        if not config.active:
            raise ConfigError("selector=uniform keeps the backend's own sampling rule: there is no selector to build")
        self.config = config
        self.cache = cache
        self.model = None
        self.oracle = None
        if config.model == ORACLE:
            from cos.scoring import get_scorer

            self.oracle = get_scorer("oracle", truth=config.selector_truth)
        else:
            from cos.text_image import get_text_image_model

            self.model = get_text_image_model(config.model, score=config.selector_score, device=device, dtype=dtype,
                                              batch_size=config.selector_batch_size)

    def identity(self) -> dict:
        """What determines a candidate's score besides the frame and the query."""
        if self.oracle is not None:
            from cos.cache import file_identity

            return {"oracle": file_identity(self.config.selector_truth)}
        return self.model.identity()

    def query(self, question: str) -> str:
        return question_line(question) if self.config.selector_query == "question" else str(question)

    def _cache_key(self, video: str, decoder: str, candidates: list[int], query: str) -> str | None:
        if self.cache is None:
            return None
        from cos.cache import file_identity, make_key

        return make_key({"kind": "candidate_scores", "v": 1, "video": file_identity(video), "decoder": decoder, "candidates": candidates,
                         "model": self.identity(), "query": query})

    def select(self, video: str | os.PathLike, question: str, n: int, decoder: str = "auto") -> SelectedFrames:
        """Choose ``n`` source frames of the video file (or frame folder) at ``video`` for ``question``."""
        from cos.video import open_stream, rate_indices

        cfg = self.config
        n = positive_int("n", n)
        path = os.fspath(video)
        query = self.query(question)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        stream = open_stream(path, lambda total, fps: rate_indices(total, fps, cfg.candidate_fps), backend=decoder,
                             chunk_size=cfg.selector_batch_size)
        timings["select_decode"] = time.perf_counter() - start  # opening (and probing) the video
        with stream:
            candidates = [int(i) for i in stream.indices]
            out = SelectedFrames(None, cfg.selector, cfg.model, query, cfg.candidate_fps, candidates, None, None,
                                 total_frames=int(stream.total_frames), decoder=stream.backend, timings=timings)
            if len(candidates) < n:
                out.fallback = (f"{len(candidates)} candidates at {cfg.candidate_fps:g} per second for {n} frames: the backend's own "
                                "sampling rule (as AKS's evaluator does for videos shorter than n seconds)")
                return out
            key = self._cache_key(path, stream.backend, candidates, query)
            cached = self.cache.get_json(key) if key is not None else None
            if cached is not None and len(cached.get("scores", ())) == len(candidates):
                scores = np.asarray(cached["scores"], dtype=np.float64)
                out.cache_hit = True
            else:
                scores, candidates = self._score(stream, path, query, timings)
                out.candidates = candidates
                if len(candidates) < len(stream.indices):  # the stream ended before its packet count said (PyAV)
                    out.stream_note = (f"the video ended after {len(candidates)} of its {len(stream.indices)} candidates (its "
                                       "container announced more frames than it holds): the rest were not scored")
                elif key is not None:
                    self.cache.put_json(key, {"scores": scores.tolist()})
        out.scores = [float(s) for s in scores]
        tick = time.perf_counter()
        selection = select(cfg.selector, scores, n, **cfg.rule_params())
        timings["select_rule"] = time.perf_counter() - tick
        out.selection = selection
        if len(selection.selected) < n:
            out.fallback = f"{selection.note}: the backend's own sampling rule (as AKS's evaluator does)"
            return out
        out.indices = np.asarray([out.candidates[i] for i in selection.selected], dtype=np.int64)
        return out

    def _score(self, stream, path: str, query: str, timings: dict) -> tuple[np.ndarray, list[int]]:
        """Every candidate's score, chunk by chunk (decode and scoring times kept apart)."""
        scores: list[np.ndarray] = []
        delivered: list[int] = []
        decode = score = 0.0
        tick = time.perf_counter()
        for indices, frames in stream.chunks():
            now = time.perf_counter()
            decode += now - tick
            if self.oracle is not None:
                scores.append(self._oracle_scores(path, indices, stream.total_frames))
            else:
                scores.append(self.model.score(list(frames), query))
            delivered += [int(i) for i in indices]
            tick = time.perf_counter()
            score += tick - now
        timings["select_decode"] = timings.get("select_decode", 0.0) + decode
        timings["select_score"] = score
        if not delivered:
            from cos.errors import VideoDecodeError

            raise VideoDecodeError(path, "no candidate frame could be decoded")
        return np.concatenate(scores).astype(np.float64), delivered

    def _oracle_scores(self, path: str, indices, total_frames: int) -> np.ndarray:
        try:
            truth = self.oracle.lookup(path)
        except ConfigError as err:  # the shared oracle names the CoS scorer's option
            raise ConfigError(f"selector oracle: {err}".replace("scorer_truth=", "selector_truth=")) from None
        if total_frames and total_frames != truth.num_frames:
            raise ConfigError(f"selector oracle: video {path!r} has {total_frames} frames but its record in "
                              f"selector_truth={self.config.selector_truth!r} has {truth.num_frames}: not the same video")
        idx = np.asarray(indices, dtype=np.int64)
        return ((idx >= truth.needle_start) & (idx < truth.needle_end)).astype(np.float64)


def frame_times(indices, fps: float) -> list[float] | None:
    """Seconds of each source frame (None when the frame rate is unknown)."""
    return [float(i) / fps for i in indices] if fps and fps > 0 else None

