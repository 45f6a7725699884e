"""Video-XL on transformers 5: the release's checkpoint format, and the beacon memory against a naive
reference written here from the description of the release (explicit loops over windows, beacons and memory)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

QUESTION = "Which shape appears in the video? Answer with yes or no."


@pytest.fixture(scope="module")
def model_and_processor(tiny_videoxl_dir):
    from videoxl import VideoXLForCausalLM, VideoXLProcessor

    return VideoXLForCausalLM.from_pretrained(str(tiny_videoxl_dir)), VideoXLProcessor.from_pretrained(str(tiny_videoxl_dir))


def _video(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 72, 96, 3), dtype=np.uint8)


def _inputs(model, processor, frames: int, seed: int = 0):
    feats = model.encode_frames(processor.preprocess(_video(frames, seed)))
    prompt = processor.prompt_ids(QUESTION)
    ids, span = model.expand_ids(prompt, feats.shape[0] * feats.shape[1])
    return model.embed_prompt(prompt, feats), ids, span


# ------------------------------------------------------------------------------------------ naive reference
class Naive:
    """Video-XL's LM, token by token, in float64, from the parameters alone."""

    def __init__(self, model, ratio: int):
        sd = {k: v.detach().double() for k, v in model.language_model.state_dict().items()}
        cfg = model.language_model.config
        self.sd, self.ratio, self.window = sd, ratio, model.config.beacon.window
        self.layers, self.heads, self.kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = cfg.hidden_size // self.heads
        self.eps, self.theta = cfg.rms_norm_eps, cfg.rope_parameters["rope_theta"]
        self.memory = [[] for _ in range(self.layers)]  # per layer: (k (kv, hd), v (kv, hd)) before RoPE, in the order kept

    def norm(self, x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps)

    def rope(self, x, pos):  # x (..., hd): rotate pairs (i, i + hd/2) by pos * theta^(-2i/hd)
        half = self.hd // 2
        freq = self.theta ** (-torch.arange(half, dtype=torch.float64) * 2 / self.hd)
        c, s = torch.cos(pos * freq), torch.sin(pos * freq)
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)

    def call(self, tokens, keep):
        """tokens: list of (embedding (D,), is_beacon); keep(i) -> whether token i's K/V stay in memory.
        Returns the final hidden states of the tokens."""
        h = [e.double().clone() for e, _ in tokens]
        past = len(self.memory[0])
        for layer in range(self.layers):
            p = f"model.layers.{layer}."
            x = [self.norm(v, self.sd[p + "input_layernorm.weight"]) for v in h]
            qkv = []
            for xi, (_, beacon) in zip(x, tokens):
                pre = p + "self_attn." + ("beacon_" if beacon else "")
                proj = {n: self.sd[pre + f"{n}_proj.weight"] @ xi + self.sd[pre + f"{n}_proj.bias"] for n in "qkv"}
                qkv.append((proj["q"].view(self.heads, self.hd), proj["k"].view(self.kv, self.hd), proj["v"].view(self.kv, self.hd)))
            keys = [k for k, _ in self.memory[layer]] + [k for _, k, _ in qkv]
            values = [v for _, v in self.memory[layer]] + [v for _, _, v in qkv]
            rotated = [self.rope(k, j) for j, k in enumerate(keys)]
            out = []
            for i, (q, _, _) in enumerate(qkv):
                heads = []
                for head in range(self.heads):
                    g = head // (self.heads // self.kv)
                    qr = self.rope(q[head], past + i)
                    visible = range(past + i + 1)  # all memory, and the call up to this token
                    scores = torch.stack([qr @ rotated[j][g] for j in visible]) / math.sqrt(self.hd)
                    weights = torch.softmax(scores, 0)
                    heads.append(sum(w * values[j][g] for w, j in zip(weights, visible)))
                out.append(self.sd[p + "self_attn.o_proj.weight"] @ torch.cat(heads))
            h = [v + o for v, o in zip(h, out)]
            for i, v in enumerate(h):
                y = self.norm(v, self.sd[p + "post_attention_layernorm.weight"])
                mlp = self.sd[p + "mlp.down_proj.weight"] @ (torch.nn.functional.silu(self.sd[p + "mlp.gate_proj.weight"] @ y)
                                                            * (self.sd[p + "mlp.up_proj.weight"] @ y))
                h[i] = v + mlp
            self.memory[layer] += [(k, v) for i, (_, k, v) in enumerate(qkv) if keep(i)]
        return h

    def logits(self, hidden):
        return self.sd["lm_head.weight"] @ self.norm(hidden, self.sd["model.norm.weight"])

    def prefill(self, embeds, span):
        first, last = span
        rows = list(embeds[0])
        beacon = self.sd["model.beacon_embed_tokens.weight"][0]
        self.call([(e, False) for e in rows[:first]], keep=lambda i: True)  # the text before the video: kept (sink)
        seen = 0  # raw visual tokens so far, over all windows: a beacon follows every ratio-th
        for start in range(first, last, self.window):
            tokens = []
            for e in rows[start : min(start + self.window, last)]:
                tokens.append((e, False))
                seen += 1
                if seen % self.ratio == 0:
                    tokens.append((beacon, True))
            hidden = self.call(tokens, keep=lambda i, tokens=tokens: tokens[i][1])  # only the beacons stay
            hidden = [v for v, (_, b) in zip(hidden, tokens) if not b]
        for start in range(last, len(rows), self.window):  # the text after the video, kept
            hidden = self.call([(e, False) for e in rows[start : start + self.window]], keep=lambda i: True)
        return self.logits(hidden[-1])

    def greedy(self, embeds, span, ids, embed_table, steps, penalty):
        logits, ids, out = self.prefill(embeds, span), list(ids[0].tolist()), []
        for _ in range(steps):
            scores = logits.clone()
            for t in set(ids):
                scores[t] = scores[t] / penalty if scores[t] > 0 else scores[t] * penalty
            token = int(scores.argmax())
            out.append(token)
            ids.append(token)
            logits = self.logits(self.call([(embed_table[token], False)], keep=lambda i: True)[-1])
        return out


@pytest.mark.parametrize(("frames", "ratio"), [(16, 8), (5, 32), (7, 3)])
def test_beacon_memory_equals_the_naive_reference(model_and_processor, frames, ratio):
    """Logits within 1e-5 (fp32) and greedy tokens identical; (5, 32) has a last window without a beacon,
    (7, 3) carries a remainder from window to window."""
    model, processor = model_and_processor
    model.beacon_ratio = ratio
    try:
        embeds, ids, span = _inputs(model, processor, frames)
        got = model.forward_logits(embeds, visual_span=span)[0]
        naive = Naive(model, ratio)
        want = naive.prefill(embeds, span)
        assert torch.allclose(got.double(), want, atol=1e-5, rtol=0), float((got.double() - want).abs().max())
        tokens = model.generate(embeds, visual_span=span, input_ids=ids, max_new_tokens=5, eos_token_id=None)[0].tolist()
        table = model.language_model.get_input_embeddings().weight.detach()
        assert tokens == Naive(model, ratio).greedy(embeds, span, ids, table, 5, model.generation_config.repetition_penalty)
    finally:
        model.beacon_ratio = 8


def test_memory_keeps_beacons_not_raw_visual_tokens(model_and_processor):
    model, processor = model_and_processor
    embeds, ids, span = _inputs(model, processor, 16)
    model.forward_logits(embeds, visual_span=span)
    mem = model.last_memory
    visual = 16 * model.tokens_per_frame
    assert (mem["visual_tokens"], mem["beacons"], mem["sink"]) == (visual, visual // 8, span[0])
    assert mem["text_after"] == embeds.shape[1] - span[1]
    assert mem["calls"] == 1 + math.ceil(visual / model.config.beacon.window) + 1


def test_interleave_rule():
    from videoxl.beacon import interleave, plan_calls

    slots, rem = interleave(10, 4)
    assert slots.nonzero().flatten().tolist() == [4, 9] and rem == 2  # after raw tokens 4 and 8
    slots, rem = interleave(5, 4, remainder=2)
    assert slots.nonzero().flatten().tolist() == [2] and rem == 3  # the first after 4 - 2 raw tokens
    calls = plan_calls(30, 3, 23, window=8, ratio=4)
    assert [(c.kind, c.start, c.end, c.inputs) for c in calls] == [
        ("prefix", 0, 3, 3), ("window", 3, 11, 10), ("window", 11, 19, 10), ("window", 19, 23, 5), ("text", 23, 30, 7)]
    with pytest.raises(ValueError, match="does not fit"):
        plan_calls(10, 5, 12, 4, 2)


def test_batch_rows_decode_as_their_own_memories(model_and_processor):
    """Three streams in one batch give each stream's own result (how co-reasoning decodes X, Sp, Sn)."""
    model, processor = model_and_processor
    rows = [_inputs(model, processor, 8, seed) for seed in range(3)]
    batch = torch.cat([r[0] for r in rows])
    ids = torch.cat([r[1] for r in rows])
    together = model.forward_logits(batch, visual_span=rows[0][2])
    for i, (embeds, _, span) in enumerate(rows):
        assert torch.allclose(together[i], model.forward_logits(embeds, visual_span=span)[0], atol=1e-5)
    out = model.generate(batch, visual_span=rows[0][2], input_ids=ids, max_new_tokens=4, eos_token_id=None)
    for i, (embeds, row_ids, span) in enumerate(rows):
        assert out[i].tolist() == model.generate(embeds, visual_span=span, input_ids=row_ids, max_new_tokens=4, eos_token_id=None)[0].tolist()


def test_repetition_penalty_covers_the_expanded_prompt(model_and_processor):
    """Given the expanded ids, the penalty sees the prompt and the placeholders (the release generates from
    ids); without them, only the generated ids (as LongVA)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    model, processor = model_and_processor
    embeds, ids, span = _inputs(model, processor, 4)
    seen = []

    class Spy(LogitsProcessor):
        def __call__(self, input_ids, scores):
            seen.append(input_ids.clone())
            return scores

    model.generate(embeds, visual_span=span, input_ids=ids, max_new_tokens=2, eos_token_id=None, logits_processor=LogitsProcessorList([Spy()]))
    assert seen[0].tolist() == ids.tolist() and seen[1].shape[1] == ids.shape[1] + 1
    assert int((ids[0] == model.placeholder_id).sum()) == 4 * model.tokens_per_frame
    seen.clear()
    model.generate(embeds, visual_span=span, max_new_tokens=2, eos_token_id=None, logits_processor=LogitsProcessorList([Spy()]))
    assert seen[0].shape[1] == 0 and seen[1].shape[1] == 1


def test_release_format_loads_saves_and_reloads(tiny_videoxl_dir, tmp_path, model_and_processor):
    from safetensors import safe_open

    from videoxl import VideoXLForCausalLM

    model, _ = model_and_processor
    index = json.loads((tiny_videoxl_dir / "model.safetensors.index.json").read_text())["weight_map"]
    layers = model.language_model.config.num_hidden_layers
    for n in range(layers):
        for p in "qkv":
            assert f"model.layers.{n}.self_attn.beacon_{p}_proj.weight" in index and f"model.layers.{n}.self_attn.beacon_{p}_proj.bias" in index
    assert "model.beacon_embed_tokens.weight" in index and len(set(index.values())) >= 2
    raw = json.loads((tiny_videoxl_dir / "config.json").read_text())
    shard = tiny_videoxl_dir / index["model.embed_tokens.weight"]
    with safe_open(str(shard), "pt") as f:
        rows = f.get_slice("model.embed_tokens.weight").get_shape()[0]
    assert rows == raw["vocab_size"] and model.language_model.config.vocab_size == rows + 1  # the loader adds P
    assert model.placeholder_id == rows
    again = VideoXLForCausalLM.from_pretrained(str(tiny_videoxl_dir))
    assert torch.equal(again.language_model.lm_head.weight, model.language_model.lm_head.weight)  # P's row is repeatable
    out = model.save_pretrained(tmp_path / "saved")
    assert json.loads((out / "config.json").read_text())["vocab_size"] == raw["vocab_size"]
    reloaded = VideoXLForCausalLM.from_pretrained(str(out))
    for (k, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b.to(a.dtype)) or a.dtype != b.dtype, k


def test_checkpoint_without_beacon_weights_is_refused(tiny_videoxl_dir, tmp_path):
    """The release silently fills missing beacon weights from q/k/v_proj (a plain Qwen2 checkpoint loads);
    here the missing key is named."""
    import shutil

    from safetensors.torch import load_file, save_file

    from videoxl import VideoXLForCausalLM
    from vlm_common.checkpoints import CheckpointError

    ckpt = tmp_path / "no_beacon"
    shutil.copytree(tiny_videoxl_dir, ckpt)
    index_path = ckpt / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = index["weight_map"].pop("model.beacon_embed_tokens.weight")
    tensors = load_file(str(ckpt / shard))
    tensors.pop("model.beacon_embed_tokens.weight")
    save_file(tensors, str(ckpt / shard), metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="beacon_embed_tokens"):
        VideoXLForCausalLM.from_pretrained(str(ckpt))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("beacon_attn", "step-expansion", "beacon_attn='step-expansion' is not supported"),
    ("beacon_pos", "append", "beacon_pos='append' is not supported"),
    ("beacon_sink_size", 4, "beacon_sink_size=4"),
    ("beacon_stride", 32, "beacon_window=64 and beacon_stride=32"),
    ("beacon_param", ["q", "k", "v", "o"], "beacon_param="),
])
def test_settings_the_release_never_used_are_refused(tiny_videoxl_dir, field, value, message):
    from videoxl import VideoXLConfig

    raw = json.loads((tiny_videoxl_dir / "config.json").read_text())
    raw[field] = value
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        VideoXLConfig.from_dict(raw)


def test_absent_fields_are_inferred_and_listed(tiny_videoxl_dir):
    from videoxl import VideoXLConfig
    from videoxl.config import BEACON_DEFAULTS

    raw = json.loads((tiny_videoxl_dir / "config.json").read_text())
    for name in ("beacon_accum", "beacon_ratio", "beacon_window", "beacon_stride", "vision_config"):
        raw.pop(name)
    raw.update(mm_vision_tower="clip-vit-large-patch14-336", mm_hidden_size=1024)  # the release's script: a relative directory
    config = VideoXLConfig.from_dict(raw)
    assert set(config.inferred) == {"beacon_accum", "beacon_ratio", "beacon_window", "beacon_stride", "vision_config"}
    assert config.beacon.window == BEACON_DEFAULTS["beacon_window"] and config.beacon.ratio == (2, 4, 8)
    assert (config.vision_config.hidden_size, config.image_size, config.tokens_per_frame) == (1024, 336, 144)
    assert "vision_config" not in config.to_dict()  # written back as read


def test_beacon_ratio_is_checked(tiny_videoxl_dir):
    from videoxl import VideoXLForCausalLM

    with pytest.raises(ValueError, match="beacon_ratio=0"):
        VideoXLForCausalLM.from_pretrained(str(tiny_videoxl_dir), beacon_ratio=0)
    assert VideoXLForCausalLM.from_pretrained(str(tiny_videoxl_dir), beacon_ratio=4).beacon_ratio == 4
