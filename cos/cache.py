"""Small on-disk caches for long runs: one JSON file per key, written atomically.

A VideoMME run is thousands of samples and hours of GPU time. Two caches make such runs resumable and
cheap to re-run:

* :class:`ScoreCache` holds the scorer's :class:`~cos.scoring.ShotScores` per (video, sampled frames,
  scorer, question, shot layout), so re-running with another α or decoding option does not re-score.
  :class:`cos.pipeline.CoSPipeline` uses it through its ``score_cache`` attribute.
* :class:`ResultCache` holds one finished sample (answer text + trace, or the error record) per
  (model configuration, task, split, doc id, prompt, generation options, visual); the lmms-eval adapter
  uses it to resume a killed run without recomputing what was already answered.

Layout: ``<root>/<key[:2]>/<key>.json`` (a key is a SHA-256 hex digest of the canonical JSON of its
parts, see :func:`make_key`). A file is written to a temporary name and renamed into place, so a run
killed at any moment (SIGKILL, OOM killer, node loss) leaves either the complete entry or none; a file
that cannot be parsed is treated as a miss and rewritten. Several processes may share one directory:
different keys never touch the same file, and the same key is only ever written with the same content
(deterministic computation), so the last rename wins harmlessly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["JsonDirCache", "ResultCache", "ScoreCache", "atomic_write", "file_identity", "file_sha256", "make_key"]


def make_key(parts: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``parts`` (sorted keys; numpy scalars via ``str``)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_identity(path: str | os.PathLike) -> dict:
    """What identifies a video file's content cheaply: absolute path, size and mtime (ns).

    A replaced or re-downloaded file gets a new identity, so cached results for it are not reused. A
    missing file has ``size = mtime_ns = None``. A folder of frame images (:mod:`cos.video`, "Frame
    folders") is identified by its files: their number, total size and newest mtime.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except OSError:
        return {"path": path, "size": None, "mtime_ns": None}
    if os.path.isdir(path):
        files = size = newest = 0
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file():
                    est = entry.stat()
                    files, size, newest = files + 1, size + est.st_size, max(newest, est.st_mtime_ns)
        return {"path": path, "files": files, "size": int(size), "mtime_ns": int(max(newest, st.st_mtime_ns))}
    return {"path": path, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def atomic_write(path: str | os.PathLike, data: str | bytes, fsync: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file of this process renamed into place: a reader,
    or a run killed at any moment, sees the old file or the new one, never half of one; several processes writing the
    same path never share a temporary file. ``fsync``: flush to disk before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class JsonDirCache:
    """``get(key) -> dict | None`` / ``put(key, value)`` over one JSON file per key under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are lowercase hex digests (see make_key), got {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get_json(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, or unreadable (treated as a miss; put() rewrites it)
            self.misses += 1
            return None
        if not isinstance(value, dict):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put_json(self, key: str, value: dict) -> Path:
        return atomic_write(self.path(key), json.dumps(value, ensure_ascii=False), fsync=True)

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json"))

    # the generic interface; subclasses convert values
    get = get_json
    put = put_json


class ScoreCache(JsonDirCache):
    """Scorer results per key: ``get(key) -> ShotScores | None``, ``put(key, scores)``.

    The key is built by the caller (the engine) from the video's :func:`file_identity`, the sampled frame
    indices, the scorer's identity (name, checkpoint, mode, threshold, ...), the shot layout and the
    question the scorer saw.
    """

    def get(self, key: str):
        from cos.scoring import ShotScores

        value = self.get_json(key)
        if value is None:
            return None
        try:
            return ShotScores(value["scores"], value["decisions"], value.get("responses") or [])
        except (KeyError, TypeError, ValueError):
            self.hits -= 1
            self.misses += 1
            return None

    def put(self, key: str, scores) -> Path:
        return self.put_json(key, {
            "scores": [float(s) for s in scores.scores],
            "decisions": [int(d) for d in scores.decisions],
            "responses": [str(r) for r in scores.responses],
        })


class ResultCache(JsonDirCache):
    """Finished samples: ``{"text": str, "trace": dict | None, "error": dict | None}`` per key."""

    def get(self, key: str) -> dict | None:
        value = self.get_json(key)
        if value is None or not isinstance(value.get("text"), str):
            return None
        return value

    def put(self, key: str, value: dict) -> Path:
        return self.put_json(key, value)
