"""Random LLaVA-Video checkpoints in the released on-disk format, for tests and benchmarks (offline).

``build_tiny_llava_video(out_dir, seed, size)`` writes what ``lmms-lab/LLaVA-Video-7B-Qwen2`` ships
(``llava-video-notes.md`` §6), scaled down:

- ``config.json``: flat Qwen2 fields + LLaVA's ``mm_*`` fields with the release's values
  (``model_type: "llava"``, ``architectures: ["LlavaQwenForCausalLM"]``, ``mlp2x_gelu``, ``spatial_unpad``,
  ``mm_newline_position: "grid"``, ``mm_spatial_pool_mode: "bilinear"``, ``mm_spatial_pool_stride: 2``,
  ``mm_vision_select_layer: -2``, ``anyres_max_9`` pinpoints, ``tokenizer_model_max_length: 32768``...);
- ``generation_config.json`` like the release's (``repetition_penalty`` 1.05, eos ``[<|im_end|>,
  <|endoftext|>]``, pad/bos ``<|endoftext|>``, ``do_sample`` true with temperature 0.7, top_k 20, top_p 0.8);
- sharded safetensors (>= 2 shards) + ``model.safetensors.index.json`` with the release's key names:
  ``model.vision_tower.vision_tower.vision_model.*`` holding all tower layers but the last (and no head),
  ``model.mm_projector.{0,2}.*``, ``model.image_newline``, ``model.embed_tokens``, ``model.layers.*``,
  ``model.norm``, ``lm_head``; bfloat16, as the release;
- a Qwen2 byte-level BPE tokenizer with ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` right after the
  regular vocabulary (as in Qwen2, where they are 151643-151645); ``vocab_size`` is rounded up beyond
  ``len(tokenizer)`` so that loading exercises the shrink.

One difference: ``mm_vision_tower`` is ``"siglip_tower"``, a directory *inside the checkpoint* (looked up
relative to the checkpoint directory, so a copied checkpoint keeps working) holding a small
``SiglipVisionConfig`` ``config.json`` (the release names the hub's so400m tower instead). Both sizes keep
SigLIP so400m's real geometry, 384 px with 14 px patches (27x27 patches, 182 tokens per frame with
average/grid, 210 with bilinear/grid); only the widths and depths shrink:

=========  ============================================  =============================
size       vision tower (hidden/ffn/layers/heads)        LM (hidden/ffn/layers/heads/kv)
=========  ============================================  =============================
tiny       32 / 64 / 3 (2 in the checkpoint) / 2         64 / 160 / 2 / 4 / 2
small      64 / 128 / 4 (3 in the checkpoint) / 4        256 / 512 / 4 / 4 / 2
full       so400m by hub id: 1152 / 4304 / 27 / 16       3584 / 18944 / 28 / 28 / 4  (no weights written)
=========  ============================================  =============================

The same seed gives identical tensors and identical files. The tokenizer is trained by a small
deterministic BPE written here (most frequent pair first, ties broken by the pair's text) on a fixed
English text in which ``yes``/``no`` (with and without a leading space, capitalised or not) are frequent,
so each is one token.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from vlm_common.checkpoints import write_random_weights
from vlm_common.tiny_tokenizer import write_tiny_tokenizer as _write_tokenizer

#: Name of the tower directory written inside the checkpoint (``mm_vision_tower``, relative to the checkpoint).
TOWER_DIR = "siglip_tower"

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2},
        "text": {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "rope_theta": 1000000.0},
        "merges": 320,
    },
    "small": {
        "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4},
        "text": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "rope_theta": 1000000.0},
        "merges": 320,
    },
    # LLaVA-Video-7B-Qwen2's shapes (SigLIP so400m named by its hub id, Qwen2-7B LM) for `cos bench --size full`:
    # config.json, generation_config.json and the test tokenizer, no weights (drawn on the device at load time)
    "full": {
        "vision": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16},
        "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                 "num_key_value_heads": 4, "rope_theta": 1000000.0, "vocab_size": 152064},
        "merges": 320,
    },
}
#: sizes written without weights and without a tower directory (the release's hub tower id instead)
WEIGHTLESS = ("full",)
HUB_TOWER = "google/siglip-so400m-patch14-384"
#: SigLIP so400m-patch14-384's geometry and activation, kept at every size.
_TOWER_GEOMETRY = {"image_size": 384, "patch_size": 14, "num_channels": 3, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}

#: Training text of the tiny tokenizer: prompt words of both templates, the time instruction, video-QA words, yes/no.
_CORPUS = """\
system
You are a helpful assistant.
user
assistant
A chat between a curious user and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the user's questions. USER: ASSISTANT:
The video lasts for 12.00 seconds, and 8 frames are uniformly sampled from it. These frames are located at 0.00s,1.50s,3.00s.
Please answer the following questions related to this video.
Please answer the question about the video. What is shown in the video? Answer with yes or no.
Is there a red ball in the video? yes. Is there a blue cube? no. Does the cat jump? Yes. Does it rain? No.
Yes, the needle appears in frame 12. No, it does not. yes no yes no Yes No Yes No
Which frame shows the needle? Describe the video in detail. The man walks to the door and opens it.
A woman is reading a book in the kitchen while a dog sleeps on the floor.
What color is the car? The car is red. What color is the sky? The sky is blue. green yellow white black
How many people are in the video? There are two people. one two three four five six seven eight nine ten
Option A. Option B. Option C. Option D. The answer is A. The answer is B. The answer is C. The answer is D.
Answer with the option's letter from the given choices directly.
Is the shot relevant to the question? yes. Is this frame relevant? no. relevant irrelevant positive negative
"""


# ------------------------------------------------------------------------------------- tokenizer
def write_tiny_tokenizer(out_dir: str | os.PathLike, n_merges: int = 320, model_max_length: int = 32768) -> int:
    """The shared offline Qwen2-style tokenizer (:func:`vlm_common.tiny_tokenizer.write_tiny_tokenizer`) on this
    package's corpus; returns ``len(tokenizer)``."""
    return _write_tokenizer(out_dir, _CORPUS, n_merges=n_merges, model_max_length=model_max_length, extra_config={"padding_side": "right"})


# ------------------------------------------------------------------------------------- checkpoint
def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def tower_config_dict(size: str) -> dict[str, Any]:
    """The tower directory's ``config.json`` (a ``SiglipVisionConfig`` of the intact tower) for ``size``."""
    return {"model_type": "siglip_vision_model", **SIZES[size]["vision"], **_TOWER_GEOMETRY, "attention_dropout": 0.0, "vision_use_head": True}


def tiny_config_dict(size: str, n_tokens: int) -> dict[str, Any]:
    """The flat ``config.json`` for ``size``, with the released file's fields (widths scaled down)."""
    v, t = SIZES[size]["vision"], SIZES[size]["text"]
    endoftext, im_end = n_tokens - 3, n_tokens - 1
    vocab_size = t.get("vocab_size") or int(math.ceil((n_tokens + 1) / 64) * 64)  # > len(tokenizer), like 152064 vs 151646
    side = _TOWER_GEOMETRY["image_size"]
    return {
        "_name_or_path": f"tiny-llava-video-{size}",
        "add_faster_video": False,
        "add_time_instruction": True,
        "architectures": ["LlavaQwenForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "faster_token_stride": 10,
        "force_sample": True,
        "frames_upbound": 64,
        "hidden_act": "silu",
        "hidden_size": t["hidden_size"],
        "image_aspect_ratio": "anyres_max_9",
        "image_crop_resolution": None,
        "image_grid_pinpoints": [[side * i, side * j] for i in range(1, 7) for j in range(1, 7)],
        "image_split_resolution": None,
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": 32768,
        "max_window_layers": t["num_hidden_layers"],
        "mm_hidden_size": v["hidden_size"],
        "mm_newline_position": "grid",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_spatial_pool_mode": "bilinear",
        "mm_spatial_pool_stride": 2,
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": HUB_TOWER if size in WEIGHTLESS else TOWER_DIR,
        "mm_vision_tower_lr": 2e-06,
        "model_type": "llava",
        "num_attention_heads": t["num_attention_heads"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": t["rope_theta"],
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "use_mm_proj": True,
        "use_sliding_window": False,
        "vision_tower_pretrained": None,
        "vocab_size": vocab_size,
    }


def generation_config_dict(endoftext: int, im_end: int) -> dict[str, Any]:
    """``generation_config.json`` with the release's values (notes §6), ids of this tokenizer."""
    return {
        "bos_token_id": endoftext,
        "do_sample": True,
        "eos_token_id": [im_end, endoftext],
        "pad_token_id": endoftext,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "transformers_version": "4.40.0.dev0",
    }


def _init_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Scale-aware random values: O(1) activations, so tests see real signal at tiny widths."""
    noise = torch.randn(shape, generator=gen, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if "norm" in key:
        return (1.0 + 0.1 * noise) if leaf == "weight" else 0.1 * noise
    if leaf == "bias":
        return 0.1 * noise
    if key == "model.image_newline":
        return noise
    if "embed_tokens" in key or "position_embedding" in key:
        return 0.5 * noise
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return noise / math.sqrt(fan_in)


def build_tiny_llava_video(out_dir: str | os.PathLike, seed: int = 0, size: str = "tiny") -> Path:
    """Write a random LLaVA-Video checkpoint (+ tokenizer + local tower config) to ``out_dir``; see the module docstring."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    from accelerate import init_empty_weights

    from llava_video.config import LlavaVideoConfig
    from llava_video.modeling import LlavaVideoForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_tokens = write_tiny_tokenizer(out_dir, n_merges=SIZES[size]["merges"])
    raw = tiny_config_dict(size, n_tokens)
    _write_json(out_dir / "config.json", raw)
    _write_json(out_dir / "generation_config.json", generation_config_dict(raw["bos_token_id"], raw["eos_token_id"]))
    if size in WEIGHTLESS:
        return out_dir
    (out_dir / TOWER_DIR).mkdir(exist_ok=True)
    _write_json(out_dir / TOWER_DIR / "config.json", tower_config_dict(size))
    config = LlavaVideoConfig.from_dict(raw, checkpoint_dir=out_dir)
    with init_empty_weights(include_buffers=False):
        write_random_weights(out_dir, LlavaVideoForCausalLM(config), LlavaVideoForCausalLM.layout, _init_tensor, seed=seed)
    return out_dir


# ------------------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``make-tiny-llava-video OUT [--seed S] [--size tiny|small]``."""
    p = subparsers.add_parser(
        "make-tiny-llava-video",
        help="write a random LLaVA-Video checkpoint in the released format (offline)",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
    )
    p.add_argument("out", metavar="OUT", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny",
                   help="tiny: unit tests; small: wider/deeper, same 384 px geometry; full: LLaVA-Video-7B's config without weights")
    p.set_defaults(func=_command)
    return p


def _command(args: argparse.Namespace) -> int:
    print(build_tiny_llava_video(args.out, seed=args.seed, size=args.size))
    return 0


__all__ = ["SIZES", "TOWER_DIR", "add_parser", "build_tiny_llava_video", "generation_config_dict", "tiny_config_dict", "tower_config_dict", "write_tiny_tokenizer"]
