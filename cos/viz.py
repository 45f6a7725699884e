"""``cos show``: one picture of what CoS did to one sample (the "shot strip").

The strip is a PNG. Its header names the method, α, the scorer, how many frames were marked relevant,
the question and the answer (a baseline trace whose frames a selector chose is titled "baseline (frames
chosen by …)"). When the trace has a ``selector`` record, a **selector panel** follows the header (full
strip width, ``SELECTOR_H`` pixels):

* a caption line: the selector, its scoring model, how many of how many candidates it chose at which
  candidate rate, the rule's parameters (and Q-Frame's resolution groups), whether the scores came from
  the cache, the selector's seconds and the query; below it, in red, why the backend's own sampling rule
  was used instead (``fallback``: the X row then shows the uniform frames) or the rule's ``note``;
* the candidates' scores over the candidate positions (time left → right, position ``p`` of ``m`` in the
  slot ``[p·w/m, (p+1)·w/m)`` of the plot width ``w``), min–max scaled (the extremes are printed on the
  left), as thin bars where a slot is at least 3 px wide, else as a curve; "not scored" when ``scores``
  is None. With a ground-truth span (``truth``) the slots of the candidates inside it are shaded blue;
* under the plot, an orange tick (1–3 px wide) centred on each candidate the selector chose (``selected``).

Below it, the sampled frames in order, wrapped ``per_row`` to a block; each block has three rows:

* **X** — the sampled frames. Border green: relevant (binary code 1); red: irrelevant (0); grey: the
  frame belongs to no scored shot (a leftover). Under each frame a bar shows the score of its shot
  (the number is printed on the bar) and a tag gives ``#i`` (sampled-frame index) and ``f…`` (source
  frame index in the video); with a ground-truth span (``--truth``, the report passes the needle) the
  tags of the frames inside it are blue.
* **Sp** — the positive video (Eq. 6): position ``i`` shows the sampled frame ``positive_map[i]``.
* **Sn** — the negative video (Eq. 7): the same with ``negative_map``; a black frame is drawn black with
  a red cross and the word "black".

In the Sp / Sn rows a tile whose frame was replaced has an orange tag ``←j`` (it shows sampled frame
``j``); a kept frame's tag says ``kept``. Borders there are coloured by the relevance of the frame shown.
A uniform (baseline) trace has no code: only the X row is drawn, without borders or bars.

Without frames (``cos show`` without ``--video``) each frame is a grey placeholder tile with its
indices, so the strip still shows the code, the scores and the maps.

The picture is drawn with Pillow using matplotlib's bundled DejaVu Sans font. Its pixel size depends
only on the number of frames, whether the trace has a code and a selector panel, ``thumb``, ``per_row``
and the frames' aspect ratio (:func:`strip_size`).
"""

from __future__ import annotations

import json
import math
import sys
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cos.errors import ConfigError, CosError
from cos.trace import CoSTrace
from cos.video import BACKENDS

__all__ = ["render_strip", "strip_size", "tile_height", "add_parser"]

# -- layout constants (pixels) ------------------------------------------------------------------
MARGIN = 8  #: outer margin on every side
LABEL_W = 36  #: left column with the row names (X / Sp / Sn)
GAP = 4  #: horizontal gap between tiles
BORDER = 3  #: relevance border, drawn over the edge of the tile
BAR_H = 12  #: shot-score bar under each X tile (only when the trace has a code)
TAG_H = 14  #: text line under each tile
ROW_GAP = 4  #: vertical gap between the X, Sp and Sn rows of a block
BLOCK_GAP = 10  #: vertical gap between blocks (a thin rule is drawn in it)
LINE_H = 16  #: header text line height
QUESTION_LINES = 4  #: the question is wrapped to at most this many lines (then "…")
HEADER_LINES = 4 + QUESTION_LINES  #: title, source, question lines, answer, note
HEADER_H = MARGIN + HEADER_LINES * LINE_H + 4
LEGEND_GAP = 6
LEGEND_H = 18
MIN_WIDTH = 640  #: so that the header stays readable for short traces
PER_ROW = 16  #: frames per block (row wrap)
SEL_CAPTION_LINES = 2  #: selector panel: the caption line and the fallback / note line
SEL_SCORE_H = 44  #: selector panel: height of the score plot
SEL_TICK_H = 12  #: selector panel: the row of ticks under the plot (one per chosen candidate)
SEL_GAP = 8  #: selector panel: gap below it
SELECTOR_H = SEL_CAPTION_LINES * LINE_H + SEL_SCORE_H + SEL_TICK_H + SEL_GAP  #: the whole panel (only with a selector)

# -- colours -------------------------------------------------------------------------------------
BG = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)
RELEVANT = (34, 150, 60)
IRRELEVANT = (205, 40, 40)
UNSCORED = (150, 150, 150)
PLACEHOLDER = (170, 170, 170)
REPLACED = (255, 200, 120)
TRUTH = (150, 200, 255)  #: tag background of X frames inside the ground-truth span (e.g. the needle)
BAR_BG = (228, 228, 228)
BAR_RELEVANT = (130, 205, 140)  #: score bar fill (light, so that the number on it stays readable)
BAR_IRRELEVANT = (240, 150, 150)
NOTE = (190, 0, 0)
SEL_SCORE = (120, 145, 190)  #: candidate scores (bars or curve) in the selector panel
SEL_TICK = (235, 120, 0)  #: ticks of the candidates the selector chose


@cache
def _font(size: int, bold: bool = False):
    try:
        from matplotlib import font_manager

        path = font_manager.findfont("DejaVu Sans:bold" if bold else "DejaVu Sans", fallback_to_default=True)
        return ImageFont.truetype(path, size)
    except Exception:  # no matplotlib (it is an optional extra) / no FreeType: Pillow's own font
        try:
            return ImageFont.load_default(size)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()


def tile_height(thumb: int, frame_shape: tuple[int, ...] | None) -> int:
    """Tile height for frames of ``frame_shape`` (H, W, ...) at width ``thumb``: the frames' aspect
    ratio, clamped to [thumb/2, 2·thumb]; square for placeholders (``frame_shape`` None)."""
    if frame_shape is None:
        return thumb
    h, w = int(frame_shape[0]), int(frame_shape[1])
    return int(min(2 * thumb, max(thumb // 2, round(thumb * h / max(w, 1)))))


def strip_size(n: int, *, has_code: bool, thumb: int = 96, tile_h: int | None = None, per_row: int = PER_ROW,
               has_selector: bool = False) -> tuple[int, int]:
    """(width, height) in pixels of the strip of ``n`` frames (``has_selector``: with the selector panel, ``SELECTOR_H`` taller).

    >>> strip_size(8, has_code=True)
    (848, 522)
    >>> strip_size(8, has_code=True, has_selector=True)[1] - 522 == SELECTOR_H
    True
    """
    tile_h = thumb if tile_h is None else tile_h
    cols = min(n, per_row)
    blocks = math.ceil(n / per_row)
    width = max(MIN_WIDTH, 2 * MARGIN + LABEL_W + cols * thumb + (cols - 1) * GAP)
    x_row = tile_h + (BAR_H if has_code else 0) + TAG_H
    block = x_row + (2 * (ROW_GAP + tile_h + TAG_H) if has_code else 0)
    height = HEADER_H + (SELECTOR_H if has_selector else 0) + blocks * block + (blocks - 1) * BLOCK_GAP + LEGEND_GAP + LEGEND_H + MARGIN
    return width, height


# -- helpers -------------------------------------------------------------------------------------
def _as_trace(trace: CoSTrace | dict) -> CoSTrace:
    if isinstance(trace, CoSTrace):
        return trace
    if not isinstance(trace, dict):
        raise ConfigError(f"not a trace: {type(trace).__name__}")
    try:
        return CoSTrace.from_json(trace)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"not a trace: {err}") from None


def _check_trace(trace: CoSTrace) -> tuple[int, bool]:
    idx = trace.frame_indices
    if not isinstance(idx, list) or not idx:
        raise ConfigError("the trace has no frame_indices (a failed sample, or not a CoS trace?)")
    n = len(idx)
    has_code = trace.binary_code is not None
    if has_code:
        for key in ("binary_code", "positive_map", "negative_map"):
            value = getattr(trace, key)
            if not isinstance(value, list) or len(value) != n:
                raise ConfigError(f"trace {key} must be a list of {n} entries (one per sampled frame), got {value!r:.80}")
        for key in ("positive_map", "negative_map"):
            bad = [v for v in getattr(trace, key) if not isinstance(v, int) or not -1 <= v < n]
            if bad:
                raise ConfigError(f"trace {key} has entries outside [-1, {n}): {bad[:5]}")
    return n, has_code


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_selector(selector) -> dict | None:
    """The trace's ``selector`` with its lists checked (None when there is none): ``candidates`` a list of ints,
    ``scores`` None or one number per candidate, ``selected`` None or candidate positions in ``[0, len(candidates))``."""
    if not isinstance(selector, dict):
        return None
    candidates = selector.get("candidates") or []
    if not isinstance(candidates, list) or not all(_is_int(c) for c in candidates):
        raise ConfigError(f"trace selector candidates must be a list of source frame indices, got {candidates!r:.80}")
    m = len(candidates)
    scores = selector.get("scores")
    if scores is not None and (not isinstance(scores, list) or len(scores) != m
                               or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in scores)):
        raise ConfigError(f"trace selector scores must be None or {m} numbers (one per candidate), got {scores!r:.80}")
    selected = selector.get("selected")
    if selected is not None and (not isinstance(selected, list) or not all(_is_int(p) and 0 <= p < m for p in selected)):
        raise ConfigError(f"trace selector selected must be None or candidate positions in [0, {m}), got {selected!r:.80}")
    return selector


def _num_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _selector_caption(sel: dict) -> str:
    """One line: ``selector: bolt · model clip-vit-large-patch14 · 128 of 3600 candidates at 1 fps · power 3 · …``."""
    m = len(sel.get("candidates") or [])
    selected = sel.get("selected")
    requested = sel.get("requested")
    parts = [f"selector: {sel.get('method') or '?'}"]
    model = sel.get("model")
    if model:
        parts.append(f"model {str(model).rstrip('/').rsplit('/', 1)[-1]}")
    fps = sel.get("candidate_fps")
    rate = f" at {_num_text(float(fps))} fps" if isinstance(fps, (int, float)) and not isinstance(fps, bool) else ""
    if selected is None:
        parts.append(f"{m} candidates{rate}" + (f" for {requested} frames" if requested is not None else "") + ", none chosen")
    else:
        short = f" ({requested} requested)" if _is_int(requested) and requested != len(selected) else ""
        parts.append(f"{len(selected)} of {m} candidates{rate}{short}")
    params = sel.get("params") or {}
    if isinstance(params, dict):
        parts += [f"{k} {_num_text(v)}" for k, v in params.items() if v is not None]
    groups = sel.get("groups")
    if isinstance(groups, dict) and groups:
        parts.append("groups " + " / ".join(f"{k} {len(v) if isinstance(v, list) else v}" for k, v in groups.items()))
    if sel.get("cache_hit"):
        parts.append("scores from the cache")
    seconds = [v for v in (sel.get("timings") or {}).values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if seconds:
        parts.append(f"{sum(seconds):.2f} s")
    query = " ".join(str(sel.get("query") or "").split())
    if query:
        parts.append(f'query "{query}"')
    return " · ".join(parts)


def _draw_selector(draw: ImageDraw.ImageDraw, sel: dict, top: int, width: int, truth: tuple[int, int] | None) -> None:
    """The selector panel (see the module docstring) from ``top`` down, ``SELECTOR_H`` high."""
    text_w = width - 2 * MARGIN
    draw.text((MARGIN, top), _fit(draw, _selector_caption(sel), _font(11, True), text_w), fill=TEXT, font=_font(11, True))
    why = f"fallback: {sel['fallback']}" if sel.get("fallback") else sel.get("note")
    if why:
        draw.text((MARGIN, top + LINE_H), _fit(draw, str(why), _font(11), text_w), fill=NOTE, font=_font(11))
    left, right = MARGIN + LABEL_W, width - MARGIN
    plot_w = right - left
    plot_top = top + SEL_CAPTION_LINES * LINE_H
    plot_bottom = plot_top + SEL_SCORE_H  # first pixel row of the tick row
    tick_bottom = plot_bottom + SEL_TICK_H
    candidates = sel.get("candidates") or []
    m = len(candidates)
    small = _font(9)
    draw.rectangle([left, plot_top, right - 1, tick_bottom - 1], outline=BAR_BG)
    draw.line([(left, plot_bottom), (right - 1, plot_bottom)], fill=BAR_BG)
    draw.text((MARGIN + LABEL_W / 2, plot_bottom + SEL_TICK_H / 2), "sel", fill=TEXT, font=_font(10, True), anchor="mm")
    if not m:
        draw.text(((left + right) / 2, (plot_top + plot_bottom) / 2), "no candidates", fill=MUTED, font=_font(11), anchor="mm")
        return

    def slot(p: int) -> tuple[int, int]:  # [x0, x1] of candidate p, at least one pixel
        x0 = left + math.floor(p * plot_w / m)
        return x0, max(x0, left + math.floor((p + 1) * plot_w / m) - 1)

    if truth is not None:
        for p, f in enumerate(candidates):
            if truth[0] <= f < truth[1]:
                x0, x1 = slot(p)
                draw.rectangle([x0, plot_top + 1, x1, tick_bottom - 2], fill=TRUTH)
    scores = sel.get("scores")
    finite = [(p, float(v)) for p, v in enumerate(scores or []) if math.isfinite(float(v))]
    if scores is None or not finite:
        draw.text(((left + right) / 2, (plot_top + plot_bottom) / 2), "not scored" if scores is None else "no finite score",
                  fill=MUTED, font=_font(11), anchor="mm")
    else:
        lo, hi = min(v for _, v in finite), max(v for _, v in finite)
        span = SEL_SCORE_H - 4

        def y_of(v: float) -> int:
            frac = (v - lo) / (hi - lo) if hi > lo else 0.5
            return plot_bottom - 2 - round(frac * span)

        if plot_w / m >= 3:
            for p, v in finite:
                x0, x1 = slot(p)
                draw.rectangle([x0 + 1, y_of(v), x1 - 1, plot_bottom - 1], fill=SEL_SCORE)
        else:
            points = [(left + math.floor((p + 0.5) * plot_w / m), y_of(v)) for p, v in finite]
            if len(points) == 1:
                draw.point(points, fill=SEL_SCORE)
            else:
                draw.line(points, fill=SEL_SCORE, width=1)
        draw.text((left - 3, plot_top + 1), f"{hi:.3g}", fill=MUTED, font=small, anchor="ra")
        draw.text((left - 3, plot_bottom - 1), f"{lo:.3g}", fill=MUTED, font=small, anchor="rd")
    tick_w = max(1, min(3, plot_w // m - 1))
    for p in sel.get("selected") or []:
        x = left + math.floor((p + 0.5) * plot_w / m) - (tick_w - 1) // 2
        draw.rectangle([x, plot_bottom + 2, x + tick_w - 1, tick_bottom - 2], fill=SEL_TICK)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """``text`` cut (with "…") to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap by pixel width; the original line breaks are kept; at most ``max_lines``."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        words = para.split()
        if not words:
            continue
        line = ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=font) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word if draw.textlength(word, font=font) <= width else _fit(draw, word, font, width)
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(draw, lines[-1] + " …", font, width)
        if not lines[-1].endswith("…"):
            lines[-1] += "…"
    return lines


def _fmt_score(value) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "n/a"


class _Tiles:
    """Thumbnails of the sampled frames (or placeholders), made once per index."""

    def __init__(self, frames: np.ndarray | None, frame_indices: list, thumb: int, tile_h: int):
        self.frames, self.src, self.size = frames, frame_indices, (thumb, tile_h)
        self._cache: dict[int, Image.Image] = {}

    def get(self, i: int) -> Image.Image:
        if i not in self._cache:
            if i < 0:
                self._cache[i] = self._black()
            elif self.frames is None:
                self._cache[i] = self._placeholder(i)
            else:
                self._cache[i] = Image.fromarray(np.ascontiguousarray(self.frames[i])).convert("RGB").resize(self.size, Image.BILINEAR)
        return self._cache[i]

    def _placeholder(self, i: int) -> Image.Image:
        w, h = self.size
        tile = Image.new("RGB", self.size, PLACEHOLDER)
        d = ImageDraw.Draw(tile)
        font = _font(max(9, min(14, w // 6)), bold=True)
        d.text((w / 2, h / 2 - 8), f"#{i}", fill=TEXT, font=font, anchor="mm")
        d.text((w / 2, h / 2 + 8), _fit(d, f"f{self.src[i]}", _font(10), w - 4), fill=TEXT, font=_font(10), anchor="mm")
        return tile

    def _black(self) -> Image.Image:
        w, h = self.size
        tile = Image.new("RGB", self.size, (0, 0, 0))
        d = ImageDraw.Draw(tile)
        d.line([(6, 6), (w - 7, h - 7)], fill=IRRELEVANT, width=2)
        d.line([(6, h - 7), (w - 7, 6)], fill=IRRELEVANT, width=2)
        d.text((w / 2, h / 2), "black", fill=(255, 255, 255), font=_font(11, bold=True), anchor="mm", stroke_width=2, stroke_fill=(0, 0, 0))
        return tile


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, has_code: bool, truth: bool, has_selector: bool = False) -> None:
    font = _font(11)
    items = [(SEL_TICK, "chosen by the selector")] if has_selector else []
    items += [(RELEVANT, "relevant"), (IRRELEVANT, "irrelevant"), (UNSCORED, "in no shot"),
              (REPLACED, "replaced by #j (←j)"), ((0, 0, 0), "black frame")] if has_code else []
    if truth:
        items.append((TRUTH, "in the answer span"))
    items.append((PLACEHOLDER, "#i sampled frame · fN source frame"))
    right = draw.im.size[0] - MARGIN
    for colour, label in items:
        if x + 15 + draw.textlength(label, font=font) > right:
            break
        draw.rectangle([x, y + 3, x + 11, y + 14], fill=colour, outline=MUTED)
        draw.text((x + 15, y + 9), label, fill=TEXT, font=font, anchor="lm")
        x += 15 + int(draw.textlength(label, font=font)) + 14


def render_strip(trace: CoSTrace | dict, frames: np.ndarray | None, out_path, thumb: int = 96, *, per_row: int = PER_ROW,
                 note: str | None = None, truth: tuple[int, int] | None = None) -> Path:
    """Draw the strip of ``trace`` into the PNG ``out_path`` and return its path.

    ``frames``: uint8 ``(n, H, W, 3)``, the sampled frames in trace order (``len(frame_indices)`` of
    them), or None for placeholder tiles. ``note``: an extra (red) header line, e.g. a warning.
    ``truth``: source-frame span ``[start, end)`` where the answer is (the needle); the X tags of the
    sampled frames inside it are drawn blue, and so are the candidates inside it in the selector panel.
    The selector panel is drawn when ``trace.selector`` is a dict (its lists are checked: ConfigError).
    """
    trace = _as_trace(trace)
    n, has_code = _check_trace(trace)
    sel = _check_selector(trace.selector)
    if thumb < 16 or per_row < 1:
        raise ConfigError(f"thumb must be >= 16 and per_row >= 1, got thumb={thumb}, per_row={per_row}")
    if frames is not None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[0] != n or frames.shape[-1] != 3:
            raise ConfigError(f"frames must be (n={n}, H, W, 3) — one per sampled frame of the trace — got shape {frames.shape}")
    tile_h = tile_height(thumb, None if frames is None else frames.shape[1:])
    width, height = strip_size(n, has_code=has_code, thumb=thumb, tile_h=tile_h, per_row=per_row, has_selector=sel is not None)
    img = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(img)
    tiles = _Tiles(frames, trace.frame_indices, thumb, tile_h)
    text_w = width - 2 * MARGIN

    # -- header ------------------------------------------------------------------------------
    code = trace.binary_code or []
    method = str(trace.method or ("cos" if has_code else "uniform"))
    title = ["CoS" if method == "cos" else f"{method} (baseline)" if method == "uniform" else method]
    if method == "uniform" and sel is not None and not sel.get("fallback"):
        title = [f"baseline (frames chosen by {sel.get('method') or 'a selector'})"]
    if has_code:
        relevant = sum(1 for c in code if c)
        alpha = trace.alpha
        title += [f"α = {alpha:.3f}" if isinstance(alpha, (int, float)) else "α = n/a",
                  f"relevant {relevant}/{n} ({100 * relevant / n:.1f}%)", f"scorer: {trace.scorer}"]
    title.append(f"{n} frames")
    total = (trace.timings or {}).get("total")
    if isinstance(total, (int, float)):
        title.append(f"{total:.2f} s")
    source = []
    if trace.task is not None:
        source.append(f"task {trace.task}" + (f"/{trace.split}" if trace.split else "") + f" · doc {trace.doc_id}")
    source.append(f"video: {trace.video or '(images)'}")
    if trace.total_frames:
        source.append(f"{trace.total_frames} source frames")
    if frames is None:
        source.append("no video given: placeholder tiles")
    y = MARGIN
    draw.text((MARGIN, y), _fit(draw, "   ".join(title), _font(13, True), text_w), fill=TEXT, font=_font(13, True))
    y += LINE_H
    draw.text((MARGIN, y), _fit(draw, " · ".join(source), _font(11), text_w), fill=MUTED, font=_font(11))
    y += LINE_H
    qfont = _font(12)
    # the prompt's own line breaks become " ⏎ " so that its options fit into the few header lines
    question = " ⏎ ".join(part.strip() for part in str(trace.question or "").splitlines() if part.strip())
    qlines = _wrap(draw, "Q: " + question, qfont, text_w, QUESTION_LINES)
    for line in qlines:
        draw.text((MARGIN, y), line, fill=TEXT, font=qfont)
        y += LINE_H
    y += (QUESTION_LINES - len(qlines)) * LINE_H
    answer = str(trace.answer if trace.answer is not None else "")
    draw.text((MARGIN, y), _fit(draw, "A: " + " ".join(answer.split()), _font(12, True), text_w), fill=TEXT, font=_font(12, True))
    y += LINE_H
    if note:
        draw.text((MARGIN, y), _fit(draw, note, _font(11, True), text_w), fill=NOTE, font=_font(11, True))
    y = HEADER_H
    if sel is not None:
        _draw_selector(draw, sel, y, width, truth)
        y += SELECTOR_H

    # -- per-frame facts -----------------------------------------------------------------------
    shot_of: dict[int, int] = {}
    for s, group in enumerate(trace.shot_groups or []):
        for i in group:
            shot_of[int(i)] = s
    scores = trace.shot_scores or []

    def border_colour(i: int):
        if not has_code or i < 0:
            return None
        if i not in shot_of and trace.shot_groups is not None:
            return UNSCORED
        return RELEVANT if code[i] else IRRELEVANT

    def put_tile(i_shown: int, x: int, top: int):
        img.paste(tiles.get(i_shown), (x, top))
        colour = border_colour(i_shown)
        if colour is not None:
            draw.rectangle([x, top, x + thumb - 1, top + tile_h - 1], outline=colour, width=BORDER)

    def put_tag(x: int, top: int, left: str, right: str, bg=None):
        if bg is not None:
            draw.rectangle([x, top + 1, x + thumb - 1, top + TAG_H - 2], fill=bg)
        font = _font(10)
        draw.text((x + 2, top + TAG_H / 2), left, fill=TEXT, font=font, anchor="lm")
        room = thumb - 6 - draw.textlength(left, font=font)
        if right and draw.textlength(right, font=font) <= room:
            draw.text((x + thumb - 2, top + TAG_H / 2), right, fill=MUTED, font=font, anchor="rm")

    label_font = _font(13, bold=True)
    x_row = tile_h + (BAR_H if has_code else 0) + TAG_H
    row_h = tile_h + TAG_H
    blocks = math.ceil(n / per_row)
    for b in range(blocks):
        if b:
            draw.line([(MARGIN, y - BLOCK_GAP // 2), (width - MARGIN, y - BLOCK_GAP // 2)], fill=BAR_BG, width=1)
        members = range(b * per_row, min(n, (b + 1) * per_row))
        rows = [("X", y)]
        if has_code:
            rows += [("Sp", y + x_row + ROW_GAP), ("Sn", y + x_row + ROW_GAP + row_h + ROW_GAP)]
        for name, top in rows:
            draw.text((MARGIN + LABEL_W / 2, top + tile_h / 2), name, fill=TEXT, font=label_font, anchor="mm")
        for col, i in enumerate(members):
            x = MARGIN + LABEL_W + col * (thumb + GAP)
            put_tile(i, x, y)
            tag_top = y + tile_h
            if has_code:
                bar_top = y + tile_h
                s = shot_of.get(i)
                score = scores[s] if s is not None and s < len(scores) else None
                draw.rectangle([x, bar_top + 1, x + thumb - 1, bar_top + BAR_H - 2], fill=BAR_BG)
                if score is not None:
                    frac = min(1.0, max(0.0, float(score)))
                    if frac > 0:
                        draw.rectangle([x, bar_top + 1, x + max(1, round(frac * thumb)) - 1, bar_top + BAR_H - 2],
                                       fill=BAR_RELEVANT if code[i] else BAR_IRRELEVANT)
                label = f"shot {s}: {_fmt_score(score)}" if s is not None else "no shot"
                label = label if draw.textlength(label, font=_font(9)) <= thumb - 4 else _fmt_score(score)
                draw.text((x + thumb / 2, bar_top + BAR_H / 2 - 1), label, fill=TEXT, font=_font(9), anchor="mm")
                tag_top = bar_top + BAR_H
            src = trace.frame_indices[i]
            put_tag(x, tag_top, f"#{i}", f"f{src}", bg=TRUTH if truth and truth[0] <= src < truth[1] else None)
            for (_name, top), mapping in zip(rows[1:], (trace.positive_map, trace.negative_map)):
                j = int(mapping[i])
                put_tile(j, x, top)
                if j == i:
                    put_tag(x, top + tile_h, f"#{i}", "kept")
                else:
                    put_tag(x, top + tile_h, f"#{i}", "←black" if j < 0 else f"←{j}", bg=REPLACED)
        y += (x_row + (2 * (ROW_GAP + row_h) if has_code else 0)) + BLOCK_GAP
    y = y - BLOCK_GAP + LEGEND_GAP
    _legend(draw, MARGIN, y, has_code, truth is not None, sel is not None)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG")
    return out


# -- command line --------------------------------------------------------------------------------
def load_trace(path) -> CoSTrace:
    path = Path(path)
    try:
        trace = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CosError(f"no trace file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CosError(f"cannot read trace {str(path)!r}: {err}") from None
    if not isinstance(trace, dict):
        raise CosError(f"{str(path)!r} is not a trace (expected a JSON object)")
    try:
        return _as_trace(trace)
    except ConfigError as err:
        raise CosError(f"{str(path)!r} is not a trace: {err}") from None


def frames_for_trace(trace: CoSTrace | dict, video, backend: str | None = None) -> tuple[np.ndarray, str | None]:
    """Re-sample the trace's frames from ``video``: (frames, None) when the source indices match the
    trace's ``frame_indices``, else (frames, a sentence saying where they differ).

    The frames are the uniform sample (:func:`cos.video.frame_indices`), except for a trace whose frames a
    selector chose (``selector`` without ``fallback``): those are decoded at the trace's own indices when
    the video has them (the check is then that the video has the trace's ``total_frames``)."""
    from cos.video import frame_indices, sample_frames

    trace = _as_trace(trace)
    wanted = [int(i) for i in trace.frame_indices]
    backend = backend or (trace.decoder if trace.decoder in BACKENDS else None) or "auto"  # "frames"/"images": not a decoder
    selected = isinstance(trace.selector, dict) and not trace.selector.get("fallback")

    def own(total: int, fps: float) -> np.ndarray:
        fits = wanted and wanted[-1] < total and wanted[0] >= 0 and all(a <= b for a, b in zip(wanted, wanted[1:]))
        return np.asarray(wanted, dtype=np.int64) if fits else frame_indices(total, len(wanted))

    rule = own if selected else None
    try:
        sampled = sample_frames(video, len(wanted), backend=backend, rule=rule)
    except CosError:
        if backend == "auto":
            raise
        sampled = sample_frames(video, len(wanted), backend="auto", rule=rule)  # the trace's decoder is not usable here
    got = [int(i) for i in np.asarray(sampled.indices).tolist()]
    if got == wanted:
        if selected and trace.total_frames and int(sampled.total_frames) != int(trace.total_frames):
            return sampled.frames, (f"frames may NOT match the trace: the video has {sampled.total_frames} frames, the trace says "
                                    f"{trace.total_frames} (the selector's frames were decoded at the trace's indices)")
        return sampled.frames, None
    diff = [k for k, (a, b) in enumerate(zip(wanted, got)) if a != b]
    first = diff[0] if diff else min(len(wanted), len(got))
    note = (f"frames do NOT match the trace: {len(diff)} of {len(wanted)} source indices differ (first at #{first}: trace "
            f"f{wanted[first] if first < len(wanted) else '-'}, video f{got[first] if first < len(got) else '-'}); the video has "
            f"{sampled.total_frames} frames" + (f", the trace says {trace.total_frames}" if trace.total_frames else ""))
    return sampled.frames, note


def show_command(args) -> int:
    trace = load_trace(args.trace)
    _check_trace(trace)
    frames, note = None, None
    video = args.video
    if video is None and trace.video and Path(trace.video).is_file():
        video = trace.video  # the trace names its video; use it when it is still there
    if video:
        frames, note = frames_for_trace(trace, video, args.backend)
        if note:
            print(f"cos show: warning: {note}", file=sys.stderr)
        else:
            print(f"frames re-sampled from {video} match the trace's {len(trace.frame_indices)} frame indices")
    out = args.out or Path(args.trace).with_suffix(".png")
    truth = None
    if args.truth:
        try:
            start, end = (int(v) for v in args.truth.split(":"))
        except ValueError:
            raise ConfigError(f"--truth must be START:END (source frame indices), got {args.truth!r}") from None
        truth = (start, end)
    path = render_strip(trace, frames, out, thumb=args.thumb, per_row=args.per_row, note=note, truth=truth)
    with Image.open(path) as im:
        print(f"wrote {path} ({im.width}x{im.height})")
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser(
        "show", allow_abbrev=False, help="draw one sample's shot strip (frames, code, scores, Sp, Sn) as a PNG",
        description="Draw the shot strip of one CoS trace: the sampled frames marked relevant/irrelevant, their shot "
                    "scores, and the positive and negative videos; when a frame selector chose the frames, a panel with its "
                    "candidates' scores and the ones it chose. Without --video the frames are grey placeholders.")
    p.add_argument("trace", help="trace JSON (trace_dir/<task>/<key>.json)")
    p.add_argument("--video", help="the video file (default: the trace's own video when it exists); frames are re-sampled at the trace's frame indices (checked)")
    p.add_argument("--out", help="output PNG (default: the trace path with .png)")
    p.add_argument("--thumb", type=int, default=96, help="thumbnail width in pixels (default 96)")
    p.add_argument("--per-row", type=int, default=PER_ROW, help=f"frames per row block (default {PER_ROW})")
    p.add_argument("--backend", choices=("decord", "pyav", "auto"), default=None,
                   help="video decoder (default: the one named in the trace, else auto)")
    p.add_argument("--truth", metavar="START:END", help="source-frame span where the answer is (e.g. the needle); "
                   "its sampled frames get blue tags")
    p.set_defaults(func=show_command)
    return p
