"""LongVA-7B on ``transformers`` 5.x: checkpoint loading, frame encoding, prompt splicing, generation.

Knows nothing of Chain-of-Shot or lmms-eval. Heavy names are imported lazily so ``import longva`` is cheap::

    from longva import LongVAForCausalLM, LongVAProcessor
    model = LongVAForCausalLM.from_pretrained("lmms-lab/LongVA-7B", device_map="auto")
    proc = LongVAProcessor.from_pretrained("lmms-lab/LongVA-7B")
    feats = model.encode_frames(proc.preprocess(frames))            # (N, 144, 3584)
    embeds = model.embed_prompt(proc.prompt_ids(question), feats)   # (1, L - 1 + 144 N, 3584)
    answer = proc.decode(model.generate(embeds, max_new_tokens=64)[0])
"""

from __future__ import annotations

import importlib
from typing import Any

from longva.constants import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_IMAGE_TOKEN,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_TOKEN_INDEX,
    SYSTEM_PROMPT,
)

_LAZY = {
    "LongVAForCausalLM": "longva.modeling",
    "LongVAProcessor": "longva.processing",
    "LongVAConfig": "longva.config",
    "CheckpointError": "longva.checkpoint",
    "build_prompt": "longva.processing",
    "build_tiny_longva": "longva.tiny",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longva' has no attribute {name!r}")


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CheckpointError",
    "DEFAULT_IMAGE_TOKEN",
    "ENDOFTEXT",
    "IMAGE_TOKEN_INDEX",
    "IM_END",
    "IM_START",
    "LongVAConfig",
    "LongVAForCausalLM",
    "LongVAProcessor",
    "SYSTEM_PROMPT",
    "build_prompt",
    "build_tiny_longva",
]
