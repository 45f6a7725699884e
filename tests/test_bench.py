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
