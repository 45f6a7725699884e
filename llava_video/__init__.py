"""LLaVA-Video-7B-Qwen2 on ``transformers`` 5.x: checkpoint loading, frame encoding, prompt splicing, generation.

Reproduces lmms-eval ``llava_vid``'s video path on the original checkpoint format
(``lmms-lab/LLaVA-Video-7B-Qwen2``). Knows nothing of Chain-of-Shot or lmms-eval. Heavy names are imported
lazily so ``import llava_video`` is cheap::

    from llava_video import LlavaVideoForCausalLM, LlavaVideoProcessor, time_instruction
    model = LlavaVideoForCausalLM.from_pretrained("lmms-lab/LLaVA-Video-7B-Qwen2", device_map="auto",
                                                  mm_spatial_pool_mode="average", mm_newline_position="grid")
    proc = LlavaVideoProcessor.from_pretrained("lmms-lab/LLaVA-Video-7B-Qwen2")
    feats = model.encode_frames(proc.preprocess(frames))                        # (N, 182, 3584)
    embeds = model.embed_prompt(proc.prompt_ids(question, "qwen_1_5"), feats)   # (1, L - 1 + 182 N, 3584)
    answer = proc.decode(model.generate(embeds, max_new_tokens=64)[0])
"""

from __future__ import annotations

import importlib
from typing import Any

from llava_video.constants import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_IMAGE_TOKEN,
    DEFAULT_VISION_TOWER,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_TOKEN_INDEX,
    SIGLIP_MEAN,
    SIGLIP_STD,
)

_LAZY = {
    "LlavaVideoForCausalLM": "llava_video.modeling",
    "LlavaVideoProcessor": "llava_video.processing",
    "LlavaVideoConfig": "llava_video.config",
    "CheckpointError": "llava_video.checkpoint",
    "CONV_TEMPLATES": "llava_video.conversation",
    "build_prompt": "llava_video.conversation",
    "time_instruction": "llava_video.conversation",
    "build_tiny_llava_video": "llava_video.tiny",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llava_video' has no attribute {name!r}")


__all__ = [
    "CONV_TEMPLATES",
    "CheckpointError",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_IMAGE_TOKEN",
    "DEFAULT_VISION_TOWER",
    "ENDOFTEXT",
    "IMAGE_TOKEN_INDEX",
    "IM_END",
    "IM_START",
    "LlavaVideoConfig",
    "LlavaVideoForCausalLM",
    "LlavaVideoProcessor",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "build_prompt",
    "build_tiny_llava_video",
    "time_instruction",
]
