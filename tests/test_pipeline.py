"""Chain-of-Shot end to end on the tiny LongVA checkpoint: co-reasoning equals a naive reference decoder,
Sp/Sn condition the output, α = 0 is the baseline, frames are encoded once, the scorer is built once."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import three_streams

from cos.compose import BLACK
from cos.decoding import co_reasoning_generate, penalise_repetition
from cos.pipeline import CoSConfig, CoSPipeline, GenerationOptions
from cos.scoring import LlavaScorer, UniformScorer, clear_scorer_cache

N = 8
QUESTION = "What colour is the shape that briefly appears in the video?\nA. red\nB. green\nC. blue\nD. yellow"


def _streams(backend, frames, code):
    return three_streams(backend, frames, code, QUESTION)


def _naive_co_reasoning(backend, streams, alpha, steps, penalty):
    """Independent reference: per token, three full uncached forwards (each on its own video), fused raw
    logits, the repetition penalty applied to the fused scores, greedy argmax."""
    lm = backend.model.language_model
    embed = lm.get_input_embeddings()
    tokens, fused_steps = [], []
    for _ in range(steps):
        logits = []
        for stream in streams:
            ext = stream if not tokens else torch.cat([stream, embed(torch.tensor([tokens]))], dim=1)
            logits.append(lm(inputs_embeds=ext, use_cache=False).logits[:, -1].float())
        fused = logits[0] + alpha * (logits[1] - logits[2])
        if tokens and penalty != 1.0:
            fused = penalise_repetition(fused, torch.tensor([tokens]), penalty)
        fused_steps.append(fused[0])
        tokens.append(int(fused.argmax(-1)))
    return tokens, torch.stack(fused_steps)


@torch.inference_mode()
def _naive_greedy(backend, x, steps):
    """Independent reference for the baseline: per token one full uncached forward of X, the checkpoint's
    repetition penalty on the generated ids (as ``penalise_repetition``), greedy argmax, stop after an EOS id."""
    lm = backend.model.language_model
    embed = lm.get_input_embeddings()
    eos = backend.model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or ())
    penalty = backend.repetition_penalty
    tokens = []
    while len(tokens) < steps and not (tokens and tokens[-1] in eos):
        ext = x if not tokens else torch.cat([x, embed(torch.tensor([tokens]))], dim=1)
        logits = lm(inputs_embeds=ext, use_cache=False).logits[0, -1].float()
        for tok in set(tokens):
            logits[tok] = logits[tok] / penalty if logits[tok] > 0 else logits[tok] * penalty
        tokens.append(int(logits.argmax()))
    return tokens


@torch.inference_mode()
def test_batched_cached_co_reasoning_equals_naive_reference(backend, frames):
    code = np.array([0, 0, 1, 1, 0, 0, 0, 0], dtype=np.int8)
    streams = _streams(backend, frames, code)
    alpha = 0.75
    out = co_reasoning_generate(backend, torch.cat(streams), None, alpha, max_new_tokens=10,
                                repetition_penalty=backend.repetition_penalty, return_dict_in_generate=True, output_scores=True)
    tokens = out.sequences[0].tolist()
    assert len(tokens) >= 8
    ref_tokens, ref_fused = _naive_co_reasoning(backend, streams, alpha, len(tokens), backend.repetition_penalty)
    assert tokens == ref_tokens
    fused = torch.stack([s[0] for s in out.scores])
    torch.testing.assert_close(fused, ref_fused, atol=1e-4, rtol=0)


def test_positive_and_negative_videos_condition_the_output(backend, frames):
    # Defect 1 of the release: Sp and Sn never reached the model (X's embeddings and cache for all three
    # passes), i.e. plain greedy decoding of X. The pipeline's answer must be Eq. 8 on the real Sp/Sn.
    steps = 8
    result = CoSPipeline(backend, _AlternatingScorer(), CoSConfig(shot_size=2)).answer(
        frames, QUESTION, gen=GenerationOptions(max_new_tokens=steps))
    t = result.trace.to_json()  # the record as written to disk
    assert t["streams"] == 3 and t["alpha"] == 0.5 and len(t["answer_tokens"]) == steps
    with torch.inference_mode():
        x, sp, sn = _streams(backend, frames, np.array(t["binary_code"], dtype=np.int8))
        assert not torch.equal(sp, x) and not torch.equal(sn, x)
        want, _ = _naive_co_reasoning(backend, [x, sp, sn], t["alpha"], steps, backend.repetition_penalty)
        release, _ = _naive_co_reasoning(backend, [x, x, x], t["alpha"], steps, backend.repetition_penalty)
    assert t["answer_tokens"] == want
    assert release == _naive_greedy(backend, x, steps)  # the release's decoding is plain greedy of X ...
    assert want != release  # ... and the real Sp/Sn change the answer


@torch.inference_mode()
def test_alpha_zero_co_reasoning_is_the_baseline(backend, frames):
    code = np.array([1, 0, 0, 0, 0, 0, 1, 1], dtype=np.int8)
    streams = _streams(backend, frames, code)
    fused = co_reasoning_generate(backend, torch.cat(streams), None, 0.0, max_new_tokens=8,
                                  repetition_penalty=backend.repetition_penalty)
    plain = backend.generate(streams[0], torch.ones(streams[0].shape[:2], dtype=torch.long), max_new_tokens=8)
    want = _naive_greedy(backend, streams[0], 8)  # independent of generate
    assert fused[0].tolist() == want and plain[0].tolist() == want


def test_uniform_scorer_gives_exactly_the_baseline_answer(backend, frames):
    pipe = CoSPipeline(backend, UniformScorer())
    gen = GenerationOptions(max_new_tokens=8)
    cos = pipe.answer(frames, QUESTION, method="cos", gen=gen)
    base = pipe.answer(frames, QUESTION, method="uniform", gen=gen)
    assert cos.trace.alpha == 0.0 and cos.trace.binary_code == [0] * N
    assert cos.trace.answer_tokens == base.trace.answer_tokens and cos.text == base.text
    # both equal an independent greedy decoding of X (not only each other: α = 0 runs the baseline's code)
    want = _naive_greedy(backend, _streams(backend, frames, np.zeros(N, dtype=np.int8))[0], gen.max_new_tokens)
    assert cos.trace.answer_tokens == want and cos.text == gen.cut(backend.decode(want))


class _AlternatingScorer(UniformScorer):
    """Marks every other shot relevant (a deterministic stand-in decision rule, not a model)."""

    name = "alternating"

    def score(self, mosaics, question):
        from cos.scoring import ShotScores

        decisions = np.arange(len(mosaics)) % 2 == 0
        return ShotScores(scores=decisions.astype(float), decisions=decisions.astype(np.int64), responses=[""] * len(mosaics))


def test_frames_are_encoded_once_and_streams_gather_by_index(backend, frames, monkeypatch):
    encoded = []
    real = backend.encode_frames
    monkeypatch.setattr(backend, "encode_frames", lambda px: encoded.append(px.shape[0]) or real(px))
    pipe = CoSPipeline(backend, _AlternatingScorer(), CoSConfig(shot_size=2))
    result = pipe.answer(frames, QUESTION, gen=GenerationOptions(max_new_tokens=4))
    t = result.trace.to_json()  # the record as written to disk
    assert t["binary_code"] == [1, 1, 0, 0, 1, 1, 0, 0]
    assert t["positive_map"] == [0, 1, 4, 4, 4, 5, 5, 5] and t["negative_map"] == [2, 2, 2, 3, 6, 6, 6, 7]
    assert t["alpha"] == 0.5 and t["streams"] == 3
    assert encoded == [N]  # every sampled frame through the vision tower once; no black frame needed here
    assert t["shot_decisions"] == [1, 0, 1, 0] and t["scorer"] == "alternating" and t["answer"] == result.text
    assert {"encode", "score", "prefill", "decode"} <= set(t["timings"])


def test_black_frame_when_every_frame_is_relevant(backend, frames):
    class AllRelevant(_AlternatingScorer):
        def score(self, mosaics, question):
            from cos.scoring import ShotScores

            return ShotScores(scores=np.ones(len(mosaics)), decisions=np.ones(len(mosaics), dtype=np.int64), responses=[""] * len(mosaics))

    result = CoSPipeline(backend, AllRelevant(), CoSConfig(alpha=0.5)).answer(frames, QUESTION, gen=GenerationOptions(max_new_tokens=3))
    assert result.trace.negative_map == [BLACK] * N and result.trace.positive_map == list(range(N))


def test_llava_scorer_is_built_once_across_samples(tiny_longva_dir, tiny_llava_dir, needle_data):
    from cos_runtime.engine import build_engine

    clear_scorer_cache()
    before = LlavaScorer.constructions
    engine = build_engine("longva", "cos", dict(pretrained=str(tiny_longva_dir), max_frames_num=N, scorer="llava",
                                                scorer_pretrained=str(tiny_llava_dir), score_mode="logits"))
    docs = json.loads((needle_data / "questions.json").read_text())
    for doc in docs[:3]:
        result = engine.answer(str(needle_data / doc["video"]), QUESTION, GenerationOptions(max_new_tokens=2))
        assert len(result.trace.shot_scores) == N // 4 and len(result.trace.frame_indices) == N
    assert LlavaScorer.constructions - before == 1


def test_cos_run_command_prints_answer_and_writes_trace(tmp_path, tiny_longva_dir, needle_data):
    docs = json.loads((needle_data / "questions.json").read_text())
    trace = tmp_path / "trace.json"
    cmd = [sys.executable, "-m", "cos_runtime", "run", "--model", str(tiny_longva_dir), "--video", str(needle_data / docs[0]["video"]),
           "--question", QUESTION, "--frames", "8", "--scorer", "self", "--score-mode", "logits", "--max-new-tokens", "4",
           "--trace", str(trace)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(trace.read_text())
    assert data["scorer"] == "self" and len(data["binary_code"]) == 8 and data["frame_indices"] == np.linspace(0, docs[0]["num_frames"] - 1, 8, dtype=int).tolist()
    assert proc.stdout.splitlines()[0] == data["answer"]


def test_cos_run_reports_a_bad_video_without_a_traceback(tmp_path, tiny_longva_dir):
    bad = tmp_path / "not a video.mp4"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "cos_runtime", "run", "--model", str(tiny_longva_dir), "--video", str(bad),
                           "--question", "q", "--scorer", "uniform"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "cannot decode video" in proc.stderr and str(bad) in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("code", [[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]])
def test_prefill_strategies_give_the_same_answer(backend, frames, code):
    class Fixed(_AlternatingScorer):
        def score(self, mosaics, question):
            from cos.scoring import ShotScores

            d = np.array(code[::2], dtype=np.int64)
            return ShotScores(scores=d.astype(float), decisions=d, responses=[""] * len(d))

    answers = {}
    for strategy in ("always", "never", "auto"):
        result = CoSPipeline(backend, Fixed(), CoSConfig(shot_size=2, share_prefix=strategy)).answer(
            frames, QUESTION, gen=GenerationOptions(max_new_tokens=6))
        answers[strategy] = result.trace.answer_tokens
        assert result.trace.prefill_shared == (strategy == "always" or (strategy == "auto" and
                                                  result.trace.prefill_tokens <= 0.75 * result.trace.prefill_tokens_unshared))
    assert answers["always"] == answers["never"] == answers["auto"]


def test_sampling_is_refused_for_cos(backend, frames):
    from cos.errors import ConfigError

    gen = GenerationOptions.from_gen_kwargs({"do_sample": True, "temperature": 0.7, "max_new_tokens": 4})
    with pytest.raises(ConfigError, match="greedy only"):
        CoSPipeline(backend, UniformScorer()).answer(frames, QUESTION, method="cos", gen=gen)
    # the baseline honours sampling: reproducible under a seed, and the seed (so the draw) matters
    pipe = CoSPipeline(backend)
    greedy = pipe.answer(frames, QUESTION, method="uniform", gen=GenerationOptions(max_new_tokens=4)).trace.answer_tokens
    assert greedy == _naive_greedy(backend, _streams(backend, frames, np.zeros(N, dtype=np.int8))[0], 4)
    sampled = []
    for seed in range(3):
        runs = []
        for _ in range(2):
            torch.manual_seed(seed)
            runs.append(pipe.answer(frames, QUESTION, method="uniform", gen=gen).trace.answer_tokens)
        assert runs[0] == runs[1]
        sampled.append(runs[0])
    assert len({tuple(s) for s in sampled}) > 1 and any(s != greedy for s in sampled)


def test_cos_run_reports_a_missing_checkpoint_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cos_runtime", "run", "--model", str(tmp_path / "nope"), "--video", "v.mp4",
                           "--question", "q", "--scorer", "uniform"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "cannot load LongVA" in proc.stderr and "nope" in proc.stderr and "Traceback" not in proc.stderr
