"""Constants of LongVA's prompt format and preprocessing (values from the shared ``longva-notes.md``).

Ids are those of the released Qwen2 tokenizer; code should ask the tokenizer (a tiny test checkpoint has
other ids) and use these only where the checkpoint says nothing.
"""

from __future__ import annotations

# The prompt placeholder and Qwen2's special tokens are shared by every LLaVA-family package.
from vlm_common.qwen import (  # noqa: F401 - re-exported
    DEFAULT_IMAGE_TOKEN,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_TOKEN_INDEX,
    RELEASED_SPECIAL_IDS,
    SPECIAL_TOKENS,
)

#: System message of LongVA's ``qwen_1_5`` conversation template.
SYSTEM_PROMPT: str = "You are a helpful assistant."

#: OpenAI CLIP normalisation.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
#: Frame side of the released model (CLIP ViT-L/14-336).
DEFAULT_IMAGE_SIZE: int = 336

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_IMAGE_TOKEN",
    "ENDOFTEXT",
    "IMAGE_TOKEN_INDEX",
    "IM_END",
    "IM_START",
    "RELEASED_SPECIAL_IDS",
    "SPECIAL_TOKENS",
    "SYSTEM_PROMPT",
]
