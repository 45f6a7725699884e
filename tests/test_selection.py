"""Frame-selection rules (``cos.selection``, ``cos select``) on constructed score arrays with hand-computed answers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cos.errors import ConfigError
from cos.selection import select, select_aks, select_bolt, select_qframe, select_uniform

SCORES = [0.1, 0.9, 0.2, 0.8, 0.3, 0.1, 0.95, 0.2]


def test_uniform_is_the_backends_linspace():
    assert select_uniform(10, 4).selected == [0, 3, 6, 9]
    short = select_uniform(3, 5)
    assert short.selected == [0, 0, 1, 1, 2] and "repeat" in short.note


# -- AKS -----------------------------------------------------------------------------------------------
def test_aks_paper_splits_the_budget_per_segment():
    # min-max: [0, .941, .118, .824, .235, 0, 1, .118]; the root's top-4 stands out by .35 < t1 = .8: split into
    # halves with 2 frames each, which split again into quarters with 1 frame each: the best of each quarter
    assert select_aks(SCORES, 4).selected == [1, 3, 4, 6]
    # flat scores: nothing stands out, the budget 3 splits 1 (left half) + 2 (right half); ties keep the lower index
    assert select_aks([5.0] * 8, 3).selected == [0, 4, 6]
    # a segment that stands out keeps its own top k: with t1 = 0.5 the root (top-2 mean 1.0 vs mean .25) is a leaf
    assert select_aks([0, 0, 1, 0, 0, 0, 1, 0], 2, t1=0.5).selected == [2, 6]


def test_aks_paper_always_returns_n_distinct_frames_when_it_can():
    rng = np.random.default_rng(0)
    for _ in range(50):
        total, n = int(rng.integers(1, 80)), int(rng.integers(1, 40))
        got = select_aks(rng.random(total), n)
        assert len(got.selected) == min(n, total) and len(set(got.selected)) == len(got.selected), (total, n)
        assert got.selected == sorted(got.selected) and all(0 <= i < total for i in got.selected)
        assert (got.note is None) == (total >= n)


def test_aks_release_budget_is_one_option_away():
    # the release judges every segment by the top-n of the whole budget and gives a depth-d leaf int(n / 2**d):
    # with n = 4 on 8 candidates every segment runs to depth 5, whose quota is 0 -> nothing, and it says so
    empty = select_aks(SCORES, 4, budget="release")
    assert empty.selected == [] and "returned 0 of 4" in empty.note
    # one dominant peak: the root stands out (top-1 mean 1 vs mean 1/8 > 0.8) and keeps int(1 / 1) = 1 frame
    assert select_aks([0, 0, 0, 0, 0, 1, 0, 0], 1, budget="release").selected == [5]
    # n = 32 over 64 near-flat candidates: 32 leaves of 2 at depth 5, each keeping int(32 / 32) = 1 frame
    got = select_aks(np.random.default_rng(1).random(64) * 1e-3 + 1, 32, budget="release").selected
    assert len(got) == 32 and sorted({i // 2 for i in got}) == list(range(32))


def test_aks_fewer_candidates_than_frames():
    got = select_aks([3, 1, 2], 5)
    assert got.selected == [0, 1, 2] and "returned 3 of 5" in got.note


# -- BOLT ----------------------------------------------------------------------------------------------
def test_bolt_inverse_transform_on_hand_computed_cdfs():
    # power 1: p = [0, .1, .2, .3, .4], cdf = [0, .1, .3, .6, 1]; quantiles linspace(1/3, 2/3, 3) = [.33, .5, .67]
    keep = select_bolt([0, 1, 2, 3, 4], 3, power=1, duplicates="keep")
    assert keep.selected == [3, 3, 4] and "1 repeated" in keep.note
    assert select_bolt([0, 1, 2, 3, 4], 3, power=-1, duplicates="keep").selected == [3, 3, 4]  # -1: no power
    # the repeat moves to the nearest free candidate (later first): 3, 3 -> 4, 4 -> 2
    assert select_bolt([0, 1, 2, 3, 4], 3, power=1).selected == [2, 3, 4]
    # power 3 sharpens: p = [0, 1, 8, 27, 64] / 100, cdf = [0, .01, .09, .36, 1]: .33 lands on 3, .5 and .67 on 4
    assert select_bolt([0, 1, 2, 3, 4], 3, power=3, duplicates="keep").selected == [3, 4, 4]
    assert select_bolt([0, 1, 2, 3, 4], 3, power=3).selected == [2, 3, 4]


def test_bolt_edges():
    assert select_bolt([0, 1, 0], 1, power=1).selected == [1]  # n = 1 asks for the quantile 1.0, kept in range
    assert select_bolt([5, 5, 5, 5], 2, duplicates="keep").selected == [1, 1]  # flat: a uniform density
    assert select_bolt([5, 5, 5, 5], 2).selected == [1, 2]
    short = select_bolt([0, 1], 3)
    assert short.selected == [0, 1] and "returned 2 of 3" in short.note


# -- Q-Frame -------------------------------------------------------------------------------------------
def test_qframe_ranking_without_noise_and_its_groups():
    got = select_qframe([1, 3, 3, 2], 2, noise="off", high=1, mid=2, low=1)
    assert got.selected == [1, 2]  # ranking 1, 2 (stable on the tie), 3, 0
    assert got.groups == {"high": [1], "mid": [2, 3], "low": [0]}


def test_qframe_gumbel_noise_equals_a_naive_draw():
    scores, tau = np.array([0.2, 1.5, -0.3, 0.9, 2.0, 0.1]), 0.8
    for seed in range(5):
        u = np.random.default_rng(seed).random(len(scores))
        keys = []
        for i, s in enumerate(scores):  # log softmax written out, one candidate at a time
            log_p = s / tau - np.log(sum(np.exp(x / tau) for x in scores))
            keys.append(log_p - np.log(-np.log(u[i] + 1e-10) + 1e-10))
        expected = sorted(sorted(range(len(scores)), key=lambda i: -keys[i])[:3])
        assert select_qframe(scores, 3, tau=tau, seed=seed).selected == expected
    assert select_qframe(scores, 3, seed=1).selected == select_qframe(scores, 3, seed=1).selected  # seeded


# -- one entry and the command -------------------------------------------------------------------------
def test_select_reads_parameters_by_their_original_names_and_refuses_the_rest():
    assert select("bolt", [0, 1, 2, 3, 4], 3, power="1", duplicates="keep").selected == [3, 3, 4]
    assert select("uniform", SCORES, 3).selected == [0, 3, 7]
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['tau'\] for aks"):
        select("aks", SCORES, 2, tau=1)
    with pytest.raises(ConfigError, match="power='x': expected a number"):
        select("bolt", SCORES, 2, power="x")
    with pytest.raises(ConfigError, match="all_depth=2.7: expected an integer"):
        select("aks", SCORES, 2, all_depth=2.7)
    with pytest.raises(ConfigError, match="power must be -1"):
        select("bolt", SCORES, 2, power=-2)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        select("qframe", SCORES, 2, seed=-1)
    with pytest.raises(ConfigError, match="selector must be one of"):
        select("topk", SCORES, 2)
    with pytest.raises(ConfigError, match="budget must be one of"):
        select("aks", SCORES, 2, budget="other")
    with pytest.raises(ConfigError, match="tau must be positive"):
        select("qframe", SCORES, 2, tau=0)
    with pytest.raises(ConfigError, match="non-empty 1-D"):
        select("aks", [], 2)


def test_cos_select_prints_json(tmp_path):
    path = tmp_path / "scores.npy"
    np.save(path, np.array(SCORES))
    out = subprocess.run([sys.executable, "-m", "cos_runtime", "select", "--scores", str(path), "--method", "aks", "--n", "4"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["selected"] == [1, 3, 4, 6] and result["returned"] == 4 and result["params"]["budget"] == "paper"
    text = tmp_path / "scores.txt"
    text.write_text("0, 1, 2, 3, 4\n")
    keep = subprocess.run([sys.executable, "-m", "cos_runtime", "select", "--scores", str(text), "--method", "bolt", "--n", "3",
                           "--param", "power=1", "--param", "duplicates=keep"], capture_output=True, text=True, timeout=120)
    assert json.loads(keep.stdout)["selected"] == [3, 3, 4]
    bad = subprocess.run([sys.executable, "-m", "cos_runtime", "select", "--scores", str(path), "--method", "aks", "--n", "4",
                          "--param", "depth=3"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "unknown parameter" in bad.stderr and "Traceback" not in bad.stderr
