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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2Config, SiglipImageProcessorPil
from transformers.image_utils import PILImageResampling

from llava_video import conversation
from llava_video.checkpoint import resolve_checkpoint
from llava_video.constants import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_IMAGE_TOKEN,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_TOKEN_INDEX,
    SIGLIP_MEAN,
    SIGLIP_STD,
)


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


def tokenize_with_image(prompt: str, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """LLaVA's ``tokenizer_image_token``: split on ``<image>``, tokenise chunks separately, join with -200.

    Returns ``(1, L)`` int64 ids. A tokenizer that starts every chunk with its BOS keeps only the first one
    (LLaVA's rule); Qwen2 adds none. The prompt must hold exactly one ``<image>``.
    """
    chunks = prompt.split(DEFAULT_IMAGE_TOKEN)
    if len(chunks) != 2:
        raise ValueError(f"the prompt must hold exactly one {DEFAULT_IMAGE_TOKEN!r}, found {len(chunks) - 1}")
    head, tail = (list(tokenizer(chunk).input_ids) for chunk in chunks)
    bos = tokenizer.bos_token_id
    if bos is not None and head[:1] == [bos] and tail[:1] == [bos]:
        tail = tail[1:]
    return torch.tensor([head + [IMAGE_TOKEN_INDEX] + tail], dtype=torch.long)


class LlavaVideoProcessor:
    """Image processor + tokenizer + prompt templates of a LLaVA-Video checkpoint.

    Args:
        image_processor: maps ``(H, W, 3)`` uint8 frames to ``(3, S, S)`` floats (see :func:`default_image_processor`).
        tokenizer: the checkpoint's Qwen2 tokenizer.
    """

    #: frames per image-processor call, and threads over those calls (``preprocess``)
    preprocess_chunk = 8
    num_workers = min(8, os.cpu_count() or 1)

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

    @property
    def im_start_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IM_START)

    @property
    def im_end_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IM_END)

    @property
    def endoftext_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(ENDOFTEXT)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def token_id(self, text: str) -> int:
        """Id of ``text`` when it is exactly one token (e.g. ``"yes"``); ValueError otherwise."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens {ids}, not one")
        return ids[0]

    # ------------------------------------------------------------------------------ frames
    def preprocess(self, frames: np.ndarray, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
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
        if workers > 1:  # PIL's resize releases the GIL: chunks are processed in parallel, output order kept
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(self._preprocess_chunk, chunks))
        else:
            parts = [self._preprocess_chunk(chunk) for chunk in chunks]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out.to(device=device, dtype=dtype or torch.float32)

    def _preprocess_chunk(self, frames: np.ndarray) -> torch.Tensor:
        return self.image_processor(
            list(frames), return_tensors="pt", input_data_format="channels_last", data_format="channels_first"
        )["pixel_values"]

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

    def decode(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """Ids -> text, special tokens skipped, stripped (one sequence)."""
        if isinstance(token_ids, torch.Tensor):
            if token_ids.ndim == 2 and token_ids.shape[0] == 1:
                token_ids = token_ids[0]
            if token_ids.ndim != 1:
                raise ValueError(f"decode takes one sequence, got shape {tuple(token_ids.shape)}")
            token_ids = token_ids.tolist()
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()


def load_tokenizer(ckpt_dir: str | os.PathLike, text_config: Qwen2Config | None = None) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, selected through the checkpoint's Qwen2 text config.

    ``AutoTokenizer.from_pretrained`` without ``config=`` would read ``config.json`` with ``AutoConfig``, which
    takes the release's ``model_type: "llava"`` for the HF-native Llava config; passing the ``Qwen2Config`` the
    model really uses selects the Qwen2 tokenizer quietly. ``text_config`` defaults to the one in
    ``ckpt_dir/config.json`` (none when the file is absent).
    """
    ckpt_dir = Path(ckpt_dir)
    if text_config is None and (ckpt_dir / "config.json").is_file():
        from llava_video.config import text_config_from_dict

        with open(ckpt_dir / "config.json", encoding="utf-8") as f:
            text_config = text_config_from_dict(json.load(f))
    return AutoTokenizer.from_pretrained(str(ckpt_dir), config=text_config)


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
