"""LLaVA-Video checkpoints on disk: locating, key renaming, reading and writing sharded safetensors.

On-disk format (released ``lmms-lab/LLaVA-Video-7B-Qwen2``; ``llava-video-notes.md`` §6): ``config.json``
(flat Qwen2 config + LLaVA's ``mm_*`` fields, ``model_type: "llava"``), ``generation_config.json``,
``model.safetensors.index.json`` + ``model-0000{i}-of-00004.safetensors``, Qwen2 tokenizer files. Checkpoint
keys and where they go (the only place that knows both):

==========================================================  ==========================================
checkpoint key                                              :class:`~llava_video.LlavaVideoForCausalLM`
==========================================================  ==========================================
``model.vision_tower.vision_tower.vision_model.<k>``        ``vision_tower.<k>`` (``SiglipVisionModel``
                                                            without its last encoder layer and head)
``model.mm_projector.{0,2}.{weight,bias}``                  ``mm_projector.{0,2}.*``
``model.image_newline``                                     ``image_newline``
``model.<k>`` (embed_tokens, layers, norm)                  ``language_model.model.<k>``
``lm_head.weight``                                          ``language_model.lm_head.weight``
==========================================================  ==========================================

The tower keys hold encoder layers ``0 .. n-2`` of an ``n``-layer SigLIP (the original code deletes the last
layer and the attention-pool head before training), ``embeddings.*`` and ``post_layernorm.*`` (present,
never applied).

Reading and writing the files is shared with the other model packages (:mod:`vlm_common.checkpoints`);
this module holds what is LLaVA-Video's own: the key table and the write order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from vlm_common.checkpoints import (
    INDEX_FILE,
    SINGLE_FILE,
    CheckpointError,
    KeyLayout,
    iter_checkpoint_tensors,
    parse_size,
    shard_files,
)
from vlm_common.checkpoints import resolve_checkpoint as _resolve_checkpoint
from vlm_common.checkpoints import write_checkpoint_tensors as _write_checkpoint_tensors

TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
#: checkpoint key -> module key; first matching pattern wins. ``save_pretrained`` uses the inverse table.
CHECKPOINT_TO_MODULE: tuple[tuple[str, str], ...] = (
    (r"^model\.vision_tower\.vision_tower\.vision_model\.(.+)$", r"vision_tower.\1"),
    (r"^model\.mm_projector\.(.+)$", r"mm_projector.\1"),
    (r"^model\.image_newline$", r"image_newline"),
    (r"^model\.(.+)$", r"language_model.model.\1"),
    (r"^lm_head\.(.+)$", r"language_model.lm_head.\1"),
)
#: module key -> checkpoint key (inverse of :data:`CHECKPOINT_TO_MODULE`).
MODULE_TO_CHECKPOINT: tuple[tuple[str, str], ...] = (
    (r"^vision_tower\.(.+)$", r"model.vision_tower.vision_tower.vision_model.\1"),
    (r"^mm_projector\.(.+)$", r"model.mm_projector.\1"),
    (r"^image_newline$", r"model.image_newline"),
    (r"^language_model\.model\.(.+)$", r"model.\1"),
    (r"^language_model\.lm_head\.(.+)$", r"lm_head.\1"),
)


_GROUP_ORDER = (
    "model.embed_tokens.", "model.layers.", "model.norm.", "model.image_newline", "model.vision_tower.", "model.mm_projector.", "lm_head.",
)


#: LLaVA-Video's key names (:class:`vlm_common.checkpoints.KeyLayout`)
LAYOUT = KeyLayout("LLaVA-Video", CHECKPOINT_TO_MODULE, MODULE_TO_CHECKPOINT, _GROUP_ORDER)
checkpoint_to_module_key = LAYOUT.checkpoint_to_module_key
module_to_checkpoint_key = LAYOUT.module_to_checkpoint_key
checkpoint_order = LAYOUT.order


def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub id fetched with ``huggingface_hub.snapshot_download``."""
    return _resolve_checkpoint(path_or_hub_id, "LLaVA-Video")


def write_checkpoint_tensors(out_dir: str | os.PathLike, tensors: Mapping[str, torch.Tensor], max_shard_size: int | str = "5GB") -> list[str]:
    """Write ``tensors`` (checkpoint keys) as sharded safetensors + index, in :func:`checkpoint_order`."""
    return _write_checkpoint_tensors(out_dir, tensors, max_shard_size, order=checkpoint_order)


__all__ = [
    "CHECKPOINT_TO_MODULE",
    "CheckpointError",
    "INDEX_FILE",
    "LAYOUT",
    "MODULE_TO_CHECKPOINT",
    "SINGLE_FILE",
    "TOWER_PREFIX",
    "checkpoint_order",
    "checkpoint_to_module_key",
    "iter_checkpoint_tensors",
    "module_to_checkpoint_key",
    "parse_size",
    "resolve_checkpoint",
    "shard_files",
    "write_checkpoint_tensors",
]
