"""Binary code (Eq. 4–5), positive/negative index maps (Eq. 6–7), α (Eq. 9), feature gathering.

Defect 2 (the release's Sp loop stops at the first replacement, so Sp = X whenever anything is
relevant) fails ``test_positive_map_hand_computed`` and ``test_release_positive_bug_is_not_reproduced``.
Defect 3 (backward-first negative search) fails ``test_negative_map_hand_computed`` (forward default).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cos.compose import (
    BLACK,
    dynamic_alpha,
    gather_features,
    negative_map,
    positive_map,
    resolve_alpha,
    stream_maps,
)
from cos.errors import ConfigError
from cos.grounding import binary_code, relevant_indices, summary
from cos.shots import shot_groups

# code -> (Sp map, Sn map forward, Sn map backward), all computed by hand
CASES = {
    "all_zero": ([0, 0, 0, 0], [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]),
    "all_one": ([1, 1, 1], [0, 1, 2], [BLACK] * 3, [BLACK] * 3),
    "start": ([1, 1, 0, 0, 0], [0, 1, 1, 1, 1], [2, 2, 2, 3, 4], [2, 2, 2, 3, 4]),
    "end": ([0, 0, 0, 1, 1], [3, 3, 3, 3, 4], [0, 1, 2, 2, 2], [0, 1, 2, 2, 2]),
    "single": ([0, 0, 1, 0, 0], [2, 2, 2, 2, 2], [0, 1, 3, 3, 4], [0, 1, 1, 3, 4]),
    "alternating": ([1, 0, 1, 0, 1, 0], [0, 2, 2, 4, 4, 4], [1, 1, 3, 3, 5, 5], [1, 1, 1, 3, 3, 5]),
    "two_runs": (
        [0, 1, 1, 0, 0, 1, 1, 0],
        [1, 1, 2, 5, 5, 5, 6, 6],
        [0, 3, 3, 3, 4, 7, 7, 7],
        [0, 0, 0, 3, 4, 4, 4, 7],
    ),
}


def release_positive_map(code):
    """What the original release's Sp loop produced (defect 2, as documented): it left the whole loop at
    the first relevant replacement, so Sp = X whenever anything is relevant; else every frame became the
    last one."""
    n = len(code)
    return list(range(n)) if any(code) else [n - 1] * n


@pytest.mark.parametrize("name", sorted(CASES))
def test_positive_map_hand_computed(name):
    code, sp, _, _ = CASES[name]
    got = positive_map(np.array(code))
    assert got.dtype == np.int64 and got.tolist() == sp
    c = np.array(code)
    if c.any():  # every Sp frame is relevant once anything is relevant
        assert c[got].all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_negative_map_hand_computed(name):
    code, _, sn_fwd, sn_bwd = CASES[name]
    assert negative_map(np.array(code)).tolist() == sn_fwd  # paper default: forward first
    assert negative_map(np.array(code), order="backward").tolist() == sn_bwd
    got = negative_map(np.array(code))
    c = np.array(code)
    if not c.all():  # every Sn frame is irrelevant (no black) once anything is irrelevant
        assert (got >= 0).all() and not c[got].any()


def test_release_positive_bug_is_not_reproduced():
    for name in ("all_zero", "start", "single", "alternating", "two_runs", "end"):
        code = CASES[name][0]
        assert positive_map(code).tolist() != release_positive_map(code), name


def test_negative_order_differs_only_where_both_sides_exist():
    code = np.array(CASES["two_runs"][0])
    fwd, bwd = negative_map(code), negative_map(code, order="backward")
    differ = np.flatnonzero(fwd != bwd).tolist()
    assert differ == [1, 2, 5, 6]  # relevant frames with an irrelevant frame on both sides
    with pytest.raises(ConfigError, match="forward.*backward"):
        negative_map(code, order="nearest")


def test_stream_maps():
    code = CASES["single"][0]
    x, sp, sn = stream_maps(code)
    assert x.tolist() == [0, 1, 2, 3, 4] and sp.tolist() == CASES["single"][1] and sn.tolist() == CASES["single"][2]


def test_alpha():
    assert dynamic_alpha([0, 0, 0, 0]) == 1.0
    assert dynamic_alpha([1, 1, 1, 1]) == 0.0
    assert dynamic_alpha([1, 0, 0, 0]) == 0.75
    assert dynamic_alpha(CASES["two_runs"][0]) == 0.5
    assert resolve_alpha("auto", [1, 0, 0, 0]) == 0.75
    assert resolve_alpha(0.3, [1, 0, 0, 0]) == 0.3
    assert resolve_alpha("0.25", [1, 1]) == 0.25
    assert resolve_alpha(1, [1, 1]) == 1.0
    for bad in (-0.1, 1.5, "fast", float("nan"), None, True):
        with pytest.raises(ConfigError, match="auto"):
            resolve_alpha(bad, [0, 1])
    with pytest.raises(ValueError):
        dynamic_alpha([])


def test_gather_features_with_black():
    feats = torch.arange(4 * 2 * 3, dtype=torch.float32).view(4, 2, 3)
    black = torch.full((2, 3), -7.0)
    out = gather_features(feats, [3, BLACK, 0, 0], black)
    assert out.shape == (4, 2, 3)
    assert torch.equal(out[0], feats[3]) and torch.equal(out[1], black)
    assert torch.equal(out[2], feats[0]) and torch.equal(out[3], feats[0])
    assert torch.equal(feats, torch.arange(24, dtype=torch.float32).view(4, 2, 3))  # input untouched
    np_out = gather_features(feats.numpy(), np.array([1, BLACK]), black.numpy())
    assert np.array_equal(np_out[0], feats[1].numpy()) and (np_out[1] == -7).all()
    with pytest.raises(ValueError, match="black_features"):
        gather_features(feats, [BLACK, 0, 1, 2])
    with pytest.raises(ValueError, match="index map"):
        gather_features(feats, [4, 0, 1, 2], black)
    with pytest.raises(ValueError, match="shape"):
        gather_features(feats, [BLACK, 0, 1, 2], torch.zeros(3, 2))


def test_gather_all_relevant_gives_black_video():
    code = [1, 1, 1]
    feats = torch.randn(3, 2, 4)
    black = torch.zeros(2, 4)
    sn = gather_features(feats, negative_map(code), black)
    assert torch.equal(sn, torch.zeros(3, 2, 4))
    sp = gather_features(feats, positive_map(code), black)
    assert torch.equal(sp, feats)


def test_binary_code_and_summary():
    groups = shot_groups(10, 4)
    code = binary_code([0, 1, 1], groups, 10)
    assert code.dtype == np.int8 and code.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    dropped = binary_code([1, 1], shot_groups(10, 4, "drop"), 10)
    assert dropped.tolist() == [1] * 8 + [0, 0]  # dropped leftovers stay irrelevant
    assert relevant_indices(code).tolist() == [4, 5, 6, 7, 8, 9]
    s = summary(binary_code([1, 0, 1], groups, 10))
    assert s == {"n": 10, "relevant": 6, "fraction": 0.6, "runs": [[0, 3], [8, 9]], "first": 0, "last": 9}
    assert summary([0, 0]) == {"n": 2, "relevant": 0, "fraction": 0.0, "runs": [], "first": None, "last": None}
    with pytest.raises(ValueError, match="2 decisions for 3"):
        binary_code([0, 1], groups, 10)
    with pytest.raises(ValueError, match="0/1"):
        binary_code([0, 2, 1], groups, 10)
    with pytest.raises(ValueError, match="0/1"):
        positive_map([0, 2])
