"""Video-XL-7B on ``transformers`` 5.x: LongVA's visual path + a Qwen2 LM with beacon memory.

:class:`VideoXLForCausalLM` is :class:`longva.LongVAForCausalLM` (CLIP tower, projector, 2x2 pool, the
same checkpoint key names, ``encode_frames``) with

- the beacon parameters (:func:`videoxl.beacon.add_beacon_parameters`), loaded from the checkpoint;
- the placeholder row: Video-XL's loader grows the vocabulary by one (``resize_token_embeddings(V + 1)``)
  and writes the video as ``144·T`` copies of that id ``P = V``. Its input row is never used (frame
  features take its place) but its LM-head row gives ``P`` a real logit. The release initialises the row
  at random (N(0, 0.02) from whatever the global RNG holds); here it is N(0, ``initializer_range``) from
  a generator seeded 0, so loading is repeatable. ``save_pretrained`` writes the checkpoint without it,
  as the release's files are;
- :meth:`~VideoXLForCausalLM.generate` / :meth:`~VideoXLForCausalLM.forward_logits` over the beacon memory
  (:mod:`videoxl.beacon`), with the compression ratio fixed per model (``beacon_ratio``, default 8, the
  release README's setting; the release's own draw from {2, 4, 8} per window is not reproduced).

Video-XL generates from ids: its logits processors (the checkpoint's repetition penalty above all) see
the expanded prompt — system text, question, option letters and the ``144·T`` placeholder ids — plus the
generated ids. :meth:`~VideoXLForCausalLM.generate` does the same when given ``input_ids`` (the expanded
ids of :meth:`~VideoXLForCausalLM.expand_ids`).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from longva.constants import IMAGE_TOKEN_INDEX
from longva.modeling import LongVAForCausalLM
from videoxl.beacon import BeaconRunner, add_beacon_parameters, plan_calls
from videoxl.config import DEFAULT_RATIO, VideoXLConfig

logger = logging.getLogger(__name__)

#: seed of the placeholder row the loader adds (see the module docstring)
PLACEHOLDER_SEED = 0


class VideoXLForCausalLM(LongVAForCausalLM):
    """Video-XL: LongVA's visual path + Qwen2 with visual-summarisation (beacon) memory. Load with
    :meth:`from_pretrained` (``beacon_ratio=8`` by default)."""

    config_class = VideoXLConfig

    def __init__(self, config: VideoXLConfig, attn_implementation: str = "sdpa", beacon_ratio: int = DEFAULT_RATIO):
        super().__init__(config, attn_implementation=attn_implementation)
        add_beacon_parameters(self.language_model)
        self.beacon_ratio = config.beacon.check_ratio(beacon_ratio)
        self._vocab_on_disk = int(config.text_config.vocab_size)
        #: memory facts of the last prefill (what the trace records)
        self.last_memory: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path_or_hub_id, *args, beacon_ratio: int = DEFAULT_RATIO, **kwargs) -> VideoXLForCausalLM:
        """Load a checkpoint in the release's format (local directory or hub id); see
        :meth:`longva.LongVAForCausalLM.from_pretrained` for the arguments. ``beacon_ratio``: raw visual
        tokens per beacon (must be between 1 and ``beacon_window``)."""
        model = super().from_pretrained(path_or_hub_id, *args, beacon_ratio=beacon_ratio, **kwargs)
        if model.config.inferred:
            logger.info("Video-XL config.json lacks %s: using the release's values (%s)", ", ".join(model.config.inferred),
                        {k: v for k, v in model.config.beacon.as_dict().items() if k in model.config.inferred})
        return model

    def _adjust_vocabulary(self, ckpt_dir: Path, shrink: bool = True) -> None:
        """Add the placeholder row (input and output), as Video-XL's loader does (it never shrinks)."""
        lm = self.language_model
        old_in, old_out = lm.get_input_embeddings(), lm.get_output_embeddings()
        gen = torch.Generator().manual_seed(PLACEHOLDER_SEED)
        std = float(getattr(lm.config, "initializer_range", 0.02))
        rows = torch.randn((2, old_in.weight.shape[1]), generator=gen) * std
        weight = old_in.weight
        new_in = nn.Embedding(weight.shape[0] + 1, weight.shape[1], device=weight.device, dtype=weight.dtype)
        new_out = nn.Linear(weight.shape[1], weight.shape[0] + 1, bias=False, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new_in.weight.copy_(torch.cat([weight, rows[:1].to(weight)]))
            new_out.weight.copy_(torch.cat([old_out.weight, rows[1:].to(old_out.weight)]))
        new_in.requires_grad_(False)
        new_out.requires_grad_(False)
        lm.set_input_embeddings(new_in)
        lm.set_output_embeddings(new_out)
        lm.config.vocab_size = weight.shape[0] + 1

    def save_pretrained(self, out_dir: str | os.PathLike, max_shard_size: int | str = "5GB") -> Path:
        """The release's format: the checkpoint without the placeholder row, ``vocab_size`` as on disk."""
        lm = self.language_model
        if lm.config.vocab_size == self._vocab_on_disk:
            return super().save_pretrained(out_dir, max_shard_size)
        saved_in, saved_out = lm.get_input_embeddings(), lm.get_output_embeddings()
        lm.set_input_embeddings(nn.Embedding.from_pretrained(saved_in.weight[: self._vocab_on_disk], freeze=True))
        trimmed = nn.Linear(saved_out.in_features, self._vocab_on_disk, bias=False, device=saved_out.weight.device, dtype=saved_out.weight.dtype)
        trimmed.weight = nn.Parameter(saved_out.weight[: self._vocab_on_disk], requires_grad=False)
        lm.set_output_embeddings(trimmed)
        lm.config.vocab_size = self._vocab_on_disk
        try:
            return super().save_pretrained(out_dir, max_shard_size)
        finally:
            lm.set_input_embeddings(saved_in)
            lm.set_output_embeddings(saved_out)
            lm.config.vocab_size = self._vocab_on_disk + 1

    # ------------------------------------------------------------------------------ prompt
    @property
    def placeholder_id(self) -> int:
        """``P``: the id the expanded prompt holds at every visual position (the row the loader added)."""
        return int(self.language_model.config.vocab_size) - 1

    def embed_prompt(self, prompt_ids: torch.Tensor, frame_features: torch.Tensor, *, truncate: bool = False) -> torch.Tensor:
        """Splice ``frame_features (N, T, D)`` into the placeholder -> ``(1, L - 1 + N*T, D)``; never truncated."""
        return super().embed_prompt(prompt_ids, frame_features, truncate=False)

    def expand_ids(self, prompt_ids: torch.Tensor, visual_tokens: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """The release's expanded ids: the one ``-200`` of ``prompt_ids (1, L)`` replaced by ``visual_tokens``
        copies of :attr:`placeholder_id`; and the visual span ``(skip_first, skip_last)``."""
        slots = (prompt_ids[0] == IMAGE_TOKEN_INDEX).nonzero().flatten()
        if slots.numel() != 1:
            raise ValueError(f"prompt_ids must hold exactly one image placeholder ({IMAGE_TOKEN_INDEX}), found {slots.numel()}")
        pos = int(slots[0])
        ids = prompt_ids[0].to(torch.long)
        visual = torch.full((visual_tokens,), self.placeholder_id, dtype=torch.long, device=ids.device)
        return torch.cat([ids[:pos], visual, ids[pos + 1 :]])[None], (pos, pos + visual_tokens)

    # ------------------------------------------------------------------------------ beacon memory
    def _prefill(self, inputs_embeds: torch.Tensor, visual_span: tuple[int, int]):
        if inputs_embeds.ndim != 3:
            raise ValueError(f"inputs_embeds must be (B, L, D), got {tuple(inputs_embeds.shape)}")
        runner = BeaconRunner(self.language_model)
        window = self.config.beacon.window
        calls = plan_calls(inputs_embeds.shape[1], int(visual_span[0]), int(visual_span[1]), window, self.beacon_ratio)
        memory = runner.new_memory()
        logits = runner.prefill(inputs_embeds.to(self.device, self.dtype), calls, memory)
        self.last_memory = {"beacon_ratio": self.beacon_ratio, "beacon_window": window, "visual_tokens": memory.compressed,
                            "beacons": memory.counts["beacons"], "sink": memory.counts["sink"], "text_after": memory.counts["raw"],
                            "calls": len(calls), "memory_bytes": memory.nbytes(), "batch": int(inputs_embeds.shape[0])}
        return runner, memory, logits

    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                       visual_span: tuple[int, int]) -> torch.Tensor:
        """Next-token logits ``(B, V)`` (float32) after prefilling ``inputs_embeds`` over a fresh memory."""
        _check_unpadded(attention_mask)
        with torch.no_grad():
            return self._prefill(inputs_embeds, visual_span)[2]

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, *, visual_span: tuple[int, int],
                 input_ids: torch.Tensor | None = None, logits_processor: LogitsProcessorList | None = None,
                 stopping_criteria: StoppingCriteriaList | None = None, **kwargs: Any) -> torch.Tensor:
        """Decode from ``inputs_embeds (B, L, D)`` over beacon memory; returns only the new tokens ``(B, T_new)``.

        ``visual_span``: ``(skip_first, skip_last)`` of the visual tokens (every row the same layout; no
        padding). ``input_ids (B, L)``: the ids the processors see before the generated ones (Video-XL's
        expanded ids, so the repetition penalty covers the prompt as in the release); None: only the
        generated ids, as LongVA. Options as :meth:`vlm_common.modeling.SplicedCausalLM.generate`: the
        checkpoint's ``generation_config.json`` with greedy decoding, updated by ``max_new_tokens``,
        ``do_sample``, ``temperature`` (``<= 0``: greedy), ``top_p``, ``top_k``, ``repetition_penalty``,
        ``eos_token_id`` (None: none), ``pad_token_id``; ``num_beams`` must be 1. ``logits_processor``
        runs after the built-in penalty and before the sampling warpers (as in ``transformers``).
        """
        _check_unpadded(attention_mask)
        gen = copy.deepcopy(self.generation_config)
        if "eos_token_id" in kwargs and kwargs["eos_token_id"] is None:
            gen.eos_token_id = None
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if int(kwargs.pop("num_beams", 1)) != 1 or int(kwargs.pop("num_return_sequences", 1)) != 1:
            raise ValueError("Video-XL's beacon decoding supports num_beams=1 and num_return_sequences=1 only")
        temperature = kwargs.pop("temperature", None)
        do_sample = bool(kwargs.pop("do_sample", gen.do_sample))
        if temperature is not None and temperature <= 0:
            do_sample = False
        unknown = set(kwargs) - {"max_new_tokens", "top_p", "top_k", "repetition_penalty", "eos_token_id", "pad_token_id"}
        if unknown:
            raise ValueError(f"unsupported generation options for Video-XL: {sorted(unknown)}")
        max_new = int(kwargs.get("max_new_tokens", gen.max_new_tokens or 20))
        penalty = float(kwargs.get("repetition_penalty", gen.repetition_penalty or 1.0))
        eos = kwargs.get("eos_token_id", gen.eos_token_id)
        eos = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
        pad = kwargs.get("pad_token_id", gen.pad_token_id)
        pad = int(pad if pad is not None else (eos[0] if eos else 0))

        processors = LogitsProcessorList()
        if penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty))
        processors.extend(logits_processor or [])
        if do_sample:
            temp = float(temperature if temperature is not None else (gen.temperature or 1.0))
            top_k, top_p = kwargs.get("top_k", gen.top_k), kwargs.get("top_p", gen.top_p)
            if temp != 1.0:
                processors.append(TemperatureLogitsWarper(temp))
            if top_k:
                processors.append(TopKLogitsWarper(int(top_k)))
            if top_p is not None and float(top_p) < 1.0:
                processors.append(TopPLogitsWarper(float(top_p)))

        batch = inputs_embeds.shape[0]
        if input_ids is None:
            ids = torch.empty((batch, 0), dtype=torch.long, device=self.device)
        else:
            if tuple(input_ids.shape) != tuple(inputs_embeds.shape[:2]):
                raise ValueError(f"input_ids {tuple(input_ids.shape)} do not match inputs_embeds {tuple(inputs_embeds.shape[:2])}")
            ids = input_ids.to(self.device, torch.long)
        prompt_len = ids.shape[1]
        embed = self.language_model.get_input_embeddings()
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        eos_t = torch.tensor(eos, dtype=torch.long, device=self.device)
        with torch.no_grad():
            runner, memory, logits = self._prefill(inputs_embeds, visual_span)
            for step in range(max_new):
                scores = processors(ids, logits)
                if do_sample:
                    token = torch.multinomial(scores.softmax(-1), 1)[:, 0]
                else:
                    token = scores.argmax(-1)
                token = torch.where(done, torch.full_like(token, pad), token)
                ids = torch.cat([ids, token[:, None]], dim=1)
                if eos:
                    done = done | torch.isin(token, eos_t)
                if stopping_criteria is not None:
                    done = done | stopping_criteria(ids, scores).to(done.device)
                if bool(done.all()) or step == max_new - 1:
                    break
                logits = runner.step(embed(token[:, None]).to(self.dtype), memory)
        self.last_memory.update(raw_after_decode=memory.counts["raw"], memory_bytes=memory.nbytes())
        return ids[:, prompt_len:]


def _check_unpadded(attention_mask: torch.Tensor | None) -> None:
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError("Video-XL's beacon memory runs unpadded rows of one layout; got an attention mask with padding")


__all__ = ["PLACEHOLDER_SEED", "VideoXLForCausalLM"]
