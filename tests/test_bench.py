"""`cos bench --smoke` runs end to end and writes the report it promises (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("backend", ["longva", "llava_video", "videoxl"])
def test_bench_smoke_writes_parseable_report(tmp_path, backend):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "cos_runtime", "bench", "--backend", backend, "--smoke", "--repeats", "1", "--workdir", str(tmp_path / "work"),
           "--out", str(out), "--plot", str(tmp_path / "bench.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["backend"] == backend and sorted(report["frames"]) == ["16", "8"]
    cached = backend != "videoxl"  # Video-XL has no cached prefill: its beacon memory is built inside generate
    for entry in report["frames"].values():
        expected = {"cos_over_uniform", "release_over_cos", "cos_peak_rss_over_uniform"} | ({"batched_step_over_single"} if cached else set())
        assert expected <= set(entry["ratios"])
        assert all(v > 0 for v in entry["ratios"].values())
        assert entry["tokens_equal_release"] is True  # the optimised path answers exactly like the naive one
        assert entry["cos"]["streams"] in (1, 3) and entry["uniform"]["streams"] == 1
        if cached:
            assert 0.0 <= entry["prefix_saved_fraction"]["needle"] < 1.0
        else:
            assert entry["prefix_saved_fraction"] is None and entry["visual_memory"]["beacon_ratio"] == 8
    assert "ratios: cos_over_uniform" in proc.stdout
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_selector_only_reports_cost_per_minute_of_video(tmp_path):
    """`cos bench --selector bolt --selector-only`: candidates at 1/s of a 20-s synthetic video, scored by the tiny CLIP;
    stage seconds consistent with the total, per-minute figures, a frame count above the candidates skipped."""
    out, work = tmp_path / "bench.json", tmp_path / "work"
    cmd = [sys.executable, "-m", "cos_runtime", "bench", "--smoke", "--selector", "bolt", "--selector-only", "--selector-seconds", "20",
           "--frames", "8,32", "--repeats", "2", "--workdir", str(work), "--out", str(out), "--plot", str(tmp_path / "bench.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["frames"] == {}  # no pipeline ran
    sel = report["selector"]
    assert sel["selector"] == "bolt" and sel["model"] == "tiny random clip" and sel["shapes"].startswith("vision 32 wide")
    assert sel["video"]["seconds"] == 20 and sel["video"]["frames"] == 600 and (sel["video"]["width"], sel["video"]["height"]) == (640, 360)
    assert (work / sel["video"]["file"]).stat().st_size > 100_000  # real H.264, every frame different
    e = sel["frames"]["8"]
    assert e["candidates"] == 20 and e["fallback"] is None
    parts = [e["decode_s"], e["score_s"], e["rule_s"]]
    assert min(parts) >= 0 and e["score_s"] > 0 and sum(parts) <= e["total_s"] + 1e-3
    for key in ("decode_s", "score_s", "total_s"):
        assert e[f"{key}_per_min"] == pytest.approx(e[key] * 60 / 20)
    assert e["candidates_per_s"] == pytest.approx(20 / e["total_s"]) and e["peak_rss_mib"] > 0
    skipped = sel["frames"]["32"]  # 32 > 20 candidates: the selector would fall back and score nothing
    assert set(skipped) == {"candidates", "skipped"} and skipped["candidates"] == 20 and "32 frames > 20" in skipped["skipped"]
    assert "\nselector bolt — tiny random clip (vision 32 wide" in proc.stdout and "per min of video" in proc.stdout
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_real_shapes_are_the_released_models():
    """The selector bench's scoring models at --size small/full: the released configs' widths, depths and sizes."""
    from cos_runtime.tiny_text_image import real_shapes_config

    blip = real_shapes_config("blip")  # Salesforce/blip-itm-large-coco
    v, t = blip.vision_config, blip.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (1024, 24, 16, 4096)
    assert (v.patch_size, v.image_size) == (16, 384)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size) == (768, 12, 12, 3072)
    assert (t.vocab_size, t.encoder_hidden_size) == (30524, 1024)
    assert t.bos_token_id + 1 < t.vocab_size  # BLIP's [ENC] row
    clip = real_shapes_config("clip", image_size=336)  # openai/clip-vit-large-patch14-336
    v, t = clip.vision_config, clip.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (1024, 24, 16, 4096)
    assert (v.patch_size, v.image_size) == (14, 336)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size) == (768, 12, 12, 3072)
    assert (t.vocab_size, clip.projection_dim) == (49408, 768)
    assert t.eos_token_id < t.vocab_size and v.hidden_act == t.hidden_act == "quick_gelu"
