"""The oracle scorer (``scorer=oracle``): the needle task's ground truth as the shot scorer, the method's ceiling.

Decisions come from ``scorer_truth`` (``cos make-needle-videos OUT``'s OUT/questions.json) and the sampled
source frames, never from pixels: exact decisions on constructed cases, the errors, the score cache's
identity, and one run through the runtime engine on the tiny LongVA checkpoint and real needle videos.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cos import options as opt
from cos.errors import ConfigError
from cos.pipeline import CoSConfig, CoSPipeline
from cos.protocol import VideoInfo
from cos.scoring import (
    SCORER_NAMES,
    OracleScorer,
    ScorerConfig,
    ShotScorer,
    ShotScores,
    UniformScorer,
    clear_scorer_cache,
    get_scorer,
    oracle_decisions,
)
from cos.trace import StageTimer

QUESTION = "What colour is the shape that briefly appears in the video?\nA. red\nB. green\nC. blue\nD. yellow"


def _truth(folder: Path, records: list[dict], name: str = "questions.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(records))
    return path


def _record(video="videos/needle_000.mp4", start=8, end=12, num_frames=40, **extra) -> dict:
    return {"id": Path(video).stem, "video": video, "needle_start": start, "needle_end": end, "num_frames": num_frames, **extra}


def _groups(*groups) -> list[np.ndarray]:
    return [np.asarray(g, dtype=np.int64) for g in groups]


# ------------------------------------------------------------------------------------------- decisions
def test_decisions_start_inclusive_end_exclusive():
    idx = [0, 4, 8, 12, 16, 20, 24, 28]
    groups = _groups([0, 1], [2, 3], [4, 5], [6, 7])  # sources {0,4} {8,12} {16,20} {24,28}
    assert oracle_decisions(idx, groups, 8, 12).tolist() == [0, 1, 0, 0]  # start 8 is inside
    assert oracle_decisions(idx, groups, 5, 8).tolist() == [0, 0, 0, 0]  # end 8 is outside, nothing sampled in [5, 8)
    assert oracle_decisions(idx, groups, 4, 5).tolist() == [1, 0, 0, 0]  # a one-frame needle on a sampled frame
    assert oracle_decisions(idx, groups, 13, 17).tolist() == [0, 0, 1, 0]  # 16 inside, 12 (before) is not
    assert oracle_decisions(idx, groups, 12, 13).tolist() == [0, 1, 0, 0]
    assert oracle_decisions(idx, groups, 28, 29).tolist() == [0, 0, 0, 1]  # the last frame
    assert oracle_decisions(idx, groups, 0, 29).tolist() == [1, 1, 1, 1]
    assert oracle_decisions(idx, groups, 10, 10).tolist() == [0, 0, 0, 0]  # an empty needle
    assert oracle_decisions(idx, groups, 29, 40).tolist() == [0, 0, 0, 0]  # after every sampled frame


def test_decisions_follow_the_groups_positions_not_the_source_order():
    idx = [3, 3, 10, 11, 50, 51, 52]  # repeated indices (a short video), a leftover group of 3
    assert oracle_decisions(idx, _groups([0, 1, 2, 3], [4, 5, 6]), 52, 53).tolist() == [0, 1]
    assert oracle_decisions(idx, _groups([0, 1, 2, 3], [4, 5, 6]), 3, 4).tolist() == [1, 0]
    assert oracle_decisions(idx, _groups([0, 1, 2, 3]), 50, 60).tolist() == [0]  # leftover dropped: no group sees 50..52
    with pytest.raises(ValueError, match="outside the 7 sampled frames"):
        oracle_decisions(idx, _groups([5, 6, 7]), 0, 100)


def test_oracle_scorer_scores_from_the_truth_file(tmp_path):
    path = _truth(tmp_path / "data", [_record("videos/a.mp4", 8, 12, 40), _record("videos/b.mp4", 0, 1, 40)])
    scorer = OracleScorer(path)
    video = VideoInfo(frame_indices=(0, 4, 8, 12, 16, 20, 24, 28, 32, 36), source=str(tmp_path / "data" / "videos" / "a.mp4"))
    groups = _groups([0, 1, 2, 3], [4, 5, 6, 7], [8, 9])  # leftover "pad": a last group of 2
    out = scorer.score_shots([None] * 3, QUESTION, video, groups)
    assert isinstance(out, ShotScores)
    assert out.decisions.tolist() == [1, 0, 0] and out.scores.tolist() == [1.0, 0.0, 0.0] and out.responses == ["", "", ""]
    b = VideoInfo(frame_indices=video.frame_indices, source=str(tmp_path / "data" / "videos" / "b.mp4"))
    assert scorer.score_shots([None] * 3, QUESTION, b, groups).decisions.tolist() == [1, 0, 0]
    late = VideoInfo(frame_indices=(0, 4, 8, 12, 16, 20, 24, 28, 32, 36), source=video.source)
    path.write_text(json.dumps([_record("videos/a.mp4", 36, 40, 40)]))
    assert OracleScorer(path).score_shots([None] * 3, QUESTION, late, groups).decisions.tolist() == [0, 0, 1]  # the leftover group


def test_videos_match_by_resolved_path_then_by_unique_file_name(tmp_path, monkeypatch):
    path = _truth(tmp_path / "data", [_record("videos/a.mp4", 0, 5), _record("./videos/../videos/b.mp4", 5, 10),
                                      _record("other/a.mp4", 10, 20)])
    scorer = OracleScorer(path)
    groups, idx = _groups([0], [1], [2]), (0, 5, 10)
    monkeypatch.chdir(tmp_path / "data")
    assert scorer.score_shots([None] * 3, QUESTION, VideoInfo(idx, source="videos/a.mp4"), groups).decisions.tolist() == [1, 0, 0]
    assert scorer.score_shots([None] * 3, QUESTION, VideoInfo(idx, source="other/a.mp4"), groups).decisions.tolist() == [0, 0, 1]
    # a copy elsewhere (a task's data folder): found by its file name when exactly one record has it
    assert scorer.score_shots([None] * 3, QUESTION, VideoInfo(idx, source="/elsewhere/b.mp4"), groups).decisions.tolist() == [0, 1, 0]
    with pytest.raises(ConfigError, match="file name matches 2 records"):
        scorer.score_shots([None] * 3, QUESTION, VideoInfo(idx, source="/elsewhere/a.mp4"), groups)


# ------------------------------------------------------------------------------------------------ errors
def test_scorer_oracle_without_truth_names_the_option():
    with pytest.raises(ConfigError, match=r"scorer=oracle needs scorer_truth=<questions.json>"):
        ScorerConfig(scorer="oracle")
    with pytest.raises(ConfigError, match=r"scorer_truth=<questions.json>"):
        get_scorer("oracle")
    with pytest.raises(ConfigError, match="scorer_truth=<questions.json>"):
        opt.parse({"scorer": ScorerConfig}, {"scorer": "oracle", "scorer_truth": "none"})


def test_unreadable_truth_files_are_config_errors(tmp_path):
    missing = tmp_path / "nope" / "questions.json"
    with pytest.raises(ConfigError, match=r"scorer_truth=.*nope/questions.json.*cannot read it.*cos make-needle-videos OUT"):
        OracleScorer(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        OracleScorer(bad)
    bad.write_text(json.dumps({"video": "a.mp4"}))
    with pytest.raises(ConfigError, match="not a list of records"):
        OracleScorer(bad)
    bad.write_text("[]")
    with pytest.raises(ConfigError, match="an empty list"):
        OracleScorer(bad)


@pytest.mark.parametrize("drop", ["video", "needle_start", "needle_end", "num_frames"])
def test_a_record_without_a_field_is_named(tmp_path, drop):
    rec = _record("videos/needle_001.mp4")
    del rec[drop]
    path = _truth(tmp_path, [_record(), rec])
    with pytest.raises(ConfigError) as info:
        OracleScorer(path)
    msg = str(info.value)
    assert f"record 1 ('needle_001') lacks {drop}" in msg and str(path) in msg
    assert "video, needle_start, needle_end, num_frames" in msg


@pytest.mark.parametrize("rec, words", [
    (_record(start="8"), "non-integer frame numbers"),
    (_record(start=True), "non-integer frame numbers"),
    (_record(start=12, end=8), "0 <= needle_start <= needle_end <= num_frames"),
    (_record(end=41, num_frames=40), "0 <= needle_start <= needle_end <= num_frames"),
    (_record(video=""), "not a path"),
])
def test_bad_record_values_are_named(tmp_path, rec, words):
    with pytest.raises(ConfigError, match=words):
        OracleScorer(_truth(tmp_path, [rec]))


def test_one_video_with_two_needles_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="two different needles"):
        OracleScorer(_truth(tmp_path, [_record("v.mp4", 1, 2), _record("./v.mp4", 3, 4)]))
    OracleScorer(_truth(tmp_path, [_record("v.mp4", 1, 2), _record("./v.mp4", 1, 2)]))  # two questions, one video: fine


def test_unknown_or_missing_video_is_a_config_error(tmp_path):
    path = _truth(tmp_path, [_record("videos/needle_000.mp4")])
    scorer = OracleScorer(path)
    groups = _groups([0, 1])
    with pytest.raises(ConfigError) as info:
        scorer.score_shots([None], QUESTION, VideoInfo((0, 1), source="/data/clip.mp4"), groups)
    assert "'/data/clip.mp4'" in str(info.value) and str(path) in str(info.value) and "is not in scorer_truth" in str(info.value)
    for video in (None, VideoInfo((0, 1))):  # no video, or images in memory (no source)
        with pytest.raises(ConfigError, match=r"needs the video's path .*scorer_truth="):
            scorer.score_shots([None], QUESTION, video, groups)
    with pytest.raises(ConfigError, match="score_shots"):
        scorer.score([None], QUESTION)  # mosaics alone do not say which frames they show


def test_a_video_with_another_frame_count_is_not_taken_for_the_record(tmp_path):
    """Every split names its files needle_000.mp4...: a same-named video of another length is refused, not scored."""
    path = _truth(tmp_path, [_record("videos/needle_000.mp4", start=8, end=12, num_frames=40)])
    scorer = OracleScorer(path)
    groups = _groups([0, 1])
    elsewhere = "/other/split/videos/needle_000.mp4"
    with pytest.raises(ConfigError, match=r"has 64 frames but its record .* has 40: not the same video"):
        scorer.score_shots([None], QUESTION, VideoInfo((0, 10), total_frames=64, source=elsewhere), groups)
    same = scorer.score_shots([None], QUESTION, VideoInfo((0, 10), total_frames=40, source=elsewhere), groups)
    assert same.decisions.tolist() == [1]
    unknown = scorer.score_shots([None], QUESTION, VideoInfo((0, 10), source=elsewhere), groups)  # length not known
    assert unknown.decisions.tolist() == [1]


# ------------------------------------------------------------------------------------ config and cache
def test_oracle_is_a_scorer_name_and_is_built_once_per_truth_file(tmp_path):
    assert "oracle" in SCORER_NAMES
    path = _truth(tmp_path, [_record()])
    cfg = ScorerConfig(scorer="oracle", scorer_truth=os.path.relpath(path))
    assert cfg.scorer_truth == str(path)  # made absolute when read
    clear_scorer_cache()
    before = OracleScorer.constructions
    a = cfg.build()
    assert isinstance(a, OracleScorer) and a.name == "oracle" and a.truth == str(path)
    assert ScorerConfig(scorer="oracle", scorer_truth=str(path)).build() is a
    assert OracleScorer.constructions - before == 1
    path.write_text(json.dumps([_record(start=0, end=40, note="rewritten")]))  # rewritten (new size): read again
    b = cfg.build()
    assert b is not a and b.lookup(tmp_path / "videos" / "needle_000.mp4").needle_end == 40
    clear_scorer_cache()


def test_scorer_truth_stays_out_of_identities_that_do_not_set_it(tmp_path):
    """Existing configurations keep their result-cache keys; the oracle's truth file is part of its identity."""
    assert "scorer_truth" not in opt.identity(ScorerConfig())
    path = _truth(tmp_path, [_record()])
    assert opt.identity(ScorerConfig(scorer="oracle", scorer_truth=str(path)))["scorer_truth"] == str(path)


def test_the_pipeline_passes_the_video_and_groups_to_the_scorer():
    seen = {}

    class Spy(UniformScorer):
        def score_shots(self, mosaics, question, video=None, groups=None):
            seen.update(video=video, groups=[g.tolist() for g in groups], mosaics=len(mosaics))
            return super().score_shots(mosaics, question, video, groups)

    frames = np.zeros((10, 8, 8, 3), dtype=np.uint8)
    video = VideoInfo(tuple(range(0, 100, 10)), source="/x/v.mp4")
    pipe = CoSPipeline(model=None, scorer=Spy(), config=CoSConfig(shot_size=4))
    g = pipe.ground(frames, QUESTION, StageTimer(None), video=video)
    assert seen == {"video": video, "groups": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], "mosaics": 3}
    assert g.code.tolist() == [0] * 10
    assert video.shown([1, 0, -1]).source == "/x/v.mp4"
    assert issubclass(OracleScorer, ShotScorer)


# ---------------------------------------------------------------------------------------- end to end
def _expected_code(doc: dict, n: int, k: int, leftover: str) -> list[int]:
    """Independent ground truth: linspace sampling, shots of k consecutive sampled frames, any needle frame."""
    idx = np.linspace(0, doc["num_frames"] - 1, n, dtype=int)
    shown = (idx >= doc["needle_start"]) & (idx < doc["needle_end"])
    stop = n if leftover == "pad" else n // k * k
    code = [0] * n
    for start in range(0, stop, k):
        hit = int(shown[start : min(start + k, stop)].any())
        for p in range(start, min(start + k, stop)):
            code[p] = hit
    return code


@pytest.mark.parametrize("n, leftover", [(16, "pad"), (10, "pad"), (10, "drop")])
def test_engine_trace_code_is_the_ground_truth(tmp_path, tiny_longva_dir, needle_data, n, leftover):
    from cos.pipeline import GenerationOptions
    from cos_runtime.engine import build_engine

    truth = needle_data / "questions.json"
    docs = json.loads(truth.read_text())
    engine = build_engine("longva", "cos", dict(pretrained=str(tiny_longva_dir), max_frames_num=n, scorer="oracle", leftover=leftover,
                                                scorer_truth=str(truth), score_cache_dir=str(tmp_path / "scores")))
    codes = []
    for doc in docs:
        result = engine.answer(str(needle_data / doc["video"]), QUESTION, GenerationOptions(max_new_tokens=2))
        t = result.trace
        assert t.scorer == "oracle" and t.score_cache_hit is False
        assert t.frame_indices == np.linspace(0, doc["num_frames"] - 1, n, dtype=int).tolist()
        assert t.binary_code == _expected_code(doc, n, 4, leftover), doc["id"]
        assert t.shot_scores == [float(d) for d in t.shot_decisions] and set(t.shot_responses) == {""}
        codes.append(t.binary_code)
    assert any(any(c) for c in codes) and not all(all(c) for c in codes)  # the check is not vacuous
    # the score cache: a second pass hits it, with the same code
    again = engine.answer(str(needle_data / docs[0]["video"]), QUESTION, GenerationOptions(max_new_tokens=2)).trace
    assert again.score_cache_hit is True and again.binary_code == codes[0]


def test_score_cache_keys_hold_the_scorer_and_the_truth_file(tmp_path, tiny_longva_dir, needle_data):
    """A llava score is never the oracle's (nor the other way round), and a rewritten truth file is a new key."""
    from cos_runtime.engine import build_engine
    from cos_runtime.options import ModelOptions

    data = tmp_path / "data"
    shutil.copytree(needle_data, data)
    truth = data / "questions.json"
    base = dict(pretrained=str(tiny_longva_dir), max_frames_num=8, score_cache_dir=str(tmp_path / "scores"))
    engine = build_engine("longva", "cos", {**base, "scorer": "oracle", "scorer_truth": str(truth)})
    info = {"video": str(data / "videos" / "needle_000.mp4"), "frame_indices": list(range(8)), "decoder": "decord"}
    frames = np.zeros((8, 4, 4, 3), dtype=np.uint8)
    oracle_key = engine.score_cache_key(info, frames, QUESTION)
    assert engine.scorer_identity()["scorer"] == "oracle" and engine.scorer_identity()["scorer_truth"]["path"] == str(truth)

    oracle_opts = engine.opts
    engine.opts = ModelOptions.parse("longva", "cos", {**base, "scorer": "llava"})  # identity only: no llava is loaded
    llava_key = engine.score_cache_key(info, frames, QUESTION)
    assert "scorer_truth" not in engine.scorer_identity()
    engine.opts = ModelOptions.parse("longva", "cos", {**base, "scorer": "llava", "scorer_truth": str(truth)})
    assert engine.score_cache_key(info, frames, QUESTION) == llava_key  # ignored by llava
    assert llava_key != oracle_key

    engine.opts = oracle_opts
    truth.write_text(truth.read_text() + "\n")  # the same path, another file
    assert engine.score_cache_key(info, frames, QUESTION) != oracle_key


def test_lmms_eval_model_args_accept_the_oracle(tmp_path):
    from cos_lmms_eval.models import CoSLongVA

    truth = _truth(tmp_path, [_record()])
    opts = CoSLongVA.parse_options({"pretrained": "unused", "max_frames_num": "8", "scorer": "oracle", "scorer_truth": str(truth)})
    assert opts.scorer.scorer == "oracle" and opts.scorer.scorer_truth == str(truth)
    assert opts.identity()["scorer_truth"] == str(truth)
    with pytest.raises(ConfigError, match=r"scorer_truth=<questions.json>"):
        CoSLongVA.parse_options({"pretrained": "unused", "scorer": "oracle"})


def test_cos_run_offers_scorer_truth():
    import argparse

    from cos_runtime.run import add_parser

    sub = argparse.ArgumentParser().add_subparsers()
    p = add_parser(sub)
    args = p.parse_args(["--video", "v.mp4", "--question", "q", "--scorer", "oracle", "--scorer-truth", "OUT/questions.json"])
    assert args.scorer == "oracle" and args.scorer_truth == "OUT/questions.json"
