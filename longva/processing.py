"""LongVA's frame preprocessing, prompt template and tokenisation (``longva-notes.md`` §1-2)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import CLIPImageProcessorPil, PreTrainedTokenizerBase, Qwen2Config
from transformers.image_utils import PILImageResampling

from longva.checkpoint import resolve_checkpoint
from longva.constants import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_IMAGE_TOKEN,
    IM_END,
    IM_START,
    SYSTEM_PROMPT,
)
from vlm_common.frames import FramePreprocessor
from vlm_common.qwen import ChatTokenizer, read_config_json, tokenize_with_image
from vlm_common.qwen import load_tokenizer as _load_tokenizer

PREPROCESSOR_FILE = "preprocessor_config.json"


def default_image_processor(image_size: int = DEFAULT_IMAGE_SIZE) -> CLIPImageProcessorPil:
    """LongVA's rule: shortest edge -> ``image_size`` (bicubic), centre crop, x/255, CLIP mean/std.

    ``CLIPImageProcessorPil`` reproduces 4.40's slow ``CLIPImageProcessor`` bit for bit (verified in the
    notes); the torchvision-backed 5.x default is avoided.
    """
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=False,
    )


def build_prompt(question: str, system_prompt: str = SYSTEM_PROMPT) -> str:
    """The ``qwen_1_5`` chat prompt with ``"<image>\\n" + question`` as the user turn, open for the answer."""
    return (
        f"{IM_START}system\n{system_prompt}{IM_END}\n"
        f"{IM_START}user\n{DEFAULT_IMAGE_TOKEN}\n{question}{IM_END}\n"
        f"{IM_START}assistant\n"
    )


class LongVAProcessor(FramePreprocessor, ChatTokenizer):
    """Image processor + tokenizer of a LongVA checkpoint.

    Args:
        image_processor: maps ``(H, W, 3)`` uint8 frames to ``(3, S, S)`` floats (see :func:`default_image_processor`).
        tokenizer: the checkpoint's Qwen2 tokenizer.
        system_prompt: system turn of the template.
    """

    def __init__(
        self,
        image_processor: CLIPImageProcessorPil,
        tokenizer: PreTrainedTokenizerBase,
        system_prompt: str = SYSTEM_PROMPT,
    ):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        for name in (IM_START, IM_END):
            if name not in tokenizer.get_vocab():
                raise ValueError(f"the tokenizer has no {name!r} token; it is not a Qwen2 chat tokenizer")

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike) -> LongVAProcessor:
        """Load the tokenizer and ``preprocessor_config.json`` (LongVA's default rule when it is absent)."""
        ckpt_dir = resolve_checkpoint(path_or_hub_id)
        tokenizer = load_tokenizer(ckpt_dir)
        if (ckpt_dir / PREPROCESSOR_FILE).is_file():
            image_processor = CLIPImageProcessorPil.from_pretrained(str(ckpt_dir))
        else:
            image_processor = default_image_processor(_vision_image_size(ckpt_dir))
        return cls(image_processor, tokenizer)

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(out_dir))
        self.image_processor.save_pretrained(str(out_dir))
        return out_dir

    # ------------------------------------------------------------------------------ ids
    @property
    def image_size(self) -> int:
        """Side ``S`` of the preprocessed frames."""
        return int(self.image_processor.crop_size["height"])

    # ------------------------------------------------------------------------------ text
    def build_prompt(self, question: str) -> str:
        """The exact ``qwen_1_5`` prompt with ``"<image>\\n" + question`` as the user turn."""
        return build_prompt(question, self.system_prompt)

    def prompt_ids(self, question: str) -> torch.Tensor:
        """Ids ``(1, L)`` of :meth:`build_prompt` with one ``IMAGE_TOKEN_INDEX`` placeholder."""
        return tokenize_with_image(self.build_prompt(question), self.tokenizer)



def load_tokenizer(ckpt_dir: str | os.PathLike, text_config: Qwen2Config | None = None) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, chosen through its Qwen2 text config (:func:`vlm_common.qwen.load_tokenizer`);
    ``text_config`` defaults to the one in ``ckpt_dir/config.json`` (none when the file is absent)."""
    if text_config is None and (raw := read_config_json(ckpt_dir)) is not None:
        from longva.config import text_config_from_dict

        text_config = text_config_from_dict(raw)
    return _load_tokenizer(ckpt_dir, text_config)


def _vision_image_size(ckpt_dir: Path) -> int:
    """Frame side from ``config.json`` (its vision settings, see :mod:`longva.config`), default 336."""
    path = ckpt_dir / "config.json"
    if path.is_file():
        from longva.config import LongVAConfig

        return LongVAConfig.from_json_file(path).image_size
    return DEFAULT_IMAGE_SIZE


__all__ = ["LongVAProcessor", "build_prompt", "default_image_processor", "load_tokenizer", "tokenize_with_image"]
