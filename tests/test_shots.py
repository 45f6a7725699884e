"""Shot groups and mosaics (Eq. 3). Defect 5 (leftover frames silently dropped) is the ``drop`` option;
the default ``pad`` keeps them (``test_leftover_pad_vs_drop``)."""

from __future__ import annotations

import numpy as np
import pytest

from cos.errors import ConfigError
from cos.shots import grid_shape, make_mosaic, make_mosaics, shot_groups

H, W = 6, 10


def coloured(m):
    """m frames of distinct solid colours: frame c has pixel (10c+1, 10c+2, 10c+3)."""
    return np.stack([np.full((H, W, 3), (10 * c + 1, 10 * c + 2, 10 * c + 3), np.uint8) for c in range(m)])


def test_groups_n8_k4():
    assert [g.tolist() for g in shot_groups(8, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [g.tolist() for g in shot_groups(8, 4, "drop")] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_leftover_pad_vs_drop():
    assert [g.tolist() for g in shot_groups(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [g.tolist() for g in shot_groups(10, 4, leftover="drop")] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [g.tolist() for g in shot_groups(3, 4)] == [[0, 1, 2]]
    assert shot_groups(3, 4, "drop") == []
    assert shot_groups(0, 4) == []
    assert [g.tolist() for g in shot_groups(5, 1)] == [[0], [1], [2], [3], [4]]


def test_groups_cover_every_frame_once():
    for n in range(0, 30):
        for k in (1, 2, 3, 4, 8):
            flat = np.concatenate(shot_groups(n, k) or [np.array([], np.int64)])
            assert flat.tolist() == list(range(n))


def test_mosaic_k4_layout_tl_tr_bl_br():
    frames = coloured(4)
    img = make_mosaic(frames, 4)
    assert img.size == (2 * W, 2 * H) and img.mode == "RGB"
    a = np.asarray(img)
    assert (a[:H, :W] == frames[0]).all()  # top-left: frame 1
    assert (a[:H, W:] == frames[1]).all()  # top-right: frame 2
    assert (a[H:, :W] == frames[2]).all()  # bottom-left: frame 3
    assert (a[H:, W:] == frames[3]).all()  # bottom-right: frame 4


def test_partial_group_padded_black():
    frames = coloured(10)
    mosaics, groups = make_mosaics(frames, 4)
    assert len(mosaics) == 3 and [g.tolist() for g in groups][-1] == [8, 9]
    last = np.asarray(mosaics[-1])
    assert last.shape == (2 * H, 2 * W, 3)
    assert (last[:H, :W] == frames[8]).all() and (last[:H, W:] == frames[9]).all()
    assert (last[H:] == 0).all()
    dropped, dgroups = make_mosaics(frames, 4, leftover="drop")
    assert len(dropped) == 2 and len(dgroups) == 2
    assert (np.asarray(dropped[1])[H:, W:] == frames[7]).all()


@pytest.mark.parametrize(
    "k,shape", [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)), (8, (3, 3)), (9, (3, 3)), (16, (4, 4))]
)
def test_grid_shape(k, shape):
    assert grid_shape(k) == shape


def test_general_k_layout():
    for k in (3, 9):
        rows, cols = grid_shape(k)
        frames = coloured(k)
        a = np.asarray(make_mosaic(frames, k))
        assert a.shape == (rows * H, cols * W, 3)
        for c in range(k):
            r, q = divmod(c, cols)
            assert (a[r * H:(r + 1) * H, q * W:(q + 1) * W] == frames[c]).all()
        for c in range(k, rows * cols):  # unused cells (k=3: bottom-right) are black
            r, q = divmod(c, cols)
            assert (a[r * H:(r + 1) * H, q * W:(q + 1) * W] == 0).all()


def test_errors():
    with pytest.raises(ConfigError, match="pad.*drop"):
        shot_groups(8, 4, leftover="keep")
    with pytest.raises(ConfigError, match="positive integer"):
        shot_groups(8, 0)
    with pytest.raises(ValueError, match="1..4"):
        make_mosaic(coloured(5), 4)
    with pytest.raises(ValueError, match="uint8"):
        make_mosaic(coloured(2).astype(np.float32), 4)
    with pytest.raises(ValueError, match=r"\(n, H, W, 3\)"):
        make_mosaics(np.zeros((4, H, W), np.uint8), 4)
