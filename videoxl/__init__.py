"""Video-XL-7B on ``transformers`` 5.x: LongVA's visual path + Qwen2 with visual-summarisation (beacon) memory.

Loads the release's checkpoint format (``sy1998/Video_XL``, folder ``VideoXL_weight_8``). Knows nothing of
Chain-of-Shot or lmms-eval; builds on :mod:`longva` (the same tower, projector, pooling, prompt and
processor). Heavy names are imported lazily so ``import videoxl`` is cheap::

    from videoxl import VideoXLForCausalLM, VideoXLProcessor
    model = VideoXLForCausalLM.from_pretrained("/ckpt/Video_XL/VideoXL_weight_8", device_map="auto", beacon_ratio=8)
    proc = VideoXLProcessor.from_pretrained("/ckpt/Video_XL/VideoXL_weight_8")
    feats = model.encode_frames(proc.preprocess(frames))                 # (N, 144, 3584)
    prompt = proc.prompt_ids(question)
    embeds = model.embed_prompt(prompt, feats)                          # (1, L - 1 + 144 N, 3584)
    ids, span = model.expand_ids(prompt, feats.shape[0] * feats.shape[1])
    answer = proc.decode(model.generate(embeds, visual_span=span, input_ids=ids, max_new_tokens=64)[0])
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "VideoXLForCausalLM": ("videoxl.modeling", "VideoXLForCausalLM"),
    "VideoXLConfig": ("videoxl.config", "VideoXLConfig"),
    "BeaconSettings": ("videoxl.config", "BeaconSettings"),
    "VideoXLProcessor": ("longva.processing", "LongVAProcessor"),  # the same template, tokenizer and CLIP preprocessing
    "build_tiny_videoxl": ("videoxl.tiny", "build_tiny_videoxl"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'videoxl' has no attribute {name!r}")


__all__ = sorted(_LAZY)
