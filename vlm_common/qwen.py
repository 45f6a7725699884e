"""The language side every LLaVA-family checkpoint here shares: a Qwen2 LM behind LLaVA's prompt conventions.

- the prompt constants (the ``<image>`` placeholder and its id -200, Qwen2's special tokens);
- :func:`text_config_from_dict`: the LM's ``Qwen2Config`` out of a flat LLaVA ``config.json``;
- :func:`load_tokenizer`: the checkpoint's tokenizer, chosen through that config (quietly, whatever the
  wrapper's ``model_type``);
- :func:`tokenize_with_image`: LLaVA's ``tokenizer_image_token``;
- :class:`ChatTokenizer`: token ids, single-token lookup and decoding, for a processor with ``tokenizer``.

Ids are those of the released Qwen2 tokenizer; code asks the tokenizer (a tiny test checkpoint has other
ids) and uses :data:`RELEASED_SPECIAL_IDS` only where the checkpoint says nothing.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the constants must stay importable without it
    import torch

#: Placeholder id spliced into ``input_ids`` where the frame features go (LLaVA convention).
IMAGE_TOKEN_INDEX: int = -200
#: Placeholder text in the prompt; the prompt is split on it before tokenising.
DEFAULT_IMAGE_TOKEN: str = "<image>"

ENDOFTEXT: str = "<|endoftext|>"
IM_START: str = "<|im_start|>"
IM_END: str = "<|im_end|>"
#: The three special tokens in id order (released ids 151643, 151644, 151645).
SPECIAL_TOKENS: tuple[str, str, str] = (ENDOFTEXT, IM_START, IM_END)
RELEASED_SPECIAL_IDS: dict[str, int] = {ENDOFTEXT: 151643, IM_START: 151644, IM_END: 151645}


def text_config_from_dict(raw: dict[str, Any], is_wrapper_key: Callable[[str], bool]):
    """The language model's ``Qwen2Config`` from the flat ``config.json`` dict, the wrapper's own fields
    (``is_wrapper_key``) dropped. Rope scaling is dropped as LLaVA's Qwen loaders do (transformers 5 maps
    ``rope_theta`` itself); ``model_type`` (``qwen2``, ``llava_qwen``, ``llava``) never selects a class."""
    from transformers import Qwen2Config

    text_dict = {k: v for k, v in raw.items() if not is_wrapper_key(k)}
    for key in ("rope_scaling", "architectures", "model_type"):
        text_dict.pop(key, None)
    return Qwen2Config(**copy.deepcopy(text_dict))


def load_tokenizer(ckpt_dir: str | os.PathLike, text_config=None):
    """The checkpoint's tokenizer, selected through the checkpoint's Qwen2 text config.

    ``AutoTokenizer.from_pretrained`` without ``config=`` reads ``config.json`` with ``AutoConfig``; a
    wrapper ``model_type`` (``llava_qwen``, which transformers does not know, or ``llava``, which it takes
    for its own Llava) makes it warn or pick the wrong config. Passing the ``Qwen2Config`` the model really
    uses selects the Qwen2 tokenizer quietly.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(ckpt_dir)), config=text_config)


def read_config_json(ckpt_dir: str | os.PathLike) -> dict | None:
    """``ckpt_dir/config.json`` as a dict, or None when there is none."""
    path = Path(ckpt_dir) / "config.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tokenize_with_image(prompt: str, tokenizer) -> torch.Tensor:
    """LLaVA's ``tokenizer_image_token``: split on ``<image>``, tokenise chunks separately, join with -200.

    Returns ``(1, L)`` int64 ids. A tokenizer that starts every chunk with its BOS keeps only the first one
    (LLaVA's rule); Qwen2 adds none. The prompt must hold exactly one ``<image>``.
    """
    import torch

    chunks = prompt.split(DEFAULT_IMAGE_TOKEN)
    if len(chunks) != 2:
        raise ValueError(f"the prompt must hold exactly one {DEFAULT_IMAGE_TOKEN!r}, found {len(chunks) - 1}")
    head, tail = (list(tokenizer(chunk).input_ids) for chunk in chunks)
    bos = tokenizer.bos_token_id
    if bos is not None and head[:1] == [bos] and tail[:1] == [bos]:
        tail = tail[1:]
    return torch.tensor([head + [IMAGE_TOKEN_INDEX] + tail], dtype=torch.long)


class ChatTokenizer:
    """Token ids, single-token lookup and decoding for a processor with a Qwen2 ``tokenizer`` attribute."""

    tokenizer: Any

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

    def decode(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """Ids -> text, special tokens skipped, stripped (one sequence)."""
        import torch

        if isinstance(token_ids, torch.Tensor):
            if token_ids.ndim == 2 and token_ids.shape[0] == 1:
                token_ids = token_ids[0]
            if token_ids.ndim != 1:
                raise ValueError(f"decode takes one sequence, got shape {tuple(token_ids.shape)}")
            token_ids = token_ids.tolist()
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()


__all__ = ["DEFAULT_IMAGE_TOKEN", "ENDOFTEXT", "IMAGE_TOKEN_INDEX", "IM_END", "IM_START", "RELEASED_SPECIAL_IDS", "SPECIAL_TOKENS",
           "ChatTokenizer", "load_tokenizer", "read_config_json", "text_config_from_dict", "tokenize_with_image"]
