"""Uniform frame sampling from video files, as LongVA and lmms-eval do it.

Sampling rule
-------------
``N`` frames are taken from a video of ``T`` decodable frames at the source indices
``np.linspace(0, T - 1, N, dtype=int)`` (:func:`frame_indices`): the first and the last frame are
always included and the indices are truncated, not rounded. When ``N > T`` indices repeat, so the
result still has ``N`` frames (some of them identical), exactly as LongVA's decord path behaves.

Backends
--------
``decord`` is the reference (LongVA parity): ``VideoReader(path, ctx=cpu(0), num_threads=1)`` and
``get_batch(indices).asnumpy()``. ``pyav`` is the fallback. ``auto`` tries decord and falls back to
PyAV when decord is not importable or fails on the file. On ordinary H.264 mp4 files both give the
same frame count and the same RGB frames. decord 0.6 cannot read raw elementary streams, many MPEG-TS
files, and (a decord bug) some narrow frame widths such as 16, 24 and 48 px ("DECORDArrayCopyFromTo:
The size must exactly match"); ``auto`` handles those through PyAV.

PyAV frame count: ``stream.frames`` is 0 for Matroska/WebM/MPEG-TS/raw streams and can be wrong, so it
is not used. A demux-only pass counts the video packets (empty and discard-flagged packets skipped;
no decoding). Frames are then decoded in order; if the number actually decoded differs from the
packet count, the decoded count is authoritative and the indices are recomputed from it (one more pass).

Memory
------
Only the sampled frames are kept: the output array ``(N, H, W, 3)`` is allocated once and each wanted
frame is converted to RGB and copied into it as the decoder produces it; all other frames are
dropped without conversion. Memory is O(N·H·W), independent of the video length.

Streaming
---------
Frame selectors score many candidates (e.g. one frame per second of an hour-long video,
:func:`rate_indices`) and keep a few, so the candidates are never held at once: :func:`open_stream`
opens the video, computes the indices of a rule, and :meth:`FrameStream.chunks` yields them in order,
``chunk_size`` frames at a time (memory O(chunk_size·H·W)). decord reads one ``get_batch`` per chunk from
a single reader; PyAV makes one sequential decoding pass (converting only wanted frames) and trusts its
packet count: if the stream ends early the remaining indices are not delivered
(:attr:`FrameStream.delivered`). The frames are those :func:`sample_frames` returns for the same rule.

Damaged input
-------------
Every failure surfaces as :class:`~cos.errors.VideoDecodeError` naming the path and the cause. A
file cut mid-stream is decoded up to the cut when the container allows it and the demuxer reports
no error (Matroska, MPEG-TS: the complete frames before the cut are taken to be the video, and both
backends agree on their number); when the demuxer or decoder reports an error (an MP4 without its
index, a sample cut in half, corrupt payload) the file is rejected, never patched up with
substitute frames. Still images (PNG, JPEG, ...) are rejected as "not a video".

Frame folders
-------------
Some benchmarks store a clip as a folder of frame images (MVBench's episodic-reasoning clips, TVQA
frames at 3 fps), and lmms-eval hands the model the folder's path. A directory that holds image files
(:data:`FRAME_EXTENSIONS`) is read as a video whose frames are those files in natural order
(``2.jpg`` before ``10.jpg``), sampled with the same rule; only the sampled files are opened. Its frame
rate is unknown (``fps = 0.0``). A directory without frame images is a :class:`VideoDecodeError`.
"""

from __future__ import annotations

import math
import os
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from cos.errors import ConfigError, VideoDecodeError

__all__ = [
    "BACKENDS",
    "FRAME_EXTENSIONS",
    "FrameStream",
    "SampledVideo",
    "frame_indices",
    "frames_from_images",
    "open_stream",
    "rate_indices",
    "sample_frames",
]

#: accepted values of ``backend``
BACKENDS = ("decord", "pyav", "auto")
#: file extensions read as frames when a "video" is a folder of images
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Leading bytes of still-image files (animated GIF is deliberately absent: it is a video).
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """Source frame indices sampled from a video of ``total_frames`` frames.

    Exactly ``np.linspace(0, total_frames - 1, num_frames, dtype=int)``: evenly spaced, first and last
    frame included, truncated toward zero. When ``num_frames > total_frames`` some indices repeat
    (e.g. ``frame_indices(3, 5) == [0, 0, 1, 1, 2]``), so the sample always has ``num_frames`` entries.
    """
    total_frames = _check_count("total_frames", total_frames)
    num_frames = _check_count("num_frames", num_frames)
    return np.linspace(0, total_frames - 1, num_frames, dtype=int)


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def rate_indices(total_frames: int, fps: float, rate: float) -> np.ndarray:
    """Candidate frames at ``rate`` frames per second, as BOLT's feature extractor takes them.

    ``count = max(1, int(total_frames / fps * rate))`` candidates; candidate ``i`` is the source frame
    ``clip(round(i / rate * fps), 0, total_frames - 1)`` (round half to even, as Python's ``round``), and
    repeats are dropped (they occur when ``rate > fps``), so the result is strictly increasing. A video
    shorter than ``1 / rate`` seconds has one candidate, frame 0. With an unknown frame rate (``fps <= 0``,
    e.g. a folder of frames) every frame is a candidate. Returns int64 indices.

    >>> rate_indices(300, 30.0, 1.0).tolist()  # 10 s at 30 fps, one frame per second
    [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]
    >>> rate_indices(5, 10.0, 20.0).tolist()  # faster than the video: every frame once
    [0, 1, 2, 3, 4]
    """
    total_frames = _check_count("total_frames", total_frames)
    fps = _check_real("fps", fps)
    rate = _check_real("rate", rate)
    if rate <= 0:
        raise ConfigError(f"rate must be a positive number of frames per second, got {rate!r}")
    if fps <= 0:
        return np.arange(total_frames, dtype=np.int64)
    count = max(1, int(total_frames / fps * rate))
    idx = np.clip(np.round(np.arange(count) / rate * fps), 0, total_frames - 1).astype(np.int64)
    return np.unique(idx)


#: a sampling rule: ``(total_frames, fps) -> source indices`` (fps 0.0 when unknown)
IndexRule = Callable[[int, float], np.ndarray]


def _checked(indices, total: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= total or (np.diff(idx) < 0).any():
        raise ConfigError(f"a sampling rule must give non-decreasing indices in [0, {total}), got {idx[:8].tolist()}...")
    return idx


@dataclass
class SampledVideo:
    """Frames sampled from one video file."""

    frames: np.ndarray  #: uint8 ``(N, H, W, 3)``, RGB
    indices: np.ndarray  #: int64 ``(N,)``, source frame index of each sampled frame
    total_frames: int  #: decodable frames in the video
    fps: float  #: average frame rate (0.0 when unknown)
    duration: float  #: seconds, ``total_frames / fps`` (container duration when fps is unknown)
    path: str
    backend: str  #: "decord", "pyav" or "frames" (a folder of images): what produced the frames
    times: np.ndarray | None = None  #: seconds per sampled frame, when a sampling rule states its own


class _BackendUnavailable(Exception):
    """The backend's package cannot be imported."""


def _import_decord():
    try:
        import decord
    except Exception as err:  # ImportError, or a broken native library
        raise _BackendUnavailable(f"decord is not importable ({type(err).__name__}: {err})") from err
    return decord


def _import_av():
    try:
        import av
    except Exception as err:
        raise _BackendUnavailable(f"PyAV is not importable ({type(err).__name__}: {err})") from err
    return av


def _describe(err: BaseException) -> str:
    """One readable line for a decoder exception (decord appends long C++ stack traces)."""
    text = str(err).strip()
    for marker in ("\nStack trace", "Stack trace:"):
        text = text.split(marker, 1)[0]
    text = " ".join(text.split())
    text = re.sub(r"^\[[0-9:]+\] \S+:\d+: ", "", text)  # decord's "[hh:mm:ss] file.cc:123: " prefix
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _check_file(path: str) -> None:
    """Fail early, with a clear cause, on paths no decoder can read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except OSError as err:
        raise VideoDecodeError(path, f"cannot access file ({err.strerror or err})") from None
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a directory, not a video file")  # frame folders are read before this check
    if st.st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise VideoDecodeError(path, f"cannot read file ({err.strerror or err})") from None
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            raise VideoDecodeError(path, f"is a still image ({kind}), not a video")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise VideoDecodeError(path, "is a still image (WebP), not a video")


def _as_rgb_batch(frames: np.ndarray, path: str, n: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:  # (N, H, W) grayscale
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[0] != n or frames.shape[-1] not in (3, 4):
        raise VideoDecodeError(path, f"decoder returned frames of unexpected shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise VideoDecodeError(path, f"decoder returned frames of dtype {frames.dtype}, expected uint8")
    return np.ascontiguousarray(frames[..., :3])


@contextmanager
def _decoder_errors(path: str, backend: str):
    """Turn any decoder exception (decord's DECORDError / RuntimeError with C++ details, av.error.FFmpegError,
    ...) raised in the block into a VideoDecodeError naming ``path``; VideoDecodeErrors pass unchanged."""
    try:
        yield
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(path, f"{backend}: {_describe(err)}") from err


def _decord_open(decord, path: str) -> tuple[Any, int, float]:
    """``(VideoReader, frame count, fps)``, LongVA's way: ``VideoReader(path, ctx=cpu(0), num_threads=1)``."""
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    total = int(len(vr))
    if total < 1:
        raise VideoDecodeError(path, "the video stream has no decodable frames")
    return vr, total, float(vr.get_avg_fps() or 0.0)


def _decord_batch(vr, indices: np.ndarray, path: str) -> np.ndarray:
    """The frames at ``indices``: one ``get_batch``, as uint8 RGB ``(len(indices), H, W, 3)``."""
    batch = vr.get_batch(indices)
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    return _as_rgb_batch(frames, path, len(indices))


def _duration(total: int, fps: float, fallback: float = 0.0) -> float:
    return float(total / fps if fps > 0 else fallback)


def _sample_decord(path: str, rule: IndexRule) -> SampledVideo:
    decord = _import_decord()
    vr = None
    try:
        with _decoder_errors(path, "decord"):
            vr, total, fps = _decord_open(decord, path)
            indices = _checked(rule(total, fps), total)
            frames = _decord_batch(vr, indices, path)
    finally:
        del vr
    return SampledVideo(frames, indices.astype(np.int64), total, fps, _duration(total, fps), path, "decord")


def _is_image_format(format_name: str) -> bool:
    names = format_name.split(",")
    return any(name in ("image2", "image2pipe") or name.endswith("_pipe") for name in names)


def _pyav_open_video(av, path: str):
    """Open ``path`` and return ``(container, video stream)``; the caller closes the container."""
    try:
        container = av.open(path, mode="r")
    except Exception as err:
        raise VideoDecodeError(path, f"pyav cannot open it as a video: {_describe(err)}") from err
    try:
        if _is_image_format(container.format.name):
            raise VideoDecodeError(path, f"is a still image ({container.format.name}), not a video")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
        return container, container.streams.video[0]
    except BaseException:
        container.close()
        raise


def _pyav_probe(av, path: str) -> tuple[int, float, float]:
    """Return ``(packet count, fps, container duration in seconds)`` without decoding."""
    container, stream = _pyav_open_video(av, path)
    try:
        fps = 0.0
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate and float(rate) > 0:
                fps = float(rate)
                break
        duration = container.duration / 1_000_000 if container.duration and container.duration > 0 else 0.0
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packet / dropped by an edit list
                    continue
                count += 1
        except Exception as err:
            raise VideoDecodeError(
                path, f"pyav: demuxing failed after {count} packets (truncated or corrupt file): {_describe(err)}"
            ) from err
        return count, fps, duration
    finally:
        container.close()


class _PyAVPass:
    """One sequential decoding pass over ``path`` that converts only the frames at ``indices``
    (non-decreasing) to RGB; all other frames are dropped unconverted.

    Iterating yields ``(start, stop, rgb)`` once per distinct wanted frame, in order: ``indices[start:stop]``
    all name that frame (repeated indices -> repeated frames). Frames of another size than the first wanted
    one are scaled to it (a resolution change mid-stream); ``size`` is that ``(width, height)``. ``decoded``
    counts the frames decoded so far. With ``to_end`` the pass decodes the whole stream (so ``decoded``
    ends as the true frame count); otherwise it stops after the last wanted frame.
    """

    def __init__(self, av, path: str, indices: np.ndarray, *, to_end: bool):
        self.av, self.path, self.indices, self.to_end = av, path, indices, to_end
        self.decoded = 0
        self.size: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        indices, n, j = self.indices, len(self.indices), 0
        if n == 0 and not self.to_end:
            return
        container, stream = _pyav_open_video(self.av, self.path)
        try:
            for position, frame in _decode_checked(container, stream, self.path):
                self.decoded = position + 1
                if j < n and indices[j] == position:
                    if self.size is None:
                        self.size = (frame.width, frame.height)
                    if (frame.width, frame.height) != self.size:  # resolution change mid-stream
                        rgb = frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])
                    else:
                        rgb = frame.to_ndarray(format="rgb24")
                    start = j
                    while j < n and indices[j] == position:
                        j += 1
                    yield start, j, rgb
                    if j == n and not self.to_end:
                        return
        finally:
            container.close()


def _pyav_decode(av, path: str, indices: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Decode sequentially, keeping only the frames at ``indices`` (non-decreasing).

    Returns ``(frames or None, number of frames decoded)``; ``frames`` is None when the stream ended
    before the last wanted index.
    """
    out: np.ndarray | None = None
    filled = 0
    # keep decoding past the last wanted frame: the true frame count is checked by the caller
    wanted = _PyAVPass(av, path, indices, to_end=True)
    for start, stop, rgb in wanted:
        if out is None:
            width, height = wanted.size
            out = np.empty((len(indices), height, width, 3), dtype=np.uint8)
        out[start:stop] = rgb
        filled = stop
    return (out if filled == len(indices) else None), wanted.decoded


def _decode_checked(container, stream, path: str):
    """``enumerate(container.decode(stream))`` with decoder errors turned into VideoDecodeError."""
    frames = container.decode(stream)
    position = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as err:
            raise VideoDecodeError(
                path, f"pyav: decoding failed after {position} frames (truncated or corrupt stream): {_describe(err)}"
            ) from err
        yield position, frame
        position += 1


def _pyav_probe_frames(av, path: str) -> tuple[int, float, float]:
    """:func:`_pyav_probe`, refusing a stream without packets."""
    total, fps, container_duration = _pyav_probe(av, path)
    if total < 1:
        raise VideoDecodeError(path, "the video stream has no decodable frames")
    return total, fps, container_duration


def _sample_pyav(path: str, rule: IndexRule) -> SampledVideo:
    av = _import_av()
    with _decoder_errors(path, "pyav"):  # av.error.FFmpegError and friends
        total, fps, container_duration = _pyav_probe_frames(av, path)
        for _attempt in range(2):
            indices = _checked(rule(total, fps), total)
            frames, decoded = _pyav_decode(av, path, indices)
            if decoded < 1:
                raise VideoDecodeError(path, "the video stream has no decodable frames")
            if decoded == total and frames is not None:
                break
            total = decoded  # the packet count was wrong: trust what the decoder produced
        else:
            raise VideoDecodeError(path, "frame count is unstable between decoding passes")
    return SampledVideo(frames, indices.astype(np.int64), total, fps, _duration(total, fps, container_duration), path, "pyav")


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_files(path: str) -> list[str]:
    try:
        names = os.listdir(path)
    except OSError as err:
        raise VideoDecodeError(path, f"cannot list directory ({err.strerror or err})") from None
    files = [n for n in names if n.lower().endswith(FRAME_EXTENSIONS) and not n.startswith(".")]
    return sorted(files, key=_natural_key)


def _folder_frames(path: str, files: list[str], rule: IndexRule) -> tuple[list[str], np.ndarray]:
    """A folder of frame images as a video: the files in natural order are its frames (frame rate unknown).
    Returns the frame files' paths and the rule's indices into them."""
    return [os.path.join(path, f) for f in files], _checked(rule(len(files), 0.0), len(files))


def _sample_folder(path: str, files: list[str], rule: IndexRule) -> SampledVideo:
    paths, indices = _folder_frames(path, files, rule)
    frames, indices = frames_from_images(paths, indices=indices)
    return SampledVideo(frames, indices, len(files), 0.0, 0.0, path, "frames")


def _open_image(item, position: int) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as im:
                im.load()
                return im.copy()
        except (OSError, ValueError) as err:
            raise VideoDecodeError(item, f"image {position} of the list cannot be read: {type(err).__name__}: {err}") from None
    try:
        array = np.asarray(item)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise TypeError(f"expected a uint8 (H, W[, C]) array, got {array.dtype} {array.shape}")
        return Image.fromarray(array)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"image {position} of the list is not an image ({type(item).__name__}): {err}") from None


def frames_from_images(
    images: Sequence, num_frames: int | None = None, *, indices=None, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A list of images (PIL, arrays or image files) as a frame stack, sampled like a video's frames.

    With ``num_frames``, the images at :func:`frame_indices` ``(len(images), num_frames)`` are taken (so a
    list longer than ``num_frames`` is thinned uniformly and a shorter one repeats images, exactly as a
    video with that many frames); ``indices`` picks them explicitly. Only the picked images are opened;
    images of another size than ``size`` ``(width, height)`` are resized to it (bicubic); by default
    ``size`` is the first picked image's. Returns ``(frames uint8 (N, H, W, 3), indices)``.
    """
    if not images:
        raise VideoDecodeError("<images>", "empty image list")
    if indices is None:
        indices = frame_indices(len(images), num_frames) if num_frames else np.arange(len(images))
    indices = np.asarray(indices, dtype=np.int64)
    opened: dict[int, Image.Image] = {}
    for i in sorted(set(indices.tolist())):
        opened[i] = _open_image(images[i], i).convert("RGB")
    size = tuple(size) if size is not None else opened[int(indices[0])].size
    frames = np.stack(
        [np.asarray(opened[i] if opened[i].size == size else opened[i].resize(size, Image.BICUBIC)) for i in indices.tolist()]
    )
    return frames, indices


def sample_frames(path: str | os.PathLike, num_frames: int | None, backend: str = "auto", *, rule: IndexRule | None = None) -> SampledVideo:
    """Decode the ``num_frames`` frames at :func:`frame_indices` of the video at ``path``; or, with
    ``rule(total_frames, fps) -> indices`` (non-decreasing, in ``[0, total)``), the frames a backend's own
    sampling rule picks (``num_frames`` is then ignored).

    ``backend``: ``"decord"`` (LongVA's reader), ``"pyav"``, or ``"auto"`` (decord, falling back to
    PyAV when decord is missing or fails on this file). Raises :class:`VideoDecodeError` for any
    unreadable input and :class:`ConfigError` for bad arguments or an explicitly requested backend
    that is not installed. A folder of frame images is read as a video whatever ``backend`` says (see
    "Frame folders" above).
    """
    if rule is None:
        num_frames = _check_count("num_frames", num_frames)
        rule = lambda total, fps: frame_indices(total, num_frames)  # noqa: E731 - the default rule
    path, files = _resolve_source(path, backend)
    if files is not None:
        return _sample_folder(path, files, rule)
    return _with_backend(path, backend, lambda: _sample_decord(path, rule), lambda: _sample_pyav(path, rule))


def _resolve_source(path: str | os.PathLike, backend: str) -> tuple[str, list[str] | None]:
    """Check ``backend`` and ``path``: ``(path as str, frame files)`` for a folder of frame images,
    ``(path, None)`` for a file that may be a video; VideoDecodeError for anything else."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        files = _frame_files(path)
        if not files:
            raise VideoDecodeError(path, f"is a directory without frame images ({', '.join(FRAME_EXTENSIONS)}), not a video")
        return path, files
    _check_file(path)
    return path, None


def _with_backend(path: str, backend: str, via_decord: Callable[[], Any], via_pyav: Callable[[], Any]):
    """Run ``via_decord`` or ``via_pyav`` as ``backend`` says; ``"auto"``: decord, then PyAV when decord is
    missing or raises VideoDecodeError (both causes are named if PyAV fails too). An explicitly requested
    backend that is not installed is a ConfigError."""
    if backend != "auto":
        try:
            return via_decord() if backend == "decord" else via_pyav()
        except _BackendUnavailable as err:
            raise ConfigError(f"video backend {backend!r} is unavailable: {err}") from err

    try:
        return via_decord()
    except (_BackendUnavailable, VideoDecodeError) as err:
        first = err.cause if isinstance(err, VideoDecodeError) else str(err)
    try:
        return via_pyav()
    except VideoDecodeError as err:
        raise VideoDecodeError(path, f"{err.cause} (decord also failed: {first})") from err
    except _BackendUnavailable as err:
        raise VideoDecodeError(path, f"no usable backend: {first}; {err}") from err


# ------------------------------------------------------------------------------------------ streaming
@dataclass(eq=False)
class FrameStream:
    """The frames a rule picks from one video, decoded ``chunk_size`` at a time (see "Streaming" above).

    Made by :func:`open_stream`. :meth:`chunks` yields ``(indices_chunk, frames_chunk)`` in order: int64
    source indices and uint8 RGB frames ``(k, H, W, 3)``, ``k <= chunk_size``; concatenated they are the
    frames :func:`sample_frames` returns for the same rule and backend (PyAV: when its packet count is right,
    see below; :func:`sample_frames` then makes a second pass, a stream does not). Only one chunk is held at a time.

    decord and frame folders deliver every index or raise. PyAV's frame count is the packet count, which
    can exceed the frames the decoder actually produces: the pass then ends early, the remaining indices
    are not delivered, and ``delivered`` says how many were. The caller must therefore use the indices
    that came with the chunks (``indices[:delivered]`` after a full pass), not ``indices``.

    Use as a context manager, or call :meth:`close`, to release the decoder.
    """

    path: str
    backend: str  #: the decoder actually used: "decord", "pyav" or "frames" (a folder of images)
    total_frames: int  #: frames in the video (PyAV: its packet count, see the module docstring)
    fps: float  #: average frame rate (0.0 when unknown)
    duration: float  #: seconds, ``total_frames / fps`` (PyAV: container duration when fps is unknown)
    indices: np.ndarray  #: int64 ``(N,)``, non-decreasing: the rule's source indices, in delivery order
    chunk_size: int = 16  #: most frames per chunk
    delivered: int = 0  #: indices delivered so far by the latest :meth:`chunks` pass
    _reader: Any = field(default=None, repr=False)  # decord's VideoReader
    _first: np.ndarray | None = field(default=None, repr=False)  # decord, frames: the first chunk, read when opened
    _files: list[str] | None = field(default=None, repr=False)  # frames: the frame files
    _size: tuple[int, int] | None = field(default=None, repr=False)  # frames: (width, height) of every frame
    _passes: weakref.WeakSet = field(default_factory=weakref.WeakSet, repr=False)  # running chunks() generators
    _closed: bool = field(default=False, repr=False)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices_chunk int64 (k,), frames_chunk uint8 (k, H, W, 3))`` for consecutive slices
        of ``indices``, ``k <= chunk_size`` (only PyAV's last chunk may stop short, see the class docstring).
        Each call is a new pass from the start. Raises :class:`VideoDecodeError` naming the path when
        decoding fails."""
        if self._closed:
            raise ValueError(f"the frame stream of {self.path!r} is closed")
        self.delivered = 0
        chunks = self._pyav_chunks() if self.backend == "pyav" else self._batched_chunks()
        self._passes.add(chunks)
        return chunks

    def _batched_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """decord: one ``get_batch`` per chunk; frames: the chunk's files, resized to the first frame's size."""
        for begin in range(0, len(self.indices), self.chunk_size):
            idx = self.indices[begin : begin + self.chunk_size]
            if begin == 0 and self._first is not None:  # read when opened; held only until the first pass takes it
                frames, self._first = self._first, None
            elif self.backend == "decord":
                with _decoder_errors(self.path, "decord"):
                    frames = _decord_batch(self._reader, idx, self.path)
            else:
                frames = frames_from_images(self._files, indices=idx, size=self._size)[0]
            self.delivered = begin + len(idx)
            yield idx.copy(), frames

    def _pyav_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One sequential decoding pass, stopping after the last wanted frame; a chunk is yielded when full."""
        indices, n = self.indices, len(self.indices)
        buf: np.ndarray | None = None  # the chunk being filled: indices[begin : begin + len(buf)]
        begin = filled = 0
        with _decoder_errors(self.path, "pyav"):
            wanted = _PyAVPass(_import_av(), self.path, indices, to_end=False)
            for start, stop, rgb in wanted:
                filled = stop
                while start < stop:  # repeated indices may run across a chunk boundary
                    if buf is None:
                        buf = np.empty((min(self.chunk_size, n - begin), *rgb.shape), dtype=np.uint8)
                    end = min(stop, begin + len(buf))
                    buf[start - begin : end - begin] = rgb
                    start = end
                    if end == begin + len(buf):
                        self.delivered = end
                        yield indices[begin:end].copy(), buf
                        buf, begin = None, end
        if buf is not None:  # the stream ended before the last wanted index
            self.delivered = filled
            yield indices[begin:filled].copy(), buf[: filled - begin]

    def close(self) -> None:
        """Stop any running :meth:`chunks` pass and release the decoder."""
        for chunks in list(self._passes):
            chunks.close()
        self._reader = self._first = None
        self._closed = True

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stream(path: str | os.PathLike, rule: IndexRule, backend: str = "auto", chunk_size: int = 16) -> FrameStream:
    """Open the video at ``path`` for streaming the frames ``rule(total_frames, fps) -> indices``
    (non-decreasing, in ``[0, total)``; e.g. ``lambda t, f: rate_indices(t, f, 1.0)``) in chunks of at most
    ``chunk_size`` frames (:meth:`FrameStream.chunks`).

    ``backend`` as in :func:`sample_frames`: ``"decord"`` (one ``VideoReader``, one ``get_batch`` per
    chunk; the first chunk is read here), ``"pyav"`` (a demux-only probe here, one sequential decoding
    pass per :meth:`~FrameStream.chunks` call), or ``"auto"`` (decord, falling back to PyAV when decord is
    missing or fails to open the file or read the first chunk; a later failure is a VideoDecodeError). A
    folder of frame images is read as a video whatever ``backend`` says. Raises the same errors as
    :func:`sample_frames` for unreadable input and bad arguments.
    """
    chunk_size = _check_count("chunk_size", chunk_size)
    if not callable(rule):
        raise ConfigError(f"rule must be a callable (total_frames, fps) -> indices, got {type(rule).__name__}")
    path, files = _resolve_source(path, backend)
    if files is not None:
        paths, indices = _folder_frames(path, files, rule)
        first = frames_from_images(paths, indices=indices[:chunk_size])[0]
        size = (first.shape[2], first.shape[1])  # the first frame's, as sample_frames resizes
        return FrameStream(path, "frames", len(files), 0.0, 0.0, indices, chunk_size, _first=first, _files=paths, _size=size)
    return _with_backend(path, backend, lambda: _open_decord(path, rule, chunk_size), lambda: _open_pyav(path, rule, chunk_size))


def _open_decord(path: str, rule: IndexRule, chunk_size: int) -> FrameStream:
    decord = _import_decord()
    with _decoder_errors(path, "decord"):
        reader, total, fps = _decord_open(decord, path)
        indices = _checked(rule(total, fps), total)
        first = _decord_batch(reader, indices[:chunk_size], path)
    return FrameStream(path, "decord", total, fps, _duration(total, fps), indices, chunk_size, _reader=reader, _first=first)


def _open_pyav(path: str, rule: IndexRule, chunk_size: int) -> FrameStream:
    av = _import_av()
    with _decoder_errors(path, "pyav"):
        total, fps, container_duration = _pyav_probe_frames(av, path)
        indices = _checked(rule(total, fps), total)
    return FrameStream(path, "pyav", total, fps, _duration(total, fps, container_duration), indices, chunk_size)
