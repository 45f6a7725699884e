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

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from cos.errors import ConfigError, VideoDecodeError

__all__ = ["BACKENDS", "FRAME_EXTENSIONS", "SampledVideo", "frame_indices", "frames_from_images", "sample_frames"]

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


def _sample_decord(path: str, rule: IndexRule) -> SampledVideo:
    decord = _import_decord()
    vr = None
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        total = int(len(vr))
        if total < 1:
            raise VideoDecodeError(path, "the video stream has no decodable frames")
        fps = float(vr.get_avg_fps() or 0.0)
        indices = _checked(rule(total, fps), total)
        batch = vr.get_batch(indices)
        frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    except VideoDecodeError:
        raise
    except Exception as err:  # decord raises DECORDError / RuntimeError with C++ details
        raise VideoDecodeError(path, f"decord: {_describe(err)}") from err
    finally:
        del vr
    frames = _as_rgb_batch(frames, path, len(indices))
    duration = total / fps if fps > 0 else 0.0
    return SampledVideo(frames, indices.astype(np.int64), total, fps, float(duration), path, "decord")


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


def _pyav_decode(av, path: str, indices: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Decode sequentially, keeping only the frames at ``indices`` (non-decreasing).

    Returns ``(frames or None, number of frames decoded)``; ``frames`` is None when the stream ended
    before the last wanted index.
    """
    container, stream = _pyav_open_video(av, path)
    out: np.ndarray | None = None
    width = height = 0
    j, n, decoded = 0, len(indices), 0
    try:
        for position, frame in _decode_checked(container, stream, path):
            decoded = position + 1
            if j < n and indices[j] == position:
                if out is None:
                    width, height = frame.width, frame.height
                    out = np.empty((n, height, width, 3), dtype=np.uint8)
                if (frame.width, frame.height) != (width, height):  # resolution change mid-stream
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                while j < n and indices[j] == position:  # repeated indices -> repeated frames
                    out[j] = rgb
                    j += 1
            # keep decoding past the last wanted frame: the true frame count is checked by the caller
    finally:
        container.close()
    return (out if j == n else None), decoded


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


def _sample_pyav(path: str, rule: IndexRule) -> SampledVideo:
    av = _import_av()
    try:
        total, fps, container_duration = _pyav_probe(av, path)
        if total < 1:
            raise VideoDecodeError(path, "the video stream has no decodable frames")
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
    except VideoDecodeError:
        raise
    except Exception as err:  # av.error.FFmpegError and friends
        raise VideoDecodeError(path, f"pyav: {_describe(err)}") from err
    duration = total / fps if fps > 0 else container_duration
    return SampledVideo(frames, indices.astype(np.int64), total, fps, float(duration), path, "pyav")


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_files(path: str) -> list[str]:
    try:
        names = os.listdir(path)
    except OSError as err:
        raise VideoDecodeError(path, f"cannot list directory ({err.strerror or err})") from None
    files = [n for n in names if n.lower().endswith(FRAME_EXTENSIONS) and not n.startswith(".")]
    return sorted(files, key=_natural_key)


def _sample_folder(path: str, files: list[str], rule: IndexRule) -> SampledVideo:
    """A folder of frame images as a video: the files in natural order are its frames."""
    indices = _checked(rule(len(files), 0.0), len(files))
    frames, indices = frames_from_images([os.path.join(path, f) for f in files], indices=indices)
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


def frames_from_images(images: Sequence, num_frames: int | None = None, *, indices=None) -> tuple[np.ndarray, np.ndarray]:
    """A list of images (PIL, arrays or image files) as a frame stack, sampled like a video's frames.

    With ``num_frames``, the images at :func:`frame_indices` ``(len(images), num_frames)`` are taken (so a
    list longer than ``num_frames`` is thinned uniformly and a shorter one repeats images, exactly as a
    video with that many frames); ``indices`` picks them explicitly. Only the picked images are opened;
    images of another size than the first picked are resized to it (bicubic).
    Returns ``(frames uint8 (N, H, W, 3), indices)``.
    """
    if not images:
        raise VideoDecodeError("<images>", "empty image list")
    if indices is None:
        indices = frame_indices(len(images), num_frames) if num_frames else np.arange(len(images))
    indices = np.asarray(indices, dtype=np.int64)
    opened: dict[int, Image.Image] = {}
    for i in sorted(set(indices.tolist())):
        opened[i] = _open_image(images[i], i).convert("RGB")
    size = opened[int(indices[0])].size
    frames = np.stack([np.asarray(opened[i] if opened[i].size == size else opened[i].resize(size, Image.BICUBIC)) for i in indices.tolist()])
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
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        files = _frame_files(path)
        if not files:
            raise VideoDecodeError(path, f"is a directory without frame images ({', '.join(FRAME_EXTENSIONS)}), not a video")
        return _sample_folder(path, files, rule)
    _check_file(path)

    if backend != "auto":
        sampler = _sample_decord if backend == "decord" else _sample_pyav
        try:
            return sampler(path, rule)
        except _BackendUnavailable as err:
            raise ConfigError(f"video backend {backend!r} is unavailable: {err}") from err

    try:
        return _sample_decord(path, rule)
    except (_BackendUnavailable, VideoDecodeError) as err:
        first = err.cause if isinstance(err, VideoDecodeError) else str(err)
    try:
        return _sample_pyav(path, rule)
    except VideoDecodeError as err:
        raise VideoDecodeError(path, f"{err.cause} (decord also failed: {first})") from err
    except _BackendUnavailable as err:
        raise VideoDecodeError(path, f"no usable backend: {first}; {err}") from err
