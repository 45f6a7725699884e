"""Streaming candidate frames (``cos.video.rate_indices``, ``open_stream``) on real H.264 files encoded with PyAV."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import test_video
from PIL import Image
from test_video import BAD_CAUSES

from cos import video
from cos.errors import ConfigError, VideoDecodeError
from cos.video import FrameStream, frame_indices, open_stream, rate_indices, sample_frames

# module-scoped fixtures of tests/test_video.py: "vids" (indexed: 50 frames at 8 fps, textured: 100,
# textured_mkv: 60, raw_h264: 30 frames that decord cannot open, ...) and "bad_files" (damaged inputs)
vids = test_video.vids
bad_files = test_video.bad_files

STREAM_BACKENDS = ("decord", "pyav", "auto")


def rate_rule(rate):
    return lambda total, fps: rate_indices(total, fps, rate)


def collect(stream: FrameStream) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """All chunks of one pass: (indices, frames, chunk lengths), checking each chunk's types on the way."""
    idx, frames, sizes = [], [], []
    for chunk_idx, chunk in stream.chunks():
        assert chunk_idx.dtype == np.int64 and chunk_idx.ndim == 1
        assert chunk.dtype == np.uint8 and chunk.ndim == 4 and chunk.shape[-1] == 3 and chunk.shape[0] == len(chunk_idx)
        idx.append(chunk_idx)
        frames.append(chunk)
        sizes.append(len(chunk_idx))
        assert stream.delivered == sum(sizes)
    return np.concatenate(idx), np.concatenate(frames), sizes


# ------------------------------------------------------------------------------------- rate_indices
def test_rate_indices_one_per_second_at_30_fps():
    idx = rate_indices(300, 30.0, 1.0)  # 10 s
    assert idx.tolist() == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]
    assert idx.dtype == np.int64


def test_rate_indices_ntsc_rate_rounds_to_the_nearest_frame():
    # 600 frames at 30000/1001 fps = 20.02 s -> 20 candidates; i * 29.97003 rounded: 17 -> 509.49 -> 509
    idx = rate_indices(600, 30000 / 1001, 1.0)
    assert idx.tolist() == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330, 360, 390, 420, 450, 480, 509, 539, 569]


@pytest.mark.parametrize(
    "total,fps,rate,want",
    [
        (90, 30.0, 2.0, [0, 15, 30, 45, 60, 75]),  # 3 s, two per second
        (250, 25.0, 0.5, [0, 50, 100, 150, 200]),  # 10 s, one every two seconds
        (10, 10.0, 3.0, [0, 3, 7]),  # 1 s: 3.33 -> 3, 6.67 -> 7
        (5, 10.0, 25.0, [0, 1, 2, 3, 4]),  # rate > fps: 12 candidates 0.4 * i round to repeats, dropped
        (12, 30.0, 1.0, [0]),  # shorter than a second: one candidate
        (1, 30.0, 1.0, [0]),
    ],
)
def test_rate_indices_hand_computed(total, fps, rate, want):
    idx = rate_indices(total, fps, rate)
    assert idx.tolist() == want


@pytest.mark.parametrize("fps", [0.0, -1.0, 0])
def test_rate_indices_unknown_fps_takes_every_frame(fps):
    assert rate_indices(7, fps, 1.0).tolist() == list(range(7))
    assert rate_indices(7, fps, 0.1).tolist() == list(range(7))


def test_rate_indices_is_bolts_formula():
    """Literally BOLT's extractor loop (Python's round), then made strictly increasing, over a grid of cases."""
    for total in (1, 2, 29, 30, 31, 299, 1000, 3601):
        for fps in (1.0, 8.0, 23.976, 25.0, 29.97, 30000 / 1001, 30.0, 60.0):
            for rate in (0.1, 0.5, 1.0, 2.0, 4.0, 30.0, 100.0):
                count = max(1, int(total / fps * rate))
                want = sorted({min(max(round(i / rate * fps), 0), total - 1) for i in range(count)})
                idx = rate_indices(total, fps, rate)
                assert idx.tolist() == want, (total, fps, rate)
                assert np.all(np.diff(idx) > 0) and idx[0] == 0 and idx[-1] < total


@pytest.mark.parametrize(
    "args,name",
    [
        ((300, 30.0, 0.0), "rate"),
        ((300, 30.0, -1.0), "rate"),
        ((300, 30.0, float("nan")), "rate"),
        ((300, 30.0, float("inf")), "rate"),
        ((300, 30.0, "1"), "rate"),
        ((300, 30.0, True), "rate"),
        ((300, float("nan"), 1.0), "fps"),
        ((300, float("inf"), 1.0), "fps"),
        ((300, None, 1.0), "fps"),
        ((0, 30.0, 1.0), "total_frames"),
        ((-5, 30.0, 1.0), "total_frames"),
        ((2.5, 30.0, 1.0), "total_frames"),
    ],
)
def test_rate_indices_rejects_bad_arguments(args, name):
    with pytest.raises(ConfigError) as info:
        rate_indices(*args)
    message = str(info.value)
    assert message.startswith(name) and repr(args[("total_frames", "fps", "rate").index(name)]) in message


# -------------------------------------------------------------------- chunks == sample_frames
@pytest.mark.parametrize("backend", STREAM_BACKENDS)
@pytest.mark.parametrize(
    "name,rule,chunk_size",
    [
        ("textured", rate_rule(3.0), 5),  # 100 frames at 8 fps: 37 candidates, 7 full chunks + 2
        ("textured", rate_rule(8.0), 16),  # every frame
        ("textured_mkv", rate_rule(1.0), 4),  # Matroska: PyAV's stream.frames is 0
        ("indexed", lambda total, fps: frame_indices(total, 80), 3),  # repeated indices, across chunk boundaries
        ("indexed", rate_rule(2.0), 1),
        ("indexed", rate_rule(0.5), 64),  # one chunk holds all
    ],
    ids=["rate3-chunk5", "every-frame-chunk16", "mkv-rate1-chunk4", "repeats-chunk3", "rate2-chunk1", "one-chunk"],
)
def test_chunks_are_the_sampled_frames(vids, backend, name, rule, chunk_size):
    ref = sample_frames(vids[name], None, backend=backend, rule=rule)
    with open_stream(vids[name], rule, backend=backend, chunk_size=chunk_size) as stream:
        assert stream.backend == ref.backend == ("decord" if backend == "auto" else backend)
        assert (stream.path, stream.total_frames, stream.chunk_size) == (ref.path, ref.total_frames, chunk_size)
        assert stream.fps == pytest.approx(ref.fps) and stream.duration == pytest.approx(ref.duration)
        assert stream.indices.dtype == np.int64
        np.testing.assert_array_equal(stream.indices, ref.indices)
        idx, frames, sizes = collect(stream)
        np.testing.assert_array_equal(idx, ref.indices)
        np.testing.assert_array_equal(frames, ref.frames)  # exactly the same pixels
        assert stream.delivered == len(ref.indices)
        assert all(k == chunk_size for k in sizes[:-1]) and 1 <= sizes[-1] <= chunk_size
        assert len(sizes) == -(-len(ref.indices) // chunk_size)
        idx2, frames2, _ = collect(stream)  # a second pass starts again from the first frame
        np.testing.assert_array_equal(idx2, idx)
        np.testing.assert_array_equal(frames2, frames)


@pytest.mark.parametrize("backend", ("decord", "pyav"))
def test_content_is_the_source_frame(vids, backend):
    with open_stream(vids["indexed"], rate_rule(2.0), backend=backend, chunk_size=3) as stream:
        idx, frames, _ = collect(stream)
    assert idx.tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44]  # 50 frames at 8 fps, 2 per second
    np.testing.assert_allclose(frames.reshape(len(idx), -1).mean(axis=1), [test_video.level(i) for i in idx], atol=1.5)


def test_auto_falls_back_to_pyav_when_decord_cannot_open_the_file(vids):
    with pytest.raises(VideoDecodeError, match="decord"):
        open_stream(vids["raw_h264"], rate_rule(8.0), backend="decord")
    ref = sample_frames(vids["raw_h264"], None, backend="pyav", rule=rate_rule(4.0))
    with open_stream(vids["raw_h264"], rate_rule(4.0), backend="auto", chunk_size=4) as stream:
        assert stream.backend == "pyav" and stream.total_frames == 30
        idx, frames, _ = collect(stream)
    np.testing.assert_array_equal(idx, ref.indices)
    np.testing.assert_array_equal(frames, ref.frames)


def test_auto_falls_back_to_pyav_when_decord_is_missing(vids, monkeypatch):
    def missing():
        raise video._BackendUnavailable("decord is not importable (ImportError: No module named 'decord')")

    monkeypatch.setattr(video, "_import_decord", missing)
    with open_stream(vids["textured"], rate_rule(2.0), chunk_size=8) as stream:
        assert stream.backend == "pyav"
        idx, frames, _ = collect(stream)
    ref = sample_frames(vids["textured"], None, backend="pyav", rule=rate_rule(2.0))
    np.testing.assert_array_equal(frames, ref.frames)
    with pytest.raises(ConfigError, match="decord"):
        open_stream(vids["textured"], rate_rule(2.0), backend="decord")


def test_auto_falls_back_when_decord_fails_on_the_first_chunk(vids, monkeypatch):
    def broken(vr, indices, path):
        raise RuntimeError("[12:00:00] video_reader.cc:1: cannot decode\nStack trace: ...")

    monkeypatch.setattr(video, "_decord_batch", broken)
    with open_stream(vids["textured"], rate_rule(1.0), backend="auto") as stream:
        assert stream.backend == "pyav"
        assert collect(stream)[0].tolist() == rate_indices(100, 8.0, 1.0).tolist()
    with pytest.raises(VideoDecodeError, match="decord: RuntimeError: cannot decode"):
        open_stream(vids["textured"], rate_rule(1.0), backend="decord")


# -------------------------------------------------------------------------------------- frame folders
def test_a_folder_of_frames_streams_like_sample_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (23, 10, 14, 3), dtype=np.uint8)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(frames, start=1):
        image = Image.fromarray(frame)
        if i in (9, 11):  # another size, inside a chunk and first of a chunk: resized to the first frame's
            image = image.resize((20, 12))
        image.save(folder / f"frame_{i}.png")
    ref = sample_frames(folder, None, rule=rate_rule(1.0))
    with open_stream(folder, rate_rule(1.0), backend="pyav", chunk_size=5) as stream:  # the backend does not apply
        assert (stream.backend, stream.total_frames, stream.fps, stream.duration) == ("frames", 23, 0.0, 0.0)
        idx, got, sizes = collect(stream)
    assert idx.tolist() == list(range(23)) and sizes == [5, 5, 5, 5, 3]  # fps unknown: every frame is a candidate
    np.testing.assert_array_equal(got, ref.frames)
    np.testing.assert_array_equal(got[0], frames[0])
    assert got.shape == (23, 10, 14, 3)


def test_a_folder_without_frames_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VideoDecodeError, match="directory without frame images"):
        open_stream(tmp_path, rate_rule(1.0))


# ---------------------------------------------------------------------------------------------- memory
LONG_FRAMES, LONG_FPS, LONG_H, LONG_W = 3000, 25, 64, 96  # 2 minutes


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    from cos.synthetic import write_mp4

    path = tmp_path_factory.mktemp("long") / "long.mp4"
    y, x = np.mgrid[0:LONG_H, 0:LONG_W]

    def frames():
        img = np.empty((LONG_H, LONG_W, 3), np.uint8)
        for t in range(LONG_FRAMES):
            img[..., 0], img[..., 1], img[..., 2] = (x + t) % 256, (2 * y + t) % 256, t % 256
            yield img  # encoded before the next one is drawn

    return str(write_mp4(path, frames(), LONG_W, LONG_H, LONG_FPS, options={"preset": "ultrafast", "threads": "1"}))


@pytest.mark.parametrize("backend", ("decord", "pyav"))
def test_memory_is_a_few_chunks_whatever_the_number_of_candidates(long_video, backend):
    chunk_size = 8
    chunk_bytes = chunk_size * LONG_H * LONG_W * 3
    rule = rate_rule(float(LONG_FPS))  # every frame is a candidate
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with open_stream(long_video, rule, backend=backend, chunk_size=chunk_size) as stream:
            count = total_bytes = 0
            for idx, frames in stream.chunks():
                assert idx.tolist() == list(range(count, count + len(idx)))
                count += len(idx)
                total_bytes += frames.nbytes
            peak = tracemalloc.get_traced_memory()[1]
            # control: the measurement sees the frames when a consumer keeps them all
            tracemalloc.reset_peak()
            kept = [frames for _, frames in stream.chunks()]
            kept_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == stream.delivered == LONG_FRAMES and total_bytes == LONG_FRAMES * LONG_H * LONG_W * 3
    assert sum(f.nbytes for f in kept) == total_bytes and kept_peak > 0.9 * total_bytes
    assert peak < 6 * chunk_bytes, (peak, chunk_bytes)
    assert total_bytes > 50 * peak


# ------------------------------------------------------------------------------------------ bad input
def consume(path, backend, chunk_size=4):
    with open_stream(path, rate_rule(8.0), backend=backend, chunk_size=chunk_size) as stream:
        return collect(stream)


@pytest.mark.parametrize("backend", STREAM_BACKENDS)
@pytest.mark.parametrize("case", list(BAD_CAUSES))
def test_bad_input_raises_video_decode_error(bad_files, case, backend):
    path = bad_files[case]
    with pytest.raises(VideoDecodeError) as info:
        consume(path, backend)  # at open or, for a stream cut mid-sample, while decoding
    err = info.value
    assert err.path == path and path in str(err)
    assert err.cause and BAD_CAUSES[case] in err.cause
    assert "Stack trace" not in str(err) and "\n" not in str(err)


def test_a_file_cut_mid_sample_fails_while_streaming(bad_files):
    path = bad_files["truncated_faststart"]  # PyAV's probe reads the index; decoding hits the cut
    stream = open_stream(path, rate_rule(8.0), backend="pyav", chunk_size=4)
    got = []
    with pytest.raises(VideoDecodeError, match="truncated") as info:
        for idx, _ in stream.chunks():
            got.extend(idx.tolist())
    assert info.value.path == path
    assert 0 < len(got) < len(stream.indices)  # chunks before the cut came through


def test_decord_failure_after_the_first_chunk_names_the_path(vids):
    stream = open_stream(vids["textured"], rate_rule(8.0), backend="decord", chunk_size=10)

    class FailsLater:
        def __init__(self, reader):
            self.reader = reader

        def get_batch(self, indices):
            raise RuntimeError("[12:00:00] video_reader.cc:486: Error: av_read_frame failed\nStack trace: ...")

    stream._reader = FailsLater(stream._reader)
    chunks = stream.chunks()
    first_idx, _ = next(chunks)  # read when opened
    assert first_idx.tolist() == list(range(10))
    with pytest.raises(VideoDecodeError) as info:
        next(chunks)
    assert info.value.path == vids["textured"]
    assert info.value.cause == "decord: RuntimeError: Error: av_read_frame failed"
    stream.close()


@pytest.mark.parametrize("extra,chunk_size,sizes", [(5, 8, [8, 8, 8, 8, 8, 8, 2]), (3, 10, [10, 10, 10, 10, 10])])
def test_pyav_packet_count_too_high_delivers_what_was_decoded(vids, monkeypatch, extra, chunk_size, sizes):
    """The packet count can exceed the decodable frames: indices past the real end are not delivered."""
    probe = video._pyav_probe
    monkeypatch.setattr(video, "_pyav_probe", lambda av_, path: (probe(av_, path)[0] + extra, *probe(av_, path)[1:]))
    with open_stream(vids["indexed"], rate_rule(8.0), backend="pyav", chunk_size=chunk_size) as stream:
        assert stream.total_frames == 50 + extra and len(stream.indices) == 50 + extra
        idx, frames, got_sizes = collect(stream)
    assert stream.delivered == 50 and got_sizes == sizes
    np.testing.assert_array_equal(idx, stream.indices[: stream.delivered])
    monkeypatch.undo()
    ref = sample_frames(vids["indexed"], 50, backend="pyav")
    np.testing.assert_array_equal(frames, ref.frames)


def test_pyav_pass_stops_after_the_last_wanted_frame(vids, monkeypatch):
    decoded = []
    real = video._decode_checked

    def counting(container, stream, path):
        for position, frame in real(container, stream, path):
            decoded.append(position)
            yield position, frame

    monkeypatch.setattr(video, "_decode_checked", counting)
    with open_stream(vids["textured"], lambda total, fps: np.array([0, 5, 5, 12]), backend="pyav", chunk_size=3) as stream:
        idx, _, sizes = collect(stream)
    assert idx.tolist() == [0, 5, 5, 12] and sizes == [3, 1]
    assert decoded == list(range(13))  # not the 100 frames of the video


# --------------------------------------------------------------------------------- arguments, lifetime
def test_bad_arguments(vids, tmp_path):
    with pytest.raises(ConfigError, match="chunk_size"):
        open_stream(vids["indexed"], rate_rule(1.0), chunk_size=0)
    with pytest.raises(ConfigError, match="'opencv'"):
        open_stream(vids["indexed"], rate_rule(1.0), backend="opencv")
    with pytest.raises(ConfigError, match="rule must be a callable"):
        open_stream(vids["indexed"], 1.0)
    with pytest.raises(VideoDecodeError, match="not found"):
        open_stream(tmp_path / "missing.mp4", rate_rule(1.0))


@pytest.mark.parametrize("backend", ("decord", "pyav"))
def test_close_stops_a_running_pass(vids, backend):
    stream = open_stream(vids["textured"], rate_rule(8.0), backend=backend, chunk_size=4)
    chunks = stream.chunks()
    next(chunks)
    stream.close()
    assert list(chunks) == []  # the pass ended (PyAV: its container was closed)
    with pytest.raises(ValueError, match="closed"):
        stream.chunks()
    with open_stream(vids["textured"], rate_rule(1.0), backend=backend) as stream:
        pass
    with pytest.raises(ValueError, match="closed"):
        stream.chunks()
