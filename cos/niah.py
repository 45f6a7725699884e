"""Needle in a video haystack (V-NIAH): the grid, the needle's insertion, the QA file, scoring and heatmaps.

The model-agnostic half of ``cos niah`` (the runner is :mod:`cos_runtime.niah`). The protocol is the one
LongVA's ``vision_niah`` and Video-XL's ``NIAH/`` share (their code, read for the facts):

* **Grid.** Context lengths (frames) ``np.round(np.linspace(min, max, num)).astype(int)`` and depths (percent)
  ``np.round(np.linspace(min, max, num)).astype(int)`` — Video-XL's ``run.py`` rule (its ``sigmoid`` depth spacing
  too). A value that rounding repeats is kept once.
* **Insertion.** The needle image is *inserted* as one extra frame, not swapped for a haystack frame: with ``L``
  haystack frames and depth ``d`` %, it goes before haystack frame ``int(L * (d * 0.01))`` (:func:`insert_point`,
  Video-XL's expression; LongVA's ``int(depth * L)`` with ``depth = d / 100``; 0 %: first, 100 %: after the last), so
  the model sees ``L + 1`` frames. Both originals insert; neither replaces a frame.
* **Frame size.** The needle is preprocessed by the model's own image processor at its own size, like every
  haystack frame (the originals run the processor on each image); nothing is resized to the video's size first.
* **QA file.** Video-XL's ``datas/qa/qa.json`` layout: one object of three parallel lists, ``retrieval_question``,
  ``answer`` and ``needle`` (image file names in ``--needle_dir``) — :func:`load_needle_qa`.
* **Score.** A cell's score is the mean over the needles of 1 (right) or 0. An option-letter answer is right when
  the option letter read from the response (:func:`option_letter`) is that letter; any other answer (LongVA's
  "Yellow", "200") when the response contains it as whole words, case and punctuation aside (:func:`is_correct`).
* **Heatmap.** Depth on the y axis, frames on the x axis, 0 → 1 from ``#F0496E`` through ``#EBB839`` to
  ``#0CD79F`` (the colours of Video-XL's ``vis.py`` and of LongVA's first V-NIAH plots), cells that could not
  run (out of memory, over the context budget) grey, as in Video-XL's published figure (:func:`plot_heatmap`).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cos.cache import atomic_write
from cos.errors import ConfigError

__all__ = ["CELL_STATUSES", "DIFF_COLOURS", "HEATMAP_COLOURS", "NeedleQA", "context_lengths", "depth_percents", "grid_table",
           "insert_point", "is_correct", "load_needle_qa", "option_letter", "plot_heatmap", "write_needle_qa"]

#: the score colour map's anchors, 0 → 0.5 → 1 (Video-XL ``NIAH/vis.py``; LongVA's ``vision_niah`` until June 2024)
HEATMAP_COLOURS = ("#F0496E", "#EBB839", "#0CD79F")
#: the difference map's anchors, -1 → 0 → +1 (CoS worse, equal, better)
DIFF_COLOURS = ("#F0496E", "#FFFFFF", "#0CD79F")
#: what a cell's run came to: answered, the model ran out of memory, the prompt exceeded the context budget
CELL_STATUSES = ("ok", "oom", "over_context")
#: the grey of a cell that could not run
MISSING_COLOUR = "#BDBDBD"
DEPTH_SPACINGS = ("linear", "sigmoid")


def _int(name: str, value, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
        raise ConfigError(f"{name} must be an integer >= {lowest}, got {value!r}")
    return int(value)


def context_lengths(lo: int, hi: int, num: int) -> list[int]:
    """Frame counts of the grid: ``np.round(np.linspace(lo, hi, num))`` as integers (Video-XL's rule), each once.

    >>> context_lengths(1, 2048, 12)
    [1, 187, 373, 559, 745, 931, 1118, 1304, 1490, 1676, 1862, 2048]
    """
    lo, hi, num = _int("context_lengths_min", lo, 1), _int("context_lengths_max", hi, 1), _int("context_lengths_num_intervals", num, 1)
    if hi < lo:
        raise ConfigError(f"context_lengths_max ({hi}) is below context_lengths_min ({lo})")
    values = np.round(np.linspace(lo, hi, num=num, endpoint=True)).astype(int).tolist()
    return list(dict.fromkeys(values))


def depth_percents(lo: float, hi: float, num: int, spacing: str = "linear") -> list[float]:
    """Needle depths in percent, ascending. ``linear``: ``np.round(np.linspace(lo, hi, num))`` (integers);
    ``sigmoid``: each of those points ``x`` but 0 and 100 mapped by Video-XL's logistic ``100 / (1 + e^(0.1 (x - 50)))``
    (3 decimals), which moves them towards both ends (and mirrors them; the list is sorted).

    >>> depth_percents(0, 100, 5), depth_percents(0, 100, 5, "sigmoid")
    ([0, 25, 50, 75, 100], [0.0, 7.586, 50.0, 92.414, 100.0])
    """
    num = _int("video_depth_percent_intervals", num, 1)
    for name, value in (("video_depth_percent_min", lo), ("video_depth_percent_max", hi)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value <= 100:
            raise ConfigError(f"{name} must be a number in [0, 100], got {value!r}")
    if hi < lo:
        raise ConfigError(f"video_depth_percent_max ({hi}) is below video_depth_percent_min ({lo})")
    if spacing not in DEPTH_SPACINGS:
        raise ConfigError(f"video_depth_percent_interval_type must be one of {list(DEPTH_SPACINGS)}, got {spacing!r}")
    points = np.round(np.linspace(lo, hi, num=num, endpoint=True)).astype(int).tolist()
    if spacing == "sigmoid":
        points = sorted(float(x) if x in (0, 100) else float(np.round(100.0 / (1.0 + math.exp(0.1 * (x - 50))), 3)) for x in points)
    return list(dict.fromkeys(points))


def insert_point(num_frames: int, depth_percent: float) -> int:
    """Where the needle goes among ``num_frames`` haystack frames: before frame ``int(num_frames * (depth * 0.01))``
    (Video-XL's expression, floating point included).

    >>> [insert_point(10, d) for d in (0, 25, 50, 100)]
    [0, 2, 5, 10]
    """
    return int(num_frames * (float(depth_percent) * 0.01))


# ------------------------------------------------------------------------------------------------ QA
@dataclass(frozen=True)
class NeedleQA:
    """One needle: its image file, the question asked about it (options included) and the expected answer."""

    question: str
    answer: str
    image: str  #: absolute path

    @property
    def name(self) -> str:
        return os.path.basename(self.image)


def _qa_error(path, what: str) -> ConfigError:
    return ConfigError(f"needle QA file {str(path)!r}: {what}; expected Video-XL's qa.json layout: "
                       '{"retrieval_question": [...], "answer": [...], "needle": ["image.png", ...]} (three lists of equal length)')


def load_needle_qa(qa_path: str | os.PathLike, needle_dir: str | os.PathLike) -> list[NeedleQA]:
    """The needles of a QA file in Video-XL's layout, each image resolved in ``needle_dir`` (it must exist)."""
    try:
        data = json.loads(Path(qa_path).read_text(encoding="utf-8"))
    except OSError as err:
        raise _qa_error(qa_path, f"cannot read it ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise _qa_error(qa_path, f"not valid JSON ({err})") from None
    keys = ("retrieval_question", "answer", "needle")
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in keys):
        raise _qa_error(qa_path, "it is not an object with the three lists")
    lengths = {k: len(data[k]) for k in keys}
    if len(set(lengths.values())) != 1 or not lengths["needle"]:
        raise _qa_error(qa_path, f"the lists are empty or of different lengths ({lengths})")
    out = []
    for i, (question, answer, image) in enumerate(zip(*(data[k] for k in keys))):
        if not all(isinstance(v, str) and v.strip() for v in (question, answer, image)):
            raise _qa_error(qa_path, f"entry {i} is not three non-empty strings")
        path = Path(needle_dir, image)
        if not path.is_file():
            raise ConfigError(f"needle image {image!r} (entry {i} of {str(qa_path)!r}) is not in --needle_dir {str(needle_dir)!r}")
        out.append(NeedleQA(question=question, answer=answer.strip(), image=str(path.resolve())))
    return out


def write_needle_qa(path: str | os.PathLike, needles: list[NeedleQA]) -> Path:
    """Write ``needles`` as a QA file in Video-XL's layout (image names relative to their folder), atomically."""
    data = {"retrieval_question": [n.question for n in needles], "answer": [n.answer for n in needles],
            "needle": [n.name for n in needles]}
    return atomic_write(path, json.dumps(data, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ scoring
_BARE = re.compile(r"^\(?([A-Z])\)?[.:)]*$")  # "D", "(D)", "D.", "D)"
_REPEATED = re.compile(r"^([A-Z])\1+[.:)]*$")  # "DDDD": a decoder that did not stop
_LEADING = re.compile(r"^\(?([A-D])(?:[.:)]|\s)")  # "(B) sleeping", "D) reading", "C. cat", "B sleeping"
_STATED = re.compile(r"(?i:answer|option)\W*(?:(?i:is)\W*)?\(?([A-D])(?![A-Za-z])")  # "Best option:(A)", "the answer is B"
_PARENTHESISED = re.compile(r"\(([A-D])\)")
_ALONE = re.compile(r"(?<![A-Za-z])([A-D])(?![A-Za-z])")


def option_letter(response: str) -> str | None:
    """The option letter a response gives, by the first rule that applies: the response is a letter (``"D"``,
    ``"(D)"``, ``"D."``); one letter repeated (``"DDDD"``: a decoder that did not stop; both originals count it —
    Video-XL's ``answer in response.split(')')[0]``, LongVA's teacher-forced first answer token); a leading A–D
    followed by punctuation or a space (``"(B) sleeping"``, ``"D) reading"``); a stated one (``"Best option:(A)"``,
    ``"the answer is C"``); the first ``(A)``–``(D)``; the first standalone A–D. None when there is none. A response
    that starts with the article "A" (``"A man is reading"``) reads as A.

    >>> [option_letter(r) for r in ("C", "(B) sleeping", "D) reading", "Best option:(A)", "DDDD.", "It is B.",
    ...                             "I think the answer is B", "A man reading (D)", "none")]
    ['C', 'B', 'D', 'A', 'D', 'B', 'B', 'A', None]
    """
    text = response.strip()
    for rule in (_BARE, _REPEATED, _LEADING):
        match = rule.match(text)
        if match:
            return match.group(1)
    for rule in (_STATED, _PARENTHESISED, _ALONE):
        match = rule.search(text)
        if match:
            return match.group(1)
    return None


def _normalise(text: str) -> str:
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def is_correct(response: str, answer: str) -> bool:
    """An option letter (``A``–``Z``) must be the letter :func:`option_letter` reads; a free-text answer must occur in
    the response (lower case, punctuation dropped).

    >>> is_correct("(C) fighting", "C"), is_correct("It is yellow.", "Yellow"), is_correct("2000 mg", "200"), is_correct("B", "A")
    (True, True, False, False)
    """
    answer = answer.strip()
    if len(answer) == 1 and answer.isalpha():
        return option_letter(response) == answer.upper()
    want = _normalise(answer)
    return bool(want) and re.search(rf"(?<!\w){re.escape(want)}(?!\w)", _normalise(response)) is not None


# ------------------------------------------------------------------------------------------------ tables and heatmaps
def grid_table(cells: list[dict], lengths: list[int], depths: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(len(depths), len(lengths))`` (NaN where no answered cell) and statuses (``""`` where no cell) of
    cell records (``context_length``, ``depth_percent``, ``status``, ``score``)."""
    scores = np.full((len(depths), len(lengths)), np.nan)
    status = np.full((len(depths), len(lengths)), "", dtype=object)
    col = {int(v): j for j, v in enumerate(lengths)}
    row = {float(v): i for i, v in enumerate(depths)}
    for cell in cells:
        i, j = row.get(float(cell["depth_percent"])), col.get(int(cell["context_length"]))
        if i is None or j is None:
            continue
        status[i, j] = cell["status"]
        if cell["status"] == "ok":
            scores[i, j] = float(cell["score"])
    return scores, status


def _frames_label(n: int) -> str:
    return f"{n / 1000:.1f}K" if n >= 1000 else str(n)


def _depth_label(d: float) -> str:
    return f"{d:g}"


def plot_heatmap(scores: np.ndarray, status: np.ndarray, lengths: list[int], depths: list[float], out_path, *, title: str = "",
                 difference: bool = False, annotate: bool | None = None) -> Path:
    """Draw a depth × frames heatmap (matplotlib, no pyplot state) and save it as a PNG.

    ``scores`` ``(len(depths), len(lengths))``: values in [0, 1] (``difference``: in [-1, 1], drawn on a
    red–white–green scale centred on 0); NaN cells are grey and say why (``status``: ``oom`` → "OOM",
    ``over_context`` → "ctx", empty → "—"). ``annotate`` prints each value in its cell (default: when the grid has
    at most 16 columns).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    scores = np.asarray(scores, dtype=float)
    rows, cols = scores.shape
    if (rows, cols) != (len(depths), len(lengths)):
        raise ValueError(f"scores {scores.shape} do not match {len(depths)} depths x {len(lengths)} lengths")
    annotate = cols <= 16 if annotate is None else annotate
    cmap = LinearSegmentedColormap.from_list("niah_diff" if difference else "niah",
                                             DIFF_COLOURS if difference else HEATMAP_COLOURS).with_extremes(bad=MISSING_COLOUR)
    width = min(17.5, max(5.5, 0.75 * cols + 3.0))
    height = min(8.0, max(3.2, 0.5 * rows + 1.8))
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lo, hi = (-1.0, 1.0) if difference else (0.0, 1.0)
    mesh = ax.pcolormesh(np.ma.masked_invalid(scores), cmap=cmap, vmin=lo, vmax=hi, linewidth=1.5,
                         edgecolors="#E0E0E0" if difference else "white")  # white cells (no difference) stay visible
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)  # the first depth (0 %: the needle first) at the top, as in the originals
    ax.set_xticks(np.arange(cols) + 0.5, [_frames_label(n) for n in lengths], rotation=45 if cols > 8 else 0)
    ax.set_yticks(np.arange(rows) + 0.5, [_depth_label(d) for d in depths])
    ax.set_xlabel("Num. Frame")
    ax.set_ylabel("Frame Depth")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label("CoS − baseline" if difference else "Score")
    why = {"oom": "OOM", "over_context": "ctx", "": "—"}
    for i in range(rows):
        for j in range(cols):
            value = scores[i, j]
            if np.isnan(value):
                ax.text(j + 0.5, i + 0.5, why.get(str(status[i, j]), "—"), ha="center", va="center", fontsize=8, color="#424242")
            elif annotate:
                ax.text(j + 0.5, i + 0.5, f"{value:+.2f}" if difference else f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="#212121")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return atomic_write(out_path, png.getvalue())  # several shards may draw the same map at once
