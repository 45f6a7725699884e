"""One sample through Chain-of-Shot: sample → shots → score → ground → compose → co-reason.

The pipeline drives any :class:`cos.protocol.VideoLM`. Frames are decoded once and every sampled
frame goes through the vision tower once; the positive and negative videos gather those features by
index (plus one black frame when Eq. 7 needs it). With α = 0 (nothing relevant, or the ``uniform``
scorer) co-reasoning reduces to the plain baseline, and the pipeline runs exactly the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from cos.compose import BLACK, gather_features, negative_map, positive_map, resolve_alpha
from cos.decoding import co_reasoning_generate
from cos.errors import ConfigError
from cos.grounding import binary_code, summary
from cos.prefix import plan_prefill, prefill_shared
from cos.protocol import SupportsPrefill, VideoLM
from cos.scoring import ShotScorer
from cos.shots import make_mosaics, shot_groups
from cos.trace import StageTimer

METHODS = ("cos", "uniform")


@dataclass
class GenerationOptions:
    """Decoding options shared by the baseline and CoS (CoS is greedy only)."""

    max_new_tokens: int = 16
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    until: Sequence[str] = ()

    @classmethod
    def from_gen_kwargs(cls, gen_kwargs: dict | None) -> GenerationOptions:
        """lmms-eval ``gen_kwargs`` -> options (unknown keys are ignored, as lmms-eval models do)."""
        g = dict(gen_kwargs or {})
        until = g.get("until") or ()
        if isinstance(until, str):
            until = (until,)
        temperature = float(g.get("temperature") or 0.0)
        do_sample = bool(g.get("do_sample", False)) and temperature > 0
        return cls(
            max_new_tokens=int(g.get("max_new_tokens") or 16),
            do_sample=do_sample,
            temperature=temperature,
            top_p=g.get("top_p"),
            num_beams=int(g.get("num_beams") or 1),
            until=tuple(until),
        )

    def generate_kwargs(self) -> dict:
        kw = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample}
        if self.do_sample:
            kw["temperature"] = self.temperature
            if self.top_p is not None:
                kw["top_p"] = float(self.top_p)
        return kw

    def cut(self, text: str) -> str:
        """Truncate at the first stop string (``until``), then strip."""
        for stop in self.until:
            if stop and stop in text:
                text = text.split(stop, 1)[0]
        return text.strip()


@dataclass
class CoSConfig:
    """Method options. Defaults are the paper's setting (k = 4, dynamic α, forward-first search)."""

    shot_size: int = 4
    leftover: str = "pad"
    alpha: float | str = "auto"
    negative_order: str = "forward"
    encode_chunk_size: int = 32
    #: "auto": prefill shared prefixes once (cos.prefix) when that saves at least
    #: ``share_prefix_min_saving`` of the prefill tokens, else prefill each stream from scratch;
    #: "always" / "never" force either. Sharing continues caches, which needs explicit attention masks
    #: (no fused causal kernel), so small savings do not pay on a GPU (see README, "Cost").
    share_prefix: str = "auto"
    share_prefix_min_saving: float = 0.25

    def __post_init__(self):
        if int(self.shot_size) < 1:
            raise ConfigError(f"shot_size must be >= 1, got {self.shot_size!r}")
        self.shot_size = int(self.shot_size)
        if self.leftover not in ("pad", "drop"):
            raise ConfigError(f"leftover must be one of ['pad', 'drop'], got {self.leftover!r}")
        if self.share_prefix not in ("auto", "always", "never"):
            raise ConfigError(f"share_prefix must be one of ['auto', 'always', 'never'], got {self.share_prefix!r}")
        if self.negative_order not in ("forward", "backward"):
            raise ConfigError(f"negative_order must be one of ['forward', 'backward'], got {self.negative_order!r}")
        resolve_alpha(self.alpha, np.zeros(1, dtype=np.int8))  # validates the value early


@dataclass
class Answer:
    text: str
    trace: dict = field(default_factory=dict)


class _StepClock(LogitsProcessor):
    """Records when each decoding step's logits arrive (the first one marks the end of prefill)."""

    def __init__(self, sync=None):
        self.stamps: list[float] = []
        self._sync = sync

    def __call__(self, input_ids, scores):
        if self._sync:
            self._sync()
        self.stamps.append(time.perf_counter())
        return scores


class CoSPipeline:
    """Answer questions about sampled videos with a video LM, with or without Chain-of-Shot.

    Args:
        model: a :class:`~cos.protocol.VideoLM`.
        scorer: the shot scorer (loaded once by the caller and reused for every sample); may be
            ``None`` when only ``method="uniform"`` is used.
        config: :class:`CoSConfig`.
    """

    def __init__(self, model: VideoLM, scorer: ShotScorer | None = None, config: CoSConfig | None = None):
        self.model = model
        self.scorer = scorer
        self.config = config or CoSConfig()
        self.score_cache = None  # optional: get(key) / put(key, ShotScores), see answer()
        self._black_features: torch.Tensor | None = None
        self._black_shape: tuple | None = None
        self._sync = torch.cuda.synchronize if torch.cuda.is_available() else None

    # -- pieces -------------------------------------------------------------------------------
    def encode(self, frames: np.ndarray, timer: StageTimer) -> torch.Tensor:
        with timer("preprocess"):
            pixels = self.model.preprocess(frames)
        with timer("encode"):
            with torch.inference_mode():
                return self.model.encode_frames(pixels)

    def black_features(self, frame_shape: tuple) -> torch.Tensor:
        """Features of an all-black frame of the video's size (encoded once per size, cached)."""
        if self._black_features is None or self._black_shape != frame_shape:
            black = np.zeros((1, *frame_shape), dtype=np.uint8)
            with torch.inference_mode():
                self._black_features = self.model.encode_frames(self.model.preprocess(black))[0]
            self._black_shape = frame_shape
        return self._black_features

    def _generate(self, embeds: torch.Tensor, gen: GenerationOptions, timer: StageTimer, alpha: float | None, trace: dict):
        clock = _StepClock(self._sync)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        start = time.perf_counter()
        extra = {}
        with torch.inference_mode():
            if alpha is not None and isinstance(self.model, SupportsPrefill):
                # The three streams are prefilled one after another into their own caches (peak memory of
                # one stream's activations), each shared prefix once when that pays (cos.prefix); the
                # stacked caches then decode as one batch of 3.
                plan, cfg = plan_prefill(embeds), self.config
                share = cfg.share_prefix == "always" or (cfg.share_prefix == "auto" and plan.saved_fraction >= cfg.share_prefix_min_saving)
                extra["cache"], plan = prefill_shared(self.model.prefill, embeds, plan=plan if share else plan.without_sharing())
                trace.update(prefill_shared=share, prefill_tokens=plan.computed, prefill_tokens_unshared=plan.unshared,
                             prefill_forks=plan.forks)
            if alpha is None:
                out = self.model.generate(
                    inputs_embeds=embeds, attention_mask=mask, logits_processor=LogitsProcessorList([clock]), **gen.generate_kwargs()
                )
            else:
                out = co_reasoning_generate(
                    self.model,
                    embeds,
                    mask,
                    alpha,
                    max_new_tokens=gen.max_new_tokens,
                    repetition_penalty=float(getattr(self.model, "repetition_penalty", 1.0) or 1.0),
                    extra_processors=[clock],
                    **extra,
                )
        end = time.perf_counter()
        first = clock.stamps[0] if clock.stamps else end
        timer.add("prefill", first - start)
        timer.add("decode", end - first)
        return out[0].tolist(), len(clock.stamps)

    # -- entry point --------------------------------------------------------------------------
    def answer(
        self,
        frames: np.ndarray,
        question: str,
        *,
        method: str = "cos",
        gen: GenerationOptions | None = None,
        scorer_question: str | None = None,
        timer: StageTimer | None = None,
        score_cache_key: str | None = None,
    ) -> Answer:
        """Answer ``question`` about uint8 RGB ``frames (n, H, W, 3)`` (already sampled).

        ``scorer_question`` is what the scorer sees (the release passes the whole prompt, which is
        the default). ``score_cache_key`` identifies (video, sampled frames, question) for
        ``self.score_cache`` (any object with ``get(key) -> ShotScores | None`` and ``put(key, scores)``;
        the scorer's identity is the cache's business), so re-running with another α or decoding option
        does not re-score. Returns the answer text and the trace (see :mod:`cos.trace`).
        """
        if method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ConfigError(f"frames must be a non-empty uint8 array (n, H, W, 3), got shape {frames.shape}")
        gen = gen or GenerationOptions()
        if method == "cos" and (gen.do_sample or gen.num_beams != 1):
            raise ConfigError("co-reasoning decoding is greedy only (the three streams must pick the same token): "
                              f"got do_sample={gen.do_sample}, num_beams={gen.num_beams}")
        timer = timer or StageTimer(self._sync)
        n = frames.shape[0]
        features = self.encode(frames, timer)
        with timer("prompt"):
            prompt_ids = self.model.prompt_ids(question)
        trace: dict = {"method": method, "question": question, "num_frames": n}

        alpha = 0.0
        if method == "cos":
            if self.scorer is None:
                raise ConfigError("method 'cos' needs a scorer")
            cfg = self.config
            cached = self.score_cache is not None and score_cache_key
            scores = self.score_cache.get(score_cache_key) if cached else None
            trace["score_cache_hit"] = scores is not None
            if scores is None:  # mosaics are built only when the scorer has to run
                with timer("mosaics"):
                    mosaics, groups = make_mosaics(frames, cfg.shot_size, cfg.leftover)
                with timer("score"):
                    scores = self.scorer.score(mosaics, scorer_question if scorer_question is not None else question)
                if cached:
                    self.score_cache.put(score_cache_key, scores)
            else:
                groups = shot_groups(n, cfg.shot_size, cfg.leftover)
            with timer("compose"):
                code = binary_code(scores.decisions, groups, n)
                pos = positive_map(code)
                neg = negative_map(code, order=cfg.negative_order)
                alpha = resolve_alpha(cfg.alpha, code)
                # No relevant frame: Sp = Sn = X (Eq. 6/7), so α·(l(Sp) − l(Sn)) = 0 whatever α is.
                contrast = not np.array_equal(pos, neg)
            trace.update(
                scorer=self.scorer.name,
                shot_size=cfg.shot_size,
                shot_groups=[g.tolist() for g in groups],
                shot_scores=[float(s) for s in scores.scores],
                shot_decisions=[int(d) for d in scores.decisions],
                shot_responses=list(scores.responses),
                binary_code=[int(c) for c in code],
                positive_map=[int(i) for i in pos],
                negative_map=[int(i) for i in neg],
                alpha=float(alpha) if contrast else 0.0,
                alpha_eq9=float(alpha),
                summary=summary(code),
            )
            alpha = alpha if contrast else 0.0
        else:
            trace.update(scorer=None, alpha=0.0, binary_code=None, positive_map=None, negative_map=None)

        if alpha == 0.0:
            # l(X) + 0·(...) == l(X): run the baseline itself (exactly equal, and one stream cheaper).
            with timer("splice"):
                embeds = self.model.embed_prompt(prompt_ids, features)
            tokens, steps = self._generate(embeds, gen, timer, alpha=None, trace=trace)
            trace["streams"] = 1
        else:
            with timer("splice"):
                black = self.black_features(frames.shape[1:]) if (neg == BLACK).any() else None
                streams = [features, gather_features(features, pos, black), gather_features(features, neg, black)]
                embeds = torch.cat([self.model.embed_prompt(prompt_ids, f) for f in streams], dim=0)
            tokens, steps = self._generate(embeds, gen, timer, alpha=alpha, trace=trace)
            trace["streams"] = 3
        text = gen.cut(self.model.decode(tokens))
        trace.update(answer=text, answer_tokens=tokens, decode_steps=steps, sequence_length=int(embeds.shape[1]))
        trace["timings"] = dict(timer.timings)
        return Answer(text=text, trace=trace)
