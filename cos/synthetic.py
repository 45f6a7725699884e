"""Synthetic needle-in-a-haystack videos: ``cos make-needle-videos OUT --n N``.

Each video is a real H.264 mp4 (libx264, yuv420p) of a drifting, low-saturation textured background
(periodic smooth noise plus a moving brightness wave, both seeded per video). During one contiguous
range of frames, ``[needle_start, needle_end)`` (10-25 % of the video, at a random position), a large
flat shape in a saturated colour is drawn on top. The background never contains saturated colour, so
the needle is the only coloured thing in the video. ``OUT/questions.json`` holds one multiple-choice
question per video, about the needle's colour or its shape (4 options, one right).

**Distractors** (``distractors=D`` > 0, a task where grounding matters): besides the needle, ``D`` other brief
shape events appear at other, non-overlapping times, and the question names the needle by one attribute and asks
for the other — "What shape appears in red?" (no distractor is red) or "What colour is the square that appears?"
(no distractor is a square); the asked attribute is drawn freely for distractors (it may equal the needle's). The
options hold up to three of the distractors' other answers, so a model that averages over all frames confuses the
needle with them; one that looks at the right frames does not. A video has at least ``2 (D + 1)`` frames. Each record lists every
event (``events``: colour, shape, frame range, ``target``); ``needle_start``/``needle_end`` stay the needle's
(the ground truth for grounding metrics). **Splits** (``split`` = ``train``, ``val`` or ``test``) draw every
video from a seed stream of its own, so splits never share a video; ``split=None`` keeps the original stream.

Determinism: everything is drawn from ``numpy.random.default_rng(video_seed)`` with
``video_seed = SeedSequence([seed, index])``; frames are built with plain float arithmetic (no FFT,
no threads) and x264 runs single-threaded with macroblock-tree rate control off (it is not
reproducible with AVX-512), so the same arguments give byte-identical mp4 files and questions.json
on the same machine and software stack.
"""

from __future__ import annotations

import argparse
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from cos.errors import ConfigError

__all__ = ["COLOURS", "MARKS", "QUESTION_KINDS", "SHAPES", "SPLITS", "add_parser", "make_needle_videos", "needle_image", "write_haystack",
           "write_mp4"]

#: needle colours (saturated RGB); the background stays far from all of them
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 70, 230),
    "yellow": (235, 215, 30),
    "magenta": (220, 40, 220),
    "cyan": (30, 210, 220),
}
#: needle shapes
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

COLOUR_QUESTION = "What colour is the shape that briefly appears in the video?"
SHAPE_QUESTION = "What shape briefly appears in the video?"
#: with distractors: the needle is named by one attribute and the other is asked for
SHAPE_OF_COLOUR_QUESTION = "What shape briefly appears in {colour} in the video?"
COLOUR_OF_SHAPE_QUESTION = "What colour is the {shape} that briefly appears in the video?"
#: mark questions (``question="mark"``): every shape carries a small square mark at its centre; the needle is named by
#: its colour and the colour of its mark is asked for
MARK_QUESTION = "What colour is the mark inside the {colour} shape?"
#: mark colours, in the fixed order of the mark questions' options (A-D)
MARKS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (255, 150, 0),
    "pink": (255, 175, 205),
}
#: what the questions ask: ``attribute`` (colour or shape, options shuffled) or ``mark`` (the mark's colour, fixed options)
QUESTION_KINDS = ("attribute", "mark")
LETTERS = "ABCD"
#: dataset splits with seed streams of their own
SPLITS = ("train", "val", "test")
#: most distractor events per video (each event, the needle included, lasts 5-12 % of the video)
MAX_DISTRACTORS = 6

# threads=1 alone is not enough for reproducible output: x264's macroblock-tree rate control gave a
# different bitstream on every run on an AVX-512 machine (same input, same process). mbtree=0 fixes it.
_X264_OPTIONS = {"threads": "1", "preset": "medium", "crf": "18", "x264-params": "mbtree=0"}


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _video_seed(seed: int, index: int, split: str | None = None) -> int:
    entropy = [seed, index] if split is None else [seed, index, 1 + SPLITS.index(split)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def _smooth_periodic(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Periodic smooth noise in [-1, 1], shape (size, size, channels): bilinear upsampling of a
    ``cells``x``cells`` random grid (wrapping at the borders, so it can be scrolled seamlessly)."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells, channels))
    pos = np.arange(size) * (cells / size)
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    i1 = (i0 + 1) % cells
    s = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible grid creases
    rows = grid[i0] * (1.0 - s)[:, None, None] + grid[i1] * s[:, None, None]
    field = rows[:, i0] * (1.0 - s)[None, :, None] + rows[:, i1] * s[None, :, None]
    peak = np.abs(field).max()
    return field / peak if peak > 0 else field


def _shape_mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = y - cy, x - cx
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = r * 0.85
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":  # apex up, height 1.8 r, base width 2 r
        top, bottom = cy - r, cy + 0.8 * r
        half_width = (y - top) / (bottom - top) * r
        return (y >= top) & (y <= bottom) & (np.abs(dx) <= half_width)
    if shape == "cross":  # plus sign
        arm = r * 0.32
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(shape)


def _plan_video(index: int, seed: int, min_frames: int, max_frames: int, size: int, fps: float, distractors: int = 0,
                split: str | None = None, question: str = "attribute") -> dict:
    """Draw everything random about one video; returns its questions.json record plus render params."""
    vseed = _video_seed(seed, index, split)
    rng = np.random.default_rng(vseed)
    if distractors or question == "mark":
        return _plan_with_distractors(rng, vseed, min_frames, max_frames, size, fps, distractors, question)
    num_frames = int(rng.integers(min_frames, max_frames + 1))
    length = max(1, int(round(num_frames * rng.uniform(0.10, 0.25))))
    start = int(rng.integers(0, num_frames - length + 1))
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    qtype = "colour" if rng.random() < 0.6 else "shape"
    if qtype == "colour":
        others = [c for c in COLOURS if c != colour]
        choices = [colour] + [str(c) for c in rng.choice(others, size=3, replace=False)]
        answer_value, question = colour, COLOUR_QUESTION
    else:
        choices = list(SHAPES)
        answer_value, question = shape, SHAPE_QUESTION
    choices = [choices[i] for i in rng.permutation(len(choices))]
    answer = LETTERS[choices.index(answer_value)]
    radius = size * rng.uniform(0.25, 0.32)
    margin = radius + 1.0
    cy = float(rng.uniform(margin, size - margin))
    cx = float(rng.uniform(margin, size - margin))
    render = {
        "rng": rng,  # continues the same stream for the background
        "events": [(start, start + length, COLOURS[colour], _shape_mask(shape, size, cy, cx, radius))],
    }
    record = {
        "id": None,  # filled in by the caller
        "video": None,
        "question": question,
        "options": [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)],
        "answer": answer,
        "question_type": qtype,
        "needle_colour": colour,
        "needle_shape": shape,
        "needle_start": start,
        "needle_end": start + length,
        "num_frames": num_frames,
        "fps": float(fps),
        "width": size,
        "height": size,
        "seed": vseed,
    }
    return {"record": record, "render": render}


def _plan_with_distractors(rng: np.random.Generator, vseed: int, min_frames: int, max_frames: int, size: int, fps: float,
                           distractors: int, question: str = "attribute") -> dict:
    """The needle plus ``distractors`` events at non-overlapping times; the question names the needle by the attribute no
    distractor shares and asks for the other one, or (``question="mark"``) names it by colour and asks for the colour
    of its mark (see the module docstring)."""
    count = distractors + 1
    num_frames = int(rng.integers(max(min_frames, 2 * count), max_frames + 1))  # make_needle_videos checked 2 * count <= max
    lengths = [max(1, int(round(num_frames * rng.uniform(0.05, 0.12)))) for _ in range(count)]
    free = num_frames - sum(lengths)
    if free < 0:
        raise ConfigError(f"{count} events do not fit in {num_frames} frames; use fewer distractors or more frames")
    cuts = np.sort(rng.integers(0, free + 1, size=count))  # the free frames split into count + 1 gaps
    gaps = np.diff(np.concatenate([[0], cuts]))
    starts, position = [], 0
    for gap, length in zip(gaps, lengths):
        position += int(gap)
        starts.append(position)
        position += length
    target = int(rng.integers(0, count))  # which event is the needle
    if question == "mark":
        return _mark_plan(rng, vseed, num_frames, starts, lengths, target, size, fps, distractors)
    qtype = "shape_of_colour" if rng.random() < 0.5 else "colour_of_shape"
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    attrs = []
    for e in range(count):
        # a distractor never shares the attribute that names the needle; the asked attribute is drawn freely (it may
        # equal the needle's), so "the option that appears only once" is no shortcut around the question
        if e == target:
            attrs.append((colour, shape))
        elif qtype == "shape_of_colour":  # the colour names the needle
            attrs.append((str(rng.choice([c for c in COLOURS if c != colour])), str(rng.choice(SHAPES))))
        else:  # the shape names the needle
            attrs.append((str(rng.choice(list(COLOURS))), str(rng.choice([x for x in SHAPES if x != shape]))))
    if qtype == "shape_of_colour":
        answer_value, pool, asked = shape, list(SHAPES), 1
        question = SHAPE_OF_COLOUR_QUESTION.format(colour=colour)
    else:
        answer_value, pool, asked = colour, list(COLOURS), 0
        question = COLOUR_OF_SHAPE_QUESTION.format(shape=shape)
    confusers = list(dict.fromkeys(a[asked] for e, a in enumerate(attrs) if e != target and a[asked] != answer_value))[:3]
    rest = [v for v in pool if v != answer_value and v not in confusers]
    fill = [str(v) for v in rng.permutation(rest)[: 3 - len(confusers)]]
    choices = [answer_value] + confusers + fill
    choices = [choices[i] for i in rng.permutation(len(choices))]
    events, masks = [], []
    for e, ((c, sh), start, length) in enumerate(zip(attrs, starts, lengths)):
        radius = size * rng.uniform(0.25, 0.32)
        margin = radius + 1.0
        cy = float(rng.uniform(margin, size - margin))
        cx = float(rng.uniform(margin, size - margin))
        masks.append((start, start + length, COLOURS[c], _shape_mask(sh, size, cy, cx, radius)))
        events.append({"colour": c, "shape": sh, "start": start, "end": start + length, "target": e == target})
    head = {"question": question, "options": [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)],
            "answer": LETTERS[choices.index(answer_value)], "question_type": qtype, "needle_colour": colour, "needle_shape": shape}
    return _event_plan(head, rng, vseed, num_frames, starts[target], starts[target] + lengths[target], size, fps, distractors,
                       events, masks)


def _event_plan(head: dict, rng, vseed: int, num_frames: int, start: int, end: int, size: int, fps: float, distractors: int,
                events: list[dict], masks: list) -> dict:
    """The plan of a video with events: its questions.json record (``head``'s fields, then the needle's frame range and
    the video's facts, in this order) and its render parameters."""
    record = {"id": None, "video": None, **head, "needle_start": start, "needle_end": end, "num_frames": num_frames,
              "fps": float(fps), "width": size, "height": size, "seed": vseed, "distractors": distractors, "events": events}
    return {"record": record, "render": {"rng": rng, "events": masks}}


def _mark_plan(rng: np.random.Generator, vseed: int, num_frames: int, starts: list[int], lengths: list[int], target: int,
               size: int, fps: float, distractors: int) -> dict:
    """Mark questions: every event is a shape with a square mark (side r, clipped to the shape) at its centre; distractors never
    have the needle's colour, their marks are drawn freely (they may share the needle's); the options are the four
    mark colours in :data:`MARKS` order."""
    colour = str(rng.choice(list(COLOURS)))
    events, masks = [], []
    for e, (start, length) in enumerate(zip(starts, lengths)):
        c = colour if e == target else str(rng.choice([x for x in COLOURS if x != colour]))
        shape = str(rng.choice(SHAPES))
        mark = str(rng.choice(list(MARKS)))
        radius = size * rng.uniform(0.25, 0.32)
        margin = radius + 1.0
        cy = float(rng.uniform(margin, size - margin))
        cx = float(rng.uniform(margin, size - margin))
        body = _shape_mask(shape, size, cy, cx, radius)
        dot = _shape_mask("square", size, cy, cx, 0.5 * radius / 0.85) & body  # side r, clipped to the shape
        masks.append((start, start + length, COLOURS[c], body & ~dot))
        masks.append((start, start + length, MARKS[mark], dot))
        events.append({"colour": c, "shape": shape, "mark": mark, "start": start, "end": start + length, "target": e == target})
    needle = events[target]
    head = {"question": MARK_QUESTION.format(colour=colour), "options": [f"{LETTERS[i]}. {m}" for i, m in enumerate(MARKS)],
            "answer": LETTERS[list(MARKS).index(needle["mark"])], "question_type": "mark_of_colour", "needle_colour": colour,
            "needle_shape": needle["shape"], "needle_mark": needle["mark"]}
    return _event_plan(head, rng, vseed, num_frames, starts[target], starts[target] + lengths[target], size, fps, distractors,
                       events, masks)


def _frames(record: dict, render: dict, indices=None):
    """Yield the video's RGB uint8 frames one at a time; only those at ``indices`` (ascending source frame numbers,
    repeats allowed) when given — the same pixels as the full video's frames there."""
    rng: np.random.Generator = render["rng"]
    size, n = record["width"], record["num_frames"]
    base = rng.uniform(85.0, 165.0)
    lum = _smooth_periodic(rng, size, int(rng.integers(3, 7)), 1)
    tint = _smooth_periodic(rng, size, int(rng.integers(2, 5)), 3)
    tint -= tint.mean(axis=2, keepdims=True)  # chroma only: channels stay within ~±14 of each other
    speed = rng.uniform(0.3, 1.5)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    vy, vx = speed * np.sin(angle), speed * np.cos(angle)
    wave_angle = rng.uniform(0.0, 2.0 * np.pi)
    wave_freq = rng.uniform(0.5, 2.0) * 2.0 * np.pi / size
    wave_speed = rng.uniform(0.05, 0.2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    phase0 = (x * np.cos(wave_angle) + y * np.sin(wave_angle)) * wave_freq
    events = [(start, end, np.array(colour, dtype=np.uint8), mask) for start, end, colour, mask in render["events"]]
    for t in (range(n) if indices is None else indices):
        dy, dx = int(round(vy * t)) % size, int(round(vx * t)) % size
        img = base + 45.0 * np.roll(lum, (dy, dx), axis=(0, 1)) + 14.0 * np.roll(tint, (-dy, dx), axis=(0, 1))
        img += (18.0 * np.sin(phase0 + wave_speed * t))[..., None]
        frame = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        for start, end, colour, mask in events:
            if start <= t < end:
                frame[mask] = colour
        yield frame


def write_mp4(path: Path, frames, width: int, height: int, fps: float, options: dict | None = None, threads: int = 1) -> Path:
    """Encode ``frames`` (uint8 RGB ``(height, width, 3)`` arrays, an iterable) as an H.264 mp4 (yuv420p) at ``fps``,
    through a ``.part`` file of this process renamed into place (an interrupted write leaves no video; processes writing
    the same video at once never share one). ``options``: libx264's
    (default: this module's deterministic settings); ``threads``: the encoder's (0: every core)."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    container = av.open(str(tmp), mode="w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=rate, options=dict(_X264_OPTIONS if options is None else options))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = threads
        for t, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = t
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    container.close()
    os.replace(tmp, path)
    return path


def write_haystack(path: str | os.PathLike, num_frames: int, size: int = 64, fps: float = 1.0, seed: int = 0) -> Path:
    """A needle-free video (``cos niah``'s default haystack): the drifting textured background of the needle videos,
    no shape ever on it, ``num_frames`` frames of ``size`` x ``size`` at ``fps``. Deterministic like the needle videos.
    """
    num_frames = _check_int("num_frames", num_frames, 1, 1_000_000)
    size = _check_int("size", size, 16, 1024)
    if size % 2:
        raise ConfigError(f"size must be even (yuv420p), got {size}")
    rng = np.random.default_rng(_video_seed(_check_int("seed", seed, 0, 2**63 - 1), 0))
    record = {"width": size, "num_frames": num_frames}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(Path(path), _frames(record, {"rng": rng, "events": []}), size, size, fps)


def needle_image(index: int, seed: int = 0, size: int = 64, split: str | None = "test", question: str = "mark") -> tuple[np.ndarray, dict]:
    """One needle as a still image and its question: needle video ``index``'s frame at the needle's first frame (a
    saturated shape on the textured background; ``question="mark"``: with a small coloured mark inside, which the
    question asks for) and that video's record (``question``, ``options``, ``answer``). No distractors."""
    if question not in QUESTION_KINDS:
        raise ConfigError(f"question must be one of {', '.join(QUESTION_KINDS)}, got {question!r}")
    plan = _plan_video(_check_int("index", index, 0, 10**9), _check_int("seed", seed, 0, 2**63 - 1), min_frames=8, max_frames=8,
                       size=size, fps=8.0, split=split, question=question)  # only the needle's frame is drawn
    record = plan["record"]
    frame = next(_frames(record, plan["render"], indices=[record["needle_start"]]))
    return frame, record


def make_needle_videos(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    min_frames: int = 64,
    max_frames: int = 256,
    size: int = 64,
    fps: float = 8.0,
    progress: bool = True,
    distractors: int = 0,
    split: str | None = None,
    question: str = "attribute",
) -> Path:
    """Write ``n`` needle videos to ``out_dir/videos/`` and their questions to ``out_dir/questions.json``.

    Returns the path of questions.json. Video paths in the JSON are relative to its folder. Records
    are in id order (``needle_000``, ...); besides the documented fields each carries
    ``question_type`` ("colour"/"shape"; with distractors "shape_of_colour"/"colour_of_shape"), ``needle_colour``
    and ``needle_shape``, and with distractors ``distractors`` and ``events``. ``distractors=0`` and ``split=None``
    give exactly the files of earlier versions.
    """
    n = _check_int("n", n, 1, 100_000)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    min_frames = _check_int("min_frames", min_frames, 8, 100_000)
    max_frames = _check_int("max_frames", max_frames, 8, 100_000)
    if min_frames > max_frames:
        raise ConfigError(f"min_frames ({min_frames}) must not exceed max_frames ({max_frames})")
    size = _check_int("size", size, 16, 1024)
    if size % 2:
        raise ConfigError(f"size must be even (yuv420p), got {size}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 1.0 <= float(fps) <= 120.0:
        raise ConfigError(f"fps must be a number in [1, 120], got {fps!r}")
    rate = Fraction(float(fps)).limit_denominator(1001)
    distractors = _check_int("distractors", distractors, 0, MAX_DISTRACTORS)
    if distractors and max_frames < 2 * (distractors + 1):
        raise ConfigError(f"max_frames ({max_frames}) must be at least {2 * (distractors + 1)} for {distractors} distractors "
                          "(every event needs frames of its own)")
    if question not in QUESTION_KINDS:
        raise ConfigError(f"question must be one of {', '.join(QUESTION_KINDS)}, got {question!r}")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)} (or None), got {split!r}")

    out = Path(out_dir)
    try:
        (out / "videos").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {str(out)!r}: {err}") from err
    width = max(3, len(str(n - 1)))
    records = []
    from tqdm import tqdm

    for index in tqdm(range(n), desc="needle videos", unit="video", disable=not progress):
        plan = _plan_video(index, seed, min_frames, max_frames, size, float(rate), distractors, split, question)
        record = plan["record"]
        record["id"] = f"needle_{index:0{width}d}"
        record["video"] = f"videos/{record['id']}.mp4"
        write_mp4(out / record["video"], _frames(record, plan["render"]), size, size, float(rate))
        records.append(record)

    records.sort(key=lambda r: r["id"])
    json_path = out / "questions.json"
    tmp = json_path.with_name(json_path.name + ".part")
    tmp.write_bytes((json.dumps(records, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    os.replace(tmp, json_path)
    return json_path


def _run(args: argparse.Namespace) -> int:
    json_path = make_needle_videos(
        args.out, args.n, seed=args.seed, min_frames=args.min_frames, max_frames=args.max_frames,
        size=args.size, fps=args.fps, distractors=args.distractors, split=args.split,
        question=args.question,
    )
    print(f"wrote {args.n} needle video(s) to {json_path.parent / 'videos'}")
    print(f"questions: {json_path}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "make-needle-videos",
        help="write synthetic needle-in-a-haystack mp4 videos and questions.json",
        description="Write deterministic needle-in-a-haystack H.264 videos to OUT/videos/ and their questions to OUT/questions.json.",
        allow_abbrev=False,
    )
    p.add_argument("out", metavar="OUT", help="output folder (gets videos/ and questions.json)")
    p.add_argument("--n", type=int, required=True, metavar="N", help="number of videos")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--min-frames", type=int, default=64, metavar="A", help="fewest frames per video (default 64)")
    p.add_argument("--max-frames", type=int, default=256, metavar="B", help="most frames per video (default 256)")
    p.add_argument("--size", type=int, default=64, metavar="PX", help="frame width = height, even (default 64)")
    p.add_argument("--fps", type=float, default=8.0, metavar="F", help="frame rate (default 8)")
    p.add_argument("--distractors", type=int, default=0, metavar="D",
                   help=f"other brief shape events besides the needle (0-{MAX_DISTRACTORS}); the question then names the needle "
                        "by colour or shape and asks for the other attribute (default 0: the plain needle task)")
    p.add_argument("--question", choices=QUESTION_KINDS, default="attribute",
                   help="attribute: ask for the needle's colour or shape (options shuffled); mark: every shape carries a "
                        "small coloured mark, the needle is named by its colour and its mark's colour is asked for "
                        "(options: the four mark colours in a fixed order)")
    p.add_argument("--split", choices=SPLITS, default=None, help="draw from this split's own seed stream (default: the original one)")
    p.set_defaults(func=_run)
    return p
