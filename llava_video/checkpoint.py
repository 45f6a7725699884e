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
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or does not match the model (the message names the key/file)."""


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


def _rename(key: str, table: tuple[tuple[str, str], ...], what: str) -> str:
    for pattern, repl in table:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise CheckpointError(f"{what} key {key!r} matches no rule of the LLaVA-Video key table")


def checkpoint_to_module_key(key: str) -> str:
    """``model.mm_projector.0.weight`` -> ``mm_projector.0.weight`` (raises :class:`CheckpointError`)."""
    return _rename(key, CHECKPOINT_TO_MODULE, "checkpoint")


def module_to_checkpoint_key(key: str) -> str:
    """Inverse of :func:`checkpoint_to_module_key`."""
    return _rename(key, MODULE_TO_CHECKPOINT, "module")


_GROUP_ORDER = (
    "model.embed_tokens.", "model.layers.", "model.norm.", "model.image_newline", "model.vision_tower.", "model.mm_projector.", "lm_head.",
)


def checkpoint_order(keys: Iterable[str]) -> list[str]:
    """Deterministic key order for writing: LM, newline, vision tower, projector, head; numbers sorted numerically."""

    def sort_key(k: str):
        group = next((i for i, p in enumerate(_GROUP_ORDER) if k.startswith(p)), len(_GROUP_ORDER))
        parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in k.split("."))
        return group, parts

    return sorted(keys, key=sort_key)


# ------------------------------------------------------------------------------------- locating
def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub id fetched with ``huggingface_hub.snapshot_download``."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_hub_id)
    looks_like_hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None and not path.exists()
    if not looks_like_hub_id:
        raise FileNotFoundError(f"LLaVA-Video checkpoint directory {text!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id=text,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "tokenizer*"],
        )
    except Exception as err:  # network, auth, missing repo, offline: re-raise with what to do
        raise CheckpointError(
            f"cannot download checkpoint {text!r} from the Hugging Face hub ({type(err).__name__}: {err}); "
            f"download it elsewhere and pass the local directory instead"
        ) from err
    return Path(local)


def shard_files(ckpt_dir: str | os.PathLike) -> dict[str, list[str]]:
    """``{shard file name: [checkpoint keys]}`` from the index (or the single ``model.safetensors``)."""
    ckpt_dir = Path(ckpt_dir)
    index = ckpt_dir / INDEX_FILE
    if index.is_file():
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map")
        except (json.JSONDecodeError, AttributeError) as err:
            raise CheckpointError(f"{index} is not a safetensors index ({err})") from err
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no 'weight_map'")
        files: dict[str, list[str]] = {}
        for key, fname in weight_map.items():
            files.setdefault(fname, []).append(key)
        return files
    single = ckpt_dir / SINGLE_FILE
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return {SINGLE_FILE: list(f.keys())}
    raise CheckpointError(f"{ckpt_dir} has neither {INDEX_FILE} nor {SINGLE_FILE}")


def iter_checkpoint_tensors(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """Yield ``(checkpoint key, tensor)`` shard by shard, checking each shard against the index."""
    ckpt_dir = Path(ckpt_dir)
    for fname, keys in shard_files(ckpt_dir).items():
        path = ckpt_dir / fname
        if not path.is_file():
            raise CheckpointError(f"shard {fname!r} named by {INDEX_FILE} is missing from {ckpt_dir}")
        with safe_open(path, framework="pt", device=str(device)) as f:
            present = set(f.keys())
            absent = [k for k in keys if k not in present]
            if absent:
                raise CheckpointError(f"key {absent[0]!r} is listed in {INDEX_FILE} but absent from shard {fname!r}")
            for key in keys:
                yield key, f.get_tensor(key)


# ------------------------------------------------------------------------------------- writing
def parse_size(size: int | str) -> int:
    """``"5GB"`` / ``"500MB"`` / ``"64KB"`` / int bytes -> bytes (decimal units, as ``transformers``)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", size.upper())
    if not m:
        raise ValueError(f"cannot parse shard size {size!r}; use bytes or e.g. '5GB', '500MB'")
    return int(float(m.group(1)) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[m.group(2)])


def write_checkpoint_tensors(
    out_dir: str | os.PathLike, tensors: Mapping[str, torch.Tensor], max_shard_size: int | str = "5GB"
) -> list[str]:
    """Write ``tensors`` (checkpoint keys) as ``model-0000i-of-0000n.safetensors`` + index; returns file names.

    Keys are written in :func:`checkpoint_order`; a new shard starts when the current one would exceed
    ``max_shard_size``. Always writes an index, even for one shard (as the released checkpoint does).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    size = 0
    for key in checkpoint_order(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    n = len(shards)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map: dict[str, str] = {}
    total = 0
    for name, keys in zip(names, shards):
        chunk = {k: tensors[k].detach().to("cpu").contiguous() for k in keys}
        save_file(chunk, str(out_dir / name), metadata={"format": "pt"})
        for k in keys:
            weight_map[k] = name
            total += chunk[k].numel() * chunk[k].element_size()
    with open(out_dir / INDEX_FILE, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    return names


__all__ = [
    "CHECKPOINT_TO_MODULE",
    "CheckpointError",
    "INDEX_FILE",
    "MODULE_TO_CHECKPOINT",
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
