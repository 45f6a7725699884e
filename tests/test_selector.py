"""Frame selectors (``cos.selector``): options, the query, and one selection on real H.264 videos.

The rules themselves are checked on constructed score arrays in ``test_selection.py``; here the selector is
driven end to end (streamed candidates, a text–image model loaded through ``from_pretrained``, the score
cache, the fallbacks) and compared with a naive re-computation.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from cos.errors import ConfigError
from cos.selector import DEFAULT_MODELS, SelectorConfig, question_line


# -- options -------------------------------------------------------------------------------------------
def test_selector_options_read_values_and_refuse_another_selectors_parameters():
    cfg = SelectorConfig(selector="bolt", power="2.5", candidate_fps="2")
    assert cfg.power == 2.5 and cfg.candidate_fps == 2.0 and cfg.model == DEFAULT_MODELS["bolt"]
    assert SelectorConfig(selector="aks").model == "Salesforce/blip-itm-large-coco"
    with pytest.raises(ConfigError, match=r"selector=bolt does not take t1=0.5 \(a parameter of selector=aks\)"):
        SelectorConfig(selector="bolt", t1=0.5)
    with pytest.raises(ConfigError, match=r"selector=uniform does not take power=2.0"):
        SelectorConfig(power=2)
    with pytest.raises(ConfigError, match="power='-2': expected -1"):
        SelectorConfig(selector="bolt", power="-2")
    with pytest.raises(ConfigError, match=r"selector='topk': expected one of \['uniform', 'aks', 'bolt', 'qframe'\]"):
        SelectorConfig(selector="topk")
    with pytest.raises(ConfigError, match="selector_model=oracle needs selector_truth"):
        SelectorConfig(selector="aks", selector_model="oracle")


def test_uniform_selector_leaves_every_existing_model_identity_unchanged(tmp_path):
    from cos_runtime.options import ModelOptions

    plain = ModelOptions.parse("longva", "cos", {"pretrained": str(tmp_path)})
    explicit = ModelOptions.parse("longva", "cos", {"pretrained": str(tmp_path), "selector": "uniform"})
    assert plain.identity() == explicit.identity() and not any(k.startswith("selector") for k in plain.identity())
    bolt = ModelOptions.parse("longva", "uniform", {"pretrained": str(tmp_path), "selector": "bolt", "selector_model": str(tmp_path)})
    ident = bolt.identity()
    assert ident["selector"] == "bolt" and ident["selector_model"] == str(tmp_path) and ident["power"] == 3.0
    other = ModelOptions.parse("longva", "uniform", {"pretrained": str(tmp_path), "selector": "bolt", "selector_model": str(tmp_path),
                                                     "power": 2.5})
    assert other.identity() != ident
    with pytest.raises(ConfigError, match="unknown model_args"):
        ModelOptions.parse("longva", "uniform", {"selectr": "bolt"})


# -- the query -----------------------------------------------------------------------------------------
QUESTION = "What is the man holding at the start?"
OPTIONS = ["A. a cup", "B. a phone", "C. a book", "D. a pen"]


def _task(name: str):
    return importlib.import_module(f"lmms_eval.tasks.{name}.utils")


def test_question_line_cuts_the_question_out_of_real_lmms_eval_task_prompts():
    """The prompts of lmms-eval's own videomme, mlvu and longvideobench code (their default kwargs)."""
    videomme = _task("videomme").videomme_doc_to_text(
        {"question": QUESTION, "options": OPTIONS}, {"pre_prompt": "", "post_prompt": "\nAnswer with the option's letter from the given choices directly."})
    assert videomme.startswith("Select the best answer") and question_line(videomme) == QUESTION
    qwen3 = _task("videomme").videomme_doc_to_text({"question": QUESTION, "options": OPTIONS},
                                                   {"format": "qwen3_vl", "pre_prompt": "Question: ", "post_prompt": "Answer with the option letter only."})
    assert question_line(qwen3) == QUESTION
    mlvu = _task("mlvu").mlvu_doc_to_text({"question": "What colour is the car that passes?\n(A) red\n(B) blue\n(C) green\n(D) white"},
                                          {"pre_prompt": "", "post_prompt": "\nOnly give the best option."})
    assert question_line(mlvu) == "What colour is the car that passes?"
    lvb = _task("longvideobench").longvideobench_doc_to_text(
        {"question": "In the kitchen, the woman in an apron picks up", "option0": "a knife", "option1": "a spoon", "option2": "N/A",
         "option3": "N/A", "option4": "N/A"}, {"pre_prompt": "", "post_prompt": "Answer with the option's letter from the given choices directly.\n"})
    assert question_line(lvb) == "In the kitchen, the woman in an apron picks up"  # a statement: the line before the options


def test_question_line_without_options():
    assert question_line("Describe the video.\nWhere does the dog run?\nAnswer the question using a single word.") == "Where does the dog run?"
    assert question_line("Please describe what happens in detail") == "Please describe what happens in detail"
    assert question_line("A. yes\nB. no") == "A. yes\nB. no"  # nothing but options: the prompt itself


def test_question_line_of_the_needle_task_prompt(needle_data):
    from cos_lmms_eval.tasks.cos_needle import utils

    doc = json.loads((needle_data / "questions.json").read_text())[0]
    prompt = utils.doc_to_text(doc, {"pre_prompt": "Select the best answer to the following multiple-choice question based on "
                                                              "the video.\n", "post_prompt": "\nAnswer with the option's letter."})
    assert question_line(prompt) == doc["question"]


# -- one selection, end to end -------------------------------------------------------------------------
def _docs(needle_data) -> list[dict]:
    return json.loads((needle_data / "questions.json").read_text())


def _engine(tiny_longva_dir, method="uniform", **values):
    from cos_runtime.engine import build_engine

    base = {"pretrained": str(tiny_longva_dir), "max_frames_num": 8, "video_decode_backend": "pyav"}
    if method == "cos":
        base.update(scorer="uniform")
    return build_engine("longva", method, {**base, **values})


def _oracle(needle_data, selector="bolt", **values):
    return {"selector": selector, "selector_model": "oracle", "selector_truth": str(needle_data / "questions.json"), "candidate_fps": 8,
            **values}


@pytest.mark.parametrize("method", ["uniform", "cos"])
@pytest.mark.parametrize("selector", ["aks", "bolt", "qframe"])
def test_the_model_sees_the_frames_the_rule_chooses_on_its_candidates(tiny_longva_dir, needle_data, method, selector):
    """Candidates at 8 per second of an 8 fps video (every frame), scored 1 on the needle by the oracle, the rule
    applied by hand: the model's frames are exactly the chosen candidates, for the baseline and for CoS."""
    from cos.selection import select
    from cos.trace import StageTimer
    from cos.video import rate_indices, sample_frames

    doc = _docs(needle_data)[1]
    path = needle_data / doc["video"]
    probe = sample_frames(path, 1, backend="pyav")
    candidates = rate_indices(probe.total_frames, probe.fps, 8)
    scores = ((candidates >= doc["needle_start"]) & (candidates < doc["needle_end"])).astype(float)
    expected = [int(candidates[i]) for i in select(selector, scores, 8).selected]
    engine = _engine(tiny_longva_dir, method, **_oracle(needle_data, selector))
    result = engine.answer(str(path), doc["question"], None)
    trace = result.trace
    assert trace.frame_indices == expected and trace.selector["fallback"] is None
    assert trace.selector["candidates"] == candidates.tolist() and trace.selector["scores"] == scores.tolist()
    assert trace.selector["query"] == doc["question"] and trace.method == method
    assert {"select_decode", "select_score", "select_rule"} <= set(trace.timings)
    frames, _ = engine.load_frames(str(path), StageTimer(), doc["question"])
    assert np.array_equal(frames, sample_frames(path, None, backend="pyav", rule=lambda t, f: np.asarray(expected)).frames)


def test_bolt_on_the_needle_takes_needle_frames(tiny_longva_dir, needle_data):
    doc = _docs(needle_data)[1]
    trace = _engine(tiny_longva_dir, **_oracle(needle_data)).answer(str(needle_data / doc["video"]), doc["question"], None).trace
    inside = [doc["needle_start"] <= i < doc["needle_end"] for i in trace.frame_indices]
    assert all(inside) if doc["needle_end"] - doc["needle_start"] >= 8 else sum(inside) == doc["needle_end"] - doc["needle_start"]


def test_fewer_candidates_than_frames_or_a_short_selection_fall_back_to_the_backends_rule(tiny_longva_dir, needle_data):
    doc = _docs(needle_data)[0]
    path = str(needle_data / doc["video"])
    uniform = _engine(tiny_longva_dir).answer(path, doc["question"], None)
    # 1 candidate per second of a 4-8 s video for 8 frames: nothing is scored, the backend's own frames
    short = _engine(tiny_longva_dir, **_oracle(needle_data, candidate_fps=1)).answer(path, doc["question"], None)
    assert short.trace.frame_indices == uniform.trace.frame_indices and short.text == uniform.text
    assert "candidates at 1 per second for 8 frames" in short.trace.selector["fallback"] and short.trace.selector["scores"] is None
    # AKS with the release's budget: a depth-d leaf keeps int(8 / 2**d) frames -> fewer than 8 -> uniform, said so
    release = _engine(tiny_longva_dir, **_oracle(needle_data, "aks", budget="release")).answer(path, doc["question"], None)
    sel = release.trace.selector
    assert release.trace.frame_indices == uniform.trace.frame_indices
    assert len(sel["selected"]) < 8 and "returned" in sel["note"] and sel["note"] in sel["fallback"]


def test_selector_uniform_is_todays_model_exactly(tiny_longva_dir, needle_data):
    doc = _docs(needle_data)[2]
    path = str(needle_data / doc["video"])
    for method in ("uniform", "cos"):
        plain = _engine(tiny_longva_dir, method).answer(path, doc["question"], None)
        explicit = _engine(tiny_longva_dir, method, selector="uniform").answer(path, doc["question"], None)
        assert plain.text == explicit.text and plain.trace.frame_indices == explicit.trace.frame_indices
        assert plain.trace.answer_tokens == explicit.trace.answer_tokens and explicit.trace.selector is None


def test_prefetched_selection_equals_serial_and_scores_are_cached(tiny_longva_dir, needle_data, tmp_path):
    doc = _docs(needle_data)[3]
    path = str(needle_data / doc["video"])
    engine = _engine(tiny_longva_dir, **_oracle(needle_data), score_cache_dir=str(tmp_path / "cache"))
    serial = engine.answer(path, doc["question"], None)
    assert serial.trace.selector["cache_hit"] is False
    ahead = engine.prepare(path, doc["question"])
    prefetched = engine.answer(path, doc["question"], None, prepared=ahead)
    assert prefetched.trace.selector["cache_hit"] is True  # the second look at the same video and query
    assert prefetched.text == serial.text and prefetched.trace.frame_indices == serial.trace.frame_indices
    assert prefetched.trace.selector["scores"] == serial.trace.selector["scores"]
    other = engine.answer(path, "Which shape is red?", None)  # another query: scored again
    assert other.trace.selector["cache_hit"] is False


def test_a_selector_refuses_images_and_unknown_videos_clearly(tiny_longva_dir, needle_data, tmp_path):
    import shutil

    from cos.errors import CosError

    stranger = tmp_path / "elsewhere.mp4"
    shutil.copy(needle_data / _docs(needle_data)[0]["video"], stranger)
    engine = _engine(tiny_longva_dir, **_oracle(needle_data))
    frames = [np.zeros((16, 16, 3), dtype=np.uint8)] * 4
    with pytest.raises(ConfigError, match="list of 4 images"):
        engine.answer(frames, "What is shown?", None)
    with pytest.raises(CosError, match="selector oracle: .* is not in selector_truth="):
        engine.answer(str(stranger), "What is shown?", None)


@pytest.mark.parametrize("kind,selector", [("clip", "bolt"), ("blip", "aks"), ("siglip", "qframe")])
def test_a_text_image_selector_equals_a_naive_pass_over_the_candidates(tiny_longva_dir, needle_data, tiny_text_image_dirs, kind, selector):
    """Candidates streamed in chunks of 3 and scored by a tiny model loaded through from_pretrained = every candidate
    decoded at once (sample_frames) and scored in one call; the model sees exactly the frames the rule picks."""
    from cos.selection import select
    from cos.text_image import get_text_image_model
    from cos.video import rate_indices, sample_frames

    doc = _docs(needle_data)[0]
    path = needle_data / doc["video"]
    probe = sample_frames(path, 1, backend="pyav")
    candidates = rate_indices(probe.total_frames, probe.fps, 4)
    frames = sample_frames(path, None, backend="pyav", rule=lambda t, f: candidates).frames
    model = get_text_image_model(str(tiny_text_image_dirs[kind]), batch_size=64)
    scores = model.score(list(frames), doc["question"])
    expected = [int(candidates[i]) for i in select(selector, scores, 8).selected]
    engine = _engine(tiny_longva_dir, "cos", selector=selector, selector_model=str(tiny_text_image_dirs[kind]), candidate_fps=4,
                     selector_batch_size=3)
    trace = engine.answer(str(path), doc["question"] + "\nA. white\nB. black", None).trace
    assert trace.selector["candidates"] == candidates.tolist() and trace.selector["query"] == doc["question"]
    np.testing.assert_allclose(trace.selector["scores"], scores, rtol=1e-5, atol=1e-6)
    assert trace.frame_indices == expected and len(set(scores.round(6))) > 1  # the scores differ between frames


@pytest.mark.parametrize("backend", ["llava_video", "videoxl"])
def test_every_registered_base_takes_a_selector(backend, request, needle_data):
    """LLaVA-Video (whose own rule samples by frame rate and states frame times) and Video-XL see the chosen frames."""
    from cos.selection import select
    from cos.video import rate_indices, sample_frames
    from cos_runtime.engine import build_engine

    ckpt = request.getfixturevalue(f"tiny_{backend}_dir")
    doc = _docs(needle_data)[1]
    path = needle_data / doc["video"]
    probe = sample_frames(path, 1, backend="pyav")
    candidates = rate_indices(probe.total_frames, probe.fps, 8)
    scores = ((candidates >= doc["needle_start"]) & (candidates < doc["needle_end"])).astype(float)
    expected = [int(candidates[i]) for i in select("bolt", scores, 8).selected]
    for method in ("uniform", "cos"):
        extra = {"scorer": "uniform"} if method == "cos" else {}
        engine = build_engine(backend, method, {"pretrained": str(ckpt), "max_frames_num": 8, "video_decode_backend": "pyav",
                                                **_oracle(needle_data), **extra})
        trace = engine.answer(str(path), doc["question"], None).trace
        assert trace.backend == backend and trace.frame_indices == expected and trace.selector["fallback"] is None
        assert trace.frame_times == pytest.approx([i / probe.fps for i in expected])


def test_a_selector_on_a_folder_of_frames(tiny_longva_dir, needle_data, tiny_text_image_dirs, tmp_path):
    """A frame folder (unknown frame rate: every image is a candidate) is read as a folder for the candidates and for
    the chosen frames."""
    from PIL import Image

    from cos.selection import select
    from cos.text_image import get_text_image_model
    from cos.video import sample_frames

    doc = _docs(needle_data)[0]
    video = sample_frames(needle_data / doc["video"], 20, backend="pyav")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(video.frames):
        Image.fromarray(frame).save(folder / f"{i + 1}.png")
    scores = get_text_image_model(str(tiny_text_image_dirs["clip"])).score(list(video.frames), doc["question"])
    expected = select("bolt", scores, 8).selected
    trace = _engine(tiny_longva_dir, selector="bolt", selector_model=str(tiny_text_image_dirs["clip"])).answer(
        str(folder), doc["question"], None).trace
    assert trace.decoder == "frames" and trace.selector["candidates"] == list(range(20)) and trace.frame_indices == expected
    assert trace.frame_times is None and trace.selector["fallback"] is None
