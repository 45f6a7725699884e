"""Tests of the ``llava_video`` package on tiny random checkpoints (CPU, float32).

The reference forward below is written from the architecture description in ``llava-video-notes.md`` with
explicit tensor operations on the safetensors read straight from disk (SigLIP without its last layer and
without ``post_layernorm``, projector, ``get_2dPool``, grid newlines, splice, Qwen2); it never touches the
model class or ``transformers`` modules.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import json
import logging
import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import LogitsProcessor, LogitsProcessorList, SiglipConfig, SiglipVisionConfig, SiglipVisionModel

from llava_video import (
    IMAGE_TOKEN_INDEX,
    CheckpointError,
    LlavaVideoConfig,
    LlavaVideoForCausalLM,
    LlavaVideoProcessor,
    build_tiny_llava_video,
    time_instruction,
)
from llava_video.checkpoint import checkpoint_to_module_key, module_to_checkpoint_key
from llava_video.tiny import TOWER_DIR, add_parser

REPO = Path(__file__).resolve().parents[1]
TOWER = "model.vision_tower.vision_tower.vision_model."
CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<image>\n{u}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions. USER: <image>\n{u} ASSISTANT:"
)
QUESTION = "Is there a red ball in the video? Answer yes or no."


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The tiny LLaVA-Video checkpoint (release format, seed 0), built once for this module."""
    return build_tiny_llava_video(tmp_path_factory.mktemp("tiny_llava_video"), seed=0, size="tiny")


@pytest.fixture(scope="module")
def model(ckpt) -> LlavaVideoForCausalLM:
    """As the file says: bilinear pooling, grid newlines (210 tokens per frame)."""
    return LlavaVideoForCausalLM.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def model_avg(ckpt) -> LlavaVideoForCausalLM:
    """lmms-eval llava_vid's overrides: average pooling, grid newlines (182 tokens per frame)."""
    return LlavaVideoForCausalLM.from_pretrained(ckpt, mm_spatial_pool_mode="average", mm_newline_position="grid")


@pytest.fixture(scope="module")
def processor(ckpt) -> LlavaVideoProcessor:
    return LlavaVideoProcessor.from_pretrained(ckpt)


def _frames(n: int, h: int = 90, w: int = 150, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ============================================================================ independent reference
def _read_raw(ckpt: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    config = json.loads((ckpt / "config.json").read_text())
    tower = json.loads((ckpt / config["mm_vision_tower"] / "config.json").read_text())
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(load_file(str(ckpt / shard)))
    return config, tower, {k: v.float() for k, v in weights.items()}


def _linear(x, w, key, bias=True):
    y = x @ w[key + ".weight"].T
    return y + w[key + ".bias"] if bias else y


def _layer_norm(x, w, key, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w[key + ".weight"] + w[key + ".bias"]


def _rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _attention(q, k, v, causal):
    """q, k, v (..., H, L, d) -> (..., H, L, d)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _ref_siglip(tower: dict, w: dict, pixels: torch.Tensor) -> torch.Tensor:
    """SigLIP patch features: every encoder layer in the checkpoint (= all but the tower's last), no post LN."""
    p, c, heads, eps = tower["patch_size"], tower["hidden_size"], tower["num_attention_heads"], tower["layer_norm_eps"]
    n, _, s, _ = pixels.shape
    g = s // p  # 27: the valid conv drops the last s - g*p pixels
    px = pixels[:, :, : g * p, : g * p]
    patches = px.reshape(n, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3 * p * p)
    x = patches @ w[TOWER + "embeddings.patch_embedding.weight"].reshape(c, -1).T + w[TOWER + "embeddings.patch_embedding.bias"]
    x = x + w[TOWER + "embeddings.position_embedding.weight"][None]
    layers = sorted({int(m.group(1)) for k in w if (m := re.match(re.escape(TOWER) + r"encoder\.layers\.(\d+)\.", k))})
    assert layers == list(range(tower["num_hidden_layers"] - 1))  # release format: the last layer is absent
    for i in layers:
        lay = f"{TOWER}encoder.layers.{i}."
        h = _layer_norm(x, w, lay + "layer_norm1", eps)
        q, k, v = (_linear(h, w, lay + f"self_attn.{m}_proj").view(n, -1, heads, c // heads).transpose(1, 2) for m in "qkv")
        a = _attention(q, k, v, causal=False).transpose(1, 2).reshape(n, -1, c)
        x = x + _linear(a, w, lay + "self_attn.out_proj")
        h = _layer_norm(x, w, lay + "layer_norm2", eps)
        x = x + _linear(_gelu_tanh(_linear(h, w, lay + "mlp.fc1")), w, lay + "mlp.fc2")
    return x


def _bilinear_half(x: torch.Tensor) -> torch.Tensor:
    """(n, g, g, d) -> (n, ceil(g/2), ceil(g/2), d): bilinear resampling, half-pixel centres (align_corners=False)."""
    g = x.shape[1]
    out = math.ceil(g / 2)

    def taps(i):
        src = max((i + 0.5) * g / out - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, g - 1)
        return i0, i1, src - i0

    rows = torch.stack([(1 - t) * x[:, a] + t * x[:, b] for a, b, t in map(taps, range(out))], dim=1)
    return torch.stack([(1 - t) * rows[:, :, a] + t * rows[:, :, b] for a, b, t in map(taps, range(out))], dim=2)


def _ref_frame_blocks(config: dict, tower: dict, w: dict, pixels: torch.Tensor, pool: str) -> torch.Tensor:
    """(N, 3, S, S) -> (N, T, D): tower, projector on all patches, 2x2 pooling, a newline after every pooled row."""
    x = _ref_siglip(tower, w, pixels)
    x = _linear(x, w, "model.mm_projector.0")
    x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # exact GELU
    x = _linear(x, w, "model.mm_projector.2")
    n, patches, d = x.shape
    g = math.isqrt(patches)
    x = x.view(n, g, g, d)
    if pool == "average":
        h = g // 2  # floor: the last row and column are dropped
        x = x[:, : 2 * h, : 2 * h].reshape(n, h, 2, h, 2, d).mean(dim=(2, 4))
    elif pool == "max":
        h = g // 2
        x = x[:, : 2 * h, : 2 * h].reshape(n, h, 2, h, 2, d).amax(dim=(2, 4))
    else:
        x = _bilinear_half(x)
    p = x.shape[1]
    newline = w["model.image_newline"].expand(n, p, 1, d)
    return torch.cat([x, newline], dim=2).reshape(n, p * (p + 1), d)


def _ref_splice(w: dict, ids: list[int], feats: torch.Tensor) -> torch.Tensor:
    pos = ids.index(IMAGE_TOKEN_INDEX)
    table = w["model.embed_tokens.weight"]
    return torch.cat([table[ids[:pos]], feats.reshape(-1, feats.shape[-1]), table[ids[pos + 1 :]]])


def _ref_qwen2_logits(config: dict, w: dict, x: torch.Tensor) -> torch.Tensor:
    n, d = x.shape
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd, eps = d // heads, config["rms_norm_eps"]
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).float()
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).float()

    def rope(t):  # (H, L, hd)
        t1, t2 = t[..., : hd // 2], t[..., hd // 2 :]
        return t * cos + torch.cat([-t2, t1], dim=-1) * sin

    for i in range(config["num_hidden_layers"]):
        lay = f"model.layers.{i}."
        h = _rms_norm(x, w[lay + "input_layernorm.weight"], eps)
        q = _linear(h, w, lay + "self_attn.q_proj").view(n, heads, hd).transpose(0, 1)
        k = _linear(h, w, lay + "self_attn.k_proj").view(n, kv, hd).transpose(0, 1)
        v = _linear(h, w, lay + "self_attn.v_proj").view(n, kv, hd).transpose(0, 1)
        q, k = rope(q), rope(k)
        group = heads // kv  # query head j reads kv head j // group
        k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
        a = _attention(q, k, v, causal=True).transpose(0, 1).reshape(n, d)
        x = x + _linear(a, w, lay + "self_attn.o_proj", bias=False)
        h = _rms_norm(x, w[lay + "post_attention_layernorm.weight"], eps)
        gate = _linear(h, w, lay + "mlp.gate_proj", bias=False)
        up = _linear(h, w, lay + "mlp.up_proj", bias=False)
        x = x + _linear(gate * torch.sigmoid(gate) * up, w, lay + "mlp.down_proj", bias=False)
    x = _rms_norm(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T


def _reference_preprocess(frame: np.ndarray, size: int = 384) -> np.ndarray:
    """The original ``SigLipImageProcessor``: PIL bicubic to size x size, x * (1/255) in float64 -> float32, (x - 0.5) / 0.5."""
    resized = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))
    scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    return ((scaled - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)


def test_bilinear_reference_is_interpolate_with_default_align_corners():
    # get_2dPool calls interpolate(size=(14, 14), mode="bilinear") without align_corners: the default is False
    x = torch.randn(2, 27, 27, 5, dtype=torch.float64)
    nchw = x.permute(0, 3, 1, 2)
    default = F.interpolate(nchw, size=(14, 14), mode="bilinear").permute(0, 2, 3, 1)
    torch.testing.assert_close(_bilinear_half(x), default, rtol=0, atol=1e-12)
    explicit = F.interpolate(nchw, size=(14, 14), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    assert torch.equal(default, explicit)
    corners = F.interpolate(nchw, size=(14, 14), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
    assert not torch.allclose(_bilinear_half(x), corners)


@pytest.mark.parametrize("pool", ["average", "bilinear", "max"])
def test_logits_match_independent_reference(ckpt, processor, pool):
    config, tower, w = _read_raw(ckpt)
    model = LlavaVideoForCausalLM.from_pretrained(ckpt, mm_spatial_pool_mode=pool, mm_newline_position="grid")
    pixels = processor.preprocess(_frames(3))
    ids = processor.prompt_ids(QUESTION)

    ref_feats = _ref_frame_blocks(config, tower, w, pixels, pool)
    ref_embeds = _ref_splice(w, ids[0].tolist(), ref_feats)
    ref_logits = _ref_qwen2_logits(config, w, ref_embeds)

    feats = model.encode_frames(pixels)
    embeds = model.embed_prompt(ids, feats)
    expected_t = {"average": 182, "max": 182, "bilinear": 210}[pool]
    assert model.tokens_per_frame == expected_t and feats.shape == (3, expected_t, config["hidden_size"])
    torch.testing.assert_close(feats, ref_feats, rtol=0, atol=1e-5)
    assert embeds.shape == (1, ids.shape[1] - 1 + 3 * expected_t, config["hidden_size"])
    torch.testing.assert_close(embeds[0], ref_embeds, rtol=0, atol=1e-5)
    n_vocab = len(processor.tokenizer)  # shrunk to len(tokenizer); the reference keeps all 64-padded rows
    assert ref_logits.abs().max() > 1.0  # real signal, not a degenerate near-zero network
    last = model.forward_logits(embeds)
    assert last.dtype == torch.float32 and last.shape == (1, n_vocab) and n_vocab < config["vocab_size"]
    torch.testing.assert_close(last[0], ref_logits[-1, :n_vocab], rtol=0, atol=1e-5)
    with torch.no_grad():
        full = model(inputs_embeds=embeds).logits[0]
    torch.testing.assert_close(full, ref_logits[:, :n_vocab], rtol=0, atol=1e-5)


def test_truncated_tower_equals_second_to_last_hidden_state_of_the_intact_tower(ckpt, model):
    # the original deletes the last layer and reads hidden_states[-1]; LLaVA's config says select_layer -2:
    # both are hidden_states[-2] of the intact tower, before post_layernorm
    _, tower, w = _read_raw(ckpt)
    intact = SiglipVisionModel(SiglipVisionConfig(**{k: v for k, v in tower.items() if k != "model_type"})).eval()
    state = {k[len(TOWER):]: v for k, v in w.items() if k.startswith(TOWER)}
    missing = intact.load_state_dict(state, strict=False).missing_keys
    assert missing and all(k.startswith(f"encoder.layers.{tower['num_hidden_layers'] - 1}.") or k.startswith("head.") for k in missing)
    pixels = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        states = intact(pixel_values=pixels, output_hidden_states=True).hidden_states
        ours = model.vision_tower.encoder(inputs_embeds=model.vision_tower.embeddings(pixels)).last_hidden_state
    assert len(states) == tower["num_hidden_layers"] + 1
    torch.testing.assert_close(ours, states[-2], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, _ref_siglip(tower, w, pixels), rtol=0, atol=1e-5)


# ============================================================================ token geometry
def test_tokens_per_frame_and_frame_independence(model, model_avg, processor):
    assert (model.tokens_per_frame, model_avg.tokens_per_frame) == (210, 182)
    assert model.config.mm_spatial_pool_mode == "bilinear" and model_avg.config.mm_spatial_pool_mode == "average"
    assert model.frames_independent and model_avg.frames_independent
    assert model.visual_tokens(64) == 64 * 210 and model_avg.visual_tokens(64) == 11648
    pixels = processor.preprocess(_frames(3, seed=1))
    for m in (model, model_avg):
        together = m.encode_frames(pixels)
        alone = torch.cat([m.encode_frames(pixels[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(alone, together, rtol=0, atol=1e-6)
        torch.testing.assert_close(m.encode_frames(pixels, chunk_size=2), together, rtol=0, atol=1e-6)
        # each block ends its pooled rows with image_newline: gather by index keeps the layout
        p = m.config.pooled_grid
        rows = together.view(3, p, p + 1, -1)
        assert torch.equal(rows[:, :, -1], m.image_newline.expand(3, p, -1))
        reordered = m.encode_frames(pixels[[2, 0]])
        torch.testing.assert_close(reordered, together[[2, 0]], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expects"):
        model.encode_frames(torch.zeros(1, 3, 336, 336))


@pytest.mark.parametrize(
    ("newline", "merge", "tokens", "independent", "extra"),
    [
        ("grid", "spatial_unpad", 210, True, 0),
        ("frame", "spatial_unpad", 197, True, 0),
        ("no_token", "spatial_unpad", 196, True, 0),
        ("one_token", "spatial_unpad", 196, False, 1),
        ("one_token", "spatial", 196, True, 0),  # no 'unpad': the original adds no newline
        ("grid", "flat", 196, True, 0),  # flat merge: no newlines at all
    ],
)
def test_newline_layouts(ckpt, processor, tmp_path, newline, merge, tokens, independent, extra):
    if merge != "spatial_unpad":
        src = _edit_config(ckpt, tmp_path / "ckpt", lambda raw: raw.update(mm_patch_merge_type=merge))
        _edit_checkpoint(src, lambda t: t.pop("model.image_newline"), "model.image_newline")  # the original has none without 'unpad'
    else:
        src = ckpt
    m = LlavaVideoForCausalLM.from_pretrained(src, mm_newline_position=newline)
    assert m.tokens_per_frame == tokens and m.frames_independent is independent
    pixels = processor.preprocess(_frames(2, seed=2))
    feats = m.encode_frames(pixels)
    ids = processor.prompt_ids(QUESTION)
    embeds = m.embed_prompt(ids, feats)
    assert feats.shape[1] == tokens and embeds.shape[1] == ids.shape[1] - 1 + 2 * tokens + extra == ids.shape[1] - 1 + m.visual_tokens(2)
    pos = ids[0].tolist().index(IMAGE_TOKEN_INDEX)
    if newline == "frame":
        assert torch.equal(feats[:, -1], m.image_newline.expand(2, -1))
    if extra:  # one_token: one newline after the last frame, nothing between frames
        assert torch.equal(embeds[0, pos : pos + 2 * tokens], feats.flatten(0, 1))
        assert torch.equal(embeds[0, pos + 2 * tokens], m.image_newline)
    if merge != "spatial_unpad" or newline == "no_token":
        assert m.image_newline is None or not any(torch.equal(row, m.image_newline) for row in feats[0])


def test_grid_needs_image_newline(ckpt, tmp_path):
    src = _edit_config(ckpt, tmp_path / "ckpt", lambda raw: raw.update(mm_patch_merge_type="spatial"))
    with pytest.raises(CheckpointError, match="mm_newline_position='grid' needs model.image_newline"):
        LlavaVideoForCausalLM.from_pretrained(src)


def test_release_geometry_from_the_known_hub_id(ckpt):
    raw = json.loads((ckpt / "config.json").read_text())
    raw.update(mm_vision_tower="google/siglip-so400m-patch14-384", mm_hidden_size=1152)
    config = LlavaVideoConfig.from_dict(raw, checkpoint_dir=ckpt)
    vc = config.vision_config
    assert config.vision_config_source == "builtin"
    assert (vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers, vc.num_attention_heads) == (1152, 4304, 27, 16)
    assert (vc.image_size, vc.patch_size, vc.hidden_act, vc.layer_norm_eps) == (384, 14, "gelu_pytorch_tanh", 1e-6)
    assert (config.patch_grid, config.tower_layers, config.pooled_grid, config.tokens_per_frame) == (27, 26, 14, 210)
    average = LlavaVideoConfig.from_dict(raw, checkpoint_dir=ckpt, mm_spatial_pool_mode="average", mm_newline_position="grid")
    assert (average.pooled_grid, average.tokens_per_frame, average.visual_tokens(64)) == (13, 182, 11648)
    assert LlavaVideoConfig.from_dict(raw, mm_spatial_pool_mode="max").tokens_per_frame == 182
    # a missing mm_newline_position is the original's default, one_token: 169 per frame + 1 at the end
    del raw["mm_newline_position"]
    one = LlavaVideoConfig.from_dict(raw, mm_spatial_pool_mode="average")
    assert one.mm_newline_position == "one_token" and one.visual_tokens(64) == 169 * 64 + 1 and not one.frames_independent


def test_small_checkpoint_keeps_the_release_geometry(tmp_path):
    small = build_tiny_llava_video(tmp_path / "small", seed=0, size="small")
    m = LlavaVideoForCausalLM.from_pretrained(small, mm_spatial_pool_mode="average")
    proc = LlavaVideoProcessor.from_pretrained(small)
    feats = m.encode_frames(proc.preprocess(_frames(1, 240, 320)))
    assert m.tokens_per_frame == 182 and feats.shape == (1, 182, 256)
    assert m.config.tower_layers == 3 and len(m.vision_tower.encoder.layers) == 3


# ============================================================================ preprocessing
@pytest.mark.parametrize("shape", [(2, 90, 150), (1, 150, 90), (1, 384, 384), (1, 240, 427), (1, 500, 700), (1, 7, 5)])
def test_preprocessing_equals_an_independent_pil_numpy_implementation(processor, shape):
    frames = _frames(shape[0], shape[1], shape[2], seed=sum(shape))
    got = processor.preprocess(frames)
    assert got.dtype == torch.float32 and got.shape == (shape[0], 3, 384, 384)
    ref = np.stack([_reference_preprocess(f) for f in frames])
    np.testing.assert_array_equal(got.numpy(), ref)
    simple = np.stack([(np.asarray(Image.fromarray(f).resize((384, 384), Image.BICUBIC), np.float32) / 255 - 0.5) / 0.5 for f in frames])
    np.testing.assert_allclose(got.numpy(), simple.transpose(0, 3, 1, 2), rtol=0, atol=1e-6)


def test_preprocessing_options_and_errors(processor):
    frames = _frames(11, 60, 80, seed=4)  # more than one chunk: threads keep the order
    got = processor.preprocess(frames, dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.shape == (11, 3, 384, 384)
    torch.testing.assert_close(got.float(), torch.from_numpy(np.stack([_reference_preprocess(f) for f in frames])).bfloat16().float())
    assert processor.image_size == 384
    with pytest.raises(ValueError, match="uint8"):
        processor.preprocess(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        processor.preprocess(frames[0])
    with pytest.raises(ValueError, match="no frames"):
        processor.preprocess(frames[:0])


# ============================================================================ prompt and tokens
def test_time_instruction_text_is_exact():
    text = time_instruction(95.5, [0.0, 31.83333, 63.666, 95.0])
    assert text == (
        "The video lasts for 95.50 seconds, and 4 frames are uniformly sampled from it. "
        "These frames are located at 0.00s,31.83s,63.67s,95.00s.Please answer the following questions related to this video."
    )
    assert time_instruction(2, np.array([1])) == (
        "The video lasts for 2.00 seconds, and 1 frames are uniformly sampled from it. "
        "These frames are located at 1.00s.Please answer the following questions related to this video."
    )
    with pytest.raises(ValueError, match="empty"):
        time_instruction(1.0, [])


@pytest.mark.parametrize("with_time", [False, True])
def test_qwen_prompt_ids_are_the_chatml_string_split_at_the_image(processor, with_time):
    tok = processor.tokenizer
    ti = time_instruction(12.0, [0.0, 1.5, 3.0]) if with_time else None
    user = QUESTION if ti is None else f"{ti}\n{QUESTION}"
    text = CHATML.format(u=user)
    assert processor.build_prompt(QUESTION, "qwen_1_5", time_instruction=ti) == text
    ids = processor.prompt_ids(QUESTION, conv_template="qwen_1_5", time_instruction=ti)
    assert ids.dtype == torch.long and ids.shape[0] == 1
    head, tail = text.split("<image>")
    assert ids[0].tolist() == tok(head).input_ids + [IMAGE_TOKEN_INDEX] + tok(tail).input_ids
    assert int((ids == IMAGE_TOKEN_INDEX).sum()) == 1
    assert ids[0, 0].item() == processor.im_start_id  # no BOS
    assert torch.equal(processor.prompt_ids(QUESTION, time_instruction=ti), ids)  # qwen_1_5 is the default
    assert torch.equal(processor.prompt_ids(QUESTION, "qwen_2", ti), ids)


def test_other_templates_and_stop_strings(processor):
    tok = processor.tokenizer
    assert processor.build_prompt(QUESTION, "vicuna_v1") == VICUNA.format(u=QUESTION)
    head, tail = VICUNA.format(u=QUESTION).split("<image>")
    assert processor.prompt_ids(QUESTION, "vicuna_v1")[0].tolist() == tok(head).input_ids + [IMAGE_TOKEN_INDEX] + tok(tail).input_ids
    assert processor.build_prompt(QUESTION, "chatml_direct") == (
        f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n{QUESTION}<|im_end|><|im_start|>assistant\n"
    )
    assert processor.build_prompt(QUESTION, "qwen_2_5") == CHATML.format(u=QUESTION).replace(
        "You are a helpful assistant.", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    )
    assert processor.stop_strings("qwen_1_5") == processor.stop_strings("chatml_direct") == ["<|im_end|>"]
    assert processor.stop_strings("vicuna_v1") == ["</s>"]
    with pytest.raises(ValueError, match="unknown conv_template 'llama_3'"):
        processor.prompt_ids(QUESTION, "llama_3")
    with pytest.raises(ValueError, match="must not contain"):
        processor.prompt_ids("two <image> placeholders")


def test_tokenizer_special_ids_match_configs(ckpt, processor):
    tok = processor.tokenizer
    config = json.loads((ckpt / "config.json").read_text())
    gen = json.loads((ckpt / "generation_config.json").read_text())
    assert type(tok).__name__ == "Qwen2Tokenizer" and tok.bos_token is None
    eot, ims, ime = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert (ims, ime) == (eot + 1, eot + 2) and len(tok) == ime + 1
    assert config["bos_token_id"] == eot == tok.pad_token_id == gen["pad_token_id"] == gen["bos_token_id"]
    assert config["eos_token_id"] == ime == tok.eos_token_id
    assert gen["eos_token_id"] == [ime, eot] and gen["repetition_penalty"] == 1.05
    ids = {w: processor.token_id(w) for w in ("yes", " yes", "no", " no", "Yes", "No")}
    assert len(set(ids.values())) == 6
    assert processor.decode([ims, ids["yes"], ime]) == "yes"
    with pytest.raises(ValueError, match="not one"):
        processor.token_id("helpful assistant")


def test_embed_prompt_splices_frames_at_the_placeholder(model, processor, monkeypatch, caplog):
    ids = processor.prompt_ids(QUESTION)
    pos = ids[0].tolist().index(IMAGE_TOKEN_INDEX)
    feats = torch.randn(3, model.tokens_per_frame, model.config.hidden_size)
    embeds = model.embed_prompt(ids, feats)
    n_visual = 3 * model.tokens_per_frame
    assert embeds.shape == (1, ids.shape[1] - 1 + n_visual, model.config.hidden_size)
    table = model.language_model.get_input_embeddings().weight
    assert torch.equal(embeds[0, :pos], table[ids[0, :pos]])
    assert torch.equal(embeds[0, pos : pos + n_visual], feats.flatten(0, 1))  # time order, nothing between frames
    assert torch.equal(embeds[0, pos + n_visual :], table[ids[0, pos + 1 :]])

    with pytest.raises(ValueError, match="exactly one image placeholder"):
        model.embed_prompt(ids[:, :pos], feats)
    with pytest.raises(ValueError, match="exactly one image placeholder"):
        model.embed_prompt(torch.cat([ids, ids], dim=1), feats)
    with pytest.raises(ValueError, match="frame_features"):
        model.embed_prompt(ids, feats[..., :8])
    with pytest.raises(ValueError, match="frame_features"):
        model.embed_prompt(ids, feats[:, :182])

    assert model.config.tokenizer_model_max_length == 32768
    monkeypatch.setattr(model.config, "tokenizer_model_max_length", 40)
    with caplog.at_level(logging.WARNING, logger="llava_video"):
        cut = model.embed_prompt(ids, feats)
    assert cut.shape[1] == 40 and torch.equal(cut[0], embeds[0, :40])  # the head is kept, the question is lost
    assert "truncated to tokenizer_model_max_length=40" in caplog.text
    assert model.embed_prompt(ids, feats, truncate=False).shape == embeds.shape


# ============================================================================ generation
class _ForceAt(LogitsProcessor):
    """Forces ``token`` at generation step ``step`` (0-based)."""

    def __init__(self, step: int, token: int):
        self.step, self.token = step, token

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] != self.step:
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token] = 0.0
        return forced


def test_from_pretrained_answers(ckpt):
    model = LlavaVideoForCausalLM.from_pretrained(ckpt)
    proc = LlavaVideoProcessor.from_pretrained(ckpt)
    embeds = model.embed_prompt(proc.prompt_ids("What happens in the video?"), model.encode_frames(proc.preprocess(_frames(2, seed=3))))
    out = model.generate(embeds, max_new_tokens=6)
    assert out.ndim == 2 and out.shape[0] == 1 and 1 <= out.shape[1] <= 6 and out.dtype == torch.long
    assert bool((out >= 0).all()) and bool((out < len(proc.tokenizer)).all())
    text = proc.decode(out)
    assert isinstance(text, str) and text == proc.tokenizer.decode(out[0].tolist(), skip_special_tokens=True).strip()
    assert proc.decode(out[0]) == proc.decode(out[0].tolist()) == text
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert type(model.language_model).__name__ == "Qwen2ForCausalLM"


def test_generation_config_of_the_release(model, processor):
    gen = model.generation_config
    assert gen.repetition_penalty == 1.05 and gen.do_sample is False
    assert list(gen.eos_token_id) == [processor.im_end_id, processor.endoftext_id] and gen.pad_token_id == processor.pad_token_id


@pytest.mark.parametrize("penalty", [None, 3.0])
def test_repetition_penalty_sees_only_generated_tokens(ckpt, model, processor, penalty):
    """Greedy decoding with generation_config.json's penalty (or an explicit one) over the generated ids only."""
    frames = _frames(2, 120, 160, seed=3)
    ids = processor.prompt_ids("What happens in the video?")
    out = model.generate(model.embed_prompt(ids, model.encode_frames(processor.preprocess(frames))), max_new_tokens=6, repetition_penalty=penalty)
    config, tower, w = _read_raw(ckpt)
    gen_cfg = json.loads((ckpt / "generation_config.json").read_text())
    rp, eos = penalty or gen_cfg["repetition_penalty"], set(gen_cfg["eos_token_id"])
    pixels = torch.from_numpy(np.stack([_reference_preprocess(f) for f in frames]))
    x = _ref_splice(w, ids[0].tolist(), _ref_frame_blocks(config, tower, w, pixels, config["mm_spatial_pool_mode"]))
    n_vocab = len(processor.tokenizer)

    def greedy(rp: float) -> list[int]:
        seq, tokens = x, []
        while len(tokens) < 6 and not (tokens and tokens[-1] in eos):
            logits = _ref_qwen2_logits(config, w, seq)[-1, :n_vocab]
            for tok in set(tokens):  # generated ids only, never the prompt's
                logits[tok] = logits[tok] / rp if logits[tok] > 0 else logits[tok] * rp
            tokens.append(int(logits.argmax()))
            seq = torch.cat([seq, w["model.embed_tokens.weight"][tokens[-1:]]])
        return tokens

    assert out[0].tolist() == greedy(rp)
    if penalty is not None:  # the penalty really acts here: without it the tiny model repeats itself
        assert greedy(1.0) != greedy(rp)


def test_generation_is_greedy_and_stops_at_both_eos_ids(model, processor):
    embeds = model.embed_prompt(processor.prompt_ids(QUESTION), model.encode_frames(processor.preprocess(_frames(2))))
    free = model.generate(embeds, max_new_tokens=8)
    assert torch.equal(free, model.generate(embeds, max_new_tokens=8))
    assert torch.equal(free, model.generate(embeds, max_new_tokens=8, temperature=0, top_p=None, num_beams=1))
    assert free.shape[1] >= 3
    step = 2
    for stop in (processor.im_end_id, processor.endoftext_id):
        out = model.generate(embeds, max_new_tokens=8, logits_processor=LogitsProcessorList([_ForceAt(step, stop)]))
        assert out[0].tolist() == free[0, :step].tolist() + [stop]
        assert processor.decode(out[0]) == processor.decode(free[0, :step])
    batch = model.generate(torch.cat([embeds, embeds]), max_new_tokens=4)
    assert torch.equal(batch[0], batch[1]) and torch.equal(batch[0], free[0, :4])


# ============================================================================ checkpoint format and errors
def test_checkpoint_has_the_release_key_names(ckpt):
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    assert len(set(index["weight_map"].values())) >= 2
    tower = json.loads((ckpt / TOWER_DIR / "config.json").read_text())
    raw = json.loads((ckpt / "config.json").read_text())
    assert raw["model_type"] == "llava" and raw["mm_vision_tower"] == TOWER_DIR and tower["model_type"] == "siglip_vision_model"
    assert (tower["image_size"], tower["patch_size"]) == (384, 14)
    last = tower["num_hidden_layers"] - 1
    assert f"{TOWER}encoder.layers.{last - 1}.mlp.fc1.weight" in keys and not any(f"encoder.layers.{last}." in k for k in keys)
    assert not any(k.startswith(TOWER + "head.") for k in keys)
    for key in (
        TOWER + "embeddings.patch_embedding.weight", TOWER + "embeddings.position_embedding.weight", TOWER + "post_layernorm.weight",
        "model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.image_newline", "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.bias", "model.norm.weight", "lm_head.weight",
    ):
        assert key in keys, key
    assert all(re.match(r"^(model\.|lm_head\.)", k) for k in keys)
    w = load_file(str(ckpt / index["weight_map"]["model.image_newline"]))
    assert w["model.image_newline"].dtype == torch.bfloat16 and w["model.image_newline"].shape == (raw["hidden_size"],)


def test_key_table_round_trips():
    for key in (
        TOWER + "encoder.layers.3.mlp.fc1.weight", "model.mm_projector.2.bias", "model.image_newline",
        "model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight", "lm_head.weight",
    ):
        assert module_to_checkpoint_key(checkpoint_to_module_key(key)) == key
    assert checkpoint_to_module_key("model.image_newline") == "image_newline"
    assert checkpoint_to_module_key("model.norm.weight") == "language_model.model.norm.weight"
    with pytest.raises(CheckpointError, match="vision.foo"):
        checkpoint_to_module_key("vision.foo")


def _edit_config(src: Path, dst: Path, edit) -> Path:
    """Copy checkpoint ``src`` to ``dst`` and apply ``edit(raw)`` to its ``config.json``."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / "config.json").read_text())
    edit(raw)
    (dst / "config.json").write_text(json.dumps(raw, indent=2))
    return dst


def _edit_checkpoint(dst: Path, edit, anchor: str = "model.mm_projector.0.weight") -> Path:
    """Apply ``edit(tensors)`` in place to the shard of checkpoint ``dst`` that holds ``anchor``."""
    index_path = dst / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = index["weight_map"][anchor]
    tensors = load_file(str(dst / shard))
    edit(tensors)
    save_file(tensors, str(dst / shard), metadata={"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    index["weight_map"].update({k: shard for k in tensors})
    index_path.write_text(json.dumps(index))
    return dst


def test_missing_config_unknown_tower_and_missing_weights_are_clear_errors(ckpt, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json at .*empty"):
        LlavaVideoForCausalLM.from_pretrained(empty)

    hub = _edit_config(ckpt, tmp_path / "hub", lambda raw: raw.update(mm_vision_tower="nobody/no-such-siglip"))
    with pytest.raises(CheckpointError) as err:
        LlavaVideoForCausalLM.from_pretrained(hub)
    message = str(err.value)
    assert "mm_vision_tower='nobody/no-such-siglip'" in message
    assert str(hub / "nobody" / "no-such-siglip") in message  # the directories looked at
    assert "google/siglip-so400m-patch14-384" in message and "add a 'vision_config' dict" in message

    no_tower = _edit_config(ckpt, tmp_path / "no_tower", lambda raw: raw.pop("mm_vision_tower"))
    with pytest.raises(CheckpointError, match="mm_vision_tower=None names no vision tower"):
        LlavaVideoForCausalLM.from_pretrained(no_tower)

    missing = _edit_checkpoint(shutil.copytree(ckpt, tmp_path / "missing"), lambda t: t.pop("model.mm_projector.0.weight"), "model.mm_projector.0.weight")
    with pytest.raises(CheckpointError, match=r"lacks key 'model\.mm_projector\.0\.weight'"):
        LlavaVideoForCausalLM.from_pretrained(missing)

    def rename(t):
        t["model.mm_projector.1.weight"] = t.pop("model.mm_projector.0.weight")

    renamed = _edit_checkpoint(shutil.copytree(ckpt, tmp_path / "renamed"), rename)
    with pytest.raises(CheckpointError, match=r"unexpected checkpoint key 'model\.mm_projector\.1\.weight'"):
        LlavaVideoForCausalLM.from_pretrained(renamed)

    def reshape(t):
        t["model.mm_projector.0.weight"] = t["model.mm_projector.0.weight"][:, :4].contiguous()

    wrong = _edit_checkpoint(shutil.copytree(ckpt, tmp_path / "shape"), reshape)
    with pytest.raises(CheckpointError, match=r"model\.mm_projector\.0\.weight.*shape"):
        LlavaVideoForCausalLM.from_pretrained(wrong)

    def intact_tower(t):  # the tower's last layer, which the release does not have
        t[TOWER + "encoder.layers.2.mlp.fc1.weight"] = torch.zeros(64, 32, dtype=torch.bfloat16)

    intact = _edit_checkpoint(shutil.copytree(ckpt, tmp_path / "intact"), intact_tower)
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.2\.mlp\.fc1\.weight.*keeps layers 0\.\.1"):
        LlavaVideoForCausalLM.from_pretrained(intact)


def test_post_layernorm_may_be_absent(ckpt, processor, tmp_path):
    # present in the release, never applied: a checkpoint without it loads and gives the same features
    def drop(t):
        for name in ("weight", "bias"):
            t.pop(TOWER + f"post_layernorm.{name}", None)

    src = shutil.copytree(ckpt, tmp_path / "ckpt")
    _edit_checkpoint(src, drop, TOWER + "post_layernorm.weight")
    pixels = processor.preprocess(_frames(1, seed=6))
    base = LlavaVideoForCausalLM.from_pretrained(ckpt).encode_frames(pixels)
    assert torch.equal(LlavaVideoForCausalLM.from_pretrained(src).encode_frames(pixels), base)


def test_config_errors_and_overrides(ckpt, tmp_path):
    no_pool = _edit_config(ckpt, tmp_path / "no_pool", lambda raw: raw.pop("mm_spatial_pool_mode"))
    with pytest.raises(CheckpointError, match="no 'mm_spatial_pool_mode'.*mm_spatial_pool_mode='average'"):
        LlavaVideoForCausalLM.from_pretrained(no_pool)
    assert LlavaVideoForCausalLM.from_pretrained(no_pool, mm_spatial_pool_mode="average").tokens_per_frame == 182
    with pytest.raises(ValueError, match="mm_spatial_pool_mode='nearest' is not supported"):
        LlavaVideoForCausalLM.from_pretrained(ckpt, mm_spatial_pool_mode="nearest")
    with pytest.raises(ValueError, match="mm_newline_position='row' is not supported"):
        LlavaVideoForCausalLM.from_pretrained(ckpt, mm_newline_position="row")
    bad_file = _edit_config(ckpt, tmp_path / "bad_file", lambda raw: raw.update(mm_spatial_pool_mode="nearest"))
    with pytest.raises(CheckpointError, match="config.json: mm_spatial_pool_mode='nearest'"):
        LlavaVideoForCausalLM.from_pretrained(bad_file)
    not_llava = _edit_config(ckpt, tmp_path / "not_llava", lambda raw: raw.pop("mm_hidden_size"))
    with pytest.raises(CheckpointError, match="no 'mm_hidden_size'"):
        LlavaVideoForCausalLM.from_pretrained(not_llava)
    with pytest.raises(ValueError, match="attn_implementation"):
        LlavaVideoForCausalLM.from_pretrained(ckpt, attn_implementation="magic")
    with pytest.raises(ValueError, match="disagree"):
        LlavaVideoForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float16, dtype=torch.float32)


def test_hub_id_that_cannot_be_downloaded_is_a_checkpoint_error(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="cannot download checkpoint 'nobody/no-such-model'"):
        LlavaVideoForCausalLM.from_pretrained("nobody/no-such-model")


# ============================================================================ vision tower settings
def _tower_from(tower: str):
    return lambda raw: raw.update(mm_vision_tower=tower)


def _outputs(ckpt: Path, processor: LlavaVideoProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    loaded = LlavaVideoForCausalLM.from_pretrained(ckpt)
    feats = loaded.encode_frames(processor.preprocess(_frames(2, seed=5)))
    return feats, loaded.forward_logits(loaded.embed_prompt(processor.prompt_ids(QUESTION), feats))


@pytest.fixture(scope="module")
def reference_outputs(ckpt, processor) -> tuple[torch.Tensor, torch.Tensor]:
    return _outputs(ckpt, processor)


@pytest.mark.parametrize("layout", ["vision", "siglip", "inline"])
def test_tower_settings_from_an_absolute_directory_a_full_siglip_config_or_config_json(ckpt, processor, reference_outputs, tmp_path, layout):
    vision = {k: v for k, v in json.loads((ckpt / TOWER_DIR / "config.json").read_text()).items() if k != "model_type"}
    if layout == "inline":  # rule 1: an explicit vision_config dict wins over mm_vision_tower
        src = _edit_config(ckpt, tmp_path / "ckpt", lambda raw: raw.update(vision_config=vision, mm_vision_tower="nobody/unused"))
        shutil.rmtree(src / TOWER_DIR)
        source = "config.json"
    else:
        out = tmp_path / "tower"
        if layout == "vision":
            SiglipVisionConfig(**vision).save_pretrained(str(out))
        else:
            SiglipConfig(vision_config=vision, text_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                                                            "num_hidden_layers": 1}).save_pretrained(str(out))
        src = _edit_config(ckpt, tmp_path / "ckpt", _tower_from(str(out)))
        shutil.rmtree(src / TOWER_DIR)
        source = "directory"
    feats, logits = _outputs(src, processor)
    assert torch.equal(feats, reference_outputs[0]) and torch.equal(logits, reference_outputs[1])
    config = LlavaVideoForCausalLM.from_pretrained(src).config
    assert config.vision_config_source == source
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (vision["hidden_size"], vision["num_hidden_layers"])


def test_relative_tower_directory_checkpoint_first_then_working_directory(ckpt, processor, reference_outputs, tmp_path, monkeypatch, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert torch.equal(_outputs(ckpt, processor)[0], reference_outputs[0])  # relative to the checkpoint, not the cwd

    # both exist: the checkpoint's wins (the working directory's is a different tower)
    other = json.loads((ckpt / TOWER_DIR / "config.json").read_text())
    (elsewhere / TOWER_DIR).mkdir()
    (elsewhere / TOWER_DIR / "config.json").write_text(json.dumps({**other, "hidden_size": 48, "num_attention_heads": 4}))
    with caplog.at_level(logging.WARNING, logger="llava_video"):
        assert torch.equal(_outputs(ckpt, processor)[0], reference_outputs[0])
    assert "using the checkpoint's" in caplog.text

    # only the working directory has it
    cwd_only = shutil.copytree(ckpt, tmp_path / "cwd_only")
    shutil.rmtree(cwd_only / TOWER_DIR)
    (elsewhere / TOWER_DIR / "config.json").write_text(json.dumps(other))
    feats, logits = _outputs(cwd_only, processor)
    assert torch.equal(feats, reference_outputs[0]) and torch.equal(logits, reference_outputs[1])


def test_bad_tower_directories_are_clear_errors(ckpt, tmp_path):
    (tmp_path / "no_config").mkdir()
    src = _edit_config(ckpt, tmp_path / "a", _tower_from(str(tmp_path / "no_config")))
    with pytest.raises(CheckpointError, match="which has no config.json"):
        LlavaVideoForCausalLM.from_pretrained(src)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", "hidden_size": 32}))
    src = _edit_config(ckpt, tmp_path / "b", _tower_from(str(tmp_path / "clip")))
    with pytest.raises(CheckpointError, match="model_type='clip_vision_model'.*SigLIP"):
        LlavaVideoForCausalLM.from_pretrained(src)
    src = _edit_config(ckpt, tmp_path / "c", lambda raw: raw.update(mm_hidden_size=48))
    with pytest.raises(CheckpointError, match="mm_hidden_size=48 but the vision tower has hidden_size=32"):
        LlavaVideoForCausalLM.from_pretrained(src)


# ============================================================================ round trip, builder, loading options
def test_load_save_load_gives_identical_weights(ckpt, model, tmp_path):
    model.save_pretrained(tmp_path / "copy", max_shard_size=100_000)
    index = json.loads((tmp_path / "copy" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    assert set(index["weight_map"]) == set(json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"])
    again = LlavaVideoForCausalLM.from_pretrained(tmp_path / "copy")  # no tower directory: the settings were written inline
    first, second = dict(model.named_parameters()), dict(again.named_parameters())
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    saved = json.loads((tmp_path / "copy" / "config.json").read_text())
    original = json.loads((ckpt / "config.json").read_text())
    assert saved["vocab_size"] == len(LlavaVideoProcessor.from_pretrained(ckpt).tokenizer) < original["vocab_size"]
    assert saved["vision_config"]["num_hidden_layers"] == 3 and saved["mm_vision_tower"] == TOWER_DIR
    assert {k: v for k, v in saved.items() if k not in ("vocab_size", "torch_dtype", "vision_config")} == {
        k: v for k, v in original.items() if k not in ("vocab_size", "torch_dtype")
    }
    assert json.loads((tmp_path / "copy" / "generation_config.json").read_text()) == json.loads((ckpt / "generation_config.json").read_text())
    assert again.generation_config.repetition_penalty == 1.05


def test_bfloat16_loading_keeps_rotary_in_float32(ckpt, processor):
    bf16 = LlavaVideoForCausalLM.from_pretrained(ckpt, torch_dtype="bfloat16", device_map="cpu")
    assert bf16.dtype == torch.bfloat16 and bf16.vision_dtype == torch.bfloat16 and bf16.device.type == "cpu"
    assert bf16.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    feats = bf16.encode_frames(processor.preprocess(_frames(1)))
    assert feats.dtype == torch.bfloat16 and bf16.forward_logits(bf16.embed_prompt(processor.prompt_ids(QUESTION), feats)).dtype == torch.float32


def test_builder_is_deterministic_and_has_a_cli(ckpt, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-tiny-llava-video", str(tmp_path / "again"), "--seed", "0", "--size", "tiny"])
    assert args.func(args) == 0 and str(tmp_path / "again") in capsys.readouterr().out
    files = sorted(p.relative_to(ckpt) for p in ckpt.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for name in files:
        assert (ckpt / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    other = build_tiny_llava_video(tmp_path / "seed1", seed=1)
    shard = "model-00001-of-00003.safetensors"
    assert (other / shard).read_bytes() != (ckpt / shard).read_bytes()
    with pytest.raises(SystemExit):
        parser.parse_args(["make-tiny-llava-video", "x", "--size", "huge"])
    with pytest.raises(ValueError, match="size must be one of"):
        build_tiny_llava_video(tmp_path / "huge", size="huge")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _all_warnings():
    """Collects log records at WARNING and above (transformers' own logger too) and Python warnings."""
    from transformers.utils import logging as hf_logging

    records = _Records()
    loggers = [logging.getLogger(), hf_logging.get_logger(), logging.getLogger("huggingface_hub")]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    for lg in loggers:
        lg.addHandler(records)
    gc.collect()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield records.messages
            records.messages.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        for lg in loggers:
            lg.removeHandler(records)
        hf_logging.set_verbosity(verbosity)


def test_loading_and_generating_are_quiet(ckpt, processor):
    with _all_warnings() as messages:
        model = LlavaVideoForCausalLM.from_pretrained(ckpt, mm_spatial_pool_mode="average", mm_newline_position="grid")
        proc = LlavaVideoProcessor.from_pretrained(ckpt)
        model.generate(model.embed_prompt(proc.prompt_ids(QUESTION), model.encode_frames(proc.preprocess(_frames(1)))), max_new_tokens=2)
    assert messages == []


# ============================================================================ packaging
_FORBIDDEN = {"cos", "cos_runtime", "lmms_eval", "cos_lmms_eval", "longva"}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+(:\w+)?", node.value):
            names.add(node.value.split(".")[0])  # lazy imports by dotted name
    return names


@pytest.mark.parametrize("path", sorted((REPO / "llava_video").glob("*.py")), ids=lambda p: p.name)
def test_llava_video_knows_nothing_of_cos_or_the_harness(path):
    assert not _imported_modules(path) & _FORBIDDEN


def test_lazy_package_import():
    import subprocess
    import sys

    code = "import sys, llava_video; print(int('torch' in sys.modules), int('transformers' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert out == ["0", "0"]
    import llava_video

    api = {"LlavaVideoForCausalLM", "LlavaVideoProcessor", "LlavaVideoConfig", "CheckpointError", "build_tiny_llava_video", "time_instruction"}
    assert api <= set(llava_video.__all__) and all(getattr(llava_video, name) is not None for name in api)
    with pytest.raises(AttributeError):
        llava_video.NoSuchThing  # noqa: B018
