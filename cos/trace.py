"""Per-sample trace: what CoS did to one video, as one typed, JSON-serialisable record.

:class:`CoSTrace` lists every key once, with its meaning; it is written by the pipeline (the method's
steps), the engine (the video) and the harness (task, split, doc id), and read by ``cos show``,
``cos report`` and the needle task's grounding. ``TRACE_SCHEMA`` is stored in every file
(``"schema"``); files written before it existed (schema 0) are read too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: version of the trace layout written by :meth:`CoSTrace.to_json`
TRACE_SCHEMA = 1


@dataclass
class CoSTrace:
    """One sample, as CoS (or the baseline) handled it. Indices are into the sampled frames unless noted."""

    # -- what was asked, of which model
    method: str = "uniform"  #: "cos" or "uniform" (the baseline)
    question: str = ""  #: the prompt the model answered (the task's whole ``doc_to_text``)
    backend: str | None = None  #: registry name of the base model ("longva")
    # -- the video (engine)
    video: str | None = None  #: path of the video file or frame folder; None for a list of images
    decoder: str | None = None  #: what produced the frames: "decord", "pyav", "frames" (a folder), "images"
    frame_indices: list[int] = field(default_factory=list)  #: source frame of each sampled frame
    total_frames: int | None = None  #: decodable frames in the video
    fps: float | None = None  #: frame rate (0.0 when unknown)
    frame_times: list[float] | None = None  #: seconds of each sampled frame, when the sampling rule states them
    duration: float | None = None  #: seconds
    num_frames: int = 0  #: frames sampled (n)
    #: a frame selector's work (None: the backend's own sampling rule): method, model, query, candidate_fps,
    #: candidates (source frame of each candidate), scores (one per candidate), selected (candidate positions chosen),
    #: requested, params, note, groups (Q-Frame), fallback (why the backend's rule was used instead), stream_note (the
    #: video ended before its last candidate), cache_hit, timings
    selector: dict | None = None
    # -- grounding (CoS only; None for the baseline)
    scorer: str | None = None  #: scorer name ("llava", "self", "uniform", "oracle", ...)
    shot_size: int | None = None  #: frames per mosaic (k)
    shot_groups: list[list[int]] | None = None  #: the sampled frames in each mosaic
    shot_scores: list[float] | None = None  #: per mosaic, in [0, 1]
    shot_decisions: list[int] | None = None  #: per mosaic, 0/1 (the scorer's yes/no)
    shot_responses: list[str] | None = None  #: per mosaic, the scorer's text (generate mode)
    score_cache_hit: bool | None = None  #: the shot scores came from the score cache
    binary_code: list[int] | None = None  #: per sampled frame, 0/1: the pseudo temporal grounding (Eq. 4–5)
    summary: dict | None = None  #: runs and fraction of relevant frames (:func:`cos.grounding.summary`)
    # -- composition (Eq. 6–7, 9)
    positive_map: list[int] | None = None  #: per frame, the frame Sp shows there
    negative_map: list[int] | None = None  #: per frame, the frame Sn shows there (-1: a black frame)
    alpha: float = 0.0  #: α used in Eq. 8 (0 when Sp = Sn, i.e. nothing is relevant: the baseline is run)
    alpha_eq9: float | None = None  #: α as Eq. 9 (or the configured number) gives it
    stream_features: str | None = None  #: "gathered" (Sp/Sn reuse X's frame features) or "encoded" (each stream encoded)
    # -- decoding
    streams: int = 1  #: 1 (baseline decoding) or 3 (co-reasoning over X, Sp, Sn)
    #: models that compress the video inside the LM (Video-XL's beacon memory): ratio, window, raw visual tokens and
    #: beacons per stream, memory size, and ``batch`` (3: X, Sp and Sn each compressed their own video)
    visual_memory: dict | None = None
    prefill_shared: bool | None = None  #: the three streams' shared prefixes were prefilled once
    prefill_tokens: int | None = None  #: prompt tokens run through the model for the three streams
    prefill_tokens_unshared: int | None = None  #: ... and without sharing, 3 (L - 1)
    prefill_forks: list | None = None  #: per stream, tokens reused from the stream it forked from
    answer: str = ""  #: the answer text (cut at the task's stop strings)
    answer_tokens: list[int] = field(default_factory=list)  #: generated token ids
    decode_steps: int = 0  #: decoding steps run
    sequence_length: int = 0  #: prompt length in tokens, video included
    timings: dict[str, float] = field(default_factory=dict)  #: seconds per stage, and "total"
    #: the video was decoded and preprocessed ahead, in a background thread, while earlier samples ran
    #: (``prefetch``): ``timings`` "decode_video" / "preprocess" are that thread's, off the critical path, and
    #: "prefetch_wait" is how long this sample still waited for them; "total" is this sample's own time
    prefetched: bool | None = None
    # -- the harness
    task: str | None = None  #: lmms-eval task
    split: str | None = None  #: its split
    doc_id: int | None = None  #: the document's id in that split
    prompt_from: str | None = None  #: the lmms-eval model id whose task prompt was answered, when not the model's own
    error: str | None = None  #: null, or the cause when the sample failed
    schema: int = TRACE_SCHEMA  #: layout version of this record

    def to_json(self) -> dict:
        """Plain JSON types (numpy and torch values converted)."""
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> CoSTrace:
        """Read a trace file's dict (any schema up to :data:`TRACE_SCHEMA`; unknown keys are ignored)."""
        schema = int(data.get("schema", 0))
        if schema > TRACE_SCHEMA:
            raise ValueError(f"trace schema {schema} is newer than this code's {TRACE_SCHEMA}: update cos")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["schema"] = schema
        return cls(**values)

    def update(self, **values) -> CoSTrace:
        """Set fields by name (an unknown name is an error, never a silently new key)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AttributeError(f"CoSTrace has no field(s) {unknown}")
        for key, value in values.items():
            setattr(self, key, value)
        return self


def trace_key(video: str, question: str) -> str:
    """A file-name-safe key of one (video, question) pair.

    The model adapter names trace files by it and a task's ``process_results`` finds them by it, so
    neither has to know the other's document ids.
    """
    digest = hashlib.sha1(f"{os.path.abspath(video)}\n{question}".encode()).hexdigest()
    return digest[:20]


def to_jsonable(value: Any) -> Any:
    """numpy / torch scalars and arrays -> plain Python, recursively."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):  # torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_trace(trace: CoSTrace | dict, path: str | os.PathLike) -> Path:
    """Write ``trace`` as JSON (atomically: a killed run never leaves half a file)."""
    from cos.cache import atomic_write

    data = trace.to_json() if isinstance(trace, CoSTrace) else to_jsonable(trace)
    return atomic_write(path, json.dumps(data, indent=1))


def read_trace(path: str | os.PathLike) -> CoSTrace:
    """A trace file as :class:`CoSTrace`."""
    return CoSTrace.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


class StageTimer:
    """Wall time per named stage: ``with timer("encode"): ...``; totals in ``timer.timings``."""

    def __init__(self, sync=None):
        self.timings: dict[str, float] = {}
        self._sync = sync  # e.g. torch.cuda.synchronize, so GPU stages are timed honestly

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self._sync:
            self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                self._sync()
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def add(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    @property
    def total(self) -> float:
        return sum(self.timings.values())
