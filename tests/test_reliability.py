"""Reliability of long evaluation runs (tiny checkpoints, CPU, offline).

* bad inputs: every case of the issue is either answered (legitimately decodable) or gets an error record
  naming the sample, the path and the cause, and the run goes on;
* crash and resume: a run killed with SIGKILL and started again recomputes nothing already done and ends
  with the same logged samples and traces as an uninterrupted run;
* score cache: another alpha reuses the scorer's results (the scorer is not called);
* determinism (same command twice) and 1 vs 2 processes (through scripts/eval_task.sh);
* loud failure: a rank hitting a bug makes scripts/eval_task.sh exit non-zero (1 and 2 processes);
* memory: a 20-minute video sampled at 128 frames never holds all its frames.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)
TIMING_KEYS = ("timings",)


# --------------------------------------------------------------------------------------------- helpers
def encode(path: Path, frames, fps=10, pix_fmt="yuv420p", codec="libx264", pts_ms=None, faststart=False) -> Path:
    """Encode uint8 frames ((H, W, 3) RGB or (H, W) gray) to an mp4 with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = pix_fmt
        stream.options = {"threads": "1", "preset": "ultrafast"} if codec == "libx264" else {}
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="gray" if img.ndim == 2 else "rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def gradient(n, h, w, gray=False):
    """Smooth moving gradients (cheap to encode at any size)."""
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        g = ((x * 255 // max(w - 1, 1) + 7 * t) % 256).astype(np.uint8)
        if gray:
            out.append(g)
        else:
            out.append(np.stack([g, (y * 255 // max(h - 1, 1)).astype(np.uint8), np.full_like(g, (40 * t) % 256)], axis=-1))
    return out


def strip_timings(trace: dict) -> dict:
    return {k: v for k, v in trace.items() if k not in TIMING_KEYS}


def read_traces(trace_dir: Path, task: str) -> dict[str, dict]:
    return {p.name: strip_timings(json.loads(p.read_text())) for p in sorted((trace_dir / task).glob("*.json"))}


def read_samples(out_dir: Path, task: str) -> dict[int, dict]:
    files = list(out_dir.rglob(f"*_samples_{task}.jsonl"))
    assert len(files) == 1, files
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    ids = [r["doc_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicated docs: {ids}"
    return {r["doc_id"]: r for r in rows}


def summaries(text: str) -> list[dict]:
    """The COS-SUMMARY lines a run printed, as dicts."""
    import re

    # search, not match: another process's progress bar may share the line
    return [dict(part.split("=", 1) for part in m.group(1).split()) for m in re.finditer(r"COS-SUMMARY ((?:\S+=\S+ ?)+)", text)]


def evaluate(model, task: str, include_path: Path, **kw):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    tm = TaskManager("WARNING", include_path=str(include_path), model_name=model if isinstance(model, str) else "cos")
    return simple_evaluate(model=model, tasks=[task], task_manager=tm, bootstrap_iters=0, log_samples=True, verbosity="WARNING", **kw)


def predictions(out, task) -> dict[int, str]:
    def first(x):
        return x[0] if isinstance(x, list) else x

    return {s["doc_id"]: first(s["filtered_resps"]) for s in out["samples"][task]}


def subprocess_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""), **extra}


TASK_UTILS = '''
import sys
from PIL import Image


def doc_to_visual(doc):
    if doc["kind"] == "exit":  # what videomme and mlvu do on a missing video
        sys.exit(f"video path:{doc['video']} does not exist, please check")
    if doc["kind"] == "bug":
        raise RuntimeError(f"injected bug in doc_to_visual for {doc['id']}")
    if doc.get("images"):
        return [Image.open(p).convert("RGB") for p in doc["images"]]
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"rel_acc": float(results[0].strip().startswith(doc["answer"]))}
'''


def write_task(root: Path, name: str, docs: list[dict]) -> Path:
    """An offline generate_until task ``name`` over ``docs`` (fields id, kind, video, images, question, answer)."""
    d = root / name
    (d / "data").mkdir(parents=True)
    (d / "data" / "docs.json").write_text(json.dumps(docs, ensure_ascii=False))
    (d / "utils.py").write_text(TASK_UTILS)
    (d / f"{name}.yaml").write_text(textwrap.dedent(f"""\
        task: {name}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: data/docs.json
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_target: answer
        generation_kwargs:
          max_new_tokens: 4
          temperature: 0
          num_beams: 1
          do_sample: false
        process_results: !function utils.process_results
        metric_list:
          - metric: rel_acc
            aggregation: mean
            higher_is_better: true
        metadata:
          version: 0.1
        """))
    return root


def doc(i, kind, video=None, question="What colour is the square? A. red B. blue", images=None):
    return {"id": f"{i:02d}-{kind}", "kind": kind, "video": None if video is None else str(video),
            "images": None if images is None else [str(p) for p in images], "question": question, "answer": "A"}


# --------------------------------------------------------------------------------------- bad inputs
MATRIX_FRAMES = 4
#: kind -> substring of the error record's cause; kinds not listed must be answered
EXPECTED_ERRORS = {
    "missing": "file not found",
    "zero_byte": "0 bytes",
    "text_as_mp4": "cannot open",
    "truncated_mp4": "cannot open",
    "truncated_mid_stream": "truncated or corrupt",
    "task_exit": "sys.exit",
    "empty_question": "empty question",
    "long_question": "tokenizer_model_max_length",
}


@pytest.fixture(scope="module")
def budget_longva_dir(tmp_path_factory, tiny_longva_dir) -> Path:
    """The tiny LongVA with a 512-token context budget (tokenizer_model_max_length)."""
    d = tmp_path_factory.mktemp("budget") / "tiny-longva-512"
    shutil.copytree(tiny_longva_dir, d)
    config = json.loads((d / "config.json").read_text())
    config["tokenizer_model_max_length"] = 512
    (d / "config.json").write_text(json.dumps(config, indent=1))
    return d


@pytest.fixture(scope="module")
def matrix_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    media = root / "média files"  # every path below has a non-ASCII character and a space
    ok = encode(media / "ok.mp4", gradient(8, 32, 32))
    docs = [doc(0, "ok", ok)]
    answered = {
        "few_frames": encode(media / "few frames.mp4", gradient(2, 32, 32)),  # 2 < max_frames_num
        "single_frame": encode(media / "single.mp4", gradient(1, 32, 32)),
        "grayscale": encode(media / "gray.mp4", gradient(6, 32, 32, gray=True), pix_fmt="gray"),
        "odd_1x1": encode(media / "one.mp4", gradient(5, 1, 1), pix_fmt="yuv444p"),  # decord cannot: auto -> PyAV
        "odd_17x9": encode(media / "odd.mp4", gradient(5, 9, 17), pix_fmt="yuv444p"),
        "uhd_4096x2160": encode(media / "uhd.mp4", gradient(2, 2160, 4096)),
        "vfr": encode(media / "vfr.mp4", gradient(8, 32, 32), pts_ms=[0, 10, 200, 230, 900, 1000, 1500, 3000]),
        "non_ascii": encode(root / "dossier é 日本" / "vidéo à écouter 日本.mp4", gradient(6, 32, 32)),
    }
    for kind, path in answered.items():
        docs.append(doc(len(docs), kind, path))
    images = []
    for i, (h, w) in enumerate([(32, 32), (24, 40), (32, 32)]):
        from PIL import Image

        p = media / f"image {i}.png"
        Image.fromarray(gradient(1, h, w)[0]).save(p)
        images.append(p)
    docs.append(doc(len(docs), "image_list", images=images))

    zero = media / "zero.mp4"
    zero.write_bytes(b"")
    text = media / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    full = encode(media / "cut source.mp4", gradient(20, 32, 32)).read_bytes()  # moov at the end
    cut = media / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    fast = encode(media / "fast source.mp4", [np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(20)],
                  faststart=True).read_bytes()  # moov first, cut inside the media data
    cut_mid = media / "cut mid stream.mp4"
    cut_mid.write_bytes(fast[: len(fast) * 6 // 10])
    errors = {
        "missing": doc(0, "missing", media / "does not exist.mp4"),
        "zero_byte": doc(0, "zero_byte", zero),
        "text_as_mp4": doc(0, "text_as_mp4", text),
        "truncated_mp4": doc(0, "truncated_mp4", cut),
        "truncated_mid_stream": doc(0, "truncated_mid_stream", cut_mid),
        "task_exit": doc(0, "exit", media / "videomme style missing.mp4"),
        "empty_question": doc(0, "empty_question", ok, question=""),
        "long_question": doc(0, "long_question", ok, question="Describe every detail of the scene. " * 200),
    }
    for kind, d in errors.items():
        d["id"] = f"{len(docs):02d}-{kind}"
        d["expect"] = kind
        docs.append(d)
    for d in docs:
        d.setdefault("expect", "answer")
        if d["expect"] == "answer":
            d["expect"] = "answer:" + d["id"].split("-", 1)[1]
    return {"include": write_task(root / "tasks", "cos_rel_matrix", docs), "docs": docs}


def test_bad_inputs_are_answered_or_recorded_and_the_run_goes_on(tmp_path, budget_longva_dir, matrix_task, capfd):
    docs = matrix_task["docs"]
    traces = tmp_path / "traces"
    args = (f"pretrained={budget_longva_dir},max_frames_num={MATRIX_FRAMES},video_decode_backend=auto,scorer=self,"
            f"score_mode=logits,shot_size=2,trace_dir={traces}")
    out = evaluate("cos_longva", "cos_rel_matrix", matrix_task["include"], model_args=args)
    preds = predictions(out, "cos_rel_matrix")
    assert sorted(preds) == list(range(len(docs)))  # every doc exactly once

    records = [json.loads(line) for line in (traces / "errors.jsonl").read_text().splitlines()]
    by_doc = {r["doc_id"]: r for r in records}
    assert len(by_doc) == len(records)  # one line per failed sample
    error_docs = {i for i, d in enumerate(docs) if not d["expect"].startswith("answer")}
    assert set(by_doc) == error_docs, {docs[i]["id"]: by_doc[i]["cause"] for i in by_doc}
    for i in error_docs:
        d, r = docs[i], by_doc[i]
        assert preds[i] == ""
        assert r["sample"] == f"cos_rel_matrix/test/{i}" and r["task"] == "cos_rel_matrix" and r["split"] == "test"
        assert r["video"] == d["video"], (d["expect"], r)  # the path (recovered from the sys.exit message too)
        assert EXPECTED_ERRORS[d["expect"]] in r["cause"], (d["expect"], r["cause"])
    assert by_doc[[i for i, d in enumerate(docs) if d["kind"] == "exit"][0]]["error"] == "VisualUnavailable"
    assert by_doc[[i for i, d in enumerate(docs) if d["kind"] == "long_question"][0]]["error"] == "ContextBudgetError"
    assert by_doc[[i for i, d in enumerate(docs) if d["kind"] == "empty_question"][0]]["error"] == "EmptyQuestionError"

    trace_by_doc = {t["doc_id"]: t for t in (json.loads(p.read_text()) for p in (traces / "cos_rel_matrix").glob("*.json"))}
    assert set(trace_by_doc) == set(range(len(docs))) - error_docs
    from longva import LongVAProcessor

    processor = LongVAProcessor.from_pretrained(budget_longva_dir)
    for i, t in trace_by_doc.items():
        assert len(t["frame_indices"]) == MATRIX_FRAMES and len(t["binary_code"]) == MATRIX_FRAMES, docs[i]["id"]
        # the prediction is the decoding of the answer tokens (max_new_tokens=4, no stop strings in the task)
        assert 1 <= len(t["answer_tokens"]) <= 4, docs[i]["id"]
        assert preds[i] == t["answer"] == processor.decode(t["answer_tokens"]), docs[i]["id"]
    kind_of = {d["expect"].split(":", 1)[-1]: i for i, d in enumerate(docs)}
    assert trace_by_doc[kind_of["few_frames"]]["frame_indices"] == [0, 0, 0, 1]  # linspace(0, 1, 4) truncated
    assert trace_by_doc[kind_of["single_frame"]]["frame_indices"] == [0, 0, 0, 0]
    assert trace_by_doc[kind_of["image_list"]]["decoder"] == "images"
    assert trace_by_doc[kind_of["image_list"]]["frame_indices"] == [0, 0, 1, 2]
    assert trace_by_doc[kind_of["odd_1x1"]]["decoder"] == "pyav"

    err = capfd.readouterr().err
    (summary,) = summaries(err)
    assert summary["failed"] == str(len(error_docs)) and summary["answered"] == str(len(docs) - len(error_docs))


def test_prefetching_gives_the_serial_answers_and_error_records(tmp_path, budget_longva_dir, matrix_task):
    """Videos decoded ahead in a background thread (prefetch=3) give exactly the serial run's (prefetch=0)
    predictions, error records (same lines, same order) and traces (timings aside)."""
    runs = {}
    for prefetch in (0, 3):
        traces = tmp_path / f"traces-{prefetch}"
        args = (f"pretrained={budget_longva_dir},max_frames_num={MATRIX_FRAMES},video_decode_backend=auto,scorer=self,"
                f"score_mode=logits,shot_size=2,trace_dir={traces},prefetch={prefetch}")
        out = evaluate("cos_longva", "cos_rel_matrix", matrix_task["include"], model_args=args)
        files = sorted((traces / "cos_rel_matrix").glob("*.json"))
        runs[prefetch] = {"preds": predictions(out, "cos_rel_matrix"),
                          "errors": (traces / "errors.jsonl").read_text().splitlines(),
                          "traces": {p.name: json.loads(p.read_text()) for p in files}}
    serial, ahead = runs[0], runs[3]
    assert ahead["preds"] == serial["preds"]
    assert ahead["errors"] == serial["errors"] and len(serial["errors"]) == len(EXPECTED_ERRORS)
    assert sorted(ahead["traces"]) == sorted(serial["traces"]) and serial["traces"]
    for name, trace in ahead["traces"].items():
        reference = serial["traces"][name]
        assert trace["prefetched"] is True and reference["prefetched"] is False
        assert "prefetch_wait" in trace["timings"] and "prefetch_wait" not in reference["timings"]
        drop = ("timings", "prefetched")
        assert {k: v for k, v in trace.items() if k not in drop} == {k: v for k, v in reference.items() if k not in drop}, name


def test_prefetcher_holds_at_most_depth_videos_ahead_and_skips_what_is_done(tiny_longva_dir, needle_data):
    """The prefetcher's schedule, with the adapter's own look-ahead: request i's turn resolves and starts decoding up to
    i + depth, skips padding, leaves requests whose resolution fails to the serial path, does not decode samples already
    in the result cache, and prepares exactly what the serial path would decode."""
    from types import SimpleNamespace

    from cos.trace import StageTimer
    from cos_lmms_eval.models import LongVA
    from cos_runtime.prefetch import Prefetcher

    docs = json.loads((needle_data / "questions.json").read_text())
    videos = [str(needle_data / d["video"]) for d in docs[:4]]
    model = LongVA(pretrained=str(tiny_longva_dir), max_frames_num=4, video_decode_backend="pyav", trace_dir=None, result_cache_dir="none")
    split = [{"video": v} for v in videos] + [{"video": "exit"}]

    def doc_to_visual(doc):
        if doc["video"] == "exit":
            sys.exit("video path:/nowhere.mp4 does not exist")
        return [doc["video"]]

    model.task_dict = {"task": {"test": split}}
    model.result_cache = {}  # a dict stands in for the cache's "key in cache" test
    resolved = []
    model_resolve = model.resolve

    def counting_resolve(*args):
        resolved.append(args[3])
        return model_resolve(*args)

    model.resolve = counting_resolve

    def request(i, padding=False):
        return SimpleNamespace(args=("Which shape?", {}, doc_to_visual, i, "task", "test"), metadata={"__padding_only__": True} if padding else {})

    requests = [request(0), request(1), request(2), request(4), request(3), request(3, padding=True)]
    cached_key = model.resolve(*requests[4].args[:6]).key
    model.result_cache = {cached_key: {}}
    resolved.clear()
    started = []

    def prepare(job):
        visual, prompt = job  # what _resolve_ahead hands over: the visual and the prompt (a frame selector's query)
        assert prompt == "Which shape?"
        started.append(visual)
        return model.engine.prepare(visual, prompt)

    with Prefetcher(requests, model._resolve_ahead, prepare, depth=2) as ahead:
        first = ahead.take(0)
        assert resolved == [0, 1, 2]  # its own and the next two
        frames = first.prepared.result().frames
        serial, _ = model.engine.load_frames([videos[0]], StageTimer())
        assert np.array_equal(frames, serial)  # what the serial path decodes
        assert ahead.take(1).job.visual == [videos[1]] and resolved == [0, 1, 2, 4]
        assert ahead.take(2).prepared.result().error is None
        assert ahead.take(3) is None  # doc_to_visual called sys.exit: the serial path records it in its turn
        done = ahead.take(4)
        assert done.prepared is None and done.job.key == cached_key  # answered by the result cache: not decoded
        assert ahead.take(5) is None and resolved == [0, 1, 2, 4, 3]  # padding is never resolved
    assert started == [[videos[0]], [videos[1]], [videos[2]]]
    with Prefetcher(requests, model._resolve_ahead, prepare, depth=0) as serial_run:
        assert serial_run.take(0) is None and serial_run.pool is None


def test_an_unexpected_error_is_not_a_sample_error(tmp_path, tiny_longva_dir, needle_data):
    """A bug (here: a task's doc_to_visual raising RuntimeError) propagates; it is not swallowed into a record."""
    video = needle_data / json.loads((needle_data / "questions.json").read_text())[0]["video"]
    include = write_task(tmp_path / "tasks", "cos_rel_bug", [doc(0, "ok", video), doc(1, "bug")])
    with pytest.raises(RuntimeError, match="injected bug"):
        evaluate("longva", "cos_rel_bug", include, model_args=f"pretrained={tiny_longva_dir},max_frames_num=4")


# --------------------------------------------------------------------------- score cache, determinism
def test_score_cache_skips_the_scorer_when_only_alpha_changes(tmp_path, tiny_longva_dir, tiny_llava_dir, needle_tasks_dir):
    from cos_lmms_eval.models import CoSLongVA

    traces = tmp_path / "traces"
    calls = []

    def counted(lm):
        scorer = lm.engine.pipeline.scorer
        real = type(scorer).score.__get__(scorer)  # the real scorer object's method
        scorer.score = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
        return lm

    common = f"pretrained={tiny_longva_dir},max_frames_num=8,scorer=llava,scorer_pretrained={tiny_llava_dir},score_mode=logits,trace_dir={traces}"
    lm = counted(CoSLongVA.create_from_arg_string(f"{common},alpha=auto"))
    try:
        evaluate(lm, "cos_needle", needle_tasks_dir)
        first = read_traces(traces, "cos_needle")
        assert len(calls) == len(first) == 4 and not any(t["score_cache_hit"] for t in first.values())
        calls.clear()
        lm = counted(CoSLongVA.create_from_arg_string(f"{common},alpha=0.5"))
        evaluate(lm, "cos_needle", needle_tasks_dir)
    finally:
        del lm.engine.pipeline.scorer.score  # the scorer object is shared per process (get_scorer)
    second = read_traces(traces, "cos_needle")
    assert calls == []  # not one scorer call
    assert set(second) == set(first)
    for name, t in second.items():
        assert t["score_cache_hit"] is True
        timings = json.loads((traces / "cos_needle" / name).read_text())["timings"]
        assert "mosaics" not in timings and "score" not in timings  # a hit builds no mosaics and runs no scorer
        assert t["shot_groups"] == first[name]["shot_groups"]
        assert t["shot_scores"] == first[name]["shot_scores"] and t["binary_code"] == first[name]["binary_code"]
    assert len(list((traces / "score_cache").glob("??/*.json"))) == 4


def test_score_cache_key_covers_decoder_and_the_scorers_numbers(tmp_path, tiny_longva_dir, tiny_llava_dir, needle_data):
    """decord and PyAV may give other pixels, a bf16 scorer other scores: each gets its own cache entry;
    an "auto" dtype that resolves to the same numbers shares the entry."""
    from cos.trace import StageTimer
    from cos_runtime.engine import build_engine

    video = str(needle_data / json.loads((needle_data / "questions.json").read_text())[0]["video"])
    question = "What colour is the shape?"

    def key(decoder="decord", **kw):
        engine = build_engine("longva", "cos", dict(pretrained=str(tiny_longva_dir), max_frames_num=8, video_decode_backend=decoder,
                                                    score_cache_dir=str(tmp_path / "scores"), **kw))
        frames, info = engine.load_frames(video, StageTimer())
        assert info["decoder"] == decoder
        return engine.score_cache_key(info, frames, question)

    self_fp32 = key(scorer="self", torch_dtype="float32")
    assert key(scorer="self", torch_dtype="auto") == self_fp32  # auto = fp32 on CPU: the same numbers
    assert key(scorer="self", torch_dtype="bfloat16") != self_fp32
    assert key(decoder="pyav", scorer="self", torch_dtype="float32") != self_fp32
    llava = key(scorer="llava", scorer_pretrained=str(tiny_llava_dir))
    assert llava != self_fp32 and key(decoder="pyav", scorer="llava", scorer_pretrained=str(tiny_llava_dir)) != llava


def test_same_command_twice_gives_identical_predictions_and_traces(tmp_path, tiny_longva_dir, needle_tasks_dir):
    runs = []
    for name in ("a", "b"):
        traces = tmp_path / name
        args = (f"pretrained={tiny_longva_dir},max_frames_num=8,scorer=self,score_mode=logits,alpha=auto,trace_dir={traces},"
                "result_cache_dir=none,score_cache_dir=none")  # really recompute
        out = evaluate("cos_longva", "cos_needle", needle_tasks_dir, model_args=args)
        runs.append((predictions(out, "cos_needle"), read_traces(traces, "cos_needle")))
        assert not (traces / "result_cache").exists() and not (traces / "score_cache").exists()
    assert runs[0][0] == runs[1][0] and sorted(runs[0][0]) == [0, 1, 2, 3]
    assert runs[0][1] == runs[1][1] and len(runs[0][1]) == 4


@pytest.fixture(scope="module")
def needle_tasks_dir(tmp_path_factory, needle_data) -> Path:
    root = tmp_path_factory.mktemp("needle_tasks")
    task = root / "cos_needle"
    shutil.copytree(REPO / "lmms-eval" / "cos_lmms_eval" / "tasks" / "cos_needle", task, ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copytree(needle_data, task / "data")
    return root


# ------------------------------------------------------------------------- crash, resume, processes
N_RESUME = 9  # 4 videos x 2 questions + 1 missing video
RESUME_ARGS = "max_frames_num=16,video_decode_backend=pyav,scorer=self,score_mode=logits"


@pytest.fixture(scope="module")
def resume_task(tmp_path_factory, needle_data) -> Path:
    """The needle task with 9 docs: every video asked twice (two wordings) and one missing video."""
    root = tmp_path_factory.mktemp("resume_tasks")
    task = root / "cos_needle"
    shutil.copytree(REPO / "lmms-eval" / "cos_lmms_eval" / "tasks" / "cos_needle", task, ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copytree(needle_data, task / "data")
    docs = json.loads((task / "data" / "questions.json").read_text())
    again = [dict(d, id=d["id"] + "_b", question=d["question"] + " Look carefully.") for d in docs]
    missing = dict(docs[0], id="missing", video="videos/not_there.mp4")
    (task / "data" / "questions.json").write_text(json.dumps(docs + again + [missing]))
    return root


def lmms_eval_cmd(model_args: str, include: Path, out: Path, task="cos_needle", model="cos_longva") -> list[str]:
    return [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args, "--tasks", task, "--include_path",
            str(include), "--batch_size", "1", "--log_samples", "--output_path", str(out), "--verbosity", "WARNING", "--timezone", "UTC"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_longva_dir, resume_task):
    """One uninterrupted single-process run."""
    d = tmp_path_factory.mktemp("reference")
    args = f"pretrained={tiny_longva_dir},{RESUME_ARGS},trace_dir={d / 'traces'}"
    proc = subprocess.run(lmms_eval_cmd(args, resume_task, d / "out"), capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = summaries(proc.stderr)
    assert summary["answered"] == str(N_RESUME - 1) and summary["failed"] == "1" and summary["from_cache"] == "0", proc.stderr[-3000:]
    return {"samples": read_samples(d / "out", "cos_needle"), "traces": read_traces(d / "traces", "cos_needle"),
            "errors": (d / "traces" / "errors.jsonl").read_text().splitlines()}


def comparable(row: dict) -> dict:
    """A logged sample without what legitimately differs between two runs (nothing, so far, but the doc's timing fields)."""
    return {k: v for k, v in row.items() if k not in ("timing", "timings")}


def test_killed_run_resumes_without_recomputing(tmp_path, tiny_longva_dir, resume_task, reference_run):
    traces, out = tmp_path / "traces", tmp_path / "out"
    cache = traces / "result_cache"
    cmd = lmms_eval_cmd(f"pretrained={tiny_longva_dir},{RESUME_ARGS},trace_dir={traces}", resume_task, out)

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    deadline = time.monotonic() + 240
    try:
        while len(list(cache.glob("??/*.json"))) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = {p: p.stat().st_mtime_ns for p in cache.glob("??/*.json")}
    # traces of the finished samples (a trace written just before the kill, without its cache entry, is redone)
    from cos.trace import trace_key

    finished = [json.loads(p.read_text())["trace"] for p in done]
    traces_done = {p: p.stat().st_mtime_ns for t in finished if t
                   for p in [traces / "cos_needle" / f"{trace_key(t['video'], t['question'])}.json"]}
    assert len(traces_done) == len(done) - sum(t is None for t in finished)
    assert 2 <= len(done) < N_RESUME, len(done)
    assert not list(out.rglob("*_results.json"))

    resumed = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)  # the same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (summary,) = summaries(resumed.stderr)
    assert int(summary["from_cache"]) == len(done), summary  # nothing already done is recomputed ...
    assert int(summary["answered"]) + int(summary["failed"]) == N_RESUME and summary["failed"] == "1"
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # ... or rewritten
    assert all(p.stat().st_mtime_ns == t for p, t in traces_done.items())
    assert len(list(cache.glob("??/*.json"))) == N_RESUME

    samples = read_samples(out, "cos_needle")
    assert sorted(samples) == list(range(N_RESUME))
    assert {i: comparable(r) for i, r in samples.items()} == {i: comparable(r) for i, r in reference_run["samples"].items()}
    assert read_traces(traces, "cos_needle") == reference_run["traces"]
    errors = (traces / "errors.jsonl").read_text().splitlines()
    assert len(errors) == 1 and json.loads(errors[0])["doc_id"] == N_RESUME - 1  # no duplicate line after the resume
    assert {k: v for k, v in json.loads(errors[0]).items() if k != "rank"} == \
        {k: v for k, v in json.loads(reference_run["errors"][0]).items() if k != "rank"}


def run_script(task: str, config: dict, nproc: int, out: Path, port: int, include: Path, **env) -> subprocess.CompletedProcess:
    cfg = out / "config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({**config, "include_path": str(include), "batch_size": 1, "log_samples": True,
                               "verbosity": "WARNING", "timezone": "UTC"}))  # JSON is YAML
    return subprocess.run(["bash", str(REPO / "scripts" / "eval_task.sh"), task, str(cfg), str(nproc)], capture_output=True, text=True,
                          env=subprocess_env(OUTPUT_PATH=str(out / "logs"), PORT=str(port), **env), timeout=400, cwd=REPO)


def test_two_processes_match_one_and_the_script_counts_failures(tmp_path, tiny_longva_dir, resume_task, reference_run):
    traces = tmp_path / "traces"
    config = {"model": "cos_longva", "model_args": f"pretrained={tiny_longva_dir},{RESUME_ARGS},trace_dir={traces}"}
    proc = run_script("cos_needle", config, 2, tmp_path, 29541, resume_task, STRICT="1")
    assert proc.returncode == 3, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])  # STRICT and one failed sample
    assert f"{N_RESUME - 1} answered, 1 failed" in proc.stdout, proc.stdout[-2000:]
    ranks = summaries(proc.stdout + proc.stderr)
    assert sorted(s["rank"] for s in ranks) == ["0", "1"]
    samples = read_samples(tmp_path / "logs", "cos_needle")
    assert sorted(samples) == list(range(N_RESUME))  # none lost, none duplicated
    assert {i: r["filtered_resps"] for i, r in samples.items()} == {i: r["filtered_resps"] for i, r in reference_run["samples"].items()}
    assert read_traces(traces, "cos_needle") == reference_run["traces"]
    assert len((traces / "errors.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_failing_process_makes_the_script_fail(tmp_path, tiny_longva_dir, needle_data, nproc):
    video = needle_data / json.loads((needle_data / "questions.json").read_text())[0]["video"]
    include = write_task(tmp_path / "tasks", "cos_rel_bug", [doc(0, "ok", video), doc(1, "bug")])  # doc 1 -> rank 1 of 2
    config = {"model": "longva", "model_args": f"pretrained={tiny_longva_dir},max_frames_num=4"}
    start = time.monotonic()
    proc = run_script("cos_rel_bug", config, nproc, tmp_path / "run", 29551 + nproc, include)
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    assert "[eval] FAILED" in proc.stderr and "injected bug" in proc.stdout + proc.stderr
    if nproc == 2:  # the failing rank left with FATAL_EXIT_CODE and the launcher stopped the other one
        assert "exitcode: 70" in proc.stdout, proc.stdout[-3000:]
    assert time.monotonic() - start < 200  # no rank left waiting in a collective


# ------------------------------------------------------------------------------------------ memory
MEMORY_SCRIPT = r"""
import json, sys
import av
from cos.trace import StageTimer
from cos_runtime.engine import build_engine
ckpt, short, long_, backend = sys.argv[1:5]
def hwm():  # peak RSS of this process (MiB); not ru_maxrss, which Linux carries over from the parent
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
engine = build_engine("longva", "uniform", dict(pretrained=ckpt, max_frames_num=128, video_decode_backend=backend))
engine.answer(short, "What is in the video?")  # warm up: same frame size, same number of frames
before = hwm()
result = engine.answer(long_, "What is in the video?")
after = hwm()
kept = [f.to_ndarray(format="rgb24") for f in av.open(long_).decode(video=0)]  # control: hold every frame
control = hwm()
print(json.dumps({"before": before, "after": after, "growth": after - before, "control": control - after, "kept": len(kept),
                  "total": result.trace.total_frames, "duration": result.trace.duration, "sampled": len(result.trace.frame_indices)}))
"""


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("long")
    size, fps, minutes = 128, 2, 20
    frames = gradient(minutes * 60 * fps, size, size)  # 2400 frames
    return {"long": encode(d / "long.mp4", frames, fps=fps), "short": encode(d / "short.mp4", frames[:16], fps=fps),
            "frames": len(frames), "bytes": len(frames) * size * size * 3}


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_memory_is_bounded_by_max_frames_not_video_length(tiny_longva_dir, long_video, backend):
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tiny_longva_dir), str(long_video["short"]), str(long_video["long"]), backend],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    all_frames_mib = long_video["bytes"] / 2**20  # 112.5 MiB
    assert res["total"] == res["kept"] == long_video["frames"] and res["duration"] == pytest.approx(1200.0) and res["sampled"] == 128
    assert res["control"] > 0.5 * all_frames_mib, res  # the measurement sees frames being held
    assert res["growth"] < 0.25 * all_frames_mib, res
    print(f"\n[{backend}] 20-min video at 128 frames: peak RSS {res['after']:.0f} MiB, growth {res['growth']:.1f} MiB "
          f"(all frames: {all_frames_mib:.0f} MiB)")
