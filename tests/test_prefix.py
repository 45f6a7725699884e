"""Shared-prefix prefill of the three streams: exact accounting and the same tokens/logits as prefilling
each stream separately (which test_pipeline checks against a naive uncached decoder)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import three_streams

from cos.decoding import co_reasoning_generate
from cos.prefix import cache_from_tensors, common_prefix_length, crop_cache, prefill_shared, stack_caches

QUESTION = "Which shape appears?\nA. circle\nB. square\nC. cross\nD. triangle"


def test_common_prefix_length_on_constructed_rows():
    a = torch.arange(12.0).view(6, 2)
    b = a.clone()
    assert common_prefix_length(a, b) == 6
    b[4, 1] = -1
    assert common_prefix_length(a, b) == 4
    b[0, 0] = -1
    assert common_prefix_length(a, b) == 0
    with pytest.raises(ValueError, match="same shape"):
        common_prefix_length(a, b[:3])


@torch.inference_mode()
@pytest.mark.parametrize("code", [[0, 0, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 0]])
def test_shared_prefill_gives_the_same_tokens_and_logits(backend, frames, code):
    code = np.array(code, dtype=np.int8)
    streams = torch.cat(three_streams(backend, frames, code, QUESTION))
    kwargs = dict(max_new_tokens=8, repetition_penalty=backend.repetition_penalty, return_dict_in_generate=True, output_scores=True)
    plain = co_reasoning_generate(backend, streams, None, 0.5, **kwargs)
    cache, stats = prefill_shared(backend.prefill, streams)
    shared = co_reasoning_generate(backend, streams, None, 0.5, cache=cache, **kwargs)
    assert shared.sequences.tolist() == plain.sequences.tolist()
    torch.testing.assert_close(torch.stack(shared.scores), torch.stack(plain.scores), atol=1e-4, rtol=0)
    assert stats.computed < stats.unshared


@torch.inference_mode()
def test_prefill_accounting_follows_the_first_replaced_frames(backend, frames):
    code = np.array([0, 0, 1, 1, 0, 0, 0, 0], dtype=np.int8)  # Sp changes frame 0, Sn changes frame 2
    streams = torch.cat(three_streams(backend, frames, code, QUESTION))
    length = streams.shape[1]
    text = int((backend.prompt_ids(QUESTION)[0] == -200).nonzero()[0, 0])  # tokens before the video
    per_frame = (length - (backend.prompt_ids(QUESTION).shape[1] - 1)) // len(code)
    _, stats = prefill_shared(backend.prefill, streams)
    assert stats.parents == [None, 0, 0]
    assert stats.forks == [0, text, text + 2 * per_frame]
    assert stats.computed == 3 * (length - 1) - text - (text + 2 * per_frame)
    assert stats.unshared == 3 * (length - 1)


def test_stack_caches_rejects_unequal_lengths(backend, frames):
    with torch.inference_mode():
        a = backend.prefill(torch.zeros(1, 3, backend.model.language_model.config.hidden_size))
        b = backend.prefill(torch.zeros(1, 4, backend.model.language_model.config.hidden_size))
    with pytest.raises(ValueError, match="equal lengths"):
        stack_caches([a, b])


@torch.inference_mode()
def test_chunked_continuation_prefill_is_exact(backend, frames, monkeypatch):
    code = np.array([0, 0, 0, 1, 1, 0, 0, 0], dtype=np.int8)
    streams = torch.cat(three_streams(backend, frames, code, QUESTION))
    kwargs = dict(max_new_tokens=6, repetition_penalty=backend.repetition_penalty, return_dict_in_generate=True, output_scores=True)
    whole, _ = prefill_shared(backend.prefill, streams)
    monkeypatch.setattr(backend, "prefill_chunk", 7)  # many chunks, one of them ragged
    chunked, _ = prefill_shared(backend.prefill, streams)
    for a, b in zip(whole.layers, chunked.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=0)
    out_whole = co_reasoning_generate(backend, streams, None, 0.5, cache=whole, **kwargs)
    out_chunked = co_reasoning_generate(backend, streams, None, 0.5, cache=chunked, **kwargs)
    assert out_whole.sequences.tolist() == out_chunked.sequences.tolist()


def test_threaded_preprocess_equals_serial(backend, frames, monkeypatch):
    serial = backend.processor.preprocess(frames)
    monkeypatch.setattr(backend.processor, "preprocess_chunk", 3)
    monkeypatch.setattr(backend.processor, "num_workers", 4)
    assert torch.equal(backend.processor.preprocess(frames), serial)


def test_crop_cache_is_views_and_continuing_leaves_the_source_untouched():
    keys, values = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    source = cache_from_tensors([(keys, values)])
    assert source.layers[0].keys is keys and source.get_seq_length() == 6  # the tensors themselves
    view = crop_cache(source, 4)
    assert view.get_seq_length() == 4
    assert view.layers[0].keys.untyped_storage().data_ptr() == keys.untyped_storage().data_ptr()  # no copy
    new_k, new_v = torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4)
    grown_k, _ = view.update(new_k, new_v, 0)
    torch.testing.assert_close(grown_k, torch.cat([keys[..., :4, :], new_k], dim=-2), atol=0, rtol=0)
    assert source.layers[0].keys is keys and source.get_seq_length() == 6


def test_stack_caches_equals_concatenation_and_releases_its_inputs():
    pairs = [[(torch.randn(1, 2, 5, 3), torch.randn(1, 2, 5, 3)) for _ in range(3)] for _ in range(2)]  # 2 streams, 3 layers
    expected = [(torch.cat([pairs[0][i][0], pairs[1][i][0]]), torch.cat([pairs[0][i][1], pairs[1][i][1]])) for i in range(3)]
    caches = [cache_from_tensors(p) for p in pairs]
    stacked = stack_caches(caches)
    for layer, (k, v) in zip(stacked.layers, expected):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
    assert all(layer.keys is None for c in caches for layer in c.layers)  # consumed


_PEAK_SCRIPT = r"""
import sys
from pathlib import Path
import torch
from transformers import DynamicCache
from cos.prefix import cache_from_tensors, stack_caches

def status(field):
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024

layers, shape = 28, (1, 4, 2048, 128)  # 3 streams x 28 layers x K,V of 4 MiB: 672 MiB
caches = [cache_from_tensors([(torch.randn(shape), torch.randn(shape)) for _ in range(layers)]) for _ in range(3)]
stacked_bytes = 3 * layers * 2 * 4 * 2048 * 128 * 4
Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS
base = status("VmRSS")
if sys.argv[1] == "stack_caches":
    out = stack_caches(caches)
else:  # the transformers constructor: every layer is copied again while the stacked list is alive
    data = []
    for i in range(layers):
        data.append(tuple(torch.cat([getattr(c.layers[i], name) for c in caches]) for name in ("keys", "values")))
        for c in caches:
            c.layers[i].keys = c.layers[i].values = None
    out = DynamicCache(ddp_cache_data=data)
assert out.get_seq_length() == 2048 and out.layers[0].keys.shape[0] == 3
print((status("VmHWM") - base) / stacked_bytes)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset and read the peak RSS")
def test_stacking_caches_keeps_one_copy_peak_rss(tmp_path):
    """Stacking three streams' caches must not hold a second copy: the peak above the inputs is about one
    stacked layer (1/28 of the stacked size here), where ``DynamicCache(ddp_cache_data=...)`` costs a whole copy."""
    script = tmp_path / "peak.py"
    script.write_text(_PEAK_SCRIPT)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # large blocks come from mmap and go back on free

    def extra(how: str) -> float:
        proc = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return float(proc.stdout.strip().splitlines()[-1])

    ours, naive = extra("stack_caches"), extra("ddp_cache_data")
    assert naive > 0.9, f"the measurement cannot see a second copy (naive peak {naive:.2f} of the stacked size)"
    assert ours < 0.15, f"stack_caches peaked {ours:.2f} x the stacked size above its inputs (one layer is 0.04)"
