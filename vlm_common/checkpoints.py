"""Checkpoints on disk, for every model package: locating, key renaming, sharded safetensors.

A released checkpoint is ``config.json``, ``generation_config.json``, ``model.safetensors.index.json`` +
``model-0000{i}-of-0000{n}.safetensors`` and tokenizer files. Each model package describes its key names
with a :class:`KeyLayout` (checkpoint key <-> module key tables, and the order keys are written in).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or does not match the model (the message names the key/file)."""


@dataclass(frozen=True)
class KeyLayout:
    """How one model's checkpoint keys map to its modules' keys.

    Args:
        model: the model's name in messages ("LongVA").
        to_module: ``(regex, replacement)`` from checkpoint key to module key; the first match wins.
        to_checkpoint: the inverse table (``save_pretrained``).
        group_order: key prefixes in the order they are written; numbers inside keys sort numerically.
    """

    model: str
    to_module: tuple[tuple[str, str], ...]
    to_checkpoint: tuple[tuple[str, str], ...]
    group_order: tuple[str, ...]

    def _rename(self, key: str, table: tuple[tuple[str, str], ...], what: str) -> str:
        for pattern, repl in table:
            new, n = re.subn(pattern, repl, key)
            if n:
                return new
        raise CheckpointError(f"{what} key {key!r} matches no rule of the {self.model} key table")

    def checkpoint_to_module_key(self, key: str) -> str:
        """A checkpoint key -> the module key it loads into (raises :class:`CheckpointError`)."""
        return self._rename(key, self.to_module, "checkpoint")

    def module_to_checkpoint_key(self, key: str) -> str:
        """Inverse of :meth:`checkpoint_to_module_key`."""
        return self._rename(key, self.to_checkpoint, "module")

    def order(self, keys: Iterable[str]) -> list[str]:
        """Deterministic key order for writing: by :attr:`group_order`, numbers sorted numerically."""

        def sort_key(k: str):
            group = next((i for i, p in enumerate(self.group_order) if k.startswith(p)), len(self.group_order))
            parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in k.split("."))
            return group, parts

        return sorted(keys, key=sort_key)


# ------------------------------------------------------------------------------------- locating
def resolve_checkpoint(path_or_hub_id: str | os.PathLike, model: str = "model") -> Path:
    """A local checkpoint directory, or a hub id fetched with ``huggingface_hub.snapshot_download``."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_hub_id)
    # owner/name, or owner/name/sub/folder for a checkpoint inside a repository (Video-XL's VideoXL_weight_8)
    looks_like_hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)*", text) is not None and not path.exists()
    if not looks_like_hub_id or ".." in text.split("/"):
        raise FileNotFoundError(f"{model} checkpoint directory {text!r} does not exist")
    parts = text.split("/")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    patterns = ["*.json", "*.safetensors", "*.txt", "tokenizer*", "*.model"]
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id=repo_id, allow_patterns=[f"{subfolder}/{p}" for p in patterns] if subfolder else patterns)
    except Exception as err:  # network, auth, missing repo, offline: re-raise with what to do
        raise CheckpointError(
            f"cannot download checkpoint {text!r} from the Hugging Face hub ({type(err).__name__}: {err}); "
            f"download it elsewhere and pass the local directory instead"
        ) from err
    return Path(local) / subfolder if subfolder else Path(local)


def tower_directory(tower: str, checkpoint_dir: Path | None) -> tuple[Path | None, list[Path]]:
    """The local directory ``mm_vision_tower`` names (None if none exists) and every place looked at.

    A relative path is tried against ``checkpoint_dir`` first, then the current working directory.
    """
    path = Path(tower).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = ([checkpoint_dir / path] if checkpoint_dir is not None else []) + [Path.cwd() / path]
    found = [c for c in candidates if c.is_dir()]
    if len(found) > 1 and found[0].resolve() != found[1].resolve():
        logger.warning(
            "config.json: mm_vision_tower=%r exists relative to the checkpoint (%s) and to the working directory "
            "(%s); using the checkpoint's", tower, found[0], found[1],
        )
    return (found[0] if found else None), candidates


# ------------------------------------------------------------------------------------- reading
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
    out_dir: str | os.PathLike, tensors: Mapping[str, torch.Tensor], max_shard_size: int | str = "5GB",
    order: Callable[[Iterable[str]], list[str]] = sorted,
) -> list[str]:
    """Write ``tensors`` (checkpoint keys) as ``model-0000i-of-0000n.safetensors`` + index; returns file names.

    Keys are written in ``order`` (a layout's :meth:`KeyLayout.order`); a new shard starts when the current
    one would exceed ``max_shard_size``. Always writes an index, even for one shard (as the releases do).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    size = 0
    for key in order(tensors):
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


__all__ = ["CheckpointError", "INDEX_FILE", "KeyLayout", "SINGLE_FILE", "iter_checkpoint_tensors", "parse_size",
           "resolve_checkpoint", "shard_files", "tower_directory", "write_checkpoint_tensors"]


def write_random_weights(out_dir: str | os.PathLike, model, layout: KeyLayout, init: Callable, seed: int = 0,
                         dtype: torch.dtype = torch.bfloat16) -> None:
    """Random tensors for every parameter of ``model`` (typically built on the meta device), named by ``layout``,
    drawn by ``init(checkpoint_key, shape, generator)`` in sorted key order from a generator seeded ``seed``, and
    written as at least two safetensors shards in the layout's order (the same seed gives the same files)."""
    shapes = {layout.module_to_checkpoint_key(k): tuple(p.shape) for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    tensors = {key: init(key, shape, gen).to(dtype) for key, shape in sorted(shapes.items())}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    write_checkpoint_tensors(out_dir, tensors, max_shard_size=total // 2 + 1, order=layout.order)
