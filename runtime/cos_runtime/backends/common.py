"""What the LLaVA-family backends share: a model that encodes frames into per-frame token blocks, splices
them into the prompt at one placeholder, and runs a transformers causal LM (``model.language_model``).

:class:`SplicedVideoLM` implements :class:`cos.protocol.VideoLM` and :class:`cos.protocol.SupportsPrefill`
over such a ``model`` (``encode_frames``, ``embed_prompt``, ``generate``, ``generation_config``,
``tokens_per_frame``, ``config.tokenizer_model_max_length``) and its ``processor`` (``preprocess``,
``decode``, ``tokenizer``). A backend subclasses it with its prompt (:meth:`prompt_ids`) and facts;
:class:`CachedVideoLM` adds the cached prefill of models whose LM keeps a plain ``DynamicCache``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cos.errors import ConfigError
from cos.protocol import ModelFacts, VideoInfo


def token_ids(value) -> tuple[int, ...]:
    """A generation config's ``eos_token_id`` (None, an int or a list) as a tuple."""
    if value is None:
        return ()
    return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


class SplicedVideoLM:
    """The shared :class:`~cos.protocol.VideoLM` adapter (see the module docstring)."""

    def __init__(self, model, processor, encode_chunk_size: int = 32):
        self.model = model
        self.processor = processor
        self.encode_chunk_size = encode_chunk_size
        self._facts: ModelFacts | None = None

    def make_facts(self, name: str, independent_frames: bool) -> ModelFacts:
        limit = getattr(self.model.config, "tokenizer_model_max_length", None)
        config = self.model.generation_config
        return ModelFacts(name=name, context_budget=int(limit) if limit else None, tokens_per_frame=int(self.model.tokens_per_frame),
                          repetition_penalty=float(getattr(config, "repetition_penalty", None) or 1.0),
                          independent_frames=independent_frames, eos_token_ids=token_ids(getattr(config, "eos_token_id", None)))

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def repetition_penalty(self) -> float:
        return self._facts.repetition_penalty

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        return self.pixels_to_model(self.preprocess_host(frames))

    def preprocess_host(self, frames: np.ndarray) -> torch.Tensor:
        """The CPU half of :meth:`preprocess` (float32 pixel values in host memory): safe in a background thread."""
        return self.processor.preprocess(frames)

    def pixels_to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        """The device half of :meth:`preprocess`: host pixel values to the model's device and dtype."""
        return pixels.to(device=self.device, dtype=self.dtype)

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_frames(pixel_values, chunk_size=self.encode_chunk_size)

    def prompt_ids(self, question: str, video: VideoInfo | None = None) -> torch.Tensor:
        raise NotImplementedError

    def embed_prompt(self, prompt_ids: torch.Tensor, frame_features: torch.Tensor) -> torch.Tensor:
        return self.model.embed_prompt(prompt_ids, frame_features)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of text tokens ``(B, t)`` (a naive decoder appends its tokens with these)."""
        return self.model.language_model.get_input_embeddings()(token_ids.to(self.device))

    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float()

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.processor.decode(token_ids)

    def token_id(self, text: str) -> int:
        try:
            return int(self.processor.token_id(text))
        except ValueError as err:
            raise ConfigError(f"not a single token for this tokenizer: {err}") from None


class CachedVideoLM(SplicedVideoLM):
    """:class:`SplicedVideoLM` whose language model keeps a plain ``DynamicCache``: adds
    :class:`~cos.protocol.SupportsPrefill` (shared-prefix prefill of X, Sp and Sn) and one cached decoding step."""

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
            chunk = inputs_embeds[:, start : start + self.prefill_chunk]
            cache = lm(inputs_embeds=chunk, cache=cache, use_cache=True, logits_to_keep=1).cache
        return cache

    def decode_step(self, inputs_embeds: torch.Tensor, cache) -> torch.Tensor:
        """One cached forward of ``inputs_embeds (B, 1, D)`` on ``cache`` -> last logits (benchmarks)."""
        return self.model.language_model(inputs_embeds=inputs_embeds, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
