"""Prefill the three co-reasoning streams once per shared prefix.

X, Sp and Sn are the same prompt with different frames: a stream's tokens equal another's up to the
first frame that its index map changes. With causal attention the keys and values of a shared prefix
are identical, so each stream needs only the part after the longest prefix it shares with a stream
already prefilled:

    cost = (L − 1) + Σ_{s ∈ {Sp, Sn}} (L − 1 − max_{t prefilled before s} c(s, t))

tokens instead of 3(L − 1), where c(s, t) is the length of the common prefix of s and t. For X the
cache is computed from scratch; Sn typically forks from X at the first relevant frame, and Sp from X at
the first irrelevant one (the text before the video is always shared). The three caches are then stacked
into one batch-of-3 cache and ``generate`` continues from position L − 1 with the batched decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

#: prefill strategies (``CoSConfig.share_prefix``): share when it saves at least
#: :data:`MIN_SHARED_SAVING` of the prefill tokens, always, or never
SHARE_PREFIX_CHOICES = ("auto", "always", "never")
#: "auto" shares prefixes only when that saves at least this fraction of the prefill tokens: continuing a
#: cache needs an explicit attention mask (no fused causal kernel), so small savings do not pay on a GPU
MIN_SHARED_SAVING = 0.25


@dataclass
class PrefillStats:
    """How many prompt tokens were run through the model, against the unshared 3·(L − 1)."""

    computed: int
    unshared: int
    parents: list  # per stream: index of the stream it forked from (None = from scratch)
    forks: list  # per stream: number of tokens reused from the parent

    @property
    def saved_fraction(self) -> float:
        return 1.0 - self.computed / self.unshared if self.unshared else 0.0

    def without_sharing(self) -> PrefillStats:
        """The plan that prefills every stream from scratch (one after another: one stream's activations
        at a time, and the fused causal kernel, with no attention mask, for each)."""
        count = len(self.parents)
        return PrefillStats(computed=self.unshared, unshared=self.unshared, parents=[None] * count, forks=[0] * count)


def common_prefix_length(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of leading positions at which the embeddings ``a (L, D)`` and ``b (L, D)`` are identical."""
    if a.shape != b.shape:
        raise ValueError(f"streams must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    differs = (a != b).any(dim=-1)
    return int(differs.float().argmax()) if bool(differs.any()) else int(a.shape[0])


def cache_from_tensors(pairs) -> DynamicCache:
    """A ``DynamicCache`` whose layer ``l`` holds exactly the tensors ``pairs[l] = (keys, values)``, not copies.

    ``DynamicCache(ddp_cache_data=...)`` fills each layer through ``update``, which concatenates onto an
    empty tensor: a full copy of everything passed in. Here the layers are made directly, so building a
    cache costs no memory beyond its tensors (a later ``update`` concatenates into new tensors, as it
    always does, and leaves these untouched).
    """
    cache = DynamicCache()
    for keys, values in pairs:
        layer = DynamicLayer()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        cache.layers.append(layer)
    return cache


def crop_cache(cache: DynamicCache, length: int) -> DynamicCache:
    """A new cache holding the first ``length`` positions of ``cache``: views of its tensors, no copy
    (``cache`` is untouched; continuing either one writes new tensors)."""
    return cache_from_tensors((layer.keys[..., :length, :], layer.values[..., :length, :]) for layer in cache.layers)


def stack_caches(caches: list[DynamicCache]) -> DynamicCache:
    """Concatenate batch-1 caches of equal length into one cache of batch ``len(caches)``.

    Consumes its inputs: each layer's source tensors are released as soon as that layer is stacked, and the
    stacked layers become the new cache as they are (:func:`cache_from_tensors`), so the peak is the caches
    plus one stacked layer, not two copies of everything.
    """
    lengths = {c.get_seq_length() for c in caches}
    if len(lengths) != 1:
        raise ValueError(f"caches must have equal lengths to be stacked, got {sorted(lengths)}")
    data = []
    for i in range(len(caches[0].layers)):
        layers = [c.layers[i] for c in caches]
        data.append((torch.cat([layer.keys for layer in layers]), torch.cat([layer.values for layer in layers])))
        for layer in layers:
            layer.keys = layer.values = None
    return cache_from_tensors(data)


def plan_prefill(streams: torch.Tensor, upto: int | None = None) -> PrefillStats:
    """Which stream forks from which, and how many tokens each must compute (no model involved).

    Stream ``s`` forks from the earlier stream ``t`` with the longest common prefix ``c(s, t)``
    (capped at ``upto``) and computes ``upto − c(s, t)`` tokens; the first stream computes ``upto``.
    """
    if streams.dim() != 3:
        raise ValueError(f"streams must be (S, L, D), got {tuple(streams.shape)}")
    count, length = streams.shape[:2]
    upto = length - 1 if upto is None else int(upto)
    if not 0 < upto <= length:
        raise ValueError(f"upto must be in [1, {length}], got {upto}")
    parents, forks = [], []
    for s in range(count):
        best, best_len = None, 0
        for t in range(s):
            shared = min(common_prefix_length(streams[s], streams[t]), upto)
            if shared > best_len:
                best, best_len = t, shared
        parents.append(best)
        forks.append(best_len)
    return PrefillStats(computed=count * upto - sum(forks), unshared=count * upto, parents=parents, forks=forks)


def prefill_shared(prefill, streams: torch.Tensor, upto: int | None = None, plan: PrefillStats | None = None) -> tuple[DynamicCache, PrefillStats]:
    """Prefill ``streams (S, L, D)`` (one sample's streams, no padding) up to position ``upto``
    (default L − 1, so that ``generate`` runs the last prompt token batched), sharing prefixes as
    :func:`plan_prefill` decides.

    ``prefill(inputs_embeds (1, l, D), cache | None) -> DynamicCache`` runs one cached forward (it must
    continue positions from the cache's length). ``plan``: a plan already made for these streams.
    Returns the stacked cache of batch S and the plan.
    """
    stats = plan if plan is not None else plan_prefill(streams, upto)
    upto = stats.unshared // streams.shape[0]
    caches: list[DynamicCache] = []
    for s, (parent, fork) in enumerate(zip(stats.parents, stats.forks)):
        if parent is None:
            cache = prefill(streams[s : s + 1, :upto], None)
        else:
            cache = crop_cache(caches[parent], fork)
            if fork < upto:
                cache = prefill(streams[s : s + 1, fork:upto], cache)
        caches.append(cache)
    return stack_caches(caches), stats
