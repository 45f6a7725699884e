"""Per-sample trace: what CoS did to one video, as one JSON-serialisable record.

Keys (stable, documented in the README): ``frame_indices`` (source frame per sampled frame),
``shot_groups``, ``shot_scores`` (per shot, in [0, 1]), ``shot_decisions`` (per shot, 0/1),
``shot_responses``, ``binary_code`` (per sampled frame, 0/1), ``positive_map`` / ``negative_map`` (per
sampled frame: index into the sampled frames it is replaced by, -1 = black frame), ``alpha``,
``scorer``, ``method``, ``question``, ``answer``, ``video``, ``timings`` (seconds per stage), ``summary``
and ``error`` (null, or the cause when the sample failed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


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


def write_trace(trace: dict, path: str | os.PathLike) -> Path:
    """Write ``trace`` as JSON (atomically: a killed run never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(to_jsonable(trace), indent=1))
    os.replace(tmp, path)
    return path


def read_trace(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


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
