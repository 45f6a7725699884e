"""LLaVA-Video's frame preprocessing, prompt templates and tokenisation (``llava-video-notes.md`` §1-2).

Frames: the tower's built-in ``SigLipImageProcessor()`` of the original code, i.e. resize to exactly
``S x S`` (384; PIL bicubic, aspect ratio not kept, no crop), ``x * (1/255)`` (in float64, then float32),
``(x - 0.5) / 0.5``. It is reproduced here by ``transformers``' PIL-backed ``SiglipImageProcessorPil``
configured to those settings (no torchvision). No ``preprocessor_config.json`` is read, neither the
checkpoint's nor the tower's, as in the original.

Prompt: lmms-eval ``llava_vid``'s user turn in a LLaVA conversation template (:mod:`llava_video.conversation`),
tokenised as LLaVA's ``tokenizer_image_token``: split on ``<image>``, chunks tokenised separately, joined
with ``IMAGE_TOKEN_INDEX`` (-200); Qwen2 has no BOS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, Qwen2Config, SiglipImageProcessorPil
from transformers.image_utils import PILImageResampling

from llava_video import conversation
from llava_video.checkpoint import resolve_checkpoint
from llava_video.constants import (
    DEFAULT_IMAGE_SIZE,
    IM_END,
    IM_START,
    SIGLIP_MEAN,
    SIGLIP_STD,
)
from vlm_common.frames import FramePreprocessor
from vlm_common.qwen import ChatTokenizer, read_config_json, tokenize_with_image
from vlm_common.qwen import load_tokenizer as _load_tokenizer


def default_image_processor(image_size: int = DEFAULT_IMAGE_SIZE) -> SiglipImageProcessorPil:
    """LLaVA-Video's rule: resize to exactly ``image_size`` square (PIL bicubic), x/255, (x - 0.5) / 0.5."""
    return SiglipImageProcessorPil(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(SIGLIP_MEAN),
        image_std=list(SIGLIP_STD),
        do_convert_rgb=False,
        do_pad=False,
    )


class LlavaVideoProcessor(FramePreprocessor, ChatTokenizer):
    """Image processor + tokenizer + prompt templates of a LLaVA-Video checkpoint.

    Args:
        image_processor: maps ``(H, W, 3)`` uint8 frames to ``(3, S, S)`` floats (see :func:`default_image_processor`).
        tokenizer: the checkpoint's Qwen2 tokenizer.
    """

    def __init__(self, image_processor: SiglipImageProcessorPil, tokenizer: PreTrainedTokenizerBase):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        for name in (IM_START, IM_END):
            if name not in tokenizer.get_vocab():
                raise ValueError(f"the tokenizer has no {name!r} token; it is not a Qwen2 chat tokenizer")

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike) -> LlavaVideoProcessor:
        """Load the tokenizer; frames are resized to the tower's side (384 unless ``config.json`` says otherwise)."""
        ckpt_dir = resolve_checkpoint(path_or_hub_id)
        return cls(default_image_processor(_vision_image_size(ckpt_dir)), load_tokenizer(ckpt_dir))

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write the tokenizer files (no ``preprocessor_config.json``: the original reads none)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(out_dir))
        return out_dir

    # ------------------------------------------------------------------------------ ids
    @property
    def image_size(self) -> int:
        """Side ``S`` of the preprocessed frames."""
        return int(self.image_processor.size["height"])

    # ------------------------------------------------------------------------------ text
    def build_prompt(self, question: str, conv_template: str = conversation.DEFAULT_CONV_TEMPLATE, time_instruction: str | None = None) -> str:
        """The exact lmms-eval ``llava_vid`` prompt: ``"<image>\\n" + [time_instruction + "\\n"] + question`` in the template."""
        return conversation.build_prompt(question, conv_template, time_instruction)

    def prompt_ids(self, question: str, conv_template: str = conversation.DEFAULT_CONV_TEMPLATE, time_instruction: str | None = None) -> torch.Tensor:
        """Ids ``(1, L)`` of :meth:`build_prompt` with one ``IMAGE_TOKEN_INDEX`` placeholder."""
        return tokenize_with_image(self.build_prompt(question, conv_template, time_instruction), self.tokenizer)

    @staticmethod
    def stop_strings(conv_template: str = conversation.DEFAULT_CONV_TEMPLATE) -> list[str]:
        """The template's stop keyword list (lmms-eval's ``KeywordsStoppingCriteria``): ``["<|im_end|>"]`` for Qwen."""
        return conversation.get_template(conv_template).stop_strings



def load_tokenizer(ckpt_dir: str | os.PathLike, text_config: Qwen2Config | None = None) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, chosen through its Qwen2 text config (:func:`vlm_common.qwen.load_tokenizer`);
    ``text_config`` defaults to the one in ``ckpt_dir/config.json`` (none when the file is absent)."""
    if text_config is None and (raw := read_config_json(ckpt_dir)) is not None:
        from llava_video.config import text_config_from_dict

        text_config = text_config_from_dict(raw)
    return _load_tokenizer(ckpt_dir, text_config)


def _vision_image_size(ckpt_dir: Path) -> int:
    """Frame side from ``config.json``'s vision settings (see :mod:`llava_video.config`), default 384."""
    path = ckpt_dir / "config.json"
    if not path.is_file():
        return DEFAULT_IMAGE_SIZE
    from llava_video.config import resolve_vision_config

    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    image_size = resolve_vision_config(raw, ckpt_dir)[0].image_size
    if not isinstance(image_size, int):
        raise ValueError(f"{path}: the vision tower's image_size must be one int, got {image_size!r}")
    return image_size


__all__ = ["LlavaVideoProcessor", "default_image_processor", "load_tokenizer", "tokenize_with_image"]
