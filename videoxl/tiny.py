"""Random Video-XL checkpoints in the release's on-disk format, for tests and benchmarks (offline).

``build_tiny_videoxl(out_dir, seed, size)`` writes what ``sy1998/Video_XL/VideoXL_weight_8`` holds: LongVA's
flat ``config.json`` (:func:`longva.tiny.tiny_config_dict`) plus every beacon field of the release's
training script, ``generation_config.json``, sharded safetensors with the release's key names — LongVA's
plus ``model.layers.N.self_attn.beacon_{q,k,v}_proj.{weight,bias}`` and ``model.beacon_embed_tokens.weight``
— and the offline Qwen2-style tokenizer. The vocabulary on disk has no placeholder row (the loader adds
it, as the release's does).

=========  ============================  ===============  ====================================
size       geometry                      tokens / frame   beacon window
=========  ============================  ===============  ====================================
tiny       LongVA ``tiny`` (112 px)      16               64 (4 frames: 16 frames = 4 windows)
small      LongVA ``small`` (336 px)     144              1440 (10 frames, as the release)
full       Video-XL-7B's shapes          144              1440; ``config.json`` + tokenizer only, no weights
                                                          (drawn on the device: ``cos bench --size full``)
=========  ============================  ===============  ====================================

The same seed gives identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from longva.tiny import tiny_config_dict, write_tiny_checkpoint
from videoxl.config import BEACON_DEFAULTS

#: beacon window (= stride) per size
WINDOWS = {"tiny": 64, "small": 1440, "full": 1440}
SIZES = tuple(WINDOWS)


def videoxl_config_dict(size: str, n_tokens: int) -> dict[str, Any]:
    """LongVA's tiny ``config.json`` with the release's beacon fields and Video-XL's naming."""
    raw = tiny_config_dict(size, n_tokens)
    raw.update({k: (list(v) if isinstance(v, list) else v) for k, v in BEACON_DEFAULTS.items()})
    raw.update(_name_or_path=f"tiny-videoxl-{size}", beacon_window=WINDOWS[size], beacon_stride=WINDOWS[size],
               mm_resampler_type="spatial_pool", mm_spatial_pool_out_channels=1024, frames_upbound=128, model_max_length=32768,
               enable_beacon=True)
    raw.pop("tokenizer_model_max_length", None)  # Video-XL's generation path does not truncate
    if size == "full":  # Video-XL-7B's LM is Qwen2-7B-Instruct's (rope_theta 1e6, not LongVA's 1e9)
        raw.update(rope_theta=1000000.0, max_position_embeddings=32768)
    return raw


def build_tiny_videoxl(out_dir, seed: int = 0, size: str = "tiny") -> Path:
    """Write a random Video-XL checkpoint (+ tokenizer) to ``out_dir``; see the module docstring."""
    if size not in WINDOWS:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    from videoxl.modeling import VideoXLForCausalLM

    return write_tiny_checkpoint(out_dir, VideoXLForCausalLM, videoxl_config_dict, seed=seed, size=size)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``make-tiny-videoxl OUT [--seed S] [--size tiny|small]``."""
    p = subparsers.add_parser("make-tiny-videoxl", help="write a random Video-XL checkpoint in the release's format (offline)",
                              description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("out", metavar="OUT", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--size", choices=SIZES, default="tiny",
                   help="tiny: unit tests (window of 4 frames); small: 336 px / 144 tokens; full: Video-XL-7B's config without weights")
    p.set_defaults(func=lambda args: print(build_tiny_videoxl(args.out, seed=args.seed, size=args.size)) or 0)
    return p


__all__ = ["SIZES", "WINDOWS", "add_parser", "build_tiny_videoxl", "videoxl_config_dict"]
