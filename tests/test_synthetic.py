"""Synthetic needle videos (``cos.synthetic``): determinism, schema, needle visibility, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cos import synthetic
from cos.errors import ConfigError
from cos.synthetic import COLOURS, SHAPES, make_needle_videos
from cos.video import sample_frames

REPO = Path(__file__).resolve().parents[1]
KW = dict(n=3, min_frames=40, max_frames=90, size=64, fps=8.0, progress=False)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    base = tmp_path_factory.mktemp("needles")
    return {
        "a": make_needle_videos(base / "a", seed=0, **KW),
        "b": make_needle_videos(base / "b", seed=0, **KW),
        "c": make_needle_videos(base / "c", seed=1, **KW),
    }


def load(json_path):
    return json.loads(Path(json_path).read_text(encoding="utf-8"))


def all_frames(json_path, rec, backend="pyav"):
    sv = sample_frames(Path(json_path).parent / rec["video"], rec["num_frames"], backend=backend)
    np.testing.assert_array_equal(sv.indices, np.arange(rec["num_frames"]))
    return sv


def test_same_seed_is_byte_identical(gen):
    a, b = gen["a"], gen["b"]
    assert a.name == "questions.json"
    assert a.read_bytes() == b.read_bytes()
    for rec in load(a):
        assert (a.parent / rec["video"]).read_bytes() == (b.parent / rec["video"]).read_bytes()
    rec = load(a)[0]
    np.testing.assert_array_equal(
        sample_frames(a.parent / rec["video"], 16).frames, sample_frames(b.parent / rec["video"], 16).frames
    )


def test_different_seed_differs(gen):
    a, c = load(gen["a"]), load(gen["c"])
    assert a != c
    assert [r["seed"] for r in a] != [r["seed"] for r in c]
    fa = sample_frames(gen["a"].parent / a[0]["video"], 8).frames
    fc = sample_frames(gen["c"].parent / c[0]["video"], 8).frames
    assert fa.shape != fc.shape or not np.array_equal(fa, fc)


def test_questions_json_schema(gen):
    text = gen["a"].read_text(encoding="utf-8")
    recs = json.loads(text)
    assert text == json.dumps(recs, indent=2, ensure_ascii=False) + "\n"
    assert [r["id"] for r in recs] == ["needle_000", "needle_001", "needle_002"]
    for r in recs:
        assert r["video"] == f"videos/{r['id']}.mp4" and (gen["a"].parent / r["video"]).is_file()
        assert len(r["options"]) == 4 and [o[:3] for o in r["options"]] == ["A. ", "B. ", "C. ", "D. "]
        values = [o[3:] for o in r["options"]]
        assert len(set(values)) == 4
        truth = r["needle_colour"] if r["question_type"] == "colour" else r["needle_shape"]
        assert values.count(truth) == 1 and values["ABCD".index(r["answer"])] == truth
        assert set(values) <= (set(COLOURS) if r["question_type"] == "colour" else set(SHAPES))
        assert 40 <= r["num_frames"] <= 90
        assert 0 <= r["needle_start"] < r["needle_end"] <= r["num_frames"]
        length = r["needle_end"] - r["needle_start"]
        assert 0.10 * r["num_frames"] - 1 <= length <= 0.25 * r["num_frames"] + 1
        assert (r["width"], r["height"], r["fps"]) == (64, 64, 8.0)
        assert isinstance(r["seed"], int) and isinstance(r["fps"], float)


def test_question_types_and_answers_vary():
    plans = [synthetic._plan_video(i, 0, 64, 256, 32, 8.0)["record"] for i in range(60)]
    assert {p["question_type"] for p in plans} == {"colour", "shape"}
    assert len({p["answer"] for p in plans}) == 4
    assert len({p["needle_colour"] for p in plans}) == len(COLOURS)
    assert len({p["needle_shape"] for p in plans}) == len(SHAPES)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_videos_decode_with_the_recorded_geometry(gen, backend):
    for rec in load(gen["a"]):
        sv = sample_frames(gen["a"].parent / rec["video"], 8, backend=backend)
        assert sv.total_frames == rec["num_frames"]
        assert sv.frames.shape[1:] == (rec["height"], rec["width"], 3)
        assert sv.fps == pytest.approx(rec["fps"])


def test_needle_is_visible_only_inside_its_range(gen):
    for rec in load(gen["a"]) + load(gen["c"]):
        path = gen["a"] if rec in load(gen["a"]) else gen["c"]
        frames = all_frames(path, rec).frames.astype(np.int16)
        inside = np.zeros(rec["num_frames"], dtype=bool)
        inside[rec["needle_start"] : rec["needle_end"]] = True
        for name, rgb in COLOURS.items():
            near = (np.abs(frames - np.array(rgb, dtype=np.int16)).max(axis=-1) <= 40).mean(axis=(1, 2))
            if name == rec["needle_colour"]:
                assert near[inside].min() >= 0.05, (rec["id"], near[inside].min())  # a large shape
            else:
                assert near[inside].max() <= 0.002
            assert near[~inside].max() <= 0.002, (rec["id"], name)  # nowhere else in the video
        saturation = frames.max(axis=-1) - frames.min(axis=-1)
        assert np.percentile(saturation[~inside], 99.9) < 60  # the background stays greyish


def test_background_moves(gen):
    rec = load(gen["a"])[0]
    frames = sample_frames(gen["a"].parent / rec["video"], 4).frames.astype(int)
    assert all(np.abs(frames[i] - frames[i + 1]).mean() > 2 for i in range(3))
    assert frames.std() > 10


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(n=0), "n"),
        (dict(n=1, size=63), "even"),
        (dict(n=1, size=8), "size"),
        (dict(n=1, min_frames=100, max_frames=50), "min_frames"),
        (dict(n=1, fps=0.0), "fps"),
        (dict(n=1, seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        make_needle_videos(tmp_path / "out", progress=False, **kwargs)


def test_cli_writes_playable_videos(tmp_path):
    out = tmp_path / "needles"
    proc = subprocess.run(
        [sys.executable, "-m", "cos_runtime", "make-needle-videos", str(out), "--n", "2", "--seed", "3"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(out / "questions.json") in proc.stdout and "2" in proc.stdout
    recs = load(out / "questions.json")
    assert len(recs) == 2
    for rec in recs:
        assert 64 <= rec["num_frames"] <= 256
        sv = sample_frames(out / rec["video"], 8, backend="decord")
        assert sv.total_frames == rec["num_frames"] and sv.frames.shape == (8, 64, 64, 3)
    bad = subprocess.run(
        [sys.executable, "-m", "cos_runtime", "make-needle-videos", str(tmp_path / "x"), "--n", "1", "--size", "63"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert bad.returncode == 1 and "even" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------------- distractors, splits
@pytest.fixture(scope="module")
def distracted(tmp_path_factory):
    return make_needle_videos(tmp_path_factory.mktemp("distracted"), n=4, seed=5, min_frames=60, max_frames=90, size=64, fps=8.0,
                              progress=False, distractors=3, split="test")


def test_distractor_questions_name_the_needle_uniquely(distracted):
    recs = load(distracted)
    assert {r["question_type"] for r in recs} <= {"shape_of_colour", "colour_of_shape"}
    for r in recs:
        events = r["events"]
        assert r["distractors"] == 3 and len(events) == 4 and sum(e["target"] for e in events) == 1
        target = next(e for e in events if e["target"])
        assert (target["colour"], target["shape"], target["start"], target["end"]) == (
            r["needle_colour"], r["needle_shape"], r["needle_start"], r["needle_end"])
        spans = sorted((e["start"], e["end"]) for e in events)
        assert all(0 <= a < b <= r["num_frames"] for a, b in spans)
        assert all(spans[i][1] <= spans[i + 1][0] for i in range(3))  # never at the same time
        named, asked = ("colour", "shape") if r["question_type"] == "shape_of_colour" else ("shape", "colour")
        assert target[named] in r["question"]
        others = [e for e in events if not e["target"]]
        assert all(e[named] != target[named] for e in others)  # the question names the needle uniquely
        values = [o[3:] for o in r["options"]]
        assert len(set(values)) == 4 and values["ABCD".index(r["answer"])] == target[asked]
        confusers = {e[asked] for e in others} - {target[asked]}
        assert len(confusers & set(values)) == min(3, len(confusers))  # the distractors' other answers are among the options


def test_every_event_is_visible_only_in_its_range(distracted):
    for rec in load(distracted):
        frames = all_frames(distracted, rec).frames.astype(np.int16)
        for event in rec["events"]:
            inside = np.zeros(rec["num_frames"], dtype=bool)
            inside[event["start"] : event["end"]] = True
            rgb = np.array(COLOURS[event["colour"]], dtype=np.int16)
            near = (np.abs(frames - rgb).max(axis=-1) <= 40).mean(axis=(1, 2))
            assert near[inside].min() >= 0.05, (rec["id"], event)
            shown_elsewhere = np.zeros(rec["num_frames"], dtype=bool)
            for other in rec["events"]:
                if other["colour"] == event["colour"]:
                    shown_elsewhere[other["start"] : other["end"]] = True
            assert near[~shown_elsewhere].max() <= 0.002, (rec["id"], event)


def test_splits_draw_their_own_videos_and_none_keeps_the_original_stream():
    def seeds(split):
        return [synthetic._plan_video(i, 0, 64, 256, 32, 8.0, split=split)["record"]["seed"] for i in range(20)]

    train, val, test, original = seeds("train"), seeds("val"), seeds("test"), seeds(None)
    assert len(set(train) | set(val) | set(test) | set(original)) == 80
    assert original == [synthetic._video_seed(0, i) for i in range(20)]
    plain = synthetic._plan_video(7, 0, 64, 256, 32, 8.0)["record"]
    assert "events" not in plain and plain["question_type"] in ("colour", "shape")  # distractors=0: the original task


def test_distractors_share_the_asked_attribute_sometimes_so_a_unique_option_is_no_shortcut():
    plans = [synthetic._plan_video(i, 0, 64, 128, 32, 8.0, distractors=3)["record"] for i in range(200)]
    shared = 0
    for r in plans:
        asked = "shape" if r["question_type"] == "shape_of_colour" else "colour"
        target = next(e for e in r["events"] if e["target"])
        shared += any(e[asked] == target[asked] for e in r["events"] if not e["target"])
    assert 0 < shared < len(plans)


@pytest.mark.parametrize("kwargs,needle", [(dict(distractors=7), "distractors"), (dict(split="dev"), "split"),
                                           (dict(distractors=6, min_frames=8, max_frames=13), "at least 14")])
def test_bad_distractor_arguments(tmp_path, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        make_needle_videos(tmp_path / "out", n=1, progress=False, **kwargs)
