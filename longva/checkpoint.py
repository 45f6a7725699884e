"""LongVA checkpoints on disk: locating, key renaming, reading and writing sharded safetensors.

On-disk format (released ``lmms-lab/LongVA-7B``; ``longva-notes.md`` §4): ``config.json`` (flat Qwen2
config + ``mm_*`` fields, ``architectures: ["LlavaQwenForCausalLM"]``), ``generation_config.json``,
``model.safetensors.index.json`` + ``model-0000{i}-of-0000{n}.safetensors``, Qwen2 tokenizer files, no
``preprocessor_config.json``. Checkpoint keys and where they go (the only place that knows both):

==========================================================  ====================================
checkpoint key                                              :class:`~longva.LongVAForCausalLM`
==========================================================  ====================================
``model.vision_tower.vision_tower.vision_model.<k>``        ``vision_tower.<k>`` (``CLIPVisionModel``)
``model.mm_projector.{0,2}.{weight,bias}``                  ``mm_projector.{0,2}.*``
``model.<k>`` (embed_tokens, layers, norm)                  ``language_model.model.<k>``
``lm_head.weight``                                          ``language_model.lm_head.weight``
==========================================================  ====================================

Facts checked while writing this module (Hugging Face hub pages of ``lmms-lab/LongVA-7B``, read through
a search index; file contents themselves were not readable offline):

- seen: the hub tags the repo ``qwen2`` (the tag comes from ``config.json``'s ``model_type``), so
  ``AutoModelForCausalLM`` would silently build a text-only Qwen2; this package never uses Auto classes
  for the model. The derivative ``LongVA-7B-DPO`` is tagged ``llava_qwen`` instead.
- seen: ``config.json`` was uploaded in commit ``19f42dd`` and edited five times (``42d5fd1`` ...
  ``071bb20``, June 22-23 2024); ``generation_config.json``, ``vocab.json`` and ``merges.txt`` were
  uploaded once and never edited. A derivative (``ruili0/LongVA-7B-TPO``) lists the same layout: four
  shards (4.87/4.93/4.97/1.09 GB), a 77 kB index and a 371-byte ``generation_config.json``.
- unconfirmed: ``tokenizer_model_max_length``, ``max_position_embeddings``, ``rope_theta``,
  ``sliding_window`` and the ``generation_config.json`` values (repetition_penalty 1.05 and eos
  ``[151645, 151643]`` are inferred). The loader reads all of them from the files; nothing is hard-coded.

Reading and writing the files is shared with the other model packages (:mod:`vlm_common.checkpoints`);
this module holds what is LongVA's own: the key table and the write order.
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

#: checkpoint key -> module key; first matching pattern wins. ``save_pretrained`` uses the inverse table.
CHECKPOINT_TO_MODULE: tuple[tuple[str, str], ...] = (
    (r"^model\.vision_tower\.vision_tower\.vision_model\.(.+)$", r"vision_tower.\1"),
    (r"^model\.mm_projector\.(.+)$", r"mm_projector.\1"),
    (r"^model\.(.+)$", r"language_model.model.\1"),
    (r"^lm_head\.(.+)$", r"language_model.lm_head.\1"),
)
#: module key -> checkpoint key (inverse of :data:`CHECKPOINT_TO_MODULE`).
MODULE_TO_CHECKPOINT: tuple[tuple[str, str], ...] = (
    (r"^vision_tower\.(.+)$", r"model.vision_tower.vision_tower.vision_model.\1"),
    (r"^mm_projector\.(.+)$", r"model.mm_projector.\1"),
    (r"^language_model\.model\.(.+)$", r"model.\1"),
    (r"^language_model\.lm_head\.(.+)$", r"lm_head.\1"),
)


_GROUP_ORDER = ("model.embed_tokens.", "model.layers.", "model.norm.", "model.vision_tower.", "model.mm_projector.", "lm_head.")


#: LongVA's key names (:class:`vlm_common.checkpoints.KeyLayout`)
LAYOUT = KeyLayout("LongVA", CHECKPOINT_TO_MODULE, MODULE_TO_CHECKPOINT, _GROUP_ORDER)
checkpoint_to_module_key = LAYOUT.checkpoint_to_module_key
module_to_checkpoint_key = LAYOUT.module_to_checkpoint_key
checkpoint_order = LAYOUT.order


def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub id fetched with ``huggingface_hub.snapshot_download``."""
    return _resolve_checkpoint(path_or_hub_id, "LongVA")


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
    "checkpoint_order",
    "checkpoint_to_module_key",
    "iter_checkpoint_tensors",
    "module_to_checkpoint_key",
    "parse_size",
    "resolve_checkpoint",
    "shard_files",
    "write_checkpoint_tensors",
]
