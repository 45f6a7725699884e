"""Frame preprocessing shared by the model packages: a transformers image processor run over chunks of
frames in threads (PIL's resize releases the GIL), output order kept."""

from __future__ import annotations

import os

import numpy as np
import torch


class FramePreprocessor:
    """Mixin for a processor with an ``image_processor`` (a transformers PIL-backed image processor)."""

    image_processor: object

    def preprocess(
        self, frames: np.ndarray, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """uint8 RGB frames ``(N, H, W, 3)`` -> float pixel values ``(N, 3, S, S)`` (float32 unless ``dtype``)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3), got {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
        if frames.shape[0] == 0:
            raise ValueError("no frames to preprocess")
        chunks = [frames[i : i + self.preprocess_chunk] for i in range(0, len(frames), self.preprocess_chunk)]
        workers = min(len(chunks), self.num_workers)
        if workers > 1:  # PIL's resize releases the GIL: frames are processed in parallel, output order kept
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(self._preprocess_chunk, chunks))
        else:
            parts = [self._preprocess_chunk(chunk) for chunk in chunks]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out.to(device=device, dtype=dtype or torch.float32)

    #: frames per image-processor call, and threads over those calls (``preprocess``)
    preprocess_chunk = 8
    num_workers = min(8, os.cpu_count() or 1)

    def _preprocess_chunk(self, frames: np.ndarray) -> torch.Tensor:
        return self.image_processor(
            list(frames), return_tensors="pt", input_data_format="channels_last", data_format="channels_first"
        )["pixel_values"]


__all__ = ["FramePreprocessor"]
