"""Constants of LLaVA-Video's prompt format, preprocessing and visual token layout (``llava-video-notes.md``).

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

#: SigLIP normalisation: ``(x / 255 - 0.5) / 0.5``.
SIGLIP_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SIGLIP_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
#: Frame side of the released model (SigLIP so400m-patch14-384): frames are resized to exactly 384x384.
DEFAULT_IMAGE_SIZE: int = 384

#: The tower the release names in ``mm_vision_tower``.
DEFAULT_VISION_TOWER: str = "google/siglip-so400m-patch14-384"

#: ``get_2dPool``'s stride: the video path calls it without the config's ``mm_spatial_pool_stride``.
POOL_STRIDE: int = 2
#: ``mm_spatial_pool_mode`` values of ``get_2dPool``.
POOL_MODES: tuple[str, ...] = ("average", "max", "bilinear")
#: ``mm_newline_position`` values of the video path.
NEWLINE_POSITIONS: tuple[str, ...] = ("grid", "frame", "one_token", "no_token")
#: What lmms-eval's ``llava_vid`` writes over the config by default (``overwrite=True``).
LMMS_EVAL_POOL_MODE: str = "average"
LMMS_EVAL_NEWLINE_POSITION: str = "grid"

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_IMAGE_TOKEN",
    "DEFAULT_VISION_TOWER",
    "ENDOFTEXT",
    "IMAGE_TOKEN_INDEX",
    "IM_END",
    "IM_START",
    "LMMS_EVAL_NEWLINE_POSITION",
    "LMMS_EVAL_POOL_MODE",
    "NEWLINE_POSITIONS",
    "POOL_MODES",
    "POOL_STRIDE",
    "RELEASED_SPECIAL_IDS",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "SPECIAL_TOKENS",
]
