"""LongVA seen through :class:`cos.protocol.VideoLM` — the glue between ``longva`` and ``cos``.

``longva`` knows nothing of CoS and ``cos`` imports no model; this adapter is the one place that
knows both. The ``cos run`` command and the lmms-eval models build their model through
:func:`load_longva`, so both paths load the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``auto``: fp32 on CPU, bf16 on GPUs that support it, else fp16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        from cos.errors import ConfigError

        raise ConfigError(f"torch_dtype must be one of {['auto', *names]}, got {dtype!r}")
    return names[dtype]


def resolve_device(device: str | None) -> str:
    """See :func:`cos.device.normalise_device` (``cpu:0`` from accelerate becomes ``cpu``)."""
    from cos.device import normalise_device

    return normalise_device(device)


class LongVABackend:
    """A :class:`~cos.protocol.VideoLM` over ``longva.LongVAForCausalLM`` + ``longva.LongVAProcessor``."""

    def __init__(self, model, processor, encode_chunk_size: int = 32):
        self.model = model
        self.processor = processor
        self.encode_chunk_size = encode_chunk_size
        self.repetition_penalty = float(getattr(model.generation_config, "repetition_penalty", None) or 1.0)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        return self.processor.preprocess(frames).to(device=self.device, dtype=self.dtype)

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_frames(pixel_values, chunk_size=self.encode_chunk_size)

    def prompt_ids(self, question: str) -> torch.Tensor:
        return self.processor.prompt_ids(question).to(self.device)

    def embed_prompt(self, prompt_ids: torch.Tensor, frame_features: torch.Tensor) -> torch.Tensor:
        return self.model.embed_prompt(prompt_ids, frame_features)

    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float()

    #: tokens per forward when a prefill continues a cache. A continuation needs an explicit
    #: (query × key) attention mask, so an unchunked 18k-token suffix would materialise an 18k × 18k
    #: mask (~650 MB in bf16); chunks bound it, and the activations, at chunk × L.
    prefill_chunk = 2048

    def prefill(self, inputs_embeds: torch.Tensor, cache=None):
        from transformers import DynamicCache

        lm = self.model.language_model
        if cache is None:  # from scratch: plain causal attention, no mask is built
            return lm(inputs_embeds=inputs_embeds, cache=DynamicCache(config=lm.config), use_cache=True, logits_to_keep=1).cache
        for start in range(0, inputs_embeds.shape[1], self.prefill_chunk):
            cache = lm(inputs_embeds=inputs_embeds[:, start : start + self.prefill_chunk], cache=cache, use_cache=True, logits_to_keep=1).cache
        return cache

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.processor.decode(token_ids)

    def token_id(self, text: str) -> int:
        ids = self.processor.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) != 1:
            from cos.errors import ConfigError

            raise ConfigError(f"{text!r} is not a single token for this tokenizer (ids {ids})")
        return int(ids[0])


def load_longva(pretrained: str, device: str | None = None, torch_dtype=None, attn_implementation: str = "sdpa",
                encode_chunk_size: int = 32) -> LongVABackend:
    """Load LongVA (a hub id or a checkpoint directory in the original format) as a VideoLM."""
    from cos.errors import ConfigError
    from longva import LongVAForCausalLM, LongVAProcessor
    from longva.checkpoint import CheckpointError

    device = resolve_device(device)
    dtype = resolve_dtype(torch_dtype, device)
    try:
        model = LongVAForCausalLM.from_pretrained(pretrained, torch_dtype=dtype, device_map=device, attn_implementation=attn_implementation)
        processor = LongVAProcessor.from_pretrained(pretrained)
    except (CheckpointError, FileNotFoundError) as err:  # as a CosError, so `cos run` and the harness report it without a traceback
        raise ConfigError(f"cannot load LongVA from {pretrained!r}: {err}") from err
    model.eval()
    return LongVABackend(model, processor, encode_chunk_size=encode_chunk_size)
