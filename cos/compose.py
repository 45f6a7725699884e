"""Steps 4, 5 and 7 of CoS: the positive and negative videos (Eq. 6–7) and the dynamic weight (Eq. 9).

Sp and Sn only re-order the n already-sampled shots (plus, for Sn, possibly a black frame), so both are
**index maps** over the shots: ``Sp = X[positive_map(c)]``, ``Sn = X[negative_map(c)]`` where an entry
:data:`BLACK` (-1) stands for a black frame. Frames are encoded once and the three streams gather frame
features by index with :func:`gather_features`.

Defects of the original release fixed here (see ``docs/cos-method.md``):

* defect 2 — the release's Sp loop left the whole loop at the first replacement, so Sp = X whenever any
  shot was relevant. :func:`positive_map` applies Eq. 6 to every irrelevant shot.
* defect 3 — the release searched the negative replacement backward first; the paper (Eq. 7) searches
  forward first. :func:`negative_map` follows the paper by default; ``order="backward"`` reproduces
  the release.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from cos.errors import ConfigError
from cos.grounding import _check_code

#: Index-map entry meaning "a black frame" (only :func:`negative_map` produces it).
BLACK = -1

ORDER_CHOICES = ("forward", "backward")
Order = Literal["forward", "backward"]


def _nearest(targets: np.ndarray, queries: np.ndarray, order: str) -> np.ndarray:
    """For each query i: the nearest target after i (``forward``) else before i, or the mirror
    (``backward``); :data:`BLACK` when ``targets`` is empty. Queries are never in ``targets``."""
    if targets.size == 0:
        return np.full(queries.shape, BLACK, dtype=np.int64)
    pos = np.searchsorted(targets, queries, side="right")  # targets[pos] is the first target > i
    after_ok = pos < targets.size
    before_ok = pos > 0
    after = targets[np.minimum(pos, targets.size - 1)]
    before = targets[np.maximum(pos - 1, 0)]
    if order == "forward":
        return np.where(after_ok, after, before).astype(np.int64)
    return np.where(before_ok, before, after).astype(np.int64)


def _check_order(order: str) -> str:
    if order not in ORDER_CHOICES:
        raise ConfigError(f"order must be one of {ORDER_CHOICES}, got {order!r}")
    return order


def positive_map(code) -> np.ndarray:
    """Index map of the positive video Sp (Eq. 6): ``Sp_i = X_{π(i)}`` with

    * ``π(i) = i`` for ``i ∈ I_basic`` (relevant shots stay);
    * ``π(i) = min{k ∈ I_basic | k > i}`` for ``i ∉ I_basic`` (nearest relevant shot after i), or, if
      there is none, ``π(i) = max{k ∈ I_basic | k < i}`` (nearest relevant shot before i);
    * ``π = identity`` (``Sp = X``) when ``I_basic = ∅``.

    Returns ``int64 (n,)``.

    >>> positive_map([0, 1, 0, 0, 1, 0]).tolist()
    [1, 1, 4, 4, 4, 4]
    """
    c = _check_code(code)
    n = c.size
    out = np.arange(n, dtype=np.int64)
    rel = np.flatnonzero(c == 1)
    if rel.size == 0:
        return out
    irr = np.flatnonzero(c == 0)
    out[irr] = _nearest(rel, irr, "forward")
    return out


def negative_map(code, order: Order = "forward") -> np.ndarray:
    """Index map of the negative video Sn (Eq. 7): ``Sn_i = X_{ν(i)}`` with

    * ``ν(i) = i`` for ``i ∉ I_basic`` (irrelevant shots stay);
    * for ``i ∈ I_basic`` (``order="forward"``, the paper): ``ν(i) = min{k ∉ I_basic | k > i}``
      (nearest irrelevant shot after i), else ``max{k ∉ I_basic | k < i}`` (nearest before i), else
      :data:`BLACK` (every shot is relevant: a black frame).
    * ``order="backward"`` (the original release, defect 3) tries the nearest irrelevant shot *before*
      i first, then after.

    Returns ``int64 (n,)``; entries are shot indices or :data:`BLACK`.

    >>> negative_map([0, 1, 1, 0]).tolist()
    [0, 3, 3, 3]
    >>> negative_map([0, 1, 1, 0], order="backward").tolist()
    [0, 0, 0, 3]
    """
    _check_order(order)
    c = _check_code(code)
    out = np.arange(c.size, dtype=np.int64)
    rel = np.flatnonzero(c == 1)
    if rel.size == 0:
        return out
    irr = np.flatnonzero(c == 0)
    out[rel] = _nearest(irr, rel, order)
    return out


def dynamic_alpha(code) -> float:
    """Dynamic co-reasoning weight (Eq. 9): ``α = 1 − |I_basic| / n``.

    ``α = 0`` when every shot is relevant (the model ignores Sp and Sn), ``α = 1`` when none is (then
    ``Sp = Sn = X`` and the co-reasoning term vanishes anyway).
    """
    c = _check_code(code)
    if c.size == 0:
        raise ValueError("dynamic alpha of an empty binary code (n = 0) is undefined")
    return float(1.0 - int(c.sum()) / c.size)


def resolve_alpha(alpha: str | float, code) -> float:
    """The α of Eq. 8: ``"auto"`` → :func:`dynamic_alpha` (Eq. 9); a number (or numeric string such as
    ``"0.5"``) → that fixed α, which must be finite and in ``[0, 1]``."""
    if isinstance(alpha, str):
        text = alpha.strip().lower()
        if text in ("auto", "dynamic"):
            return dynamic_alpha(code)
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"alpha must be 'auto' or a number in [0, 1], got {alpha!r}") from None
    elif isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ConfigError(f"alpha must be 'auto' or a number in [0, 1], got {alpha!r}")
    else:
        value = float(alpha)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"alpha must be 'auto' or a number in [0, 1], got {alpha!r}")
    return value


def gather_features(features, index_map, black_features=None):
    """Gather per-shot features into a stream: ``out_i = F_{m(i)}`` if ``m(i) ≥ 0`` else ``B``.

    ``features``: ``(n, T, D)`` torch tensor or numpy array (one entry per sampled shot, encoded once);
    ``index_map``: ``(n',)`` indices from :func:`positive_map` / :func:`negative_map` (or identity);
    ``black_features``: ``(T, D)`` features of a black frame, required only when the map holds
    :data:`BLACK`. Returns ``(n', T, D)`` of the same type, device and dtype as ``features``.
    """
    idx = np.asarray(index_map, dtype=np.int64).reshape(-1)
    n = features.shape[0]
    if idx.size and (idx.min() < BLACK or idx.max() >= n):
        raise ValueError(f"index map entries must be in [{BLACK}, {n}), got [{idx.min()}, {idx.max()}]")
    black = idx == BLACK
    if black.any():
        if black_features is None:
            raise ValueError("index map holds BLACK (-1) entries but no black_features were given")
        if tuple(black_features.shape) != tuple(features.shape[1:]):
            raise ValueError(
                f"black_features must have shape {tuple(features.shape[1:])}, got {tuple(black_features.shape)}"
            )
    safe = np.where(black, 0, idx)
    if isinstance(features, torch.Tensor):
        out = features.index_select(0, torch.as_tensor(safe, device=features.device))
        if black.any():
            mask = torch.as_tensor(black, device=features.device)
            out[mask] = torch.as_tensor(black_features).to(device=features.device, dtype=features.dtype)
        return out
    features = np.asarray(features)
    out = features[safe]
    if black.any():
        out[black] = np.asarray(black_features, dtype=features.dtype)
    return out


def stream_maps(code, order: Order = "forward") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three index maps ``(X, Sp, Sn)`` = ``(identity, positive_map(c), negative_map(c, order))``."""
    c = _check_code(code)
    return np.arange(c.size, dtype=np.int64), positive_map(c), negative_map(c, order)
