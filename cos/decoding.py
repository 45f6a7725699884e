"""Step 6 of CoS: video co-reasoning (Eq. 8) on top of ``transformers``' ``generate``.

Per generated token, with greedy decoding,

    l(y_t) = l(y_t | X, Q, y<t) + α · ( l(y_t | Sp, Q, y<t) − l(y_t | Sn, Q, y<t) )

on raw final-position logits. The three conditioned streams are three rows of one left-padded
``inputs_embeds`` batch, ``(X, Sp, Sn)`` per sample, each row prefilled with its own video and extending
its own KV cache (the original release fed only X and shared X's cache — defect 1). The
:class:`CoReasoningLogitsProcessor` writes the fused logits into every row of a group, so greedy argmax
gives the three rows the same token and the streams stay in lock-step.

Three settings make this exact (``docs/style-by-example.md`` §5): greedy only (``do_sample=False,
num_beams=1``), the built-in repetition penalty disabled (``repetition_penalty=1.0``) and applied to the
fused scores instead, and a guard that each group's rows agree.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

GROUP_SIZE = 3  # (X, Sp, Sn)

#: ``generate`` options that would break lock-step greedy co-reasoning.
_FORBIDDEN = {
    "do_sample": lambda v: bool(v),
    "num_beams": lambda v: v is not None and int(v) != 1,
    "num_beam_groups": lambda v: v is not None and int(v) != 1,
    "num_return_sequences": lambda v: v is not None and int(v) != 1,
    "penalty_alpha": lambda v: v is not None and float(v) > 0,
    "guidance_scale": lambda v: v is not None and float(v) != 1.0,
    "prefill_chunk_size": lambda v: v is not None,
}


def _check_alpha(value: Any, what: str = "alpha") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value}")
    return value


def _normalise_alpha(alpha: float | Sequence[float]) -> float | list[float]:
    if isinstance(alpha, (list, tuple)) or (isinstance(alpha, torch.Tensor) and alpha.dim() == 1):
        values = [_check_alpha(a, f"alpha[{i}]") for i, a in enumerate(alpha)]
        if not values:
            raise ValueError("alpha sequence is empty; give one alpha per sample group")
        return values
    return _check_alpha(alpha)


def penalise_repetition(scores: torch.Tensor, token_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Repetition penalty (CTRL, as in ``transformers``) on a copy of ``scores (B, V)``: for every token id
    present in ``token_ids[b]`` (``(B, t)``), ``s ← s / p`` if ``s > 0`` else ``s · p``."""
    if penalty == 1.0 or token_ids.shape[-1] == 0:
        return scores.clone()
    picked = torch.gather(scores, 1, token_ids)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, token_ids, picked)


class CoReasoningLogitsProcessor(LogitsProcessor):
    r"""CoS Eq. 8: ``l = l(X) + α·(l(Sp) − l(Sn))`` on raw logits.

    Rows come in groups ``(X, Sp, Sn)`` per sample (rows ``3g, 3g+1, 3g+2`` for sample ``g``); every row
    of a group receives the fused scores of that group, so greedy decoding picks the same token in all
    three streams. A token that an earlier processor masked with ``-inf`` (``min_new_tokens``,
    ``suppress_tokens``, ``bad_words_ids``, ...) in any row of a group is ``-inf`` in the fused scores,
    instead of ``-inf + α·(-inf − -inf) = NaN`` (exact: a group's rows share their generated ids, so their masks).

    Args:
        alpha: α of Eq. 8 in ``[0, 1]``: one float for every group, or one per group (``len = G``).
        group_size: rows per sample; must be 3 (X, Sp, Sn). Explicit so that a caller's batch layout is
            checked rather than assumed.
        repetition_penalty: CTRL penalty ``p`` applied *after* fusing, on the group's generated ids
            (``s ← s/p`` if ``s > 0`` else ``s·p``), as the original release did. Keep ``generate``'s
            built-in penalty at 1.0: it would penalise each row before fusing, and, with left padding and
            ``inputs_embeds``, skip the first pad-length tokens of padded rows.

    Raises ``ValueError`` when the batch is not a multiple of 3, the number of alphas does not match
    the number of groups, or the rows of a group have generated different ids (sampling, beams or any
    other per-row decision would silently desynchronise the streams).

    Example::

        proc = CoReasoningLogitsProcessor(alpha=0.6)
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False, num_beams=1,
                             repetition_penalty=1.0, logits_processor=LogitsProcessorList([proc]))
    """

    requires_greedy = True
    supports_continuous_batching = False

    def __init__(self, alpha: float | Sequence[float], group_size: int = GROUP_SIZE, repetition_penalty: float = 1.0):
        if group_size != GROUP_SIZE:
            raise ValueError(f"group_size must be {GROUP_SIZE} (rows X, Sp, Sn per sample), got {group_size}")
        if isinstance(repetition_penalty, bool) or not isinstance(repetition_penalty, numbers.Real):
            raise ValueError(f"repetition_penalty must be a positive float, got {repetition_penalty!r}")
        if not math.isfinite(repetition_penalty) or repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be a positive float, got {repetition_penalty}")
        self.alpha = _normalise_alpha(alpha)
        self.group_size = group_size
        self.repetition_penalty = float(repetition_penalty)

    def _alphas(self, groups: int, like: torch.Tensor) -> torch.Tensor:
        if isinstance(self.alpha, list):
            if len(self.alpha) != groups:
                raise ValueError(f"{len(self.alpha)} alphas for {groups} sample groups (batch {groups * self.group_size})")
            return torch.tensor(self.alpha, dtype=like.dtype, device=like.device)
        return torch.full((groups,), self.alpha, dtype=like.dtype, device=like.device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        batch, vocab = scores.shape
        if batch % self.group_size:
            raise ValueError(f"batch {batch} is not a multiple of {self.group_size} streams (X, Sp, Sn)")
        if input_ids.shape[0] != batch:
            raise ValueError(f"input_ids batch {input_ids.shape[0]} != scores batch {batch}")
        groups = batch // self.group_size
        ids = input_ids.view(groups, self.group_size, input_ids.shape[-1])
        if ids.shape[-1] and not bool((ids == ids[:, :1]).all()):
            bad = [g for g in range(groups) if not bool((ids[g] == ids[g, :1]).all())]
            raise ValueError(
                f"the streams of sample group(s) {bad} have diverged (generated ids differ); co-reasoning "
                "needs greedy decoding (do_sample=False, num_beams=1) and no per-row processors"
            )
        s = scores.view(groups, self.group_size, vocab)
        alpha = self._alphas(groups, scores)
        fused = s[:, 0] + alpha[:, None] * (s[:, 1] - s[:, 2])
        # a token masked (-inf) by an earlier processor stays masked: -inf + α·(-inf − -inf) would be NaN
        fused = fused.masked_fill(torch.isneginf(s).any(dim=1), float("-inf"))
        if self.repetition_penalty != 1.0:
            fused = penalise_repetition(fused, ids[:, 0], self.repetition_penalty)
        return fused.repeat_interleave(self.group_size, dim=0)


def stack_streams(embeds: Sequence[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad stream embeddings ``(1, L_i, D)`` (or ``(L_i, D)``) into ``(B, max L_i, D)`` with an
    ``attention_mask (B, max L_i)`` that is 0 on padding and 1 on tokens (row ``b`` holds
    ``[pad]*(L − L_b) + E_b``)."""
    if not embeds:
        raise ValueError("stack_streams needs at least one stream")
    rows = []
    for i, e in enumerate(embeds):
        if e.dim() == 3:
            if e.shape[0] != 1:
                raise ValueError(f"stream {i} must have shape (1, L, D) or (L, D), got {tuple(e.shape)}")
            e = e[0]
        elif e.dim() != 2:
            raise ValueError(f"stream {i} must have shape (1, L, D) or (L, D), got {tuple(e.shape)}")
        rows.append(e)
    dim, dtype, device = rows[0].shape[-1], rows[0].dtype, rows[0].device
    for i, e in enumerate(rows):
        if e.shape[-1] != dim or e.dtype != dtype or e.device != device:
            raise ValueError(
                f"stream {i} has (D={e.shape[-1]}, {e.dtype}, {e.device}); stream 0 has (D={dim}, {dtype}, {device})"
            )
    length = max(e.shape[0] for e in rows)
    out = torch.full((len(rows), length, dim), pad_value, dtype=dtype, device=device)
    mask = torch.zeros((len(rows), length), dtype=torch.long, device=device)
    for b, e in enumerate(rows):
        if e.shape[0]:
            out[b, length - e.shape[0] :] = e
            mask[b, length - e.shape[0] :] = 1
    return out, mask


@dataclass
class CoReasoningOutput:
    """What :func:`co_reasoning_generate` returns with ``return_dict_in_generate=True``.

    ``sequences``: ``(G, T_new)``; ``scores``: per step ``(G, V)`` fused (and penalised) scores when
    ``output_scores=True``; ``logits``: per step ``(3G, V)`` raw logits of every stream when
    ``output_logits=True``; ``raw``: the object ``generate`` returned.
    """

    sequences: torch.LongTensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    raw: Any = None


def co_reasoning_generate(
    lm,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    alpha: float | Sequence[float],
    *,
    max_new_tokens: int,
    repetition_penalty: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    extra_processors: Sequence = (),
    stop_at_eos: bool = True,
    **generate_kwargs,
):
    """Greedy co-reasoning decoding (Eq. 8): ``y_t = argmax_v [ l(v|X) + α_g·(l(v|Sp) − l(v|Sn)) ]``.

    ``inputs_embeds (3G, L, D)``: rows ``(X, Sp, Sn)`` per sample ``g``, left-padded (see
    :func:`stack_streams`); ``attention_mask (3G, L)`` (``None`` only when no row is padded);
    ``alpha``: one α or one per sample. ``lm`` is anything with ``transformers``' ``generate`` taking
    ``inputs_embeds`` and returning only the new tokens (e.g. ``Qwen2ForCausalLM``, a ``VideoLM``).

    Calls ``lm.generate`` with ``do_sample=False, num_beams=1, repetition_penalty=1.0`` and a
    :class:`CoReasoningLogitsProcessor` (which applies ``repetition_penalty`` after fusing). Returns
    ``LongTensor (G, T_new)`` (row 0 of every group), or a :class:`CoReasoningOutput` when
    ``return_dict_in_generate=True`` is passed. Sampling, beam search and similar options raise
    ``ValueError``. ``extra_processors`` run after the fuser and must not change the scores
    (instrumentation such as step timers). ``stop_at_eos=False`` generates exactly ``max_new_tokens``
    (no EOS, neither given nor from the model's generation config, ends it).
    """
    for key, bad in _FORBIDDEN.items():
        if key in generate_kwargs and bad(generate_kwargs[key]):
            raise ValueError(
                f"co-reasoning is greedy-only: {key}={generate_kwargs[key]!r} is not allowed "
                "(the three streams must pick the same token at every step)"
            )
    for key in ("logits_processor", "input_ids", "inputs"):
        if generate_kwargs.get(key) is not None:
            raise ValueError(f"co_reasoning_generate builds {key!r} itself; do not pass it")
    if inputs_embeds.dim() != 3:
        raise ValueError(f"inputs_embeds must have shape (3G, L, D), got {tuple(inputs_embeds.shape)}")
    batch, length = inputs_embeds.shape[:2]
    if batch == 0 or batch % GROUP_SIZE:
        raise ValueError(f"batch {batch} is not a positive multiple of {GROUP_SIZE} streams (X, Sp, Sn)")
    groups = batch // GROUP_SIZE
    if attention_mask is None:
        attention_mask = torch.ones((batch, length), dtype=torch.long, device=inputs_embeds.device)
    elif tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must have shape {(batch, length)}, got {tuple(attention_mask.shape)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    proc = CoReasoningLogitsProcessor(alpha, GROUP_SIZE, repetition_penalty)
    if isinstance(proc.alpha, list) and len(proc.alpha) != groups:
        raise ValueError(f"{len(proc.alpha)} alphas for {groups} sample groups (batch {batch})")
    if pad_token_id is None and eos_token_id is not None:
        pad_token_id = eos_token_id if isinstance(eos_token_id, int) else list(eos_token_id)[0]
    kwargs = dict(generate_kwargs)
    kwargs.update(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        logits_processor=LogitsProcessorList([proc, *extra_processors]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        num_return_sequences=1,
        repetition_penalty=1.0,
    )
    if not stop_at_eos:
        kwargs["eos_token_id"] = None  # overrides the model's generation config too
    elif eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    out = lm.generate(**kwargs)
    seqs = out if isinstance(out, torch.Tensor) else out.sequences
    if seqs.shape[0] != batch:
        raise ValueError(f"generate returned {seqs.shape[0]} rows for a batch of {batch}")
    grouped = seqs.view(groups, GROUP_SIZE, -1)
    if not bool((grouped == grouped[:, :1]).all()):
        raise ValueError("the streams of a sample group diverged during generation")
    sequences = grouped[:, 0]
    if not generate_kwargs.get("return_dict_in_generate"):
        return sequences
    scores = getattr(out, "scores", None)
    logits = getattr(out, "logits", None)
    return CoReasoningOutput(
        sequences=sequences,
        scores=tuple(s[::GROUP_SIZE] for s in scores) if scores is not None else None,
        logits=tuple(logits) if logits is not None else None,
        raw=out,
    )
