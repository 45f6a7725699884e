"""Shared-prefix prefill of the three streams: exact accounting and the same tokens/logits as prefilling
each stream separately (which test_pipeline checks against a naive uncached decoder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import three_streams

from cos.decoding import co_reasoning_generate
from cos.prefix import common_prefix_length, prefill_shared, stack_caches

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
