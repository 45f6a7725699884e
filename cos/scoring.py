"""Step 3 of CoS: score each mosaic for relevance to the question (the yes/no of Eq. 4).

A scorer MLLM answers, per mosaic ``M_j``, the release prompt

    USER: <image>\\nkeyword_list=<question>. Is anything in keyword_list exist in the image? Just answer yes or no. ASSISTANT:

where ``<question>`` is the whole task prompt (no keyword extraction). Two modes:

* ``generate`` (the release): 5 greedy new tokens, ``d_j = 1 if "yes" in response.lower() else 0``,
  ``s_j = d_j``;
* ``logits`` (an extension): one forward, ``s_j = P(yes) / (P(yes) + P(no))`` at the next-token
  position, ``d_j = 1 if s_j >= threshold``. ``P(yes)`` sums the probabilities of every vocabulary token
  that spells "yes" up to case and a leading word marker (``yes``, ``Yes``, ``YES``, ``▁yes``, ``Ġyes``,
  …), likewise ``P(no)``; for LLaVA-1.5's Llama tokenizer that is ``▁Yes``/``▁yes``/``yes``/… .

Scorers: :class:`LlavaScorer` (the paper's LLaVA-1.5-13B), :class:`SelfScorer` (the base video model
through :class:`cos.protocol.VideoLM`), :class:`UniformScorer` (nothing relevant). :func:`get_scorer`
builds each distinct configuration once per process (the release rebuilt the 13B scorer per sample —
defect 4).
"""

from __future__ import annotations

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cos.errors import ConfigError
from cos.options import as_bool, choice, number, option, positive_int, validate

SCORER_NAMES = ("llava", "self", "uniform")
MODES = ("generate", "logits")
DEFAULT_LLAVA = "llava-hf/llava-1.5-13b-hf"
GENERATE_TOKENS = 5

#: The question part of the release's scoring prompt (``{question}``: the whole task prompt).
SCORING_QUESTION = "keyword_list={question}. Is anything in keyword_list exist in the image? Just answer yes or no."


def scoring_question(question: str) -> str:
    """The scorer question ``Ps(Q)`` without chat wrapping (used by the self scorer)."""
    return SCORING_QUESTION.format(question=question)


def llava_prompt(question: str) -> str:
    """The release's LLaVA-1.5 scoring prompt: ``USER: <image>\\n`` + ``Ps(Q)`` + `` ASSISTANT:``."""
    return f"USER: <image>\n{scoring_question(question)} ASSISTANT:"


def yes_decision(response: str) -> int:
    """The release rule: ``d = 1`` iff ``"yes" in response.lower()``."""
    return int("yes" in response.lower())


@dataclass
class ShotScores:
    """Per-mosaic results: ``scores`` float in [0, 1], ``decisions`` int 0/1, ``responses`` the raw
    decoded answers (``""`` in logits mode). All have one entry per mosaic."""

    scores: np.ndarray
    decisions: np.ndarray
    responses: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.decisions = np.asarray(self.decisions, dtype=np.int64).reshape(-1)
        self.responses = list(self.responses) if self.responses else [""] * len(self.scores)
        if not (len(self.scores) == len(self.decisions) == len(self.responses)):
            raise ValueError(
                f"ShotScores lengths differ: {len(self.scores)} scores, {len(self.decisions)} decisions, "
                f"{len(self.responses)} responses"
            )
        if self.scores.size and (np.isnan(self.scores).any() or self.scores.min() < 0 or self.scores.max() > 1):
            raise ValueError(f"scores must lie in [0, 1], got {self.scores}")
        if self.decisions.size and not np.isin(self.decisions, (0, 1)).all():
            raise ValueError(f"decisions must be 0/1, got {self.decisions}")

    def __len__(self) -> int:
        return len(self.scores)


class ShotScorer(ABC):
    """Scores mosaics against a question: ``score(M_1..M_m, Q) -> ShotScores``."""

    name: str = "abstract"

    @abstractmethod
    def score(self, mosaics: list, question: str) -> ShotScores:
        """Score every mosaic ``M_j`` for ``Q`` (Eq. 4): ``(s_j, d_j)`` per mosaic."""


class UniformScorer(ShotScorer):
    """Marks nothing relevant: ``s_j = 0, d_j = 0``. Then ``Sp = Sn = X`` and CoS reduces to the baseline."""

    name = "uniform"
    constructions = 0

    def __init__(self):
        UniformScorer.constructions += 1

    def score(self, mosaics: list, question: str) -> ShotScores:
        """``s_j = 0``, ``d_j = 0`` for every mosaic."""
        m = len(mosaics)
        return ShotScores(np.zeros(m), np.zeros(m, dtype=np.int64), [""] * m)


# ----------------------------------------------------------------------------------------------- helpers
def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"scorer mode must be one of {MODES}, got {mode!r}")
    return mode


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(float(threshold)):
        raise ConfigError(f"scorer threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"scorer threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ConfigError(f"scorer batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _strip_marker(token: str) -> str:
    # sentencepiece "▁", byte-level BPE "Ġ", plain spaces
    return token.lstrip("▁Ġ ").lower()


def answer_token_ids(vocab: dict[str, int], word: str) -> list[int]:
    """Ids of every vocabulary token spelling ``word`` up to case and a leading word marker."""
    ids = sorted({i for tok, i in vocab.items() if _strip_marker(tok) == word})
    if not ids:
        raise ConfigError(f"the scorer's tokenizer has no single token for {word!r}; logits mode needs one")
    return ids


def yes_probability(logits: torch.Tensor, yes_ids: list[int], no_ids: list[int]) -> torch.Tensor:
    """``s = P(yes) / (P(yes) + P(no))`` from next-token ``logits (B, V)``, with ``P(w) = Σ_{v ∈ ids(w)}
    softmax(l)_v``; computed as ``sigmoid(logsumexp l_yes − logsumexp l_no)`` (float64)."""
    lg = logits.double()
    yes = torch.logsumexp(lg[:, yes_ids], dim=-1)
    no = torch.logsumexp(lg[:, no_ids], dim=-1)
    return torch.sigmoid(yes - no)


def _resolve_device(device) -> torch.device:
    from cos.device import normalise_device

    return torch.device(normalise_device(device))


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    from cos.device import resolve_dtype

    return resolve_dtype(dtype, device, gpu_default=torch.float16)  # LLaVA-1.5 was released in float16


# ------------------------------------------------------------------------------------------------ LLaVA
class LlavaScorer(ShotScorer):
    """LLaVA-1.5 (``LlavaForConditionalGeneration`` + ``AutoProcessor``) as the shot scorer (the paper's).

    Args:
        pretrained: hub id or local directory (default ``llava-hf/llava-1.5-13b-hf``).
        mode: ``"generate"`` (release: 5 greedy tokens, ``"yes" in response.lower()``) or ``"logits"``
            (``P(yes)/(P(yes)+P(no))`` from one forward).
        threshold: decision threshold on the logits-mode score (``d = s >= threshold``).
        batch_size: mosaics per forward (left padding).
        load_in_4bit: 4-bit weights via bitsandbytes (the paper's setting); CUDA only.
        device, dtype: default CUDA/float16 when available, else CPU/float32.
    """

    name = "llava"
    constructions = 0  # incremented per construction; tests use it to check the process-level cache

    def __init__(
        self,
        pretrained: str = DEFAULT_LLAVA,
        mode: str = "generate",
        threshold: float = 0.5,
        batch_size: int = 16,
        load_in_4bit: bool = False,
        device=None,
        dtype=None,
    ):
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.mode = _check_mode(mode)
        self.threshold = _check_threshold(threshold)
        self.batch_size = _check_batch_size(batch_size)
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if load_in_4bit:
            kwargs["quantization_config"] = _four_bit_config(self.device, self.dtype)
            kwargs["device_map"] = {"": self.device.index or 0}
        LlavaScorer.constructions += 1
        self.pretrained = str(pretrained)
        # PIL image backend: never needs torchvision, same pixels on every machine.
        processor = AutoProcessor.from_pretrained(self.pretrained, backend="pil")
        model = LlavaForConditionalGeneration.from_pretrained(self.pretrained, **kwargs).eval()
        if not load_in_4bit:
            model.to(self.device)
        self._attach(model, processor)

    @classmethod
    def from_model(cls, model, processor, name: str, mode: str = "generate", threshold: float = 0.5, batch_size: int = 16,
                   dtype=None) -> LlavaScorer:
        """A scorer over a LLaVA model already built (e.g. random weights at full size, for benchmarks);
        ``dtype``: the dtype of its pixel values (default: the model's)."""
        self = cls.__new__(cls)
        self.mode, self.threshold, self.batch_size = _check_mode(mode), _check_threshold(threshold), _check_batch_size(batch_size)
        self.device = model.device
        self.dtype = dtype or model.dtype
        self.pretrained = str(name)
        cls.constructions += 1
        self._attach(model.eval(), processor)
        return self

    def _attach(self, model, processor) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = model
        vocab = self.tokenizer.get_vocab()
        self.yes_ids = answer_token_ids(vocab, "yes")
        self.no_ids = answer_token_ids(vocab, "no")

    def _inputs(self, images: list, question: str):
        prompts = [llava_prompt(question)] * len(images)
        batch = self.processor(images=[im.convert("RGB") for im in images], text=prompts, return_tensors="pt",
                               padding=True)
        return {k: (v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device))
                for k, v in batch.items()}

    @torch.no_grad()
    def score(self, mosaics: list, question: str) -> ShotScores:
        """Per mosaic: ``d_j = ["yes" ∈ lower(answer_j)]``, ``s_j = d_j`` (generate), or
        ``s_j = P(yes)/(P(yes)+P(no))``, ``d_j = [s_j >= threshold]`` (logits)."""
        scores: list[float] = []
        responses: list[str] = []
        for chunk in _batches(list(mosaics), self.batch_size):
            inputs = self._inputs(chunk, question)
            if self.mode == "logits":
                logits = self.model(**inputs, logits_to_keep=1).logits[:, -1]
                scores.extend(yes_probability(logits, self.yes_ids, self.no_ids).tolist())
                responses.extend([""] * len(chunk))
            else:
                out = self.model.generate(
                    **inputs, max_new_tokens=GENERATE_TOKENS, do_sample=False, num_beams=1,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new = out[:, inputs["input_ids"].shape[1]:]
                texts = [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
                responses.extend(texts)
                scores.extend(float(yes_decision(t)) for t in texts)
        return _finish(scores, responses, self.mode, self.threshold)


def _four_bit_config(device: torch.device, dtype: torch.dtype):
    if device.type != "cuda":
        raise ConfigError(f"load_in_4bit needs a CUDA device (bitsandbytes), got device {device}; "
                          "use load_in_4bit=False on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("load_in_4bit needs bitsandbytes: pip install bitsandbytes "
                          "(or `pip install -e .[gpu]`), or use load_in_4bit=False") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.float16)


def _finish(scores: list[float], responses: list[str], mode: str, threshold: float) -> ShotScores:
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if mode == "logits":
        d = (s >= threshold).astype(np.int64)
    else:
        d = np.asarray([yes_decision(r) for r in responses], dtype=np.int64)
    return ShotScores(s, d, responses)


# ------------------------------------------------------------------------------------------------- self
class SelfScorer(ShotScorer):
    """The base video model as its own scorer, through :class:`cos.protocol.VideoLM` only.

    Each mosaic is a one-frame video: ``preprocess → encode_frames → embed_prompt(prompt_ids(Ps(Q)))``,
    then ``forward_logits`` (logits mode: ``s = P(yes)/(P(yes)+P(no))`` over the ids of ``yes``/``Yes``
    and ``no``/``No`` that ``token_id`` resolves) or ``generate`` 5 greedy tokens (generate mode: the
    release rule). Mosaics are batched (equal lengths: same prompt, one frame each). The paper's ablation
    found this scorer weaker than LLaVA-1.5 (50.4 vs 53.5 on VideoMME with LongVA).
    """

    name = "self"
    constructions = 0
    _VARIANTS = {"yes": ("yes", "Yes", " yes", " Yes"), "no": ("no", "No", " no", " No")}

    def __init__(self, model, mode: str = "generate", threshold: float = 0.5, batch_size: int = 16):
        from cos.protocol import VideoLM

        if not isinstance(model, VideoLM):
            raise ConfigError(f"SelfScorer needs a cos.protocol.VideoLM, got {type(model).__name__}")
        self.model = model
        self.mode = _check_mode(mode)
        self.threshold = _check_threshold(threshold)
        self.batch_size = _check_batch_size(batch_size)
        SelfScorer.constructions += 1
        self.yes_ids = self._ids("yes") if self.mode == "logits" else []
        self.no_ids = self._ids("no") if self.mode == "logits" else []

    def _ids(self, word: str) -> list[int]:
        ids = set()
        for text in self._VARIANTS[word]:
            try:
                ids.add(int(self.model.token_id(text)))
            except (ValueError, KeyError, LookupError):
                continue  # not a single token in this tokenizer
        if not ids:
            raise ConfigError(f"the video model's tokenizer has no single token for {word!r}; logits mode needs one")
        return sorted(ids)

    def _embed(self, mosaic, prompt_ids: torch.Tensor) -> torch.Tensor:
        frames = np.array(mosaic.convert("RGB"), dtype=np.uint8)[None]  # writable copy
        feats = self.model.encode_frames(self.model.preprocess(frames))
        return self.model.embed_prompt(prompt_ids, feats)

    @torch.no_grad()
    def score(self, mosaics: list, question: str) -> ShotScores:
        """As :meth:`LlavaScorer.score`, with the base model seeing each mosaic as a one-frame video."""
        prompt_ids = self.model.prompt_ids(scoring_question(question))
        scores: list[float] = []
        responses: list[str] = []
        for chunk in _batches(list(mosaics), self.batch_size):
            embeds = torch.cat([self._embed(m, prompt_ids) for m in chunk], dim=0)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            if self.mode == "logits":
                logits = self.model.forward_logits(embeds, mask)
                scores.extend(yes_probability(logits, self.yes_ids, self.no_ids).tolist())
                responses.extend([""] * len(chunk))
            else:
                out = self.model.generate(embeds, mask, max_new_tokens=GENERATE_TOKENS, do_sample=False, num_beams=1)
                texts = [self.model.decode(row.tolist()) for row in out]
                responses.extend(texts)
                scores.extend(float(yes_decision(t)) for t in texts)
        return _finish(scores, responses, self.mode, self.threshold)


# ------------------------------------------------------------------------------------------------ cache
_CACHE: dict[tuple, ShotScorer] = {}


def _key_part(value: Any):
    try:
        hash(value)
        return value
    except TypeError:
        return ("id", id(value))  # e.g. a model object: same object → same scorer


def get_scorer(name: str, **kwargs) -> ShotScorer:
    """The scorer ``name`` ∈ {"llava", "self", "uniform"} built with ``kwargs``, constructed once per
    process per distinct ``(name, kwargs)`` and reused (the release rebuilt it per sample — defect 4)."""
    if name not in SCORER_NAMES:
        raise ConfigError(f"scorer must be one of {SCORER_NAMES}, got {name!r}")
    if "mode" in kwargs:
        _check_mode(kwargs["mode"])
    if "threshold" in kwargs:
        _check_threshold(kwargs["threshold"])
    key = (name, tuple(sorted((k, _key_part(v)) for k, v in kwargs.items())))
    scorer = _CACHE.get(key)
    if scorer is None:
        cls = {"llava": LlavaScorer, "self": SelfScorer, "uniform": UniformScorer}[name]
        params = inspect.signature(cls.__init__).parameters
        valid = [p for p in params if p != "self"]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for scorer {name!r}; valid: {valid}")
        missing = [p for p, v in params.items() if p != "self" and v.default is inspect.Parameter.empty and p not in kwargs]
        if missing:
            raise ConfigError(f"scorer {name!r} needs option(s) {missing}")
        scorer = cls(**kwargs)
        _CACHE[key] = scorer
    return scorer


@dataclass
class ScorerConfig:
    """Which scorer answers "is anything the question asks about in this mosaic?" and how (options of
    the CoS models; names as in ``model_args``)."""

    scorer: str = option("llava", read=choice(SCORER_NAMES),
                         help="llava (the paper), self (the base model scores its own shots), uniform (nothing relevant: the baseline)")
    scorer_pretrained: str = option(DEFAULT_LLAVA, flags=("--scorer-model",), help="LLaVA-1.5 checkpoint of the llava scorer")
    scorer_load_in_4bit: bool = option(False, read=as_bool, flags=("--scorer-4bit",), help="load the llava scorer in 4 bit (GPU + bitsandbytes)")
    scorer_batch_size: int = option(16, read=positive_int, identity=False, help="mosaics per scorer forward")
    score_mode: str = option("generate", read=choice(MODES), help="generate (release: 'yes' in 5 greedy tokens) or logits (P(yes) >= threshold)")
    score_threshold: float = option(0.5, read=number(0.0, 1.0), flags=("--threshold",), help="P(yes) threshold in logits mode")

    def __post_init__(self):
        validate(self)

    def build(self, model=None, device=None) -> ShotScorer:
        """The scorer (cached per process, see :func:`get_scorer`); ``model`` is the base model for ``self``."""
        if self.scorer == "uniform":
            return get_scorer("uniform")
        if self.scorer == "self":
            return get_scorer("self", model=model, mode=self.score_mode, threshold=self.score_threshold)
        return get_scorer("llava", pretrained=self.scorer_pretrained, mode=self.score_mode, threshold=self.score_threshold,
                          batch_size=self.scorer_batch_size, load_in_4bit=self.scorer_load_in_4bit,
                          device=None if device is None else str(device))


def clear_scorer_cache() -> None:
    """Forget every cached scorer (tests; freeing GPU memory)."""
    _CACHE.clear()
