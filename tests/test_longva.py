"""Tests of the ``longva`` package on tiny random checkpoints (CPU, float32).

The reference forward below is written from the architecture description in ``longva-notes.md`` with
explicit tensor operations on the safetensors read straight from disk; it never touches the model class.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPVisionConfig, LogitsProcessor, LogitsProcessorList

from longva import IMAGE_TOKEN_INDEX, CheckpointError, LongVAForCausalLM, LongVAProcessor
from longva.checkpoint import checkpoint_to_module_key, module_to_checkpoint_key
from longva.processing import default_image_processor
from longva.tiny import build_tiny_longva

TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<image>\n{q}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
QUESTION = "Is there a red ball in the video? Answer yes or no."
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@pytest.fixture(scope="module")
def model(tiny_longva_dir) -> LongVAForCausalLM:
    return LongVAForCausalLM.from_pretrained(tiny_longva_dir)


@pytest.fixture(scope="module")
def processor(tiny_longva_dir) -> LongVAProcessor:
    return LongVAProcessor.from_pretrained(tiny_longva_dir)


def _frames(n: int, h: int = 90, w: int = 150, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ============================================================================ independent reference
def _read_raw(ckpt: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((ckpt / "config.json").read_text())
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(load_file(str(ckpt / shard)))
    return config, {k: v.float() for k, v in weights.items()}


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
    """q (H, L, d), k/v (H, L, d) -> (H, L, d)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[1]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _ref_frame_features(config: dict, w: dict, pixels: torch.Tensor) -> torch.Tensor:
    vc = config["vision_config"]
    p, c, heads = vc["patch_size"], vc["hidden_size"], vc["num_attention_heads"]
    n, _, s, _ = pixels.shape
    g = s // p
    pre = "model.vision_tower.vision_tower.vision_model."
    # patch embedding as a matmul over flattened (channel, row, col) patches
    patches = pixels.view(n, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3 * p * p)
    x = patches @ w[pre + "embeddings.patch_embedding.weight"].reshape(c, -1).T
    x = torch.cat([w[pre + "embeddings.class_embedding"].expand(n, 1, c), x], dim=1)
    x = x + w[pre + "embeddings.position_embedding.weight"][None]
    x = _layer_norm(x, w, pre + "pre_layrnorm", vc["layer_norm_eps"])
    # hidden_states[-2] = output of all but the last encoder layer
    n_run = vc["num_hidden_layers"] + 1 + config["mm_vision_select_layer"]
    for i in range(n_run):
        lay = f"{pre}encoder.layers.{i}."
        h = _layer_norm(x, w, lay + "layer_norm1", vc["layer_norm_eps"])
        split = lambda t: t.view(n, -1, heads, c // heads).transpose(1, 2)  # noqa: E731
        q, k, v = (split(_linear(h, w, lay + f"self_attn.{m}_proj")) for m in "qkv")
        a = _attention(q, k, v, causal=False).transpose(1, 2).reshape(n, -1, c)
        x = x + _linear(a, w, lay + "self_attn.out_proj")
        h = _layer_norm(x, w, lay + "layer_norm2", vc["layer_norm_eps"])
        h = _linear(h, w, lay + "mlp.fc1")
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        x = x + _linear(h, w, lay + "mlp.fc2")
    x = x[:, 1:]  # drop CLS
    x = _linear(x, w, "model.mm_projector.0")
    x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # exact GELU
    x = _linear(x, w, "model.mm_projector.2")
    d = x.shape[-1]
    # 2x2 average pooling of the row-major grid
    x = x.view(n, g // 2, 2, g // 2, 2, d).mean(dim=(2, 4))
    return x.reshape(n, (g // 2) ** 2, d)


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


def test_logits_match_independent_reference(tiny_longva_dir, model, processor):
    config, w = _read_raw(tiny_longva_dir)
    pixels = processor.preprocess(_frames(3))
    ids = processor.prompt_ids(QUESTION)

    ref_feats = _ref_frame_features(config, w, pixels)
    ref_embeds = _ref_splice(w, ids[0].tolist(), ref_feats)
    ref_logits = _ref_qwen2_logits(config, w, ref_embeds)

    feats = model.encode_frames(pixels)
    embeds = model.embed_prompt(ids, feats)
    with torch.no_grad():
        logits = model(inputs_embeds=embeds).logits[0]
    n_vocab = logits.shape[-1]  # shrunk to len(tokenizer); the reference keeps all 64-padded rows
    assert n_vocab == len(processor.tokenizer) < config["vocab_size"]
    assert feats.shape == (3, 16, config["hidden_size"])
    torch.testing.assert_close(feats, ref_feats, rtol=0, atol=1e-5)
    torch.testing.assert_close(embeds[0], ref_embeds, rtol=0, atol=1e-5)
    assert ref_logits.abs().max() > 1.0  # real signal, not a degenerate near-zero network
    torch.testing.assert_close(logits, ref_logits[:, :n_vocab], rtol=0, atol=1e-5)
    last = model.forward_logits(embeds)
    assert last.dtype == torch.float32 and last.shape == (1, n_vocab)
    torch.testing.assert_close(last[0], ref_logits[-1, :n_vocab], rtol=0, atol=1e-5)


# ============================================================================ prompt and tokens
def test_prompt_string_is_the_qwen_1_5_template(processor):
    assert processor.build_prompt(QUESTION) == TEMPLATE.format(q=QUESTION)


def test_prompt_ids_split_on_image_and_tokenise_chunks_separately(processor):
    tok = processor.tokenizer
    head, tail = TEMPLATE.format(q=QUESTION).split("<image>")
    ids = processor.prompt_ids(QUESTION)
    assert ids.dtype == torch.long and ids.shape[0] == 1
    expected = tok(head).input_ids + [IMAGE_TOKEN_INDEX] + tok(tail).input_ids
    assert ids[0].tolist() == expected
    assert int((ids == IMAGE_TOKEN_INDEX).sum()) == 1
    assert ids[0, 0].item() == processor.im_start_id  # no BOS
    with pytest.raises(ValueError, match="exactly one"):
        processor.prompt_ids("two <image> placeholders")


def test_tokenizer_special_ids_match_configs(tiny_longva_dir, processor):
    tok = processor.tokenizer
    config = json.loads((tiny_longva_dir / "config.json").read_text())
    gen = json.loads((tiny_longva_dir / "generation_config.json").read_text())
    assert type(tok).__name__ == "Qwen2Tokenizer"
    eot, ims, ime = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert (ims, ime) == (eot + 1, eot + 2) and len(tok) == ime + 1
    assert config["bos_token_id"] == eot == tok.pad_token_id == gen["pad_token_id"]
    assert config["eos_token_id"] == ime == tok.eos_token_id
    assert gen["eos_token_id"] == [ime, eot]
    assert tok.bos_token is None
    ids = {w: processor.token_id(w) for w in ("yes", " yes", "no", " no", "Yes", "No")}
    assert len(set(ids.values())) == 6
    assert processor.decode([ims, ids["yes"], ime]) == "yes"
    with pytest.raises(ValueError, match="not one"):
        processor.token_id("helpful assistant")


def test_embed_prompt_splices_frames_at_the_placeholder(model, processor, monkeypatch):
    ids = processor.prompt_ids(QUESTION)
    pos = ids[0].tolist().index(IMAGE_TOKEN_INDEX)
    feats = torch.randn(3, model.tokens_per_frame, model.config.hidden_size)
    embeds = model.embed_prompt(ids, feats)
    n_visual = 3 * model.tokens_per_frame
    assert embeds.shape == (1, ids.shape[1] - 1 + n_visual, model.config.hidden_size)
    table = model.language_model.get_input_embeddings().weight
    assert torch.equal(embeds[0, :pos], table[ids[0, :pos]])
    assert torch.equal(embeds[0, pos : pos + n_visual], feats.flatten(0, 1))  # time order, no separators
    assert torch.equal(embeds[0, pos + n_visual :], table[ids[0, pos + 1 :]])

    with pytest.raises(ValueError, match="exactly one image placeholder"):
        model.embed_prompt(ids[:, :pos], feats)
    with pytest.raises(ValueError, match="exactly one image placeholder"):
        model.embed_prompt(torch.cat([ids, ids], dim=1), feats)
    with pytest.raises(ValueError, match="frame_features"):
        model.embed_prompt(ids, feats[..., :8])

    monkeypatch.setattr(model.config, "tokenizer_model_max_length", 40)
    assert model.embed_prompt(ids, feats).shape[1] == 40  # LongVA keeps the head
    assert model.embed_prompt(ids, feats, truncate=False).shape == embeds.shape


def test_frames_encoded_one_by_one_batched_and_chunked_agree(model, processor):
    pixels = processor.preprocess(_frames(5, seed=1))
    batched = model.encode_frames(pixels, chunk_size=32)
    assert batched.shape == (5, 16, model.config.hidden_size) and model.tokens_per_frame == 16
    singles = torch.cat([model.encode_frames(pixels[i : i + 1]) for i in range(5)])
    for got in (singles, model.encode_frames(pixels, chunk_size=2), model.encode_frames(pixels, chunk_size=1)):
        torch.testing.assert_close(got, batched, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expects"):
        model.encode_frames(torch.zeros(1, 3, 64, 64))


def test_small_checkpoint_has_release_geometry(tmp_path):
    ckpt = build_tiny_longva(tmp_path / "small", seed=0, size="small")
    assert not (ckpt / "preprocessor_config.json").exists()  # like the release: default 336 px rule
    proc = LongVAProcessor.from_pretrained(ckpt)
    small = LongVAForCausalLM.from_pretrained(ckpt)
    pixels = proc.preprocess(_frames(1, 240, 320))
    assert pixels.shape == (1, 3, 336, 336)
    feats = small.encode_frames(pixels)
    assert small.tokens_per_frame == 144 and feats.shape == (1, 144, 256)


# ============================================================================ checkpoint round trip
def test_key_table_round_trips():
    for key in (
        "model.vision_tower.vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight",
        "model.mm_projector.2.bias",
        "model.layers.0.self_attn.q_proj.weight",
        "model.embed_tokens.weight",
        "lm_head.weight",
    ):
        assert module_to_checkpoint_key(checkpoint_to_module_key(key)) == key
    assert checkpoint_to_module_key("model.mm_projector.0.weight") == "mm_projector.0.weight"
    with pytest.raises(CheckpointError, match="vision.foo"):
        checkpoint_to_module_key("vision.foo")


def test_load_save_load_gives_identical_weights(tiny_longva_dir, model, tmp_path):
    model.save_pretrained(tmp_path / "copy", max_shard_size=100_000)
    index = json.loads((tmp_path / "copy" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    assert set(index["weight_map"]) == set(json.loads((tiny_longva_dir / "model.safetensors.index.json").read_text())["weight_map"])
    again = LongVAForCausalLM.from_pretrained(tmp_path / "copy")
    first, second = dict(model.named_parameters()), dict(again.named_parameters())
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    saved = json.loads((tmp_path / "copy" / "config.json").read_text())
    original = json.loads((tiny_longva_dir / "config.json").read_text())
    assert saved["vocab_size"] == len(LongVAProcessor.from_pretrained(tiny_longva_dir).tokenizer)
    assert {k: v for k, v in saved.items() if k not in ("vocab_size", "torch_dtype")} == {
        k: v for k, v in original.items() if k not in ("vocab_size", "torch_dtype")
    }
    assert (tmp_path / "copy" / "generation_config.json").read_text() != ""
    assert again.generation_config.eos_token_id == model.generation_config.eos_token_id


def _edit_checkpoint(src: Path, dst: Path, edit) -> Path:
    """Copy ``src`` and apply ``edit(tensors)`` to the shard holding the projector weights."""
    shutil.copytree(src, dst)
    index_path = dst / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = index["weight_map"]["model.mm_projector.0.weight"]
    tensors = load_file(str(dst / shard))
    edit(tensors)
    save_file(tensors, str(dst / shard), metadata={"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    index["weight_map"].update({k: shard for k in tensors})
    index_path.write_text(json.dumps(index))
    return dst


def test_unexpected_or_missing_key_is_a_clear_error(tiny_longva_dir, tmp_path):
    def rename(t):
        t["model.mm_projector.1.weight"] = t.pop("model.mm_projector.0.weight")

    bad = _edit_checkpoint(tiny_longva_dir, tmp_path / "renamed", rename)
    with pytest.raises(CheckpointError, match=r"model\.mm_projector\.1\.weight"):
        LongVAForCausalLM.from_pretrained(bad)

    missing = _edit_checkpoint(tiny_longva_dir, tmp_path / "missing", lambda t: t.pop("model.mm_projector.0.weight"))
    with pytest.raises(CheckpointError, match=r"lacks key 'model\.mm_projector\.0\.weight'"):
        LongVAForCausalLM.from_pretrained(missing)

    def reshape(t):
        t["model.mm_projector.0.weight"] = t["model.mm_projector.0.weight"][:, :4].contiguous()

    wrong = _edit_checkpoint(tiny_longva_dir, tmp_path / "shape", reshape)
    with pytest.raises(CheckpointError, match=r"model\.mm_projector\.0\.weight.*shape"):
        LongVAForCausalLM.from_pretrained(wrong)


def test_loading_options_and_hub_errors(tiny_longva_dir, monkeypatch):
    bf16 = LongVAForCausalLM.from_pretrained(tiny_longva_dir, dtype="bfloat16", device_map="cpu")
    assert bf16.dtype == torch.bfloat16 and bf16.device.type == "cpu"
    assert bf16.language_model.model.rotary_emb.inv_freq.dtype == torch.float32  # never rounded
    with pytest.raises(ValueError, match="disagree"):
        LongVAForCausalLM.from_pretrained(tiny_longva_dir, torch_dtype=torch.float16, dtype=torch.float32)
    with pytest.raises(ValueError, match="attn_implementation"):
        LongVAForCausalLM.from_pretrained(tiny_longva_dir, attn_implementation="magic")

    import huggingface_hub

    def offline(**kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="cannot download checkpoint 'nobody/no-such-model'"):
        LongVAForCausalLM.from_pretrained("nobody/no-such-model")


# ============================================================================ vision tower settings
def _edit_config(src: Path, dst: Path, edit) -> Path:
    """Copy checkpoint ``src`` to ``dst`` and apply ``edit(raw)`` to its ``config.json``."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / "config.json").read_text())
    edit(raw)
    (dst / "config.json").write_text(json.dumps(raw, indent=2))
    return dst


def _tower_from(tower: str):
    """An ``_edit_config`` edit: no ``vision_config``, ``mm_vision_tower=tower``."""

    def edit(raw):
        del raw["vision_config"]
        raw["mm_vision_tower"] = tower

    return edit


def _write_tower(kind: str, out: Path, vision: dict) -> Path:
    """A directory with a CLIP ``config.json`` holding the ``vision`` settings, in one of three layouts."""
    out.mkdir(parents=True)
    if kind == "vision":  # CLIPVisionConfig file (model_type "clip_vision_model")
        CLIPVisionConfig(**vision).save_pretrained(str(out))
    elif kind == "clip":  # full CLIPConfig written by transformers 5 (model_type "clip", nested vision_config)
        CLIPConfig(vision_config=vision, projection_dim=vision["projection_dim"]).save_pretrained(str(out))
    else:  # full CLIPConfig in the transformers 4.x layout of the hub's openai/clip-* files (legacy keys)
        legacy = {"architectures": None, "bad_words_ids": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
                  "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "torch_dtype": None, "use_bfloat16": False}
        (out / "config.json").write_text(json.dumps({
            "architectures": ["CLIPModel"], "initializer_factor": 1.0, "logit_scale_init_value": 2.6592,
            "model_type": "clip", "projection_dim": vision["projection_dim"],
            "text_config": {**legacy, "model_type": "clip_text_model", "hidden_size": 16, "intermediate_size": 32,
                            "num_attention_heads": 2, "num_hidden_layers": 1},
            "torch_dtype": "float32", "transformers_version": None,
            "vision_config": {**legacy, **vision, "model_type": "clip_vision_model"},
            "vision_config_dict": {k: vision[k] for k in ("hidden_size", "intermediate_size", "patch_size")},
        }, indent=2))
    return out


def _outputs(ckpt: Path, processor: LongVAProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame features and logits of the checkpoint at ``ckpt`` on fixed frames and prompt."""
    loaded = LongVAForCausalLM.from_pretrained(ckpt)
    feats = loaded.encode_frames(processor.preprocess(_frames(2, seed=5)))
    with torch.no_grad():
        logits = loaded(inputs_embeds=loaded.embed_prompt(processor.prompt_ids(QUESTION), feats)).logits
    return feats, logits


@pytest.fixture(scope="module")
def reference_outputs(tiny_longva_dir, processor) -> tuple[torch.Tensor, torch.Tensor]:
    return _outputs(tiny_longva_dir, processor)


@pytest.mark.parametrize("kind", ["vision", "clip", "clip_legacy"])
def test_tower_named_by_an_absolute_directory(tiny_longva_dir, processor, reference_outputs, tmp_path, kind):
    vision = json.loads((tiny_longva_dir / "config.json").read_text())["vision_config"]
    tower = _write_tower(kind, tmp_path / "clip", vision)
    ckpt = _edit_config(tiny_longva_dir, tmp_path / "ckpt", _tower_from(str(tower)))
    feats, logits = _outputs(ckpt, processor)
    assert torch.equal(feats, reference_outputs[0]) and torch.equal(logits, reference_outputs[1])
    config = LongVAForCausalLM.from_pretrained(ckpt).config
    assert config.vision_config_source == "directory" and config.mm_vision_tower == str(tower)
    assert {k: getattr(config.vision_config, k) for k in vision} == vision


def test_tower_relative_to_the_checkpoint_or_working_directory(
    tiny_longva_dir, processor, reference_outputs, tmp_path, monkeypatch, caplog
):
    vision = json.loads((tiny_longva_dir / "config.json").read_text())["vision_config"]
    ckpt = _edit_config(tiny_longva_dir, tmp_path / "ckpt", _tower_from("towers/clip"))
    _write_tower("vision", ckpt / "towers" / "clip", vision)
    (ckpt / "preprocessor_config.json").unlink()  # the processor reads the frame side from the tower too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # LongVA's loader would look only here
    feats, logits = _outputs(ckpt, processor)
    assert torch.equal(feats, reference_outputs[0]) and torch.equal(logits, reference_outputs[1])
    assert LongVAProcessor.from_pretrained(ckpt).image_size == vision["image_size"]

    # both exist: the checkpoint's directory wins (the working directory's one here is a different tower)
    _write_tower("vision", elsewhere / "towers" / "clip", {**vision, "hidden_size": 48, "num_attention_heads": 4})
    with caplog.at_level(logging.WARNING, logger="longva"):
        feats, _ = _outputs(ckpt, processor)
    assert torch.equal(feats, reference_outputs[0])
    assert "using the checkpoint's" in caplog.text and str(ckpt / "towers" / "clip") in caplog.text

    # only the working directory has it: LongVA's rule
    cwd_only = _edit_config(tiny_longva_dir, tmp_path / "cwd_only", _tower_from("clip_in_cwd"))
    _write_tower("clip", elsewhere / "clip_in_cwd", vision)
    feats, logits = _outputs(cwd_only, processor)
    assert torch.equal(feats, reference_outputs[0]) and torch.equal(logits, reference_outputs[1])

    # a saved copy carries the settings as vision_config, so it loads from anywhere
    LongVAForCausalLM.from_pretrained(ckpt).save_pretrained(tmp_path / "copy")
    saved = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert saved["mm_vision_tower"] == "towers/clip" and saved["vision_config"] == vision
    shutil.rmtree(elsewhere / "towers")
    assert torch.equal(_outputs(tmp_path / "copy", processor)[0], reference_outputs[0])


def test_unresolvable_tower_is_a_clear_error(tiny_longva_dir, tmp_path):
    ckpt = _edit_config(tiny_longva_dir, tmp_path / "hub", _tower_from("nobody/no-such-clip"))
    with pytest.raises(CheckpointError) as err:  # offline (conftest), nothing cached
        LongVAForCausalLM.from_pretrained(ckpt)
    message = str(err.value)
    assert "mm_vision_tower='nobody/no-such-clip'" in message
    assert str(ckpt / "nobody" / "no-such-clip") in message  # the directories looked at
    assert "HF cache" in message and "add a 'vision_config' dict" in message and "directory" in message

    missing = _edit_config(tiny_longva_dir, tmp_path / "missing", _tower_from(str(tmp_path / "no" / "clip")))
    with pytest.raises(CheckpointError, match=r"mm_vision_tower='.*no/clip'.*not a hub id"):
        LongVAForCausalLM.from_pretrained(missing)

    (tmp_path / "empty").mkdir()  # CLIPVisionConfig.from_pretrained would return its defaults
    empty = _edit_config(tiny_longva_dir, tmp_path / "no_config", _tower_from(str(tmp_path / "empty")))
    with pytest.raises(CheckpointError, match="which has no config.json"):
        LongVAForCausalLM.from_pretrained(empty)

    (tmp_path / "siglip").mkdir()
    (tmp_path / "siglip" / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model"}))
    siglip = _edit_config(tiny_longva_dir, tmp_path / "siglip_ckpt", _tower_from(str(tmp_path / "siglip")))
    with pytest.raises(CheckpointError, match="model_type='siglip_vision_model'.*CLIP"):
        LongVAForCausalLM.from_pretrained(siglip)


def test_unknown_hub_tower_read_from_the_local_hf_cache(
    tiny_longva_dir, processor, reference_outputs, tmp_path, monkeypatch
):
    import huggingface_hub

    vision = json.loads((tiny_longva_dir / "config.json").read_text())["vision_config"]
    cache = tmp_path / "hub"  # the huggingface_hub cache layout: refs/main -> snapshots/<commit>/config.json
    repo = cache / "models--someone--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    _write_tower("clip", repo / "snapshots" / commit, vision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # never the network

    ckpt = _edit_config(tiny_longva_dir, tmp_path / "ckpt", _tower_from("someone/tiny-clip"))
    feats, logits = _outputs(ckpt, processor)
    assert torch.equal(feats, reference_outputs[0]) and torch.equal(logits, reference_outputs[1])
    assert LongVAForCausalLM.from_pretrained(ckpt).config.vision_config_source == "hub"


# ============================================================================ quiet loading
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
    gc.collect()  # no stray ResourceWarning from earlier tests' garbage
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield records.messages
            records.messages.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        for lg in loggers:
            lg.removeHandler(records)
        hf_logging.set_verbosity(verbosity)


@pytest.mark.parametrize("model_type", ["qwen2", "llava_qwen"])
def test_loading_is_quiet(tiny_longva_dir, tmp_path, model_type):
    # "qwen2": the release (and the builder); "llava_qwen": what LLaVA/LongVA's code saves after a fine-tune,
    # which made AutoTokenizer fall back to the base PreTrainedConfig (a "model of type ``" warning).
    ckpt = _edit_config(tiny_longva_dir, tmp_path / "ckpt", lambda raw: raw.update(model_type=model_type))
    (ckpt / "preprocessor_config.json").unlink()
    with _all_warnings() as messages:
        LongVAForCausalLM.from_pretrained(ckpt)
        LongVAProcessor.from_pretrained(ckpt)
    assert messages == []


def test_a_wrong_checkpoint_still_reports_its_problem(tiny_longva_dir, tmp_path):
    llama = _edit_config(tiny_longva_dir, tmp_path / "llama", lambda raw: raw.update(model_type="llama"))
    with _all_warnings() as messages:
        LongVAForCausalLM.from_pretrained(llama)
    assert any("model_type='llama' is not a LongVA type" in m for m in messages), messages

    def rename(t):
        t["model.mm_projector.1.weight"] = t.pop("model.mm_projector.0.weight")

    with pytest.raises(CheckpointError, match=r"unexpected checkpoint key 'model\.mm_projector\.1\.weight'"):
        LongVAForCausalLM.from_pretrained(_edit_checkpoint(tiny_longva_dir, tmp_path / "renamed", rename))


def test_builder_is_deterministic_and_cli_works(tiny_longva_dir, tmp_path):
    from cos_runtime.cli import main

    assert main(["make-tiny-longva", str(tmp_path / "again"), "--seed", "0"]) == 0
    names = sorted(p.name for p in tiny_longva_dir.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir())
    shards = [n for n in names if n.endswith(".safetensors")]
    assert len(shards) >= 2
    for name in names:
        assert (tiny_longva_dir / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    other = build_tiny_longva(tmp_path / "seed1", seed=1)
    assert (other / shards[0]).read_bytes() != (tiny_longva_dir / shards[0]).read_bytes()


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


def test_generation_is_greedy_and_stops_at_im_end(model, processor):
    embeds = model.embed_prompt(processor.prompt_ids(QUESTION), model.encode_frames(processor.preprocess(_frames(2))))
    free = model.generate(embeds, max_new_tokens=8)
    assert torch.equal(free, model.generate(embeds, max_new_tokens=8))  # deterministic
    assert torch.equal(free, model.generate(embeds, max_new_tokens=8, temperature=0, top_p=None, num_beams=1))
    assert free.shape[0] == 1 and free.shape[1] <= 8  # only new tokens
    ime, eot = processor.im_end_id, processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert free.shape[1] >= 2
    step = min(3, free.shape[1] - 1)
    for stop in (ime, eot):  # both eos ids of generation_config.json stop generation
        out = model.generate(embeds, max_new_tokens=8, logits_processor=LogitsProcessorList([_ForceAt(step, stop)]))
        assert out[0].tolist() == free[0, :step].tolist() + [stop]
        assert processor.decode(out[0]) == processor.decode(free[0, :step])  # the stop id is skipped in the text
    text = processor.decode(free[0])
    assert text == processor.tokenizer.decode(free[0].tolist(), skip_special_tokens=True).strip()
    assert processor.decode(free) == processor.decode(free[0].tolist()) == text


def test_end_to_end_answer_from_pretrained(tiny_longva_dir):
    model = LongVAForCausalLM.from_pretrained(tiny_longva_dir)
    proc = LongVAProcessor.from_pretrained(tiny_longva_dir)
    frames = _frames(4, 120, 160, seed=3)
    ids = proc.prompt_ids("What happens in the video?")
    out = model.generate(model.embed_prompt(ids, model.encode_frames(proc.preprocess(frames))), max_new_tokens=6)
    answer = proc.decode(out)
    # independent reference from the raw files: reference preprocessing, vision tower, splice and LM forward
    # (uncached), greedy with generation_config.json's repetition penalty on the generated ids, stop at its eos ids
    config, w = _read_raw(tiny_longva_dir)
    gen_cfg = json.loads((tiny_longva_dir / "generation_config.json").read_text())
    penalty, eos = gen_cfg["repetition_penalty"], set(gen_cfg["eos_token_id"])
    pixels = torch.from_numpy(np.stack([_reference_preprocess(f, config["vision_config"]["image_size"]) for f in frames]))
    x = _ref_splice(w, ids[0].tolist(), _ref_frame_features(config, w, pixels))
    n_vocab = len(proc.tokenizer)
    tokens: list[int] = []
    while len(tokens) < 6 and not (tokens and tokens[-1] in eos):
        logits = _ref_qwen2_logits(config, w, x)[-1, :n_vocab]
        for tok in set(tokens):
            logits[tok] = logits[tok] / penalty if logits[tok] > 0 else logits[tok] * penalty
        tokens.append(int(logits.argmax()))
        x = torch.cat([x, w["model.embed_tokens.weight"][tokens[-1:]]])
    assert out[0].tolist() == tokens
    assert answer == proc.tokenizer.decode(tokens, skip_special_tokens=True).strip() and answer == answer.strip()


# ============================================================================ image processing
def _reference_preprocess(frame: np.ndarray, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BICUBIC), dtype=np.float32) / 255.0
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top : top + size, left : left + size]
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


@pytest.mark.parametrize("shape", [(2, 90, 150), (1, 150, 90), (1, 336, 336), (1, 240, 427)])
def test_image_processing_matches_longva_rule(processor, shape):
    frames = _frames(shape[0], shape[1], shape[2], seed=sum(shape))
    for proc, size in ((processor, 112), (LongVAProcessor(default_image_processor(), processor.tokenizer), 336)):
        got = proc.preprocess(frames)
        assert got.dtype == torch.float32 and got.shape == (shape[0], 3, size, size)
        ref = np.stack([_reference_preprocess(f, size) for f in frames])
        np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        processor.preprocess(frames.astype(np.float32))
