"""LongVA's frame preprocessing, prompt template and tokenisation (``longva-notes.md`` §1-2)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, CLIPImageProcessorPil, PreTrainedTokenizerBase, Qwen2Config
from transformers.image_utils import PILImageResampling

from longva.checkpoint import resolve_checkpoint
from longva.constants import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_IMAGE_TOKEN,
    IM_END,
    IM_START,
    IMAGE_TOKEN_INDEX,
    SYSTEM_PROMPT,
)

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


def tokenize_with_image(prompt: str, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """LongVA's ``tokenizer_image_token``: split on ``<image>``, tokenise chunks separately, join with -200.

    Returns ``(1, L)`` int64 ids; no BOS (Qwen2 has none). The prompt must hold exactly one ``<image>``.
    """
    chunks = prompt.split(DEFAULT_IMAGE_TOKEN)
    if len(chunks) != 2:
        raise ValueError(f"the prompt must hold exactly one {DEFAULT_IMAGE_TOKEN!r}, found {len(chunks) - 1}")
    head, tail = (tokenizer(chunk).input_ids for chunk in chunks)
    return torch.tensor([head + [IMAGE_TOKEN_INDEX] + tail], dtype=torch.long)


class LongVAProcessor:
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

    @property
    def im_start_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IM_START)

    @property
    def im_end_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IM_END)

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

    # ------------------------------------------------------------------------------ text
    def build_prompt(self, question: str) -> str:
        """The exact ``qwen_1_5`` prompt with ``"<image>\\n" + question`` as the user turn."""
        return build_prompt(question, self.system_prompt)

    def prompt_ids(self, question: str) -> torch.Tensor:
        """Ids ``(1, L)`` of :meth:`build_prompt` with one ``IMAGE_TOKEN_INDEX`` placeholder."""
        return tokenize_with_image(self.build_prompt(question), self.tokenizer)

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

    ``AutoTokenizer.from_pretrained`` without ``config=`` reads ``config.json`` with ``AutoConfig``; for
    ``model_type: "llava_qwen"`` (what LLaVA's code saves; unknown to ``transformers``) that fails and it
    falls back to the base ``PreTrainedConfig.from_pretrained``, which warns "You are using a model of type
    `llava_qwen` to instantiate a model of type ``" and that ``rope_scaling`` is deprecated. Passing the
    ``Qwen2Config`` LongVA really uses selects the tokenizer as for ``model_type: "qwen2"`` (the release),
    quietly. ``text_config`` defaults to the one in ``ckpt_dir/config.json`` (none when the file is absent).
    """
    ckpt_dir = Path(ckpt_dir)
    if text_config is None and (ckpt_dir / "config.json").is_file():
        from longva.config import text_config_from_dict

        with open(ckpt_dir / "config.json", encoding="utf-8") as f:
            text_config = text_config_from_dict(json.load(f))
    return AutoTokenizer.from_pretrained(str(ckpt_dir), config=text_config)


def _vision_image_size(ckpt_dir: Path) -> int:
    """Frame side from ``config.json`` (its vision settings, see :mod:`longva.config`), default 336."""
    path = ckpt_dir / "config.json"
    if path.is_file():
        from longva.config import LongVAConfig

        return LongVAConfig.from_json_file(path).image_size
    return DEFAULT_IMAGE_SIZE


__all__ = ["LongVAProcessor", "build_prompt", "default_image_processor", "load_tokenizer", "tokenize_with_image"]
