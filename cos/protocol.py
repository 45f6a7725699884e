"""The small protocol through which the method sees a video language model.

``cos`` never imports a concrete model. Anything with these methods can be driven by the Chain-of-Shot
pipeline; the runtime's backends (``cos_runtime.backends``) implement it for each base model.

What the pipeline needs from a model, and nothing else:

* :class:`ModelFacts` (``model.facts``): the context budget, visual tokens for ``n`` frames, the
  checkpoint's repetition penalty, and whether a frame's features depend on that frame alone. When they
  do (LongVA, LLaVA-Video: a vision tower per frame, any per-frame separators included in the frame's
  block), the positive and negative videos gather X's frame features by index, so every frame is encoded
  once. When they do not (Video-XL compresses the visual tokens window by window), the pipeline composes
  the frames of Sp and Sn and encodes each stream, and says so in the trace.
* :class:`VideoInfo`: when the frames were taken, for models whose prompt states frame times
  (LLaVA-Video's time instruction). ``prompt_ids`` receives it; models that ignore time ignore it.
* Optional capabilities, checked with ``isinstance``: :class:`SupportsPrefill` (a cached forward that
  continues a cache: shared-prefix prefill of the three streams). A model without it is decoded by
  ``generate`` from the three streams' embeddings (exact, slower).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class ModelFacts:
    """What the runtime must know about a loaded model.

    Args:
        name: the backend's registry name.
        context_budget: the most prompt tokens the model accepts before it truncates (None: no limit).
        tokens_per_frame: visual tokens one frame becomes (per-frame separators included).
        repetition_penalty: the checkpoint's default; co-reasoning applies it to the fused scores.
        independent_frames: a frame's features depend on that frame only (gather by index is exact).
        eos_token_ids: the ids that end an answer (the checkpoint's generation config).
        visual_tokens_fn: visual tokens for ``n`` frames when that is not ``n * tokens_per_frame``.
    """

    name: str
    context_budget: int | None
    tokens_per_frame: int
    repetition_penalty: float = 1.0
    independent_frames: bool = True
    eos_token_ids: tuple[int, ...] = ()
    visual_tokens_fn: Callable[[int], int] | None = field(default=None, compare=False)

    def visual_tokens(self, num_frames: int) -> int:
        """Visual tokens that ``num_frames`` frames occupy in the prompt."""
        if self.visual_tokens_fn is not None:
            return int(self.visual_tokens_fn(num_frames))
        return int(num_frames) * int(self.tokens_per_frame)


@dataclass(frozen=True)
class VideoInfo:
    """Where the sampled frames come from: source indices, frame rate (0 when unknown), duration in seconds,
    and the video itself (``source``: the visual's path as the caller gave it; None for images in memory).
    Ground-truth scorers (:class:`cos.scoring.OracleScorer`) find the video's annotation by ``source``."""

    frame_indices: tuple[int, ...]
    fps: float = 0.0
    duration: float = 0.0
    total_frames: int = 0
    times: tuple[float, ...] | None = None  #: seconds per sampled frame when the sampling rule states them
    source: str | None = None  #: the video's path as given to the runtime (None: no file, e.g. a list of images)

    @property
    def frame_times(self) -> tuple[float, ...] | None:
        """Seconds of each sampled frame: the sampling rule's own times, else index / fps (None when unknown)."""
        if self.times is not None:
            return tuple(self.times)
        if not self.fps:
            return None
        return tuple(i / self.fps for i in self.frame_indices)

    def shown(self, index_map) -> VideoInfo:
        """The video a composed stream shows: frame ``i`` is sampled frame ``index_map[i]`` (-1, a black
        frame, keeps position ``i``'s own index and time)."""
        idx = [int(j) if int(j) >= 0 else i for i, j in enumerate(index_map)]
        times = self.frame_times
        return VideoInfo(frame_indices=tuple(self.frame_indices[j] for j in idx), fps=self.fps, duration=self.duration,
                         total_frames=self.total_frames, times=None if times is None else tuple(times[j] for j in idx),
                         source=self.source)


@runtime_checkable
class VideoLM(Protocol):
    """A video LM split so that frames are encoded once and gathered by index afterwards."""

    @property
    def facts(self) -> ModelFacts:
        """Model facts the runtime needs (see :class:`ModelFacts`)."""

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames ``(N, H, W, 3)`` -> pixel values ``(N, C, S, S)`` on the model's device/dtype."""

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixel values ``(N, C, S, S)`` -> frame features ``(N, T, D)`` (T tokens per frame)."""

    def prompt_ids(self, question: str, video: VideoInfo | None = None) -> torch.Tensor:
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
