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
through :class:`cos.protocol.VideoLM`), :class:`UniformScorer` (nothing relevant), :class:`OracleScorer`
(the synthetic needle task's ground truth, never the pixels: the method's ceiling). :func:`get_scorer`
builds each distinct configuration once per process (the release rebuilt the 13B scorer per sample —
defect 4).

The pipeline calls :meth:`ShotScorer.score_shots` with the mosaics, the question, the video
(:class:`cos.protocol.VideoInfo`: which file, which source frames) and the shot groups; scorers that look
at pixels only implement :meth:`ShotScorer.score`.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cos.errors import ConfigError
from cos.options import as_bool, choice, number, option, optional_path, positive_int, validate

if TYPE_CHECKING:
    from cos.protocol import VideoInfo

SCORER_NAMES = ("llava", "self", "uniform", "oracle")
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
    """Scores mosaics against a question: ``score(M_1..M_m, Q) -> ShotScores``.

    :class:`cos.pipeline.CoSPipeline` calls :meth:`score_shots`, which also passes where the mosaics come
    from; its default ignores that and calls :meth:`score`. A scorer that needs the video (the oracle)
    overrides :meth:`score_shots`."""

    name: str = "abstract"

    @abstractmethod
    def score(self, mosaics: list, question: str) -> ShotScores:
        """Score every mosaic ``M_j`` for ``Q`` (Eq. 4): ``(s_j, d_j)`` per mosaic."""

    def score_shots(self, mosaics: list, question: str, video: VideoInfo | None = None,
                    groups: list | None = None) -> ShotScores:
        """Score every mosaic, knowing the video: ``video`` (a :class:`cos.protocol.VideoInfo`, or None)
        says which file and which source frames were sampled, ``groups[j]`` holds the positions (into the
        sampled frames) of mosaic ``j``'s frames, so ``video.frame_indices[p]`` is a source frame number.
        Default: :meth:`score`, for scorers that look at the pixels only."""
        return self.score(mosaics, question)


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


# ------------------------------------------------------------------------------------------------ oracle
#: The fields every record of the oracle's ground truth needs (``cos make-needle-videos OUT``'s OUT/questions.json).
TRUTH_FIELDS = ("video", "needle_start", "needle_end", "num_frames")
NO_TRUTH = ("scorer=oracle needs scorer_truth=<questions.json>: the ground truth written by `cos make-needle-videos OUT` "
            "(OUT/questions.json; on the command line --scorer-truth)")


@dataclass(frozen=True)
class NeedleTruth:
    """One video's ground truth: the needle shows on source frames ``needle_start <= i < needle_end``."""

    video: str  #: the video's absolute path (the record's path resolved against the truth file's folder)
    needle_start: int
    needle_end: int
    num_frames: int


def _truth_error(path: str, what: str) -> ConfigError:
    return ConfigError(f"scorer_truth={path!r}: {what}; expected the questions.json written by `cos make-needle-videos OUT` "
                       f"(a list of records with {', '.join(TRUTH_FIELDS)})")


def load_needle_truth(path: str | os.PathLike) -> list[NeedleTruth]:
    """The records of a needle task's ground truth (``OUT/questions.json``), each video path resolved
    against the file's folder. Raises :class:`ConfigError` for a missing or unreadable file, a file that
    is not a non-empty JSON list, a record without one of :data:`TRUTH_FIELDS` or with a bad value, and
    one video given two different needle ranges."""
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as err:
        raise _truth_error(path, f"cannot read it ({err.strerror or err})") from None
    except ValueError as err:
        raise _truth_error(path, f"not valid JSON ({err})") from None
    if not isinstance(data, list) or not data:
        raise _truth_error(path, f"holds {'an empty list' if data == [] else type(data).__name__}, not a list of records")
    folder = os.path.dirname(path)
    out: list[NeedleTruth] = []
    seen: dict[str, NeedleTruth] = {}
    for i, rec in enumerate(data):
        label = f"record {i}" + (f" ({rec['id']!r})" if isinstance(rec, dict) and "id" in rec else "")
        if not isinstance(rec, dict):
            raise _truth_error(path, f"{label} is a {type(rec).__name__}, not an object")
        missing = [k for k in TRUTH_FIELDS if k not in rec]
        if missing:
            raise _truth_error(path, f"{label} lacks {', '.join(missing)}")
        video = rec["video"]
        if not isinstance(video, str) or not video.strip():
            raise _truth_error(path, f"{label} has video={video!r}, not a path")
        nums = {k: rec[k] for k in TRUTH_FIELDS[1:]}
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in nums.values()):
            raise _truth_error(path, f"{label} has non-integer frame numbers {nums}")
        start, end, total = (int(nums[k]) for k in TRUTH_FIELDS[1:])
        if not (0 <= start <= end <= total):
            raise _truth_error(path, f"{label} needs 0 <= needle_start <= needle_end <= num_frames, got {nums}")
        truth = NeedleTruth(os.path.realpath(os.path.join(folder, os.path.expanduser(video))), start, end, total)
        known = seen.get(truth.video)
        if known is not None and known != truth:
            raise _truth_error(path, f"video {video!r} has two different needles ({known} and {truth})")
        seen[truth.video] = truth
        out.append(truth)
    return out


def oracle_decisions(frame_indices, groups: list, needle_start: int, needle_end: int) -> np.ndarray:
    """``d_j = 1`` iff some frame of group ``j`` shows the needle: ``needle_start <= frame_indices[p] <
    needle_end`` for a position ``p`` in ``groups[j]`` (``frame_indices``: source frame per sampled frame)."""
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    out = np.zeros(len(groups), dtype=np.int64)
    for j, group in enumerate(groups):
        pos = np.asarray(group, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() >= idx.size):
            raise ValueError(f"shot group {j} holds positions {pos.tolist()} outside the {idx.size} sampled frames")
        src = idx[pos]
        out[j] = int(((src >= needle_start) & (src < needle_end)).any())
    return out


class OracleScorer(ShotScorer):
    """The ground truth as the scorer (the method's ceiling on the synthetic needle task): mosaic ``j`` is
    relevant (``s_j = d_j = 1``) exactly when one of its frames shows the needle, read from the truth
    file written by ``cos make-needle-videos OUT`` (``OUT/questions.json``), never from pixels.

    The video is found by its path (:attr:`cos.protocol.VideoInfo.source`) resolved to an absolute path,
    else by its file name when exactly one record has that name. Responses are ``""``.

    Args:
        truth: the ground-truth JSON (required; ``scorer_truth=`` in ``model_args``, ``--scorer-truth``).
    """

    name = "oracle"
    constructions = 0

    def __init__(self, truth: str | os.PathLike | None = None):
        if truth is None:
            raise ConfigError(NO_TRUTH)
        self.truth = os.path.abspath(os.fspath(truth))
        records = load_needle_truth(self.truth)
        self._by_path = {r.video: r for r in records}
        self._by_name: dict[str, list[NeedleTruth]] = {}
        for r in self._by_path.values():
            self._by_name.setdefault(os.path.basename(r.video), []).append(r)
        OracleScorer.constructions += 1

    def lookup(self, source: str | os.PathLike) -> NeedleTruth:
        """The record of the video at ``source`` (absolute path first, then a unique file name)."""
        path = os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(source))))
        found = self._by_path.get(path)
        if found is not None:
            return found
        same_name = self._by_name.get(os.path.basename(path), [])
        if len(same_name) == 1:
            return same_name[0]
        if same_name:
            raise ConfigError(f"oracle scorer: video {os.fspath(source)!r} is not in scorer_truth={self.truth!r} by path, and its file "
                              f"name matches {len(same_name)} records ({', '.join(r.video for r in same_name)})")
        raise ConfigError(f"oracle scorer: video {os.fspath(source)!r} (resolved: {path!r}) is not in scorer_truth={self.truth!r} "
                          f"({len(self._by_path)} videos, none at that path or with that file name)")

    def score(self, mosaics: list, question: str) -> ShotScores:
        """Refused: the oracle decides from the video's ground truth, which mosaics alone do not carry."""
        raise ConfigError("the oracle scorer decides from the video's ground truth, not from the mosaics: call "
                          "score_shots(mosaics, question, video, groups) (CoSPipeline does)")

    def score_shots(self, mosaics: list, question: str, video: VideoInfo | None = None,
                    groups: list | None = None) -> ShotScores:
        """``d_j = 1`` iff some frame of ``groups[j]`` has ``needle_start <= video.frame_indices[p] <
        needle_end``; ``s_j = d_j``. Raises :class:`ConfigError` when the video or its path is unknown."""
        if video is None or not getattr(video, "source", None):
            raise ConfigError(f"the oracle scorer needs the video's path to find its ground truth in scorer_truth={self.truth!r}, "
                              "but none was given (a video file, not a list of images)")
        if groups is None:
            raise ConfigError("the oracle scorer needs the shot groups (positions of each mosaic's frames) to score")
        if len(groups) != len(mosaics):
            raise ValueError(f"{len(mosaics)} mosaics but {len(groups)} shot groups")
        truth = self.lookup(video.source)
        if video.total_frames and video.total_frames != truth.num_frames:  # e.g. needle_000.mp4 of another split
            raise ConfigError(f"oracle scorer: video {os.fspath(video.source)!r} has {video.total_frames} frames but its record in "
                              f"scorer_truth={self.truth!r} ({truth.video}) has {truth.num_frames}: not the same video")
        d = oracle_decisions(video.frame_indices, groups, truth.needle_start, truth.needle_end)
        return ShotScores(d.astype(np.float64), d, [""] * len(d))



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
    """The scorer ``name`` ∈ :data:`SCORER_NAMES` built with ``kwargs``, constructed once per process per
    distinct ``(name, kwargs)`` and reused (the release rebuilt it per sample — defect 4). The oracle's
    key also holds its truth file's size and modification time, so a rewritten file is read again."""
    if name not in SCORER_NAMES:
        raise ConfigError(f"scorer must be one of {SCORER_NAMES}, got {name!r}")
    if "mode" in kwargs:
        _check_mode(kwargs["mode"])
    if "threshold" in kwargs:
        _check_threshold(kwargs["threshold"])
    key = (name, tuple(sorted((k, _key_part(v)) for k, v in kwargs.items())))
    if name == "oracle" and kwargs.get("truth") is not None:
        from cos.cache import file_identity

        key += (tuple(sorted(file_identity(kwargs["truth"]).items())),)
    scorer = _CACHE.get(key)
    if scorer is None:
        cls = {"llava": LlavaScorer, "self": SelfScorer, "uniform": UniformScorer, "oracle": OracleScorer}[name]
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
                         help="llava (the paper), self (the base model scores its own shots), uniform (nothing relevant: the baseline), "
                              "oracle (the needle's ground truth from scorer_truth: the method's ceiling)")
    scorer_pretrained: str = option(DEFAULT_LLAVA, flags=("--scorer-model",), help="LLaVA-1.5 checkpoint of the llava scorer")
    scorer_load_in_4bit: bool = option(False, read=as_bool, flags=("--scorer-4bit",), help="load the llava scorer in 4 bit (GPU + bitsandbytes)")
    scorer_batch_size: int = option(16, read=positive_int, identity=False, help="mosaics per scorer forward")
    score_mode: str = option("generate", read=choice(MODES), help="generate (release: 'yes' in 5 greedy tokens) or logits (P(yes) >= threshold)")
    score_threshold: float = option(0.5, read=number(0.0, 1.0), flags=("--threshold",), help="P(yes) threshold in logits mode")
    #: ``identity="set"``: configurations without it keep the result-cache keys they had before it existed
    scorer_truth: str | None = option(None, read=optional_path, identity="set",
                                      help="the oracle scorer's ground truth: OUT/questions.json of `cos make-needle-videos OUT`")

    def __post_init__(self):
        validate(self)
        if self.scorer == "oracle" and self.scorer_truth is None:
            raise ConfigError(NO_TRUTH)

    def build(self, model=None, device=None) -> ShotScorer:
        """The scorer (cached per process, see :func:`get_scorer`); ``model`` is the base model for ``self``;
        ``scorer_truth`` is read by ``oracle`` only."""
        if self.scorer == "uniform":
            return get_scorer("uniform")
        if self.scorer == "oracle":
            return get_scorer("oracle", truth=self.scorer_truth)
        if self.scorer == "self":
            return get_scorer("self", model=model, mode=self.score_mode, threshold=self.score_threshold)
        return get_scorer("llava", pretrained=self.scorer_pretrained, mode=self.score_mode, threshold=self.score_threshold,
                          batch_size=self.scorer_batch_size, load_in_4bit=self.scorer_load_in_4bit,
                          device=None if device is None else str(device))


def clear_scorer_cache() -> None:
    """Forget every cached scorer (tests; freeing GPU memory)."""
    _CACHE.clear()
