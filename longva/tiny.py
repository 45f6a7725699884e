"""Random LongVA checkpoints in the released on-disk format, for tests and benchmarks (offline).

``build_tiny_longva(out_dir, seed, size)`` writes what ``lmms-lab/LongVA-7B`` ships: a flat
``config.json`` with the same fields (``architectures: ["LlavaQwenForCausalLM"]``, ``mm_*``, Qwen2
fields, ``tokenizer_model_max_length``...), ``generation_config.json``, sharded safetensors with the
released key names and an index, and a Qwen2 byte-level BPE tokenizer with ``<|endoftext|>``,
``<|im_start|>``, ``<|im_end|>`` right after the regular vocabulary (as in Qwen2, where they are
151643-151645). ``vocab_size`` is rounded up beyond ``len(tokenizer)`` so loading exercises the shrink.

Two additions the released checkpoint lacks: a ``vision_config`` dict in ``config.json`` (the tower is
not ViT-L/14-336) and, for ``tiny`` and ``demo``, a ``preprocessor_config.json`` (frame side 112 / 64). ``small``
keeps 336 px and has no preprocessor file, like the release, so it exercises the default path.

=========  ==================================  =============================  ===============
size       vision (hidden/layers/heads, px)    LM (hidden/layers/heads/kv)    tokens / frame
=========  ==================================  =============================  ===============
tiny       32 / 3 / 2, 112 px, patch 14        64 / 2 / 4 / 2                 8x8 -> 16
small      64 / 3 / 2, 336 px, patch 14        256 / 4 / 4 / 2                24x24 -> 144
demo       64 / 4 / 4, 64 px, patch 8          128 / 4 / 4 / 2                8x8 -> 16
=========  ==================================  =============================  ===============

``demo`` is the starting point of ``cos train-tiny`` (trainable on a CPU, frames at the needle videos' 64 px).

The same seed gives identical tensors and identical files. The tokenizer is trained by a small
deterministic BPE written here (highest pair count, ties by the pair's text) on a fixed English text in
which ``yes``/``no`` (with and without a leading space, capitalised or not) are frequent, so each is one
token.
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

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                   "image_size": 112, "patch_size": 14},
        "text": {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "rope_theta": 10000.0},
        "merges": 300,
    },
    "small": {
        "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
                   "image_size": 336, "patch_size": 14},
        "text": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "rope_theta": 1000000000.0},
        "merges": 300,
    },
    # trainable on a CPU (``cos train-tiny``): 64 px frames (the needle videos' own size), patch 8, 16 tokens per frame
    "demo": {
        "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                   "image_size": 64, "patch_size": 8},
        "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "rope_theta": 10000.0},
        "merges": 600,
    },
    # LongVA-7B's shapes (Qwen2-7B LM, CLIP ViT-L/14-336 tower), for `cos bench --size full`: the directory holds
    # config.json, generation_config.json and the test tokenizer but no weights; the loader draws them on the
    # device (``from_pretrained(..., random_weights=seed)``)
    "full": {
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "image_size": 336, "patch_size": 14},
        "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                 "num_key_value_heads": 4, "rope_theta": 1000000000.0, "vocab_size": 152064},
        "merges": 300,
        "vision_by_name": True,  # config.json names the tower (openai/clip-vit-large-patch14-336), as the release's
    },
}
#: sizes written without weights (their parameters are drawn on the device at load time)
WEIGHTLESS = ("full",)

#: Training text of the tiny tokenizer (prompt words, video-QA words, and many yes/no answers).
_CORPUS = """\
system
You are a helpful assistant.
user
assistant
Please answer the question about the video. What is shown in the video? Answer with yes or no.
Is there a red ball in the video? yes. Is there a blue cube? no. Does the cat jump? Yes. Does it rain? No.
Yes, the needle appears in frame 12. No, it does not. yes no yes no Yes No Yes No
Which frame shows the needle? Describe the video in detail. The man walks to the door and opens it.
A woman is reading a book in the kitchen while a dog sleeps on the floor.
What color is the car? The car is red. What color is the sky? The sky is blue. green yellow white black
How many people are in the video? There are two people. one two three four five six seven eight nine ten
Option A. Option B. Option C. Option D. The answer is A. The answer is B. The answer is C. The answer is D.
Is the shot relevant to the question? yes. Is this frame relevant? no. relevant irrelevant positive negative
"""


# ------------------------------------------------------------------------------------- tokenizer
def write_tiny_tokenizer(out_dir: str | os.PathLike, n_merges: int = 300, model_max_length: int = 32768, corpus: str = "") -> int:
    """The shared offline Qwen2-style tokenizer (:func:`vlm_common.tiny_tokenizer.write_tiny_tokenizer`) on this
    package's corpus plus ``corpus`` (e.g. the words of the task a model is trained for); returns ``len(tokenizer)``."""
    return _write_tokenizer(out_dir, _CORPUS + corpus, n_merges=n_merges, model_max_length=model_max_length)


# ------------------------------------------------------------------------------------- checkpoint
def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def tiny_config_dict(size: str, n_tokens: int) -> dict[str, Any]:
    """The flat ``config.json`` for ``size``, with the released file's fields (values scaled down)."""
    spec = SIZES[size]
    v, t = spec["vision"], spec["text"]
    endoftext, im_end = n_tokens - 3, n_tokens - 1
    vocab_size = t.get("vocab_size") or int(math.ceil((n_tokens + 1) / 64) * 64)  # > len(tokenizer), like 152064 vs 151646
    raw = {
        "_name_or_path": f"tiny-longva-{size}",
        "architectures": ["LlavaQwenForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "hidden_act": "silu",
        "hidden_size": t["hidden_size"],
        "image_aspect_ratio": "anyres",
        "image_crop_resolution": None,
        "image_grid_pinpoints": [[v["image_size"], 2 * v["image_size"]], [2 * v["image_size"], v["image_size"]]],
        "image_split_resolution": None,
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": 224000,
        "max_window_layers": t["num_hidden_layers"],
        "mm_hidden_size": v["hidden_size"],
        "mm_patch_merge_type": "unires",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_spatial_pool_mode": "average",
        "mm_spatial_pool_stride": 2,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_vision_tower_lr": None,
        "model_type": "qwen2",
        "num_attention_heads": t["num_attention_heads"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": t["rope_theta"],
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 224000,
        "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "use_mm_proj": True,
        "use_sliding_window": False,
        "vision_config": {
            **v,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": v["hidden_size"],
        },
        "vocab_size": vocab_size,
    }
    if spec.get("vision_by_name"):  # the release's config.json: no vision_config, the tower is ViT-L/14-336 by name
        del raw["vision_config"]
    return raw


def _init_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Scale-aware random values: O(1) activations, so tests see real signal at tiny widths."""
    noise = torch.randn(shape, generator=gen, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if "norm" in key or "layrnorm" in key or "layer_norm" in key:
        return (1.0 + 0.1 * noise) if leaf == "weight" else 0.1 * noise
    if leaf == "bias":
        return 0.1 * noise
    if "embed_tokens" in key or "position_embedding" in key or "class_embedding" in key:
        return 0.5 * noise
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return noise / math.sqrt(fan_in)


def build_tiny_longva(out_dir: str | os.PathLike, seed: int = 0, size: str = "tiny", corpus: str = "") -> Path:
    """Write a random LongVA checkpoint (+ tokenizer) to ``out_dir``; see the module docstring. ``corpus``: extra
    tokenizer training text (the words of a task, so that its prompts are short)."""
    from longva.modeling import LongVAForCausalLM

    return write_tiny_checkpoint(out_dir, LongVAForCausalLM, tiny_config_dict, seed=seed, size=size, corpus=corpus)


def write_tiny_checkpoint(out_dir: str | os.PathLike, model_class, config_dict, seed: int = 0, size: str = "tiny",
                          corpus: str = "") -> Path:
    """A random checkpoint of ``model_class`` (LongVA or a model built on it) in LongVA's on-disk format.

    ``config_dict(size, len(tokenizer))`` gives the flat ``config.json``; parameter shapes come from
    ``model_class(model_class.config_class.from_dict(raw))`` built on the meta device, keys are written with
    LongVA's names (``model.<k>`` for everything the language model holds, beacons included).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    from accelerate import init_empty_weights

    from longva.processing import default_image_processor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_tokens = write_tiny_tokenizer(out_dir, n_merges=SIZES[size]["merges"], corpus=corpus)
    raw = config_dict(size, n_tokens)
    _write_json(out_dir / "config.json", raw)
    endoftext, im_end = raw["bos_token_id"], raw["eos_token_id"]
    _write_json(
        out_dir / "generation_config.json",
        {"bos_token_id": endoftext, "do_sample": True, "eos_token_id": [im_end, endoftext], "pad_token_id": endoftext,
         "repetition_penalty": 1.05, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
         "transformers_version": "4.40.0.dev0"},
    )
    config = model_class.config_class.from_dict(raw)
    if size in WEIGHTLESS:
        return out_dir
    with init_empty_weights(include_buffers=False):
        write_random_weights(out_dir, model_class(config), model_class.layout, _init_tensor, seed=seed)
    if size in ("tiny", "demo"):  # the frame side is not LongVA's default rule
        default_image_processor(config.image_size).save_pretrained(str(out_dir))
    return out_dir


# ------------------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``make-tiny-longva OUT [--seed S] [--size tiny|small]``."""
    p = subparsers.add_parser(
        "make-tiny-longva",
        help="write a random LongVA checkpoint in the released format (offline)",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
    )
    p.add_argument("out", metavar="OUT", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny",
                   help="tiny: unit tests; small: 336 px / 144 tokens; full: LongVA-7B's config without weights (random at load time)")
    p.set_defaults(func=_command)
    return p


def _command(args: argparse.Namespace) -> int:
    path = build_tiny_longva(args.out, seed=args.seed, size=args.size)
    print(path)
    return 0


__all__ = ["SIZES", "WEIGHTLESS", "add_parser", "build_tiny_longva", "tiny_config_dict", "write_tiny_checkpoint", "write_tiny_tokenizer"]
