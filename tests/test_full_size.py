"""``cos bench --size full``: the 7B models' exact shapes with random weights drawn on the device.

The full size itself needs a GPU (checked: the command refuses on a CPU). What runs here: the full configs
build the real parameter shapes (on the meta device, no memory), random weights are drawn directly in the
requested dtype with the checkpoint's exact parameter layout (tiny sizes, CPU), the LLaVA-1.5-13B-shaped
scorer builder works at a small width, and the bench reports its floor and throughput on ``small``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cos_runtime import registry

#: parameters of each base model at full size (LongVA-7B: Qwen2-7B + CLIP ViT-L/14-336 + projector; Video-XL adds
#: the beacon projections; LLaVA-Video has SigLIP so400m without its last layer), counted from the configs
FULL_PARAMETERS = {"longva": 7_936_000_000, "llava_video": 8_030_000_000, "videoxl": 8_398_000_000}


def _model_class(name):
    from llava_video import LlavaVideoForCausalLM
    from longva import LongVAForCausalLM
    from videoxl import VideoXLForCausalLM

    return {"longva": LongVAForCausalLM, "llava_video": LlavaVideoForCausalLM, "videoxl": VideoXLForCausalLM}[name]


def _config(name, directory):
    cls = _model_class(name)
    if name == "llava_video":
        from llava_video.config import LlavaVideoConfig

        return LlavaVideoConfig.from_json_file(directory / "config.json", mm_spatial_pool_mode="average", mm_newline_position="grid")
    return cls.config_class.from_json_file(directory / "config.json")


@pytest.mark.parametrize("name", sorted(FULL_PARAMETERS))
def test_full_configs_have_the_7b_shapes(tmp_path, name):
    from accelerate import init_empty_weights

    directory = tmp_path / name
    registry.load_module(registry.get(name)).make_test_checkpoint(directory, size="full", seed=0)
    assert not list(directory.glob("*.safetensors"))  # no weights on disk: they are drawn on the device
    config = _config(name, directory)
    with init_empty_weights(include_buffers=False):
        model = _model_class(name)(config)
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(FULL_PARAMETERS[name], rel=1e-3)
    lm = config.text_config
    assert (lm.hidden_size, lm.num_hidden_layers, lm.num_attention_heads, lm.num_key_value_heads, lm.intermediate_size) == (3584, 28, 28, 4, 18944)
    assert shapes["language_model.model.embed_tokens.weight"] == (152064, 3584) and shapes["language_model.lm_head.weight"] == (152064, 3584)
    assert model.tokens_per_frame == (182 if name == "llava_video" else 144)
    vision = config.vision_config
    expected_tower = (1152, 27, 384) if name == "llava_video" else (1024, 24, 336)  # so400m / ViT-L/14-336, by hub id
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size) == expected_tower


@pytest.mark.parametrize("name", ["longva", "llava_video", "videoxl"])
def test_random_weights_are_drawn_in_the_target_dtype_with_the_checkpoint_layout(name, request):
    """``load(..., random_weights=seed)`` (what --size full uses) builds exactly the parameters a checkpoint fills,
    each directly in the requested dtype (no float32 copy), repeatably per seed, and the model runs."""
    directory = request.getfixturevalue(f"tiny_{name}_dir")
    module = registry.load_module(registry.get(name))
    options = module.Options(pretrained=str(directory))
    loaded = module.load(options, "cpu", torch.float32)
    drawn = module.load(options, "cpu", torch.bfloat16, random_weights=0)
    again = module.load(options, "cpu", torch.bfloat16, random_weights=0)
    ref = dict(loaded.model.named_parameters())
    got = dict(drawn.model.named_parameters())
    vocab = drawn.model.language_model.config.vocab_size
    for key, param in got.items():
        assert param.dtype == torch.bfloat16 and param.device.type == "cpu", key
        if key.endswith(("model.embed_tokens.weight", "lm_head.weight")):  # random weights keep config.json's vocabulary (no shrink to the tokenizer)
            assert param.shape[0] == vocab and param.shape[1:] == ref[key].shape[1:], key
        else:
            assert param.shape == ref[key].shape, key
        assert torch.equal(param, dict(again.model.named_parameters())[key]), key
    assert set(got) == set(ref)
    norms = [k for k in got if k.endswith("norm.weight")]
    assert norms and all(bool((got[k] == 1).all()) for k in norms)
    frames = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        feats = drawn.encode_frames(drawn.preprocess(frames))
        logits = drawn.forward_logits(drawn.embed_prompt(drawn.prompt_ids("Is there a red ball?"), feats)) if name != "videoxl" else None
    assert feats.dtype == torch.bfloat16 and torch.isfinite(feats.float()).all()
    if logits is not None:
        assert logits.shape[-1] == vocab and torch.isfinite(logits).all()


def test_full_llava_scorer_builder_scores_on_the_device(tmp_path):
    """The LLaVA-1.5-13B-shaped scorer's builder (random weights made on the device, 336 px, 576 image tokens), at a
    small width: one score per mosaic, in the requested dtype."""
    from PIL import Image

    from cos_runtime.tiny_llava import build_full_llava_scorer

    small_vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    small_text = dict(vocab_size=32064, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5)
    scorer = build_full_llava_scorer("cpu", torch.bfloat16, mode="logits", batch_size=2, vision=small_vision, text=small_text)
    assert scorer.model.dtype == torch.bfloat16 and scorer.dtype == torch.bfloat16
    mosaics = [Image.fromarray(np.full((672, 672, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    inputs = scorer._inputs(mosaics[:1], "Is there a red ball?")
    image_id = scorer.model.config.image_token_index
    assert int((inputs["input_ids"] == image_id).sum()) == 576 and tuple(inputs["pixel_values"].shape[-2:]) == (336, 336)
    scores = scorer.score(mosaics, "Is there a red ball?")
    assert len(scores.scores) == 3 and all(0.0 <= s <= 1.0 for s in scores.scores)


def test_bench_full_size_refuses_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cos_runtime", "bench", "--size", "full", "--device", "cpu", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--size full" in proc.stderr and "no CUDA device" in proc.stderr and "--size small" in proc.stderr
    assert not any(tmp_path.iterdir())  # refused before building anything


def test_bench_small_reports_floor_throughput_and_scorer_profile(tmp_path):
    """The report's format on the ``small`` checkpoint (the CPU size): stage table, floor, tokens/s, scorer profile."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "cos_runtime", "bench", "--size", "small", "--frames", "8", "--repeats", "1", "--release-repeats", "1",
           "--new-tokens", "3", "--workdir", str(tmp_path / "work"), "--scorer-profile", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["size"] == "small" and report["checkpoint"] == "small-longva" and report["parameters"] > 0
    entry = report["frames"]["8"]
    floor = entry["floor"]
    assert floor["total"] == pytest.approx(floor["video"] + floor["scorer"] + floor["prefills"] + floor["decode"])
    uni, cos = entry["uniform"], entry["cos"]
    assert floor["prefills"] == pytest.approx(cos["streams"] * uni["prefill"])
    assert entry["ratios"]["cos_over_floor"] == pytest.approx(cos["total"] / floor["total"])
    assert uni["sequence_length"] == 8 * 144 + uni["sequence_length"] % 144  # 144 tokens per frame + the text
    rates = entry["throughput"]
    assert rates["uniform_prefill_tokens_per_s"] == pytest.approx(uni["sequence_length"] / uni["prefill"])
    assert rates["uniform_decode_tokens_per_s"] == pytest.approx(2 / uni["decode"])
    profile = entry["scorer_profile"]
    assert {(r["mode"], r["batch"]) for r in profile} == {(m, b) for m in ("generate", "logits") for b in (1, 4, 8, 16, 32)}
    assert all(r["mosaics"] == 2 and r["seconds"] > 0 for r in profile)
    for text in ("floor (unavoidable)", "tokens/s: uniform_prefill", "cos_over_floor", "scorer, 2 mosaics per video"):
        assert text in proc.stdout


def test_full_size_path_runs_end_to_end_at_a_small_width(tmp_path, monkeypatch):
    """Everything ``--size full`` does besides the widths — a weightless config, parameters drawn on the device,
    the LLaVA-1.5-13B-shaped scorer built on the device (per sample for the release-style run), the report — run on
    the CPU with the full sizes narrowed (the refusal sits in the command, not in run_bench)."""
    import argparse

    import longva.tiny
    from cos_runtime import bench, tiny_llava

    small = {**longva.tiny.SIZES["small"], "text": {**longva.tiny.SIZES["small"]["text"], "vocab_size": 640}}
    monkeypatch.setitem(longva.tiny.SIZES, "full", small)
    monkeypatch.setattr(tiny_llava, "FULL_VISION", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                        projection_dim=32))
    monkeypatch.setattr(tiny_llava, "FULL_TEXT", dict(vocab_size=32064, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096))
    args = argparse.Namespace(workdir=str(tmp_path), size="full", backend="longva", frames=[8], repeats=1, release_repeats=1, new_tokens=3,
                              device="cpu", dtype="auto", attn_implementation="sdpa", scorer="llava", share_prefix="auto",
                              scorer_batch_size=16, scorer_4bit=False, scorer_profile=False, profile=False, smoke=False, decisions="truth",
                              out=str(tmp_path / "full.json"))
    report = bench.run_bench(args)
    assert not list((tmp_path / "full-longva").glob("*.safetensors"))  # nothing was read from disk
    assert report["size"] == "full" and report["parameters"] > 0
    assert "random llava-1.5-13b shapes" in report["scorer"]
    entry = report["frames"]["8"]
    assert entry["tokens_equal_release"] is True and entry["cos"]["sequence_length"] > 8 * 144
    assert entry["cos"]["streams"] == 3 and entry["floor"]["prefills"] == pytest.approx(3 * entry["uniform"]["prefill"])
    assert set(entry["floor"]) == {"video", "scorer", "prefills", "decode", "total"}


def test_ground_truth_decisions_follow_the_needle_and_time_the_scorer():
    """The bench composes with the needle's true code (a random scorer answers all-no, which would make CoS the
    baseline) while the scorer still runs: constructed code, shots of 4, a padded last shot."""
    from cos.scoring import ShotScorer, ShotScores
    from cos_runtime.bench import GroundTruthDecisions, needle_code

    doc = {"num_frames": 100, "needle_start": 40, "needle_end": 52}
    code = needle_code(doc, 10, 4)  # frames linspace(0, 99, 10) = 0, 11, 22, 33, 44, 55, 66, 77, 88, 99
    assert code.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    missed = needle_code({"num_frames": 100, "needle_start": 45, "needle_end": 47}, 10, 4)  # no sampled frame in [45, 47)
    assert missed.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]  # the shot of frame 44 (nearest the middle) is marked

    class Counting(ShotScorer):
        name, calls = "counting", 0

        def score(self, mosaics, question):
            Counting.calls += 1
            return ShotScores([0.0] * len(mosaics), [0] * len(mosaics), ["no"] * len(mosaics))

    truth = GroundTruthDecisions(Counting(), 4, "pad")
    truth.code = code
    scores = truth.score(["m0", "m1", "m2"], "q")
    assert Counting.calls == 1 and scores.decisions.tolist() == [0, 1, 0] and scores.responses == ["no"] * 3
    with pytest.raises(ValueError, match="2 mosaics but the code has 3 shots"):
        truth.score(["m0", "m1"], "q")
