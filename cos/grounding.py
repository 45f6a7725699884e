"""Step 3 of CoS: the binary video summary / pseudo temporal grounding (Eq. 4–5).

The scorer answers one yes/no per mosaic; every shot of a "yes" mosaic gets code 1, every other shot
code 0. This 0/1 vector over the n shots *is* the pseudo temporal grounding, and
``I_basic = {i | c_i = 1}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def binary_code(decisions: Sequence[int] | np.ndarray, groups: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Binary code ``c ∈ {0,1}^n`` with ``c_i = d_j`` for ``i ∈ G_j`` and ``c_i = 0`` for shots in no group (Eq. 4–5).

    ``decisions[j]`` is the scorer's yes (1) / no (0) for mosaic ``j`` of group ``groups[j]``. Shots
    dropped by ``leftover="drop"`` belong to no group and stay 0. Returns ``int8 (n,)``.
    """
    d = np.asarray(decisions).reshape(-1)
    if len(d) != len(groups):
        raise ValueError(f"{len(d)} decisions for {len(groups)} shot groups")
    if d.size and not np.isin(d, (0, 1)).all():
        raise ValueError(f"decisions must be 0/1, got {np.unique(d).tolist()}")
    code = np.zeros(int(n), dtype=np.int8)
    for dj, g in zip(d, groups):
        g = np.asarray(g, dtype=np.int64)
        if g.size and (g.min() < 0 or g.max() >= n):
            raise ValueError(f"group {g.tolist()} has indices outside [0, {n})")
        code[g] = int(dj)
    return code


def _check_code(code) -> np.ndarray:
    c = np.asarray(code)
    if c.ndim != 1:
        raise ValueError(f"binary code must be 1-D, got shape {c.shape}")
    if c.size and not np.isin(c, (0, 1)).all():
        raise ValueError(f"binary code must hold only 0/1, got {np.unique(c).tolist()}")
    return c.astype(np.int8, copy=False)


def relevant_indices(code) -> np.ndarray:
    """``I_basic = {i | c_i = 1}`` as sorted ``int64`` indices (Eq. 5)."""
    return np.flatnonzero(_check_code(code) == 1).astype(np.int64)


def runs(code) -> list[tuple[int, int]]:
    """Maximal runs of relevant shots as inclusive ``(first, last)`` pairs: ``c_first..c_last = 1``."""
    c = _check_code(code).astype(np.int64)
    padded = np.concatenate([[0], c, [0]])
    diff = np.diff(padded)
    starts = np.flatnonzero(diff == 1)
    ends = np.flatnonzero(diff == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def summary(code) -> dict:
    """A readable summary of ``c``: ``n``, ``relevant = |I_basic|``, ``fraction = |I_basic| / n``
    (``1 − α`` of Eq. 9; 0 for ``n = 0``), ``runs`` (inclusive ``[first, last]`` segments of relevant
    shots), ``first`` / ``last`` relevant index (``None`` when nothing is relevant)."""
    c = _check_code(code)
    idx = relevant_indices(c)
    n = int(c.size)
    return {
        "n": n,
        "relevant": int(idx.size),
        "fraction": float(idx.size / n) if n else 0.0,
        "runs": [list(r) for r in runs(c)],
        "first": int(idx[0]) if idx.size else None,
        "last": int(idx[-1]) if idx.size else None,
    }


def window_grounding(frame_indices: Sequence[int], code, start: int, end: int) -> dict | None:
    """How well a binary code finds a known relevant window of the source video, ``[start, end)`` in
    source frames (the needle of the synthetic task): ``sampled`` frames inside the window, ``hit`` (any of
    them marked relevant, 0/1), ``recall`` (the fraction of them marked relevant), ``precision`` (the
    fraction of relevant-marked frames inside the window). ``recall``/``hit`` are None when no sampled
    frame falls inside; ``precision`` is None when nothing is marked. None when there is no code (the
    baseline). The one grounding rule of ``cos report`` and the ``cos_needle`` task.

    >>> window_grounding([0, 10, 20, 30], [0, 1, 1, 0], 15, 35)
    {'sampled': 2, 'hit': 1.0, 'recall': 0.5, 'precision': 0.5}
    """
    if code is None or not len(frame_indices):
        return None
    c = _check_code(code)
    if len(c) != len(frame_indices):
        raise ValueError(f"{len(c)} code entries for {len(frame_indices)} sampled frames")
    inside = [i for i, f in enumerate(frame_indices) if start <= f < end]
    relevant = [i for i in range(len(c)) if c[i]]
    precision = sum(1 for i in relevant if start <= frame_indices[i] < end) / len(relevant) if relevant else None
    if not inside:
        return {"sampled": 0, "hit": None, "recall": None, "precision": 0.0 if relevant else None}
    hits = sum(1 for i in inside if c[i])
    return {"sampled": len(inside), "hit": float(hits > 0), "recall": hits / len(inside), "precision": precision}
