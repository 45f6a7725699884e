"""One sample through Chain-of-Shot: the method's steps on sampled frames.

:meth:`CoSPipeline.answer` runs, in order, :meth:`~CoSPipeline.ground` (shots → mosaics → scorer →
binary code, Eq. 4–5), :meth:`~CoSPipeline.compose` (the positive and negative maps and α, Eq. 6–7, 9),
:meth:`~CoSPipeline.streams` (the embeddings of X, Sp and Sn) and :meth:`~CoSPipeline.decode`
(co-reasoning, Eq. 8), and assembles the :class:`~cos.trace.CoSTrace` once, at the end.

The pipeline drives any :class:`cos.protocol.VideoLM`. Frames are decoded once and every sampled frame
goes through the vision tower once; when the model's frame features are independent per frame
(``facts.independent_frames``) the positive and negative videos gather those features by index (plus one
black frame when Eq. 7 needs it), otherwise their frames are composed and each stream is encoded. With
α = 0 (nothing relevant, or the ``uniform`` scorer) co-reasoning reduces to the plain baseline, and the
pipeline runs exactly the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from cos.compose import BLACK, ORDER_CHOICES, gather_features, negative_map, positive_map, resolve_alpha
from cos.decoding import co_reasoning_generate, stack_streams
from cos.errors import ConfigError
from cos.grounding import binary_code, summary
from cos.options import choice, number, option, positive_int, validate
from cos.prefix import MIN_SHARED_SAVING, SHARE_PREFIX_CHOICES, plan_prefill, prefill_shared
from cos.protocol import SupportsPrefill, VideoInfo, VideoLM
from cos.scoring import ShotScorer, ShotScores
from cos.shots import LEFTOVER_CHOICES, make_mosaics, shot_groups
from cos.trace import CoSTrace, StageTimer

METHODS = ("cos", "uniform")
#: values of ``CoSConfig.stream_times``
STREAM_TIMES = ("shown", "original")


@dataclass
class GenerationOptions:
    """Decoding options shared by the baseline and CoS (CoS is greedy only)."""

    max_new_tokens: int = 16
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    until: Sequence[str] = ()
    #: False: generate exactly ``max_new_tokens`` (benchmarks compare equal token counts)
    stop_at_eos: bool = True

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
        if not self.stop_at_eos:
            kw["eos_token_id"] = None
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

    shot_size: int = option(4, read=positive_int, help="frames per shot mosaic (k)")
    leftover: str = option("pad", read=choice(LEFTOVER_CHOICES),
                           help="frames beyond a multiple of k: a padded last mosaic (pad) or never relevant (drop, the release)")
    alpha: float | str = option("auto", read=number(0.0, 1.0, special=("auto",)), help="Eq. 9 (auto) or a fixed number in [0, 1]")
    negative_order: str = option("forward", read=choice(ORDER_CHOICES), help="Eq. 7 search order (the release searched backward first)")
    #: "auto": prefill shared prefixes once (cos.prefix) when that saves at least
    #: ``cos.prefix.MIN_SHARED_SAVING`` of the prefill tokens, else prefill each stream from scratch;
    #: "always" / "never" force either (see README, "Cost").
    share_prefix: str = option("auto", read=choice(SHARE_PREFIX_CHOICES), identity=False,
                               help="prefill X/Sp/Sn prefixes once: auto (when it saves >= 25%% of the tokens), always, never")
    #: For models whose prompt states frame times (LLaVA-Video's time instruction): "shown" — each stream
    #: states the times of the frames it shows (Sp's frame i is sampled frame pos[i]); "original" — all
    #: three streams state X's times. The paper does not say; models without times are not affected.
    stream_times: str = option("shown", read=choice(STREAM_TIMES),
                               help="frame times a composed stream's prompt states: shown (its own frames') or original (X's)")

    def __post_init__(self):
        validate(self)


@dataclass
class Answer:
    text: str
    trace: CoSTrace = field(default_factory=CoSTrace)


@dataclass
class Grounding:
    """Step 1–3: the shots, the scorer's verdicts and the binary code over the sampled frames."""

    groups: list[np.ndarray]
    scores: ShotScores
    code: np.ndarray
    cache_hit: bool = False


@dataclass
class Composition:
    """Step 4: the positive and negative maps (Eq. 6–7) and α (Eq. 9, or fixed)."""

    positive: np.ndarray
    negative: np.ndarray
    alpha_eq9: float

    @property
    def contrast(self) -> bool:
        """Sp ≠ Sn; when they are equal (nothing relevant) α·(l(Sp) − l(Sn)) = 0 whatever α is."""
        return not np.array_equal(self.positive, self.negative)

    @property
    def alpha(self) -> float:
        """The α decoding uses: Eq. 9's (or the fixed one) when there is a contrast, else 0."""
        return float(self.alpha_eq9) if self.contrast else 0.0


def check_frames(frames: np.ndarray) -> None:
    """Refuse anything but a non-empty array of RGB frames ``(n, H, W, 3)`` (:class:`ConfigError`)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ConfigError(f"frames must be a non-empty uint8 array (n, H, W, 3), got shape {frames.shape}")


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

    @property
    def sync(self):
        """``torch.cuda.synchronize`` on a GPU (so stage timers measure finished work), else None."""
        return self._sync

    # -- shared pieces ---------------------------------------------------------------------------
    def encode(self, frames: np.ndarray, timer: StageTimer, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Frame features of ``frames``; ``pixels``: their ``model.preprocess`` output when already computed."""
        if pixels is None:
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

    def _independent_frames(self) -> bool:
        facts = getattr(self.model, "facts", None)
        return True if facts is None else bool(facts.independent_frames)

    def _repetition_penalty(self) -> float:
        facts = getattr(self.model, "facts", None)
        return float(facts.repetition_penalty) if facts is not None else 1.0

    # -- the method's steps -------------------------------------------------------------------------
    def ground(self, frames: np.ndarray, question: str, timer: StageTimer, score_cache_key: str | None = None,
               video: VideoInfo | None = None) -> Grounding:
        """Shots → mosaics → the scorer's yes/no per mosaic → the binary code (Eq. 4–5). With a score
        cache hit no mosaic is built and the scorer does not run. The scorer gets the mosaics, the
        question, ``video`` (which file and source frames, or None) and the shot groups
        (:meth:`cos.scoring.ShotScorer.score_shots`)."""
        if self.scorer is None:
            raise ConfigError("method 'cos' needs a scorer")
        cfg, n = self.config, frames.shape[0]
        cached = self.score_cache is not None and score_cache_key
        scores = self.score_cache.get(score_cache_key) if cached else None
        hit = scores is not None
        if scores is None:  # mosaics are built only when the scorer has to run
            with timer("mosaics"):
                mosaics, groups = make_mosaics(frames, cfg.shot_size, cfg.leftover)
            with timer("score"):
                score_shots = getattr(self.scorer, "score_shots", None)  # a scorer not derived from ShotScorer: score()
                scores = (score_shots(mosaics, question, video, groups) if score_shots is not None
                          else self.scorer.score(mosaics, question))
            if cached:
                self.score_cache.put(score_cache_key, scores)
        else:
            groups = shot_groups(n, cfg.shot_size, cfg.leftover)
        with timer("compose"):
            code = binary_code(scores.decisions, groups, n)
        return Grounding(groups=groups, scores=scores, code=code, cache_hit=hit)

    def compose(self, code: np.ndarray, timer: StageTimer) -> Composition:
        """The positive map (Eq. 6), the negative map (Eq. 7) and α (Eq. 9, or the configured number)."""
        with timer("compose"):
            return Composition(positive=positive_map(code), negative=negative_map(code, order=self.config.negative_order),
                               alpha_eq9=resolve_alpha(self.config.alpha, code))

    def stream_prompts(self, question: str, prompt_ids: torch.Tensor, video: VideoInfo | None, comp: Composition) -> list[torch.Tensor]:
        """The prompt of X, Sp and Sn. They differ only for a model whose prompt states frame times, with
        ``stream_times="shown"``: then Sp and Sn state the times of the frames they show."""
        if video is None or self.config.stream_times == "original":
            return [prompt_ids] * 3
        return [prompt_ids] + [self.model.prompt_ids(question, video.shown(m)) for m in (comp.positive, comp.negative)]

    def streams(self, frames: np.ndarray, features: torch.Tensor, prompts: list[torch.Tensor], comp: Composition,
                timer: StageTimer, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        """Embeddings ``(3, L, D)`` of X, Sp and Sn (left-padded, with their attention mask, when the
        prompts differ in length; else mask None), and how Sp/Sn got their frame features: ``gathered``
        from X's by index, or ``encoded`` from composed frames when the model's frame features are not
        independent per frame (from X's pixel values ``pixels`` gathered by index, when given)."""
        if self._independent_frames():
            with timer("splice"):
                black = self.black_features(frames.shape[1:]) if (comp.negative == BLACK).any() else None
                feats = [features, gather_features(features, comp.positive, black), gather_features(features, comp.negative, black)]
                how = "gathered"
        elif pixels is not None:
            # Preprocessing is per frame, so Sp's and Sn's pixel values are X's gathered by index (index -1, BLACK,
            # is a black frame's): the same as preprocessing the composed frames, without redoing it. This also keeps
            # a frame whose pixels the caller made some other way (``cos niah``'s needle) exactly as given.
            with timer("preprocess"):
                padded = torch.cat([pixels, self.model.preprocess(np.zeros_like(frames[:1]))])
            feats = [features] + [self.encode(frames, timer, padded[torch.as_tensor(m, device=padded.device)])
                                  for m in (comp.positive, comp.negative)]
            how = "encoded"
        else:
            padded = np.concatenate([frames, np.zeros_like(frames[:1])])  # index -1 (BLACK) is the black frame
            feats = [features, self.encode(padded[comp.positive], timer), self.encode(padded[comp.negative], timer)]
            how = "encoded"
        with timer("splice"):
            rows = [self.model.embed_prompt(p, f) for p, f in zip(prompts, feats)]
            if len({r.shape[1] for r in rows}) == 1:
                return torch.cat(rows, dim=0), None, how
            embeds, mask = stack_streams(rows)
            return embeds, mask, how

    def decode(self, embeds: torch.Tensor, gen: GenerationOptions, timer: StageTimer, alpha: float | None,
               mask: torch.Tensor | None = None) -> tuple[list[int], int, dict]:
        """Greedy co-reasoning over ``embeds`` rows (X, Sp, Sn) with ``alpha`` (Eq. 8), or, with
        ``alpha=None``, the model's own ``generate`` on one stream. ``mask``: the left-padding mask of
        streams of different lengths (None: none padded). Returns (tokens, steps, prefill facts)."""
        clock = _StepClock(self._sync)
        padded = mask is not None and not bool(mask.all())
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        start = time.perf_counter()
        extra, facts = {}, {}
        with torch.inference_mode():
            if alpha is not None and isinstance(self.model, SupportsPrefill) and not padded:
                # The three streams are prefilled one after another into their own caches (peak memory of
                # one stream's activations), each shared prefix once when that pays (cos.prefix); the
                # stacked caches then decode as one batch of 3.
                plan, cfg = plan_prefill(embeds), self.config
                share = cfg.share_prefix == "always" or (cfg.share_prefix == "auto" and plan.saved_fraction >= MIN_SHARED_SAVING)
                extra["cache"], plan = prefill_shared(self.model.prefill, embeds, plan=plan if share else plan.without_sharing())
                facts = dict(prefill_shared=share, prefill_tokens=plan.computed, prefill_tokens_unshared=plan.unshared,
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
                    repetition_penalty=self._repetition_penalty(),
                    extra_processors=[clock],
                    stop_at_eos=gen.stop_at_eos,
                    **extra,
                )
        end = time.perf_counter()
        first = clock.stamps[0] if clock.stamps else end
        timer.add("prefill", first - start)
        timer.add("decode", end - first)
        return out[0].tolist(), len(clock.stamps), facts

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
        video: VideoInfo | None = None,
        pixels: torch.Tensor | None = None,
    ) -> Answer:
        """Answer ``question`` about uint8 RGB ``frames (n, H, W, 3)`` (already sampled).

        ``scorer_question`` is what the scorer sees (the release passes the whole prompt, which is
        the default). ``score_cache_key`` identifies (video, sampled frames, question) for
        ``self.score_cache`` (any object with ``get(key) -> ShotScores | None`` and ``put(key, scores)``;
        the scorer's identity is the cache's business), so re-running with another α or decoding option
        does not re-score. ``video`` tells models whose prompt states frame times when the frames were
        taken, and the scorer which video and source frames it scores (the oracle needs it). ``pixels``:
        ``model.preprocess(frames)`` when it was computed ahead (prefetching); the answer is the same.
        Returns the answer text and the trace (:class:`~cos.trace.CoSTrace`).
        """
        if method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
        check_frames(frames)
        gen = gen or GenerationOptions()
        if method == "cos" and (gen.do_sample or gen.num_beams != 1):
            raise ConfigError("co-reasoning decoding is greedy only (the three streams must pick the same token): "
                              f"got do_sample={gen.do_sample}, num_beams={gen.num_beams}")
        timer = timer or StageTimer(self._sync)
        n = frames.shape[0]
        if pixels is None and not self._independent_frames():  # kept: Sp and Sn gather their pixel values from X's
            with timer("preprocess"):
                pixels = self.model.preprocess(frames)
        features = self.encode(frames, timer, pixels)
        if self._independent_frames():
            pixels = None  # Sp and Sn gather features; the pixel values need not stay in memory while decoding
        with timer("prompt"):
            prompt_ids = self.model.prompt_ids(question, video) if video is not None else self.model.prompt_ids(question)

        grounding = comp = None
        if method == "cos":
            grounding = self.ground(frames, scorer_question if scorer_question is not None else question, timer, score_cache_key,
                                    video=video)
            comp = self.compose(grounding.code, timer)

        how = None
        if comp is None or comp.alpha == 0.0:
            # l(X) + 0·(...) == l(X): run the baseline itself (exactly equal, and one stream cheaper).
            with timer("splice"):
                embeds = self.model.embed_prompt(prompt_ids, features)
            tokens, steps, prefill = self.decode(embeds, gen, timer, alpha=None)
            streams = 1
        else:
            with timer("prompt"):
                prompts = self.stream_prompts(question, prompt_ids, video, comp)
            embeds, mask, how = self.streams(frames, features, prompts, comp, timer, pixels)
            tokens, steps, prefill = self.decode(embeds, gen, timer, alpha=comp.alpha, mask=mask)
            streams = 3
        text = gen.cut(self.model.decode(tokens))
        return Answer(text=text, trace=self._trace(method, question, n, grounding, comp, how, streams, prefill, text, tokens, steps,
                                                   int(embeds.shape[1]), timer))

    def _trace(self, method, question, n, grounding: Grounding | None, comp: Composition | None, how, streams, prefill, text, tokens,
               steps, length, timer) -> CoSTrace:
        trace = CoSTrace(method=method, question=question, num_frames=n, streams=streams, answer=text, answer_tokens=tokens,
                         decode_steps=steps, sequence_length=length, stream_features=how, **prefill)
        if grounding is not None:
            trace.update(
                scorer=self.scorer.name,
                shot_size=self.config.shot_size,
                shot_groups=[g.tolist() for g in grounding.groups],
                shot_scores=[float(s) for s in grounding.scores.scores],
                shot_decisions=[int(d) for d in grounding.scores.decisions],
                shot_responses=list(grounding.scores.responses),
                score_cache_hit=grounding.cache_hit,
                binary_code=[int(c) for c in grounding.code],
                positive_map=[int(i) for i in comp.positive],
                negative_map=[int(i) for i in comp.negative],
                alpha=comp.alpha,
                alpha_eq9=float(comp.alpha_eq9),
                summary=summary(grounding.code),
            )
        trace.timings = dict(timer.timings)
        return trace
