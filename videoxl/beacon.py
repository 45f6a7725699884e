"""Video-XL's visual summarisation ("beacon") memory on a ``transformers`` 5.x ``Qwen2ForCausalLM``.

The release (``modeling_beacon.py`` + the beacon attention in ``llava_qwen.py``, ``videoxl-notes.md`` §3)
runs an expanded prompt of length ``L`` whose visual tokens fill ``[skip_first, skip_last)`` as a series
of calls, each over ``[memory ; this call]``:

1. the text before the video, ``[0, skip_first)``: one causal call; its K/V are kept (the "sink");
2. the visual tokens in windows of ``window`` raw tokens (the last one cut at ``skip_last``). With ratio
   ``r`` and a remainder ``ρ`` carried over from the previous window, a beacon is inserted after the
   first ``r − ρ`` raw tokens and then after every ``r`` raw tokens: ``⌊(w + ρ)/r⌋`` beacons, new
   remainder ``(w + ρ) mod r``. Beacons enter as ``beacon_embed_tokens`` and take their q/k/v from the
   layer's ``beacon_{q,k,v}_proj`` (``o_proj``, MLP and norms are shared). Attention is plain causal over
   memory and the window (raw tokens see earlier beacons, beacons see everything before them). After the
   window only the beacons' K/V are kept;
3. the text after the video in chunks of ``window`` tokens, no beacons, K/V kept;
4. every generated token: one call of length 1, K/V kept.

Keys are cached before RoPE and the whole memory is rotated again in every call with positions
``0 … M + n − 1`` (memory first, in the order it was kept), queries with ``M … M + n − 1``. Only the last
call's logits are used; its last raw row gives the next token.

One known defect of the release is not reproduced: a visual window that gets no beacon at all (fewer than
``r − ρ`` raw tokens, possible only in the last window) is embedded there with the placeholder's own
embedding row instead of the frame features; here frame features are always used. With 144 tokens per
frame and ratios 2, 4 or 8 it never happens.

Every row of a batch shares one call plan (same prompt layout); rows differ only in their embeddings.
That is how co-reasoning decodes X, Sp and Sn: three memories, one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import repeat_kv, rotate_half

#: kinds of call, in the order they run
PREFIX, WINDOW, TEXT = "prefix", "window", "text"


def interleave(raw: int, ratio: int, remainder: int = 0) -> tuple[torch.Tensor, int]:
    """Beacon slots of a window of ``raw`` raw tokens: a bool mask over its ``raw + beacons`` inputs (True:
    a beacon) and the remainder carried to the next window (the release's interleave rule)."""
    if ratio < 1 or not 0 <= remainder < ratio:
        raise ValueError(f"ratio must be >= 1 and 0 <= remainder < ratio, got ratio={ratio}, remainder={remainder}")
    slots, count = [], remainder
    for _ in range(raw):
        slots.append(False)
        count += 1
        if count == ratio:
            slots.append(True)
            count = 0
    return torch.tensor(slots, dtype=torch.bool), count


@dataclass(frozen=True)
class Call:
    """One forward call: raw positions ``[start, end)`` of the expanded sequence, and for a visual window
    the bool mask of its inputs that are beacons (``None``: no beacons)."""

    kind: str
    start: int
    end: int
    beacons: torch.Tensor | None = field(default=None, compare=False)

    @property
    def inputs(self) -> int:
        return (self.end - self.start) + (int(self.beacons.sum()) if self.beacons is not None else 0)


def plan_calls(length: int, skip_first: int, skip_last: int, window: int, ratio: int) -> list[Call]:
    """The calls that prefill a sequence of ``length`` whose visual tokens fill ``[skip_first, skip_last)``."""
    if not 0 <= skip_first <= skip_last <= length:
        raise ValueError(f"visual span [{skip_first}, {skip_last}) does not fit a sequence of {length}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    calls = [Call(PREFIX, 0, skip_first)] if skip_first else []
    remainder = 0
    for start in range(skip_first, skip_last, window):
        end = min(start + window, skip_last)
        beacons, remainder = interleave(end - start, ratio, remainder)
        calls.append(Call(WINDOW, start, end, beacons if bool(beacons.any()) else None))
    calls += [Call(TEXT, s, min(s + window, length)) for s in range(skip_last, length, window)]
    return calls


def add_beacon_parameters(lm: nn.Module) -> None:
    """Give a ``Qwen2ForCausalLM`` Video-XL's beacon parameters (per layer ``beacon_{q,k,v}_proj`` with bias,
    one ``beacon_embed_tokens`` row), named as in the release's checkpoint."""
    for layer in lm.model.layers:
        attn = layer.self_attn
        for name in ("q", "k", "v"):
            like = getattr(attn, f"{name}_proj")
            setattr(attn, f"beacon_{name}_proj", nn.Linear(like.in_features, like.out_features, bias=True))
    lm.model.beacon_embed_tokens = nn.Embedding(1, lm.config.hidden_size)


class BeaconMemory:
    """The K/V a batch keeps, per layer, before RoPE, in the order kept (sink, beacons, raw), and counts."""

    def __init__(self, layers: int):
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.counts = {"sink": 0, "beacons": 0, "raw": 0}
        self.compressed = 0  #: raw visual tokens the beacons summarise

    @property
    def length(self) -> int:
        return sum(self.counts.values())

    def extend(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = keys, values
        else:
            self.keys[layer] = torch.cat([self.keys[layer], keys], dim=2)
            self.values[layer] = torch.cat([self.values[layer], values], dim=2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class BeaconRunner:
    """Runs calls of a ``Qwen2ForCausalLM`` (with :func:`add_beacon_parameters`) over a :class:`BeaconMemory`."""

    def __init__(self, lm: nn.Module):
        self.lm = lm
        self.model = lm.model

    def new_memory(self) -> BeaconMemory:
        return BeaconMemory(len(self.model.layers))

    def beacon_embeddings(self, batch: int, count: int, like: torch.Tensor) -> torch.Tensor:
        return self.model.beacon_embed_tokens.weight[0].to(like.dtype).expand(batch, count, -1)

    def call(self, embeds: torch.Tensor, memory: BeaconMemory, kind: str, beacons: torch.Tensor | None = None) -> torch.Tensor:
        """One call over ``memory``: raw input embeddings ``(B, w, D)`` (a window's beacons are inserted
        here, by the ``beacons`` mask) -> final hidden states ``(B, w, D)`` of the raw rows. ``memory``
        keeps the call's K/V (only the beacons' for a window)."""
        batch, raw, _ = embeds.shape
        if beacons is not None:
            n = beacons.numel()
            hidden = embeds.new_empty(batch, n, embeds.shape[-1])
            beacons = beacons.to(embeds.device)
            hidden[:, ~beacons] = embeds
            hidden[:, beacons] = self.beacon_embeddings(batch, int(beacons.sum()), embeds)
            beacon_idx, raw_idx = beacons.nonzero().flatten(), (~beacons).nonzero().flatten()
        else:
            n, hidden, beacon_idx, raw_idx = raw, embeds, None, None
        past = memory.length
        positions = torch.arange(past + n, device=embeds.device)[None]
        cos, sin = self.model.rotary_emb(hidden, positions)
        cos, sin = cos[:, None], sin[:, None]  # (1, 1, M + n, d): broadcast over heads
        mask = None
        if past and n > 1:  # causal within the call, everything in memory
            mask = torch.ones(n, past + n, dtype=torch.bool, device=embeds.device).tril(diagonal=past)
        for i, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)

            def project(name: str, x=x, attn=attn) -> torch.Tensor:
                plain = getattr(attn, f"{name}_proj")
                if beacon_idx is None:
                    out = plain(x)
                else:
                    out = x.new_empty(batch, n, plain.out_features)
                    out[:, raw_idx] = plain(x[:, raw_idx])
                    out[:, beacon_idx] = getattr(attn, f"beacon_{name}_proj")(x[:, beacon_idx])
                return out.view(batch, n, -1, attn.head_dim).transpose(1, 2)

            q, k, v = project("q"), project("k"), project("v")
            keys = k if memory.keys[i] is None else torch.cat([memory.keys[i], k], dim=2)
            values = v if memory.values[i] is None else torch.cat([memory.values[i], v], dim=2)
            q_rot = _rope(q, cos[..., past:, :], sin[..., past:, :])
            k_rot = _rope(keys, cos, sin)
            groups = attn.num_key_value_groups
            out = F.scaled_dot_product_attention(q_rot, repeat_kv(k_rot, groups), repeat_kv(values, groups), attn_mask=mask,
                                                 is_causal=mask is None and n > 1 and past == 0, scale=attn.scaling)
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, n, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            if kind == WINDOW:
                if beacon_idx is not None:
                    memory.extend(i, k[:, :, beacon_idx], v[:, :, beacon_idx])
            else:
                memory.extend(i, k, v)
        if kind == WINDOW:
            memory.counts["beacons"] += 0 if beacon_idx is None else beacon_idx.numel()
            memory.compressed += raw
        else:
            memory.counts["sink" if kind == PREFIX else "raw"] += n
        return hidden if raw_idx is None else hidden[:, raw_idx]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, V)`` (float32) from the last row of a call's hidden states."""
        return self.lm.lm_head(self.model.norm(hidden[:, -1:]))[:, -1].float()

    def prefill(self, embeds: torch.Tensor, calls: list[Call], memory: BeaconMemory) -> torch.Tensor:
        """Run ``calls`` over ``embeds (B, L, D)``; returns the next-token logits ``(B, V)``."""
        if not calls:
            raise ValueError("nothing to prefill: the sequence is empty")
        hidden = None
        for c in calls:
            hidden = self.call(embeds[:, c.start : c.end], memory, c.kind, c.beacons)
        return self.logits(hidden)

    def step(self, embeds: torch.Tensor, memory: BeaconMemory) -> torch.Tensor:
        """One generated token per row ``(B, 1, D)`` -> next-token logits ``(B, V)``; its K/V are kept."""
        return self.logits(self.call(embeds, memory, TEXT))


__all__ = ["PREFIX", "TEXT", "WINDOW", "BeaconMemory", "BeaconRunner", "Call", "add_beacon_parameters", "interleave", "plan_calls"]
