"""Frame sampling (``cos.video``) on real files encoded here with PyAV and decoded by decord and PyAV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from cos import video
from cos.errors import ConfigError, VideoDecodeError
from cos.video import SampledVideo, frame_indices, sample_frames

BACKENDS = ("decord", "pyav")


# --------------------------------------------------------------------------------------------- helpers
def encode(path, frames, *, codec="libx264", pix_fmt="yuv420p", fps=8, fmt=None, options=None, in_format="rgb24"):
    """Encode an iterable of uint8 arrays ((H, W, 3) rgb24 or (H, W) gray) to ``path``."""
    path = Path(path)
    container = av.open(str(path), mode="w", format=fmt, options=options or {})
    stream = None
    for i, img in enumerate(frames):
        if stream is None:
            stream = container.add_stream(codec, rate=fps)
            stream.height, stream.width = img.shape[:2]
            stream.pix_fmt = pix_fmt
            if codec.startswith("libx264"):
                stream.options = {"threads": "1", "preset": "ultrafast" if img.shape[0] >= 128 else "medium"}
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=in_format)
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def level(i):
    return 20 + 4 * i  # flat grey level of frame i in the "indexed" video (i < 55)


def indexed_frames(n, h=32, w=64):
    """Flat frames whose grey level identifies their index (survives H.264 essentially exactly)."""
    for i in range(n):
        yield np.full((h, w, 3), level(i), dtype=np.uint8)


def textured_frames(n, h=48, w=64, seed=0):
    """Moving texture with colour: a realistic workload with B-frames and motion."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    base = np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))
    y, x = np.mgrid[0:h, 0:w]
    for t in range(n):
        img = np.roll(base, (t, 2 * t), axis=(0, 1))[:h, :w].astype(np.int32)
        img[..., 0] = (img[..., 0] + 3 * t + x) % 256
        yield img.astype(np.uint8)


def gradient_frames(n, size):
    y, x = np.mgrid[0:size, 0:size].astype(np.int32)
    for t in range(n):
        img = np.empty((size, size, 3), np.uint8)
        img[..., 0] = (x + t) % 256
        img[..., 1] = (y + 2 * t) % 256
        img[..., 2] = (x + y + t) % 256
        yield img


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    v = {}
    v["indexed"] = encode(d / "indexed.mp4", indexed_frames(50))
    v["textured"] = encode(d / "textured.mp4", textured_frames(100))
    v["textured_mkv"] = encode(d / "textured.mkv", textured_frames(60, seed=1), fmt="matroska")
    v["faststart"] = encode(d / "faststart.mp4", textured_frames(60, seed=2), options={"movflags": "faststart"})
    v["raw_h264"] = encode(d / "raw.h264", textured_frames(30, seed=3), fmt="h264")
    gray = [np.tile(np.arange(32, dtype=np.uint8)[None, :] * 8 + t, (24, 1)) for t in range(12)]
    v["gray_ffv1"] = encode(d / "gray.mkv", gray, codec="ffv1", pix_fmt="gray", fmt="matroska", in_format="gray")
    v["gray_h264"] = encode(d / "gray_h264.mp4", gray, pix_fmt="gray", in_format="gray")
    v["odd"] = encode(d / "odd.mp4", textured_frames(20, h=9, w=17), pix_fmt="yuv444p")
    return v


# ------------------------------------------------------------------------------------ frame_indices
@pytest.mark.parametrize("total,num", [(1, 1), (1, 5), (7, 3), (100, 8), (128, 128), (50, 80), (3, 5), (1000, 16)])
def test_frame_indices_is_linspace(total, num):
    idx = frame_indices(total, num)
    np.testing.assert_array_equal(idx, np.linspace(0, total - 1, num, dtype=int))
    assert len(idx) == num and idx[0] == 0 and idx[-1] == total - 1
    assert np.all(np.diff(idx) >= 0)


def test_frame_indices_repeats_when_video_is_short():
    np.testing.assert_array_equal(frame_indices(3, 5), [0, 0, 1, 1, 2])


@pytest.mark.parametrize(
    "total,num,bad", [(0, 4, 0), (-3, 4, -3), (10, 0, 0), (10, -1, -1), (10, 2.5, 2.5), (True, 3, True), ("10", 3, "10")]
)
def test_frame_indices_rejects_bad_arguments(total, num, bad):
    with pytest.raises(ConfigError) as info:
        frame_indices(total, num)
    assert repr(bad) in str(info.value)


def test_sample_frames_rejects_bad_arguments(vids):
    with pytest.raises(ConfigError, match="'opencv'"):
        sample_frames(vids["indexed"], 4, backend="opencv")
    with pytest.raises(ConfigError, match="0"):
        sample_frames(vids["indexed"], 0)


# --------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num", [8, 50, 80])
def test_sampled_frames_are_the_linspace_frames(vids, backend, num):
    sv = sample_frames(vids["indexed"], num, backend=backend)
    assert isinstance(sv, SampledVideo) and sv.backend == backend
    assert sv.total_frames == 50
    np.testing.assert_array_equal(sv.indices, np.linspace(0, 49, num, dtype=int))
    assert sv.indices.dtype == np.int64
    assert sv.frames.shape == (num, 32, 64, 3) and sv.frames.dtype == np.uint8
    # the content is the source frame at that index (not a neighbour)
    np.testing.assert_allclose(sv.frames.reshape(num, -1).mean(axis=1), [level(i) for i in sv.indices], atol=1.5)
    for j in range(1, num):  # repeated indices give repeated frames
        if sv.indices[j] == sv.indices[j - 1]:
            np.testing.assert_array_equal(sv.frames[j], sv.frames[j - 1])
    assert sv.fps == pytest.approx(8.0)
    assert sv.duration == pytest.approx(50 / 8.0)
    assert sv.path == vids["indexed"]


def test_accepts_pathlike(vids):
    sv = sample_frames(Path(vids["indexed"]), 4)
    assert sv.path == vids["indexed"] and sv.frames.shape[0] == 4


@pytest.mark.parametrize("name,total", [("textured", 100), ("textured_mkv", 60), ("faststart", 60)])
def test_decord_and_pyav_agree(vids, name, total):
    if name == "textured_mkv":  # the case where PyAV's stream.frames is useless
        with av.open(vids[name]) as c:
            assert c.streams.video[0].frames == 0
    d = sample_frames(vids[name], 16, backend="decord")
    p = sample_frames(vids[name], 16, backend="pyav")
    assert d.total_frames == p.total_frames == total
    np.testing.assert_array_equal(d.indices, p.indices)
    assert d.frames.shape == p.frames.shape == (16, 48, 64, 3)
    assert np.abs(d.frames.astype(int) - p.frames.astype(int)).max() <= 2
    assert d.fps == pytest.approx(p.fps)
    assert d.duration == pytest.approx(p.duration)
    a = sample_frames(vids[name], 16, backend="auto")
    assert a.backend == "decord"
    np.testing.assert_array_equal(a.frames, d.frames)


@pytest.mark.parametrize("name,shape", [("gray_ffv1", (24, 32)), ("gray_h264", (24, 32)), ("odd", (9, 17))])
def test_grayscale_and_odd_sizes_come_back_rgb(vids, name, shape):
    if name == "gray_ffv1":
        with av.open(vids[name]) as c:
            assert c.streams.video[0].codec_context.pix_fmt == "gray"
    out = [sample_frames(vids[name], 6, backend=b) for b in BACKENDS]
    for sv in out:
        assert sv.frames.shape == (6, *shape, 3) and sv.frames.dtype == np.uint8
        if name.startswith("gray"):
            np.testing.assert_array_equal(sv.frames[..., 0], sv.frames[..., 1])
            np.testing.assert_array_equal(sv.frames[..., 1], sv.frames[..., 2])
    assert out[0].total_frames == out[1].total_frames
    assert np.abs(out[0].frames.astype(int) - out[1].frames.astype(int)).max() <= 2


# ------------------------------------------------------------------------------------- fallback
def test_auto_falls_back_to_pyav_when_decord_cannot_read_the_file(vids):
    # a raw H.264 elementary stream has no duration/frame count metadata: decord refuses it
    with pytest.raises(VideoDecodeError, match="decord"):
        sample_frames(vids["raw_h264"], 5, backend="decord")
    sv = sample_frames(vids["raw_h264"], 5, backend="auto")
    assert sv.backend == "pyav" and sv.total_frames == 30 and sv.frames.shape == (5, 48, 64, 3)


def test_auto_falls_back_to_pyav_when_decord_is_missing(vids, monkeypatch):
    def missing():
        raise video._BackendUnavailable("decord is not importable (ImportError: No module named 'decord')")

    monkeypatch.setattr(video, "_import_decord", missing)
    sv = sample_frames(vids["textured"], 8, backend="auto")
    assert sv.backend == "pyav" and sv.total_frames == 100
    ref = sample_frames(vids["textured"], 8, backend="pyav")
    np.testing.assert_array_equal(sv.frames, ref.frames)
    with pytest.raises(ConfigError, match="decord"):
        sample_frames(vids["textured"], 8, backend="decord")


# ------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, vids):
    d = tmp_path_factory.mktemp("bad")
    f = {}
    f["missing"] = str(d / "missing.mp4")
    os.mkdir(d / "folder.mp4")
    f["directory"] = str(d / "folder.mp4")
    (d / "empty.mp4").write_bytes(b"")
    f["empty"] = str(d / "empty.mp4")
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    f["not_a_video"] = str(d / "text.mp4")
    data = Path(vids["textured"]).read_bytes()  # moov at the end: cut = no index
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])
    f["truncated_mp4"] = str(d / "cut.mp4")
    data = Path(vids["faststart"]).read_bytes()  # moov first: cut mid-sample
    (d / "cut_faststart.mp4").write_bytes(data[: len(data) // 2])
    f["truncated_faststart"] = str(d / "cut_faststart.mp4")
    data = bytearray(Path(vids["textured"]).read_bytes())
    start = data.find(b"mdat") + 64
    data[start : start + len(data) // 2] = np.random.default_rng(0).integers(0, 256, len(data) // 2, dtype=np.uint8).tobytes()
    (d / "garbage.mp4").write_bytes(bytes(data))
    f["corrupt_payload"] = str(d / "garbage.mp4")
    data = Path(vids["textured_mkv"]).read_bytes()  # header + the first bytes of the first cluster
    (d / "noframes.mkv").write_bytes(data[: data.find(bytes.fromhex("1F43B675")) + 40])
    f["zero_frames"] = str(d / "noframes.mkv")
    c = av.open(str(d / "audio.m4a"), "w")
    s = c.add_stream("aac", rate=16000)
    for i in range(10):
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16000, i * 1024
        for p in s.encode(fr):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    f["audio_only"] = str(d / "audio.m4a")
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "still.png")
    f["still_image"] = str(d / "still.png")
    return f


BAD_CAUSES = {
    "missing": "not found",
    "directory": "directory",
    "empty": "empty",
    "not_a_video": "",
    "truncated_mp4": "",
    "truncated_faststart": "",
    "corrupt_payload": "",
    "zero_frames": "",
    "audio_only": "",
    "still_image": "still image",
}
PYAV_CAUSES = {"zero_frames": "no decodable frames", "audio_only": "no video stream", "truncated_faststart": "truncated"}


@pytest.mark.parametrize("backend", ("decord", "pyav", "auto"))
@pytest.mark.parametrize("case", list(BAD_CAUSES))
def test_bad_input_raises_video_decode_error(bad_files, case, backend):
    path = bad_files[case]
    with pytest.raises(VideoDecodeError) as info:
        sample_frames(path, 4, backend=backend)
    err = info.value
    assert err.path == path and path in str(err)
    assert err.cause and BAD_CAUSES[case] in err.cause
    if backend != "decord" and case in PYAV_CAUSES:
        assert PYAV_CAUSES[case] in err.cause
    assert "Stack trace" not in str(err) and "\n" not in str(err)


def test_file_cut_mid_stream_decodes_what_is_there(tmp_path, vids):
    # policy: a Matroska file cut mid-cluster yields its complete frames, with both backends agreeing
    data = Path(vids["textured_mkv"]).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    d = sample_frames(cut, 8, backend="decord")
    p = sample_frames(cut, 8, backend="pyav")
    assert 0 < p.total_frames < 60 and d.total_frames == p.total_frames
    np.testing.assert_array_equal(d.indices, p.indices)
    assert np.abs(d.frames.astype(int) - p.frames.astype(int)).max() <= 2
    full = sample_frames(vids["textured_mkv"], 60, backend="pyav")
    np.testing.assert_array_equal(p.frames, full.frames[p.indices])


# ---------------------------------------------------------------------------------------- memory
MEMORY_SCRIPT = r"""
import json, sys
import av, numpy as np
from cos.video import sample_frames
short, long_, backend = sys.argv[1:4]
# Peak RSS of this process's own address space (VmHWM, MiB). Not getrusage's ru_maxrss: Linux carries
# that over from the parent across fork+exec, so under a big pytest parent it would never move.
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
sample_frames(short, 8, backend=backend)  # warm up the decoder at the same resolution
before = rss()
sv = sample_frames(long_, 8, backend=backend)
after = rss()
# control: holding every frame of the long video must be visible to this measurement
kept = [f.to_ndarray(format="rgb24") for f in av.open(long_).decode(video=0)]
control = rss()
print(json.dumps({"growth": after - before, "control": control - after, "n": len(kept), "total": sv.total_frames}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_does_not_grow_with_video_length(tmp_path_factory, backend):
    d = tmp_path_factory.getbasetemp() / "memory"
    if not d.exists():
        d.mkdir()
        encode(d / "short.mp4", gradient_frames(16, 256))
        encode(d / "long.mp4", gradient_frames(600, 256))
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(d / "short.mp4"), str(d / "long.mp4"), backend],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    all_frames_mib = 600 * 256 * 256 * 3 / 2**20  # 112.5 MiB
    assert res["total"] == res["n"] == 600
    assert res["control"] > 0.5 * all_frames_mib  # the measurement can see frames being kept
    assert res["growth"] < 0.2 * all_frames_mib, res


# ------------------------------------------------------------------------------------ frame folders
def test_a_folder_of_frame_images_is_a_video(tmp_path):
    """MVBench's episodic-reasoning clips are folders of JPEGs: frames in natural order, the same sampling rule."""
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, 10, 14, 3), dtype=np.uint8)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"frame_{i}.png")  # frame_10 after frame_9, not after frame_1
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")
    sv = sample_frames(folder, 5, backend="decord")  # the decoder choice does not apply to folders
    want = np.linspace(0, 11, 5, dtype=int)
    assert sv.backend == "frames" and sv.total_frames == 12 and sv.fps == 0.0
    assert sv.indices.tolist() == want.tolist()
    np.testing.assert_array_equal(sv.frames, frames[want])
    assert sample_frames(folder, 20).indices.tolist() == np.linspace(0, 11, 20, dtype=int).tolist()


def test_a_folder_without_frames_or_with_a_broken_frame_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(VideoDecodeError, match="directory without frame images"):
        sample_frames(empty, 4)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match="00001.jpg"):
        sample_frames(broken, 1)
