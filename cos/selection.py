"""Frame-selection rules on precomputed scores: which candidate frames a selector keeps.

A *selector* chooses ``n`` frames from ``T`` candidate frames (typically one per second) given one relevance score
per candidate (a text–image model's match of the frame against the question). This module holds the rules alone —
scores in, candidate indices out — so they can be checked on constructed arrays and used on scores computed
anywhere (``cos select``). Where a paper and its released code differ, the paper's rule is the default and the
release's is one option away (``../shared`` notes: AKS ``ncTimTang/AKS@4667501``, BOLT ``sming256/BOLT@8a9ba45``,
Q-Frame ``xiaomi-research/q-frame@1b08494``).

* ``uniform`` — ``linspace(0, T − 1, n, dtype=int)`` (the backends' own rule; indices repeat when ``T < n``).
* ``aks`` — Adaptive Keyframe Sampling: min–max normalise; judge a segment by the mean of its top-``k`` scores against
  its mean (``> t1``) and its standard deviation (``> t2``); a segment that stands out is a leaf and keeps its top
  ``k``, else it splits in two (up to ``all_depth``) and recurses. ``budget="paper"``: each segment judged with its
  own budget ``k`` (``n`` at the root, ``⌈k/2⌉`` to the longer half and ``⌊k/2⌋`` to the other, a leaf at ``k ≤ 1`` or
  when the segment has no more than ``k`` candidates), so exactly ``min(n, T)`` frames. ``budget="release"``: every
  segment judged by the top-``n`` of the whole budget and a depth-``d`` leaf keeps ``int(n / 2**d)`` — with the
  defaults it often keeps fewer than ``n`` (none for small ``n``), and the result says so.
* ``bolt`` — inverse transform sampling: min–max normalise, raise to ``power`` (``-1``: none), use as a density, and
  draw at the quantiles ``linspace(1/n, 1 − 1/n, n)`` (as released: for ``n = 1`` that is the quantile 1, the last
  candidate scored above the minimum). ``duplicates="replace"`` (default: ``n`` distinct frames): a
  quantile that lands on a candidate already taken moves to the nearest free one (later first on ties);
  ``"keep"``: the release's repeats.
* ``qframe`` — query-aware ranking: ``softmax(s / tau)`` plus Gumbel noise (``noise="on"``, drawn from
  ``numpy.random.default_rng(seed)``; the release's noise is unseeded torch noise on the GPU, which no option can
  replay) or none (``noise="off"``), ranked by a stable sort; the top ``n`` in temporal order. With
  ``high``/``mid``/``low`` the ranking's first ``high``, next ``mid`` and
  next ``low`` candidates are also reported as the release's resolution groups (½, ¼, ⅛ of the side); for bases with a
  fixed input resolution (LongVA, LLaVA-Video, Video-XL) only the ranking applies.

Flat scores, where the releases divide by zero: AKS treats them as all zeros, BOLT as a uniform density.
Every rule returns a :class:`Selection`: the candidate indices (``selected``, in the order the rule states them:
sorted for AKS and Q-Frame, non-decreasing for BOLT), how many were asked for, and a ``note`` whenever it returns
fewer or repeats any.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cos.errors import ConfigError

__all__ = ["AKS_BUDGETS", "BOLT_DUPLICATES", "QFRAME_NOISE", "RULE_PARAMS", "SELECTORS", "Selection", "add_parser", "load_scores",
           "select", "select_aks", "select_bolt", "select_qframe", "select_uniform", "valid_power"]

SELECTORS = ("uniform", "aks", "bolt", "qframe")
AKS_BUDGETS = ("paper", "release")
BOLT_DUPLICATES = ("replace", "keep")
QFRAME_NOISE = ("on", "off")


@dataclass
class Selection:
    """Candidate indices chosen by a rule, the number asked for, and what a reader must know about the result."""

    method: str
    selected: list[int]
    requested: int
    params: dict = field(default_factory=dict)
    note: str | None = None
    groups: dict[str, list[int]] | None = None

    def to_json(self) -> dict:
        out = {"method": self.method, "requested": self.requested, "returned": len(self.selected), "selected": self.selected,
               "params": self.params, "note": self.note}
        if self.groups is not None:
            out["groups"] = self.groups
        return out


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ConfigError(f"scores must be a non-empty 1-D array (one per candidate, in time order), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ConfigError("scores must be finite")
    return s


def _count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _minmax(s: np.ndarray) -> np.ndarray:
    """Scores scaled to [0, 1]; a flat array (the releases divide by zero there) becomes all zeros."""
    span = s.max() - s.min()
    return (s - s.min()) / span if span > 0 else np.zeros_like(s)


def _note_short(selected: list[int], n: int, why: str) -> str | None:
    return None if len(selected) >= n else f"returned {len(selected)} of {n} frames: {why}"


# -- uniform -----------------------------------------------------------------------------------------------
def select_uniform(num_candidates: int, n: int) -> Selection:
    """``linspace(0, T − 1, n, dtype=int)``, as the backends sample (repeats when ``T < n``).

    >>> select_uniform(10, 4).selected
    [0, 3, 6, 9]
    """
    n, total = _count(n), _count(num_candidates)
    selected = np.linspace(0, total - 1, n, dtype=int).tolist()
    note = f"{total} candidates for {n} frames: indices repeat" if total < n else None
    return Selection("uniform", selected, n, {}, note)


# -- AKS ---------------------------------------------------------------------------------------------------
def _top(values: np.ndarray, offset: int, k: int) -> list[int]:
    """Indices (``offset`` + position) of the ``k`` largest values; ties keep the lower index (as ``heapq.nlargest``)."""
    if k <= 0:
        return []
    return [offset + i for i in heapq.nlargest(k, range(len(values)), key=lambda i: values[i])]


def select_aks(scores, n: int, t1: float = 0.8, t2: float = -100.0, all_depth: int = 5, budget: str = "paper") -> Selection:
    """Adaptive Keyframe Sampling (see the module docstring). Returns sorted candidate indices.

    >>> select_aks([0, 0, 0, 9, 0, 0, 0, 0], 2).selected  # no stand-out at the root: two halves of one frame each
    [3, 4]
    """
    s, n = _scores(scores), _count(n)
    if budget not in AKS_BUDGETS:
        raise ConfigError(f"budget must be one of {AKS_BUDGETS}, got {budget!r}")
    if isinstance(all_depth, bool) or not isinstance(all_depth, (int, np.integer)) or all_depth < 0:
        raise ConfigError(f"all_depth must be a non-negative integer, got {all_depth!r}")
    params = {"t1": float(t1), "t2": float(t2), "all_depth": int(all_depth), "budget": budget}
    if len(s) < n or (budget == "paper" and len(s) == n):  # every candidate (the release: only when there are fewer)
        return Selection("aks", list(range(len(s))), n, params, _note_short(list(range(len(s))), n, f"only {len(s)} candidates"))
    norm = _minmax(s)
    chosen: list[int] = []
    queue = [(0, len(norm), 0, n)]  # (start, stop, depth, budget of the segment); breadth-first as the release
    while queue:
        start, stop, depth, k = queue.pop(0)
        seg = norm[start:stop]
        judge = n if budget == "release" else k
        top = np.sort(seg)[::-1][:judge]
        mean_diff = float(top.mean() - seg.mean()) if len(seg) else 0.0
        std = float(seg.std()) if len(seg) else 0.0
        if budget == "release":
            quota = int(n / 2**depth)
            if (mean_diff > t1 and std > t2) or depth >= all_depth:
                chosen += _top(seg, start, quota)
            else:
                mid = (start + stop) // 2  # the release splits at len // 2
                queue += [(start, mid, depth + 1, 0), (mid, stop, depth + 1, 0)]
            continue
        if k <= 0:
            continue
        if len(seg) <= k:
            chosen += list(range(start, stop))
        elif (mean_diff > t1 and std > t2) or depth >= all_depth or k == 1:
            chosen += _top(seg, start, k)
        else:
            mid = start + len(seg) // 2  # [start, mid) is the shorter half: it gets floor(k/2), the other ceil(k/2)
            queue += [(start, mid, depth + 1, k // 2), (mid, stop, depth + 1, k - k // 2)]
    selected = sorted(set(chosen))
    why = "the release's budget gives a depth-d segment int(n / 2**d) frames" if budget == "release" else "too few candidates"
    return Selection("aks", selected, n, params, _note_short(selected, n, why))


# -- BOLT --------------------------------------------------------------------------------------------------
def valid_power(power) -> bool:
    """BOLT's exponent: -1 (none) or a finite number >= 0."""
    return isinstance(power, (int, float, np.number)) and not isinstance(power, bool) and math.isfinite(power) and (power == -1 or power >= 0)


def select_bolt(scores, n: int, power: float = 3.0, duplicates: str = "replace") -> Selection:
    """Inverse transform sampling (see the module docstring). Returns non-decreasing candidate indices.

    >>> select_bolt([0, 1, 1, 0], 2, power=1).selected
    [1, 2]
    """
    s, n = _scores(scores), _count(n)
    if duplicates not in BOLT_DUPLICATES:
        raise ConfigError(f"duplicates must be 'replace' or 'keep', got {duplicates!r}")
    if not valid_power(power):
        raise ConfigError(f"power must be -1 (none) or a finite number >= 0, got {power!r}")
    params = {"power": float(power), "duplicates": duplicates}
    p = _minmax(s)
    if power != -1:
        p = p ** float(power)
    if p.sum() <= 0:  # flat scores: a uniform density
        p = np.ones_like(p)
    cdf = np.cumsum(p / p.sum())
    quantiles = np.linspace(1.0 / n, 1.0 - 1.0 / n, n)
    picks = np.minimum(np.searchsorted(cdf, quantiles), len(s) - 1).tolist()  # n = 1 asks for the quantile 1.0
    if duplicates == "keep":
        repeats = len(picks) - len(set(picks))
        return Selection("bolt", [int(i) for i in picks], n, params, f"{repeats} repeated frame(s), kept as the release does" if repeats else None)
    taken: set[int] = set()
    selected = []
    for i in picks:
        if len(taken) == len(s):
            break
        for step in range(len(s)):
            for j in (i + step, i - step):
                if 0 <= j < len(s) and j not in taken:
                    break
            else:
                continue
            taken.add(j)
            selected.append(j)
            break
    selected.sort()
    return Selection("bolt", selected, n, params, _note_short(selected, n, f"only {len(s)} candidates"))


# -- Q-Frame -----------------------------------------------------------------------------------------------
def select_qframe(scores, n: int, tau: float = 0.8, noise: str = "on", seed: int = 0, high: int = 0, mid: int = 0,
                  low: int = 0) -> Selection:
    """Query-aware ranking (see the module docstring). Returns the top ``n`` of the ranking in temporal order.

    >>> select_qframe([1.0, 5.0, 3.0, 4.0], 2, noise="off").selected
    [1, 3]
    """
    s, n = _scores(scores), _count(n)
    if noise not in QFRAME_NOISE:
        raise ConfigError(f"noise must be 'on' or 'off', got {noise!r}")
    if not tau > 0:
        raise ConfigError(f"tau must be positive, got {tau!r}")
    for name, value in (("seed", seed), ("high", high), ("mid", mid), ("low", low)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    logits = s / float(tau)
    log_probs = logits - (logits.max() + math.log(np.exp(logits - logits.max()).sum()))  # log softmax
    key = log_probs
    if noise == "on":
        uniform = np.random.default_rng(seed).random(len(s))
        key = log_probs - np.log(-np.log(uniform + 1e-10) + 1e-10)  # Gumbel-max: a sample without replacement
    ranking = np.argsort(-key, kind="stable")
    params = {"tau": float(tau), "noise": noise, "seed": int(seed), "high": int(high), "mid": int(mid), "low": int(low)}
    selected = sorted(int(i) for i in ranking[:n])
    groups = None
    if high or mid or low:
        groups = {"high": sorted(int(i) for i in ranking[:high]), "mid": sorted(int(i) for i in ranking[high : high + mid]),
                  "low": sorted(int(i) for i in ranking[high + mid : high + mid + low])}
    return Selection("qframe", selected, n, params, _note_short(selected, n, f"only {len(s)} candidates"), groups)


# -- one entry ---------------------------------------------------------------------------------------------
def _integer(value) -> int:
    """An integer parameter: an int, or text / a float holding a whole number (``2.7`` is refused, not truncated)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise ValueError(value)
        return int(value)
    return int(value)


_PARAMS = {"uniform": {}, "aks": {"t1": float, "t2": float, "all_depth": _integer, "budget": str},
           "bolt": {"power": float, "duplicates": str},
           "qframe": {"tau": float, "noise": str, "seed": _integer, "high": _integer, "mid": _integer, "low": _integer}}
#: each rule's parameters, by their original names (``cos select --param``, the models' ``model_args``)
RULE_PARAMS: dict[str, tuple[str, ...]] = {method: tuple(names) for method, names in _PARAMS.items()}


def select(method: str, scores, n: int, **params) -> Selection:
    """The rule ``method`` (one of :data:`SELECTORS`) on ``scores`` with its parameters (names as the originals')."""
    if method not in SELECTORS:
        raise ConfigError(f"selector must be one of {', '.join(SELECTORS)}, got {method!r}")
    unknown = sorted(set(params) - set(_PARAMS[method]))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for {method}; valid: {sorted(_PARAMS[method]) or 'none'}")
    values = {}
    for name, value in params.items():
        try:
            values[name] = _PARAMS[method][name](value)
        except (TypeError, ValueError):
            kind = {float: "a number", str: "text", _integer: "an integer"}[_PARAMS[method][name]]
            raise ConfigError(f"{method} parameter {name}={value!r}: expected {kind}") from None
    if method == "uniform":
        return select_uniform(len(_scores(scores)), n)
    return {"aks": select_aks, "bolt": select_bolt, "qframe": select_qframe}[method](scores, n, **values)


# -- cos select --------------------------------------------------------------------------------------------
def load_scores(path) -> np.ndarray:
    """One score per candidate, in time order: ``.npy``, ``.json`` (a list) or text (whitespace/comma separated)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            values = np.asarray(json.loads(path.read_text(encoding="utf-8")), dtype=np.float64)
        else:
            values = np.asarray(path.read_text(encoding="utf-8").replace(",", " ").split(), dtype=np.float64)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read scores from {str(path)!r}: {err}") from None
    return _scores(np.ravel(values) if np.ndim(values) == 2 and 1 in np.shape(values) else values)


def _param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected k=v, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """``cos select --scores S.npy --method aks|bolt|qframe|uniform --n N [--param k=v ...]``: the rule alone, as JSON."""
    p = subparsers.add_parser(
        "select", allow_abbrev=False, help="a frame-selection rule (AKS, BOLT, Q-Frame, uniform) on precomputed scores, as JSON",
        description="Apply a frame-selection rule to one score per candidate frame (in time order) and print the chosen "
                    "candidate indices as JSON. Parameters: aks t1, t2, all_depth, budget=paper|release; bolt power, "
                    "duplicates=replace|keep; qframe tau, noise=on|off, seed, high, mid, low.")
    p.add_argument("--scores", required=True, help="scores file: .npy, .json list, or text")
    p.add_argument("--method", required=True, choices=SELECTORS)
    p.add_argument("--n", type=int, required=True, help="frames to select")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="K=V", help="a rule parameter (repeatable)")
    p.set_defaults(func=_command)
    return p


def _command(args) -> int:
    result = select(args.method, load_scores(args.scores), args.n, **dict(args.param))
    print(json.dumps(result.to_json()))
    return 0
