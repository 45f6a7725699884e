"""Video co-reasoning (Eq. 8) through ``generate`` vs a naive, independently written reference.

Defect 1 of the original release (Sp and Sn never condition the output; X's cache shared) would fail
``test_matches_naive_reference`` and ``test_positive_and_negative_streams_condition_the_output``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

from cos.decoding import CoReasoningLogitsProcessor, co_reasoning_generate, stack_streams

TOKENS = 8


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,  # large enough for confident, well-separated logits
        attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(cfg).eval().to(torch.float32)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def streams(lm, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    emb = lm.get_input_embeddings()
    with torch.no_grad():
        return [emb(torch.randint(0, 256, (1, n), generator=g)) for n in lengths]


def _penalise(logits, tokens, penalty):
    out = logits.clone()
    for t in set(tokens):
        out[t] = out[t] / penalty if out[t] > 0 else out[t] * penalty
    return out


@torch.no_grad()
def naive_co_reasoning(lm, x, sp, sn, alpha, steps, penalty=1.0, penalise_first=False, suppress=(), eos=None, min_new_tokens=0):
    """Reference: three full forwards without cache per token, each on its own unpadded stream.

    The repetition penalty is applied after fusing (the release), or, with ``penalise_first``, to each
    stream's logits before fusing (what ``generate``'s built-in penalty would do). Token ids in ``suppress``
    and, for the first ``min_new_tokens`` steps, ``eos`` get -inf in the fused scores; decoding stops after
    ``eos``."""
    emb = lm.get_input_embeddings()
    rows = [x.clone(), sp.clone(), sn.clone()]
    tokens, fused_all = [], []
    for _ in range(steps):
        last = [lm(inputs_embeds=r, use_cache=False).logits[0, -1].float() for r in rows]
        if penalise_first:
            last = [_penalise(v, tokens, penalty) for v in last]
        fused = last[0] + alpha * (last[1] - last[2])
        if not penalise_first:
            fused = _penalise(fused, tokens, penalty)
        banned = set(suppress)
        if eos is not None and len(tokens) < min_new_tokens:
            banned.add(eos)
        for t in banned:
            fused[t] = float("-inf")
        tok = int(fused.argmax())
        tokens.append(tok)
        fused_all.append(fused)
        if tok == eos:
            break
        e = emb(torch.tensor([[tok]]))
        rows = [torch.cat([r, e], dim=1) for r in rows]
    return tokens, torch.stack(fused_all)


def run(lm, groups, alpha, **kw):
    flat = [s for g in groups for s in g]
    embeds, mask = stack_streams(flat)
    return co_reasoning_generate(
        lm, embeds, mask, alpha, max_new_tokens=TOKENS, return_dict_in_generate=True, output_scores=True,
        output_logits=True, **kw
    )


def test_matches_naive_reference(lm):
    x, sp, sn = streams(lm, (19, 19, 19), seed=1)
    out = run(lm, [(x, sp, sn)], 0.6)
    tokens, fused = naive_co_reasoning(lm, x, sp, sn, 0.6, TOKENS)
    assert out.sequences.shape == (1, TOKENS)
    assert out.sequences[0].tolist() == tokens
    got = torch.stack(out.scores)[:, 0]
    torch.testing.assert_close(got, fused, atol=1e-4, rtol=0)


def test_positive_and_negative_streams_condition_the_output(lm):
    x, sp, sn = streams(lm, (17, 17, 17), seed=2)
    out = run(lm, [(x, sp, sn)], 0.8)
    fused = torch.stack(out.scores)[:, 0]
    raw_x = torch.stack(out.logits)[:, 0]
    # the fused scores are not the X-only logits ...
    assert (fused - raw_x).abs().max() > 1.0
    # ... and equal l(X) + α (l(Sp) − l(Sn)) from the streams' own raw logits
    raw = torch.stack(out.logits)
    torch.testing.assert_close(fused, raw[:, 0] + 0.8 * (raw[:, 1] - raw[:, 2]), atol=1e-5, rtol=0)
    # with Sp = Sn = X the co-reasoning term vanishes: different from the real Sp/Sn case
    same = run(lm, [(x, x, x)], 0.8)
    first_same = same.scores[0][0]
    assert (fused[0] - first_same).abs().max() > 1.0
    plain = lm.generate(inputs_embeds=x, attention_mask=torch.ones(1, 17, dtype=torch.long), max_new_tokens=TOKENS,
                        do_sample=False, repetition_penalty=1.0)
    assert same.sequences[0].tolist() == plain[0].tolist()
    assert out.sequences[0].tolist() != plain[0].tolist()


def test_alpha_zero_is_plain_greedy_of_x(lm):
    x, sp, sn = streams(lm, (21, 21, 21), seed=3)
    out = run(lm, [(x, sp, sn)], 0.0)
    plain = lm.generate(inputs_embeds=x, attention_mask=torch.ones(1, 21, dtype=torch.long), max_new_tokens=TOKENS,
                        do_sample=False, repetition_penalty=1.0, return_dict_in_generate=True, output_scores=True)
    assert out.sequences[0].tolist() == plain.sequences[0].tolist()
    torch.testing.assert_close(torch.stack(out.scores)[:, 0], torch.stack(plain.scores)[:, 0], atol=1e-4, rtol=0)


def test_two_samples_batched_equal_each_alone(lm):
    a = streams(lm, (23, 23, 23), seed=4)
    b = streams(lm, (15, 15, 15), seed=5)
    both = run(lm, [a, b], [0.6, 0.25])
    alone_a = run(lm, [a], 0.6)
    alone_b = run(lm, [b], 0.25)
    assert both.sequences.shape == (2, TOKENS)
    assert both.sequences[0].tolist() == alone_a.sequences[0].tolist()
    assert both.sequences[1].tolist() == alone_b.sequences[0].tolist()
    s = torch.stack(both.scores)
    torch.testing.assert_close(s[:, 0], torch.stack(alone_a.scores)[:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(s[:, 1], torch.stack(alone_b.scores)[:, 0], atol=1e-4, rtol=0)
    tokens_b, fused_b = naive_co_reasoning(lm, *b, 0.25, TOKENS)
    assert both.sequences[1].tolist() == tokens_b
    torch.testing.assert_close(s[:, 1], fused_b, atol=1e-4, rtol=0)


def test_repetition_penalty_is_applied_after_fusing(lm):
    x, sp, sn = streams(lm, (13, 13, 13), seed=6)
    lm.generation_config.repetition_penalty = 1.5  # a checkpoint default must not leak in before fusing
    try:
        out = run(lm, [(x, sp, sn)], 0.5, repetition_penalty=3.0)
        plain = run(lm, [(x, sp, sn)], 0.5)
    finally:
        lm.generation_config.repetition_penalty = 1.0
    tokens, fused = naive_co_reasoning(lm, x, sp, sn, 0.5, TOKENS, penalty=3.0)
    assert out.sequences[0].tolist() == tokens
    torch.testing.assert_close(torch.stack(out.scores)[:, 0], fused, atol=1e-4, rtol=0)
    ref_plain, fused_plain = naive_co_reasoning(lm, x, sp, sn, 0.5, TOKENS)
    assert plain.sequences[0].tolist() == ref_plain
    torch.testing.assert_close(torch.stack(plain.scores)[:, 0], fused_plain, atol=1e-4, rtol=0)
    # the penalty changes the scores, and penalising before fusing would give other scores
    assert (fused - fused_plain).abs().max() > 1.0
    _, fused_first = naive_co_reasoning(lm, x, sp, sn, 0.5, TOKENS, penalty=3.0, penalise_first=True)
    assert (fused - fused_first).abs().max() > 1.0


def test_sampling_in_checkpoint_config_is_overridden(lm):
    x, sp, sn = streams(lm, (11, 11, 11), seed=7)
    lm.generation_config.do_sample, lm.generation_config.top_k = True, 5
    try:
        out = run(lm, [(x, sp, sn)], 0.6)
    finally:
        lm.generation_config.do_sample, lm.generation_config.top_k = False, 50
    assert out.sequences[0].tolist() == naive_co_reasoning(lm, x, sp, sn, 0.6, TOKENS)[0]


def test_plain_tensor_return_and_eos(lm):
    x, sp, sn = streams(lm, (9, 9, 9), seed=8)
    full = run(lm, [(x, sp, sn)], 0.6).sequences[0].tolist()
    embeds, mask = stack_streams([x, sp, sn])
    eos = full[3]
    first = full.index(eos)
    seq = co_reasoning_generate(lm, embeds, mask, 0.6, max_new_tokens=TOKENS, eos_token_id=eos, pad_token_id=255)
    assert isinstance(seq, torch.Tensor) and seq.shape[0] == 1
    assert seq[0, : first + 1].tolist() == full[: first + 1]
    assert seq[0, first + 1 :].eq(255).all()


def _run_with_masks(lm, group, alpha, where, **masks):
    """``run`` with masking options passed as ``generate`` kwargs or set on the checkpoint's generation_config."""
    if where == "kwargs":
        return run(lm, [group], alpha, **masks)
    saved = {k: getattr(lm.generation_config, k) for k in masks}
    try:
        for k, v in masks.items():
            setattr(lm.generation_config, k, v)
        return run(lm, [group], alpha)
    finally:
        for k, v in saved.items():
            setattr(lm.generation_config, k, v)


def _assert_matches_masked_reference(out, tokens, fused):
    assert not torch.isnan(torch.stack(out.scores)).any() and not torch.isnan(torch.stack(out.raw.scores)).any()
    assert out.sequences[0].tolist() == tokens
    got = torch.stack(out.scores)[:, 0]
    assert got.shape == fused.shape
    assert torch.equal(torch.isneginf(got), torch.isneginf(fused))
    finite = torch.isfinite(fused)
    torch.testing.assert_close(got[finite], fused[finite], atol=1e-4, rtol=0)


@pytest.mark.parametrize("where", ["kwargs", "generation_config"])
def test_min_new_tokens_keeps_eos_masked_without_nan(lm, where):
    # min_new_tokens masks EOS with -inf in every row before the fuser: -inf + α(-inf − -inf) must not
    # become NaN (argmax would then pick the masked EOS)
    x, sp, sn = streams(lm, (14, 14, 14), seed=10)
    free = run(lm, [(x, sp, sn)], 0.7).sequences[0].tolist()
    eos = free[1]  # greedy would stop at step 1
    out = _run_with_masks(lm, (x, sp, sn), 0.7, where, min_new_tokens=3, eos_token_id=eos)
    tokens, fused = naive_co_reasoning(lm, x, sp, sn, 0.7, TOKENS, eos=eos, min_new_tokens=3)
    assert eos not in tokens[:3] and tokens[0] == free[0] and tokens[1] != free[1]
    _assert_matches_masked_reference(out, tokens, fused)
    assert torch.isneginf(fused[:3, eos]).all()


@pytest.mark.parametrize("where", ["kwargs", "generation_config"])
def test_suppress_tokens_stay_suppressed_without_nan(lm, where):
    x, sp, sn = streams(lm, (14, 14, 14), seed=11)
    free = run(lm, [(x, sp, sn)], 0.7).sequences[0].tolist()
    banned = sorted(set(free))  # every token of the unmasked answer
    out = _run_with_masks(lm, (x, sp, sn), 0.7, where, suppress_tokens=banned)
    tokens, fused = naive_co_reasoning(lm, x, sp, sn, 0.7, TOKENS, suppress=banned)
    assert len(tokens) == TOKENS and not set(tokens) & set(banned)
    _assert_matches_masked_reference(out, tokens, fused)
    assert torch.isneginf(fused[:, banned]).all()


def test_processor_contract():
    proc = CoReasoningLogitsProcessor([0.5, 1.0])
    assert proc.requires_greedy is True
    scores = torch.randn(6, 10)
    ids = torch.zeros(6, 0, dtype=torch.long)
    out = proc(ids, scores)
    assert out is not scores and out.shape == scores.shape
    s = scores.view(2, 3, 10)
    want = torch.stack([s[0, 0] + 0.5 * (s[0, 1] - s[0, 2]), s[1, 0] + 1.0 * (s[1, 1] - s[1, 2])])
    torch.testing.assert_close(out, want.repeat_interleave(3, 0))
    before = scores.clone()
    proc(ids, scores)
    assert torch.equal(scores, before)  # not edited in place
    masked = scores.clone()
    masked[0:3, 4] = float("-inf")  # masked in every row of group 0 (e.g. min_new_tokens on EOS)
    masked[3:6, 7] = float("-inf")
    out = proc(ids, masked)
    assert not out.isnan().any()
    assert torch.isneginf(out[0:3, 4]).all() and torch.isneginf(out[3:6, 7]).all()
    assert torch.isfinite(out[3:6, 4]).all() and torch.isfinite(out[0:3, 7]).all()
    keep = torch.ones(10, dtype=torch.bool)
    keep[[4, 7]] = False
    torch.testing.assert_close(out[:, keep], want.repeat_interleave(3, 0)[:, keep])


def test_processor_errors():
    with pytest.raises(ValueError, match="multiple of 3"):
        CoReasoningLogitsProcessor(0.5)(torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="2 alphas for 1 sample groups"):
        CoReasoningLogitsProcessor([0.5, 0.5])(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="diverged"):
        CoReasoningLogitsProcessor(0.5)(torch.tensor([[1], [1], [2]]), torch.zeros(3, 5))
    for bad in (-0.1, 1.5, float("nan"), "auto", True):
        with pytest.raises(ValueError, match="alpha"):
            CoReasoningLogitsProcessor(bad)
    with pytest.raises(ValueError, match="group_size"):
        CoReasoningLogitsProcessor(0.5, group_size=2)
    with pytest.raises(ValueError, match="repetition_penalty"):
        CoReasoningLogitsProcessor(0.5, repetition_penalty=0.0)


def test_generate_errors(lm):
    x, sp, sn = streams(lm, (5, 5, 5), seed=9)
    embeds, mask = stack_streams([x, sp, sn])
    for kw in ({"do_sample": True}, {"num_beams": 2}, {"num_return_sequences": 2}):
        with pytest.raises(ValueError, match="greedy-only"):
            co_reasoning_generate(lm, embeds, mask, 0.5, max_new_tokens=2, **kw)
    with pytest.raises(ValueError, match="multiple of 3"):
        co_reasoning_generate(lm, embeds[:2], mask[:2], 0.5, max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        co_reasoning_generate(lm, embeds, mask[:, :3], 0.5, max_new_tokens=2)
    with pytest.raises(ValueError, match="2 alphas for 1"):
        co_reasoning_generate(lm, embeds, mask, [0.1, 0.2], max_new_tokens=2)
    with pytest.raises(ValueError, match="alpha"):
        co_reasoning_generate(lm, embeds, mask, 2.0, max_new_tokens=2)
    with pytest.raises(ValueError, match="logits_processor"):
        co_reasoning_generate(lm, embeds, mask, 0.5, max_new_tokens=2, logits_processor=LogitsProcessorList())


def test_stack_streams_left_pads():
    a, b = torch.ones(1, 3, 2), torch.full((4, 2), 2.0)
    embeds, mask = stack_streams([a, b])
    assert embeds.shape == (2, 4, 2)
    assert mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert embeds[0, 0].eq(0).all() and embeds[0, 1:].eq(1).all() and embeds[1].eq(2).all()
    with pytest.raises(ValueError):
        stack_streams([])
    with pytest.raises(ValueError, match="stream 1"):
        stack_streams([torch.ones(1, 3, 2), torch.ones(1, 3, 5)])
