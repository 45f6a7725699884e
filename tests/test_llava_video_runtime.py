"""LLaVA-Video as a runtime backend: lmms-eval ``llava_vid``'s options and frame rule, the time instruction,
``llava_vid`` / ``cos_llava_vid`` through ``accelerate launch`` (1 and 2 processes) on the needle task, and
on Video-MME's own task code, where the task gives ``llava_vid`` a prompt of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import benchmarks
import numpy as np
import pytest
import torch

from cos.errors import ConfigError
from cos.protocol import VideoInfo
from cos_runtime.options import ModelOptions

REPO = Path(__file__).resolve().parents[1]
DOCUMENTED = {"pretrained": "lmms-lab/LLaVA-Video-7B-Qwen2", "conv_template": "qwen_1_5", "max_frames_num": 64,
              "mm_spatial_pool_mode": "average"}


def test_llava_vid_takes_over_the_builtin_id():
    from lmms_eval.models import get_model

    from cos_lmms_eval.models import CoSLlavaVid, LlavaVid

    assert get_model("llava_vid") is LlavaVid and get_model("cos_llava_vid") is CoSLlavaVid
    assert LlavaVid.backend_name == CoSLlavaVid.backend_name == "llava_video"


def test_lmms_eval_defaults_and_the_documented_command():
    default = ModelOptions.parse("llava_video", "uniform", {}).backend
    assert (default.conv_template, default.max_frames_num, default.video_fps, default.force_sample, default.add_time_instruction,
            default.mm_spatial_pool_mode, default.mm_newline_position) == ("vicuna_v1", 20, 1.0, False, False, "average", "grid")
    documented = ModelOptions.parse("llava_video", "cos", dict(DOCUMENTED)).backend
    assert documented.conv_template == "qwen_1_5" and documented.max_frames_num == 64
    for bad, message in (({"add_faster_video": "true"}, "add_faster_video='true': only False"),
                         ({"mm_spatial_pool_stride": 4}, "mm_spatial_pool_stride=4"),
                         ({"conv_template": "llama_3"}, "conv_template='llama_3': expected one of"),
                         ({"frames": 8}, "unknown model_args ['frames']")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            ModelOptions.parse("llava_video", "uniform", bad)


def test_frame_rule_is_llava_vids(needle_data):
    """lmms-eval's load_video: every round(fps / video_fps)-th frame (times i / step), else linspace (times i / fps)."""
    from cos_runtime.backends.llava_video import Options, sample_frames

    doc = json.loads((needle_data / "questions.json").read_text())[0]
    video, n, fps = needle_data / doc["video"], doc["num_frames"], doc["fps"]
    step = round(fps / 1.0)
    got = sample_frames(video, Options(max_frames_num=64, video_decode_backend="pyav"))
    assert got.indices.tolist() == list(range(0, n, step)) and np.allclose(got.times, np.arange(0, n, step) / step)
    capped = sample_frames(video, Options(max_frames_num=3, video_decode_backend="pyav"))
    want = np.linspace(0, n - 1, 3, dtype=int)
    assert capped.indices.tolist() == want.tolist() and np.allclose(capped.times, want / fps)
    forced = sample_frames(video, Options(max_frames_num=64, force_sample=True, video_decode_backend="pyav"))
    assert forced.indices.tolist() == np.linspace(0, n - 1, 64, dtype=int).tolist()
    half = sample_frames(video, Options(max_frames_num=64, video_fps=2.0, video_decode_backend="pyav"))
    assert half.indices.tolist() == list(range(0, n, round(fps / 2.0)))


def test_time_instruction_reaches_the_prompt(tiny_llava_video_dir):
    from cos_runtime.backends.llava_video import Options, load
    from llava_video import time_instruction

    backend = load(Options(pretrained=str(tiny_llava_video_dir), conv_template="qwen_1_5", add_time_instruction=True), "cpu", torch.float32)
    video = VideoInfo(frame_indices=(0, 8, 16), fps=8.0, duration=5.5, total_frames=44, times=(0.0, 1.0, 2.0))
    said = time_instruction(5.5, (0.0, 1.0, 2.0))
    assert said == ("The video lasts for 5.50 seconds, and 3 frames are uniformly sampled from it. These frames are located at "
                    "0.00s,1.00s,2.00s.Please answer the following questions related to this video.")
    ids = backend.prompt_ids("What is shown?", video)[0].tolist()
    text = backend.processor.tokenizer.decode([i for i in ids if i >= 0])
    assert said + "\nWhat is shown?" in text
    plain = load(Options(pretrained=str(tiny_llava_video_dir), conv_template="qwen_1_5"), "cpu", torch.float32)
    assert "The video lasts" not in plain.processor.tokenizer.decode([i for i in plain.prompt_ids("What is shown?", video)[0].tolist() if i >= 0])
    assert backend.facts.tokens_per_frame == 182 and backend.facts.independent_frames


def _launch(nproc: int, out: Path, model: str, model_args: str, tasks: str, include: Path, port: int) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    if nproc > 1:
        cmd.append("--multi_gpu")
    cmd += ["-m", "lmms_eval", "--model", model, "--model_args", model_args, "--tasks", tasks, "--include_path", str(include),
            "--batch_size", "1", "--log_samples", "--output_path", str(out), "--verbosity", "WARNING"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    rows = {}
    for task in tasks.split(","):
        files = list(out.rglob(f"*_samples_{task}.jsonl"))
        assert files, f"no samples for {task} (rc {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        rows[task] = {r["doc_id"]: r for r in map(json.loads, files[0].read_text(encoding="utf-8").splitlines())}
    return rows


@pytest.fixture(scope="module")
def needle_include(tmp_path_factory, needle_data) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("llava_video_tasks")
    shutil.copytree(REPO / "lmms-eval" / "cos_lmms_eval" / "tasks" / "cos_needle", root / "cos_needle",
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copytree(needle_data, root / "cos_needle" / "data")
    return root


def test_cos_llava_vid_one_and_two_processes_agree(tmp_path, tiny_llava_video_dir, tiny_llava_dir, needle_include):
    args = (f"pretrained={tiny_llava_video_dir},conv_template=qwen_1_5,max_frames_num=8,force_sample=true,video_decode_backend=pyav,"
            f"scorer=llava,scorer_pretrained={tiny_llava_dir},score_mode=logits,score_threshold=0.5,trace_dir={{}}")
    one = _launch(1, tmp_path / "one", "cos_llava_vid", args.format(tmp_path / "t1"), "cos_needle", needle_include, 29541)
    two = _launch(2, tmp_path / "two", "cos_llava_vid", args.format(tmp_path / "t2"), "cos_needle", needle_include, 29542)
    docs = json.loads((needle_include / "cos_needle" / "data" / "questions.json").read_text())
    assert sorted(one["cos_needle"]) == sorted(two["cos_needle"]) == list(range(len(docs)))
    assert {d: r["filtered_resps"] for d, r in one["cos_needle"].items()} == {d: r["filtered_resps"] for d, r in two["cos_needle"].items()}
    traces = [json.loads(p.read_text()) for p in (tmp_path / "t1" / "cos_needle").glob("*.json")]
    assert len(traces) == len(docs) and all(t["backend"] == "llava_video" and len(t["frame_indices"]) == 8 for t in traces)


def test_videomme_gives_llava_vid_its_own_prompt_and_cos_answers_the_same(tmp_path, tiny_llava_video_dir, needle_data):
    """Video-MME's real task code (local docs): --model llava_vid is asked "...The best answer is:" (the task's
    llava_vid entry); cos_llava_vid answers that prompt too, not the default one."""
    benchmarks.lay_out(os.environ["HF_HOME"], needle_data)
    common = f"pretrained={tiny_llava_video_dir},conv_template=qwen_1_5,max_frames_num=4,video_decode_backend=pyav"
    base = _launch(1, tmp_path / "base", "llava_vid", f"{common},trace_dir={tmp_path / 'tb'}", "cos_test_videomme", benchmarks.TASKS_DIR, 29543)
    cos = _launch(1, tmp_path / "cos", "cos_llava_vid", f"{common},scorer=self,score_mode=logits,trace_dir={tmp_path / 'tc'}",
                  "cos_test_videomme", benchmarks.TASKS_DIR, 29544)
    rows = base["cos_test_videomme"]
    assert sorted(rows) == list(range(len(benchmarks.docs("cos_test_videomme"))))
    assert all(r["input"].endswith("\nThe best answer is:") for r in rows.values())
    cos_traces = {t["doc_id"]: t for t in (json.loads(p.read_text()) for p in (tmp_path / "tc" / "cos_test_videomme").glob("*.json"))}
    base_traces = {t["doc_id"]: t for t in (json.loads(p.read_text()) for p in (tmp_path / "tb" / "cos_test_videomme").glob("*.json"))}
    assert cos_traces and sorted(cos_traces) == sorted(base_traces)
    for doc_id, trace in cos_traces.items():
        assert trace["question"] == base_traces[doc_id]["question"] == rows[doc_id]["input"] and trace["prompt_from"] == "llava_vid"
        assert not cos["cos_test_videomme"][doc_id]["input"].endswith("The best answer is:")  # lmms-eval logged its default prompt


@pytest.mark.parametrize("newline", ["grid", "one_token"])
def test_cos_on_llava_video_equals_three_naive_forwards(tiny_llava_video_dir, newline):
    """Grid newlines are per frame (Sp/Sn gather X's features); one_token puts one newline after the last
    frame, so frames are not independent and each stream is encoded from its composed frames."""
    from cos.pipeline import CoSConfig, CoSPipeline, GenerationOptions
    from cos.scoring import ShotScores, UniformScorer
    from cos_runtime.backends.llava_video import Options, load

    class Fixed(UniformScorer):
        name = "fixed"

        def score(self, mosaics, question):
            d = np.array([0, 1, 0, 0][: len(mosaics)], dtype=np.int64)
            return ShotScores(d.astype(float), d, [""] * len(d))

    backend = load(Options(pretrained=str(tiny_llava_video_dir), conv_template="qwen_1_5", mm_newline_position=newline), "cpu", torch.float32)
    frames = np.broadcast_to(np.random.default_rng(5).integers(0, 256, (8, 1, 1, 3), dtype=np.uint8), (8, 48, 64, 3)).copy()
    trace = CoSPipeline(backend, Fixed(), CoSConfig(shot_size=2)).answer(frames, "What is shown?", gen=GenerationOptions(max_new_tokens=4)).trace
    assert trace.streams == 3 and trace.stream_features == ("gathered" if newline == "grid" else "encoded")
    ids = backend.prompt_ids("What is shown?")
    padded = np.concatenate([frames, np.zeros_like(frames[:1])])
    maps = [np.arange(8), np.array(trace.positive_map), np.array(trace.negative_map)]
    streams = [backend.embed_prompt(ids, backend.encode_frames(backend.preprocess(padded[m]))) for m in maps]
    tokens = []
    with torch.no_grad():
        for _ in range(len(trace.answer_tokens)):
            tail = backend.embed_tokens(torch.tensor([tokens])) if tokens else None
            logits = [backend.forward_logits(s if tail is None else torch.cat([s, tail], dim=1))[0] for s in streams]
            fused = logits[0] + trace.alpha * (logits[1] - logits[2])
            if tokens:  # the checkpoint's repetition penalty, on the fused scores, over generated tokens
                for t in set(tokens):
                    fused[t] = fused[t] / backend.repetition_penalty if fused[t] > 0 else fused[t] * backend.repetition_penalty
            tokens.append(int(fused.argmax()))
            if tokens[-1] in backend.facts.eos_token_ids:
                break
    assert trace.answer_tokens == tokens


def test_cos_run_on_llava_video_starts_from_the_documented_command(tmp_path, tiny_llava_video_dir, needle_data):
    """`cos run --backend llava_video` with no other option: qwen_1_5, at most 64 frames at 1 fps, average pooling."""
    from cos.trace import read_trace
    from cos_runtime.cli import main as cos_main

    doc = json.loads((needle_data / "questions.json").read_text())[0]
    trace_file = tmp_path / "t.json"
    rc = cos_main(["run", "--backend", "llava_video", "--model", str(tiny_llava_video_dir), "--video", str(needle_data / doc["video"]),
                   "--question", "What is shown?", "--method", "uniform", "--decoder", "pyav", "--max-new-tokens", "2", "--trace", str(trace_file)])
    assert rc == 0
    trace = read_trace(trace_file)
    step = round(doc["fps"])
    assert trace.backend == "llava_video" and trace.frame_indices == list(range(0, doc["num_frames"], step))
    assert trace.frame_times == [i / step for i in trace.frame_indices] and trace.sequence_length > 182 * len(trace.frame_indices)
