"""The small protocol through which the method sees a video language model.

``cos`` never imports a concrete model. Anything with these methods can be driven by the Chain-of-Shot
pipeline (LongVA implements it in ``cos_lmms_eval.backend``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class VideoLM(Protocol):
    """A video LM split so that frames are encoded once and gathered by index afterwards."""

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames ``(N, H, W, 3)`` -> pixel values ``(N, C, S, S)`` on the model's device/dtype."""

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixel values ``(N, C, S, S)`` -> frame features ``(N, T, D)`` (T tokens per frame)."""

    def prompt_ids(self, question: str) -> torch.Tensor:
        """The full chat prompt for ``question`` as ids ``(1, L)`` holding one video placeholder."""

    def embed_prompt(self, prompt_ids: torch.Tensor, frame_features: torch.Tensor) -> torch.Tensor:
        """Splice ``frame_features (N, T, D)`` into the placeholder -> ``inputs_embeds (1, L - 1 + N*T, D)``."""

    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One uncached forward -> last-position logits ``(B, V)`` (float32)."""

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """``transformers`` ``generate`` from embeddings; returns only the new tokens ``(B, T_new)``."""

    def decode(self, token_ids: Sequence[int]) -> str:
        """Token ids -> text, special tokens skipped, stripped."""

    def token_id(self, text: str) -> int:
        """The id of a single-token word (used by the self scorer for ``yes``/``no``)."""


@runtime_checkable
class SupportsPrefill(Protocol):
    """Optional: models with it get shared-prefix prefill of the three streams (:mod:`cos.prefix`)."""

    def prefill(self, inputs_embeds: torch.Tensor, cache=None):
        """One cached forward of ``inputs_embeds (1, l, D)`` continuing ``cache`` (a ``transformers``
        ``DynamicCache`` or ``None``); returns the extended cache."""
