"""Shot strips (``cos show``) and the run report (``cos report``).

Strips: exact pixel size from the layout constants (8 and 128 frames, CoS and uniform traces, non-square
frames), real frames from a real encoded video land in the right tiles, and a trace whose indices do not
match the video is flagged. Selector panel: the strip is exactly the panel's height taller, the chosen
candidates' ticks lie at the x positions the layout gives them (and nowhere else), the candidates inside
the answer span are shaded and the best-scored bar is the tallest; a selector that scored nothing and fell
back is drawn with its fallback line; a malformed one is refused. Report: built from a well-formed lmms-eval
output folder written here (two runs, results / samples / traces / errors.jsonl), it lists every sample and
every failure, computes the grounding hit rate, links strips that exist, loads no external resource, and
Chromium (headless) logs no console message when it opens the page — with a negative control proving such a
message is caught; with selector traces, the run table and the ``--text`` table give the selector, its
fallbacks and medians, and the strips show the selector's frames with the panel.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cos import viz
from cos.errors import ConfigError
from cos.trace import trace_key, write_trace
from cos.video import frame_indices, sample_frames
from cos_runtime.report import build_report

CHROMIUM = Path("/usr/bin/chromium")
QUESTION = ("Select the best answer to the following multiple-choice question based on the video.\n"
            "What colour is the shape that briefly appears in the video?\nA. cyan\nB. green\nC. magenta\nD. blue\n"
            "Answer with the option's letter from the given choices directly.")


# -- constructed traces ---------------------------------------------------------------------------
def _maps(code):
    """Eq. 6 / 7 index maps (nearest after, else before; -1 = black) — written out here, independently."""
    n = len(code)
    rel = [i for i in range(n) if code[i]]
    irr = [i for i in range(n) if not code[i]]

    def nearest(targets, i):
        after = [t for t in targets if t > i]
        before = [t for t in targets if t < i]
        return after[0] if after else before[-1] if before else -1

    pos = [i if code[i] or not rel else nearest(rel, i) for i in range(n)]
    neg = [i if not code[i] else nearest(irr, i) for i in range(n)]
    return pos, neg


def make_trace(n: int, total_frames: int | None = None, relevant_shots=(1,), k: int = 4, method: str = "cos",
               video: str | None = "/nowhere/needle_000.mp4", **extra) -> dict:
    total_frames = total_frames or 10 * n
    groups = [list(range(s, s + k)) for s in range(0, n - n % k, k)]
    decisions = [int(j in relevant_shots) for j in range(len(groups))]
    code = [0] * n
    for g, d in zip(groups, decisions):
        for i in g:
            code[i] = d
    pos, neg = _maps(code)
    trace = {
        "frame_indices": frame_indices(total_frames, n).tolist(), "total_frames": total_frames,
        "shot_groups": groups, "shot_scores": [0.9 if d else 0.1 for d in decisions], "shot_decisions": decisions,
        "binary_code": code, "positive_map": pos, "negative_map": neg, "alpha": 1 - sum(code) / n,
        "scorer": "llava", "method": method, "question": QUESTION, "answer": "B", "video": video,
        "timings": {"decode_video": 0.1, "score": 0.2, "total": 0.5}, "task": "cos_needle", "split": "test",
        "doc_id": 0, "error": None,
    }
    if method == "uniform":
        trace.update(binary_code=None, positive_map=None, negative_map=None, shot_groups=None, shot_scores=None,
                     shot_decisions=None, alpha=0.0, scorer=None)
    trace.update(extra)
    return trace


def expected_size(n: int, has_code: bool, thumb: int, tile_h: int, per_row: int = 16, has_selector: bool = False) -> tuple[int, int]:
    cols, blocks = min(n, per_row), -(-n // per_row)
    width = max(viz.MIN_WIDTH, 2 * viz.MARGIN + viz.LABEL_W + cols * thumb + (cols - 1) * viz.GAP)
    x_row = tile_h + (viz.BAR_H if has_code else 0) + viz.TAG_H
    block = x_row + (2 * (viz.ROW_GAP + tile_h + viz.TAG_H) if has_code else 0)
    panel = viz.SEL_CAPTION_LINES * viz.LINE_H + viz.SEL_SCORE_H + viz.SEL_TICK_H + viz.SEL_GAP if has_selector else 0
    height = viz.HEADER_H + panel + blocks * block + (blocks - 1) * viz.BLOCK_GAP + viz.LEGEND_GAP + viz.LEGEND_H + viz.MARGIN
    return width, height


def make_selector(candidates: list[int], scores: list[float] | None, selected: list[int] | None, requested: int, **extra) -> dict:
    """A trace's ``selector`` record (as :class:`cos.selector.SelectedFrames` writes it)."""
    sel = {"method": "bolt", "model": "openai/clip-vit-large-patch14", "query": "What colour is the shape?", "candidate_fps": 1.0,
           "candidates": candidates, "scores": scores, "selected": selected, "requested": requested,
           "params": {"power": 3.0, "duplicates": "replace"}, "note": None, "groups": None, "fallback": None, "cache_hit": False,
           "timings": {"select_decode": 0.25, "select_score": 0.5, "select_rule": 0.125}}
    sel.update(extra)
    return sel


def panel_rows() -> tuple[int, int, int]:
    """(first row of the score plot, first row of the tick row, row after it) of the selector panel."""
    plot_top = viz.HEADER_H + viz.SEL_CAPTION_LINES * viz.LINE_H
    return plot_top, plot_top + viz.SEL_SCORE_H, plot_top + viz.SEL_SCORE_H + viz.SEL_TICK_H


def candidate_x(p: int, m: int, width: int) -> int:
    """Centre column of candidate position ``p`` of ``m`` in the panel: slots of equal width over the plot width."""
    left = viz.MARGIN + viz.LABEL_W
    return left + int((p + 0.5) * (width - viz.MARGIN - left) / m)


def tick_columns(strip: np.ndarray) -> set[int]:
    """Columns of the tick row that hold the tick colour."""
    _, tick_top, tick_end = panel_rows()
    return set(np.nonzero((strip[tick_top:tick_end] == np.array(viz.SEL_TICK)).all(axis=2).any(axis=0))[0].tolist())


def _show(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    viz.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["show", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def needle(tmp_path_factory):
    from cos.synthetic import make_needle_videos

    root = tmp_path_factory.mktemp("needle")
    qfile = make_needle_videos(root, 4, seed=3, min_frames=40, max_frames=64, size=64, progress=False)
    return qfile.parent, json.loads(qfile.read_text())


# -- strips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [8, 128])
def test_strip_pixel_size_from_layout(tmp_path, n):
    out = viz.render_strip(make_trace(n, relevant_shots=(0, 3, 7)), None, tmp_path / "s.png", thumb=96)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == expected_size(n, True, 96, 96)
    if n == 8:
        assert expected_size(8, True, 96, 96) == (848, 522)  # 2·8 + 36 + 8·96 + 7·4; header 140 + block 350 + legend 32
    else:
        assert expected_size(128, True, 96, 96) == (1648, 3042)  # 16 per row, 8 blocks of X / Sp / Sn

    uniform = viz.render_strip(make_trace(n, method="uniform"), None, tmp_path / "u.png", thumb=96)
    with Image.open(uniform) as im:
        assert im.size == expected_size(n, False, 96, 96)


def test_strip_non_square_frames_and_small_thumb(tmp_path):
    frames = np.zeros((8, 48, 64, 3), np.uint8)  # 4:3 -> tile height 3/4 of the width
    out = viz.render_strip(make_trace(8), frames, tmp_path / "s.png", thumb=40)
    with Image.open(out) as im:
        assert im.size == expected_size(8, True, 40, 30)
    assert viz.tile_height(40, (48, 64, 3)) == 30
    with pytest.raises(ConfigError, match="frames must be"):
        viz.render_strip(make_trace(8), frames[:5], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="frame_indices"):
        viz.render_strip({"binary_code": None}, None, tmp_path / "x.png")
    bad = make_trace(8)
    bad["negative_map"][0] = 8
    with pytest.raises(ConfigError, match="negative_map"):
        viz.render_strip(bad, None, tmp_path / "x.png")


def test_strip_from_real_video_puts_each_frame_in_its_tile(tmp_path, needle, capsys):
    root, docs = needle
    doc = docs[0]
    video = root / doc["video"]
    n = 24
    trace = make_trace(n, total_frames=doc["num_frames"], relevant_shots=(0, 2), video=str(video))
    tpath = write_trace(trace, tmp_path / "t.json")
    assert _show([str(tpath), "--video", str(video), "--out", str(tmp_path / "strip.png"), "--thumb", "48"]) == 0
    assert "match the trace" in capsys.readouterr().out
    sampled = sample_frames(video, n)
    assert sampled.indices.tolist() == trace["frame_indices"]
    with Image.open(tmp_path / "strip.png") as im:
        strip = np.asarray(im.convert("RGB")).astype(int)
    th = viz.tile_height(48, sampled.frames.shape[1:])
    assert strip.shape[:2] == expected_size(n, True, 48, th)[::-1]
    b = viz.BORDER
    block_h = th + viz.BAR_H + viz.TAG_H + 2 * (viz.ROW_GAP + th + viz.TAG_H) + viz.BLOCK_GAP
    for i in (0, 5, 17):  # X row: sampled frame i; rows wrap at 16
        block, col = divmod(i, 16)
        x = viz.MARGIN + viz.LABEL_W + col * (48 + viz.GAP)
        y = viz.HEADER_H + block * block_h
        want = np.asarray(Image.fromarray(sampled.frames[i]).resize((48, th), Image.BILINEAR)).astype(int)
        got = strip[y:y + th, x:x + 48]
        assert np.abs(got[b:-b, b:-b] - want[b:-b, b:-b]).max() == 0, f"tile {i} does not show sampled frame {i}"
        colour = viz.RELEVANT if trace["binary_code"][i] else viz.IRRELEVANT
        assert tuple(got[0, 24]) == colour  # relevance border

    # the answer span (needle) marks the X tags of exactly the frames inside it
    assert _show([str(tpath), "--video", str(video), "--out", str(tmp_path / "truth.png"), "--thumb", "48",
                  "--truth", f"{doc['needle_start']}:{doc['needle_end']}"]) == 0
    with Image.open(tmp_path / "truth.png") as im:
        marked = np.asarray(im.convert("RGB"))
    inside = [i for i, f in enumerate(trace["frame_indices"]) if doc["needle_start"] <= f < doc["needle_end"]]
    assert inside
    for i in range(n):
        block, col = divmod(i, 16)
        x = viz.MARGIN + viz.LABEL_W + col * (48 + viz.GAP)
        tag_top = viz.HEADER_H + block * block_h + th + viz.BAR_H
        tag = marked[tag_top + 1:tag_top + viz.TAG_H - 1, x:x + 48].reshape(-1, 3)
        blue = (tag == np.array(viz.TRUTH)).all(axis=1).mean()
        assert (blue > 0.3) == (i in inside), f"frame {i}: {blue:.2f} of its tag is the answer-span colour"

    # a trace whose indices do not match the video: still drawn, but said so (stderr and in the picture's header)
    trace["frame_indices"][3] += 1
    write_trace(trace, tpath)
    assert _show([str(tpath), "--video", str(video), "--out", str(tmp_path / "bad.png")]) == 0
    err = capsys.readouterr().err
    assert "do NOT match the trace" in err and "#3" in err
    # without --video: placeholder tiles
    assert _show([str(tpath), "--out", str(tmp_path / "ph.png")]) == 0
    with Image.open(tmp_path / "ph.png") as im:
        assert im.size == expected_size(n, True, 96, 96)


@pytest.mark.parametrize("m", [40, 2000])  # slots of ~20 px (bars) and under a pixel (a curve)
def test_strip_selector_panel_ticks_at_the_chosen_candidates(tmp_path, m):
    n, step = 8, 30
    candidates = [step * i for i in range(m)]
    rng = np.random.default_rng(m)
    scores = rng.normal(size=m).tolist()
    selected = sorted(rng.choice(m, n, replace=False).tolist())
    truth_pos = range(m // 4, m // 4 + max(2, m // 10))  # candidate positions inside the answer span
    truth = (candidates[truth_pos[0]], candidates[truth_pos[-1]] + 1)
    sel = make_selector(candidates, scores, selected, n)
    trace = make_trace(n, total_frames=step * m, frame_indices=[candidates[p] for p in selected], selector=sel)

    out = viz.render_strip(trace, None, tmp_path / "s.png", thumb=96, truth=truth)
    with Image.open(out) as im:
        strip = np.asarray(im.convert("RGB")).astype(int)
    size = viz.strip_size(n, has_code=True, thumb=96, has_selector=True)
    assert strip.shape[1::-1] == size == expected_size(n, True, 96, 96, has_selector=True)
    plain = viz.strip_size(n, has_code=True, thumb=96)
    assert plain == expected_size(n, True, 96, 96) and size[0] == plain[0] and size[1] > plain[1]
    assert viz.render_strip(make_trace(n), None, tmp_path / "p.png").exists()

    width = size[0]
    centres = [candidate_x(p, m, width) for p in selected]
    ticks = tick_columns(strip)
    assert all(x in ticks for x in centres), f"no tick at the chosen candidates' columns {[x for x in centres if x not in ticks]}"
    assert all(min(abs(c - x) for x in centres) <= 1 for c in ticks), "a tick where no chosen candidate is"
    # the answer span: the top row of the plot is shaded exactly over the candidates inside it (with slots under a
    # pixel, a column at the span's edge is shared by candidates inside and outside: those are not checked)
    plot_top, tick_top, _ = panel_rows()
    for p in range(0, m, max(1, m // 80)):
        if min(abs(p - truth_pos[0]), abs(p - truth_pos[-1])) <= 3 and m > width:
            continue
        shaded = tuple(strip[plot_top + 1, candidate_x(p, m, width)]) == viz.TRUTH
        assert shaded == (p in truth_pos), f"candidate {p}: shaded {shaded}"
    # min-max scaling: the best candidate reaches the top of the plot, the worst stays at the bottom
    best, worst = int(np.argmax(scores)), int(np.argmin(scores))
    near_top = strip[plot_top + 2:plot_top + 5]
    assert (near_top[:, candidate_x(best, m, width)] == np.array(viz.SEL_SCORE)).all(axis=1).any()
    assert not (near_top[:, candidate_x(worst, m, width)] == np.array(viz.SEL_SCORE)).all(axis=1).any()
    # the chosen candidates are tagged nowhere else in the panel's plot area with the tick colour
    assert not (strip[plot_top:tick_top] == np.array(viz.SEL_TICK)).all(axis=2).any()


def test_strip_selector_not_scored_with_fallback_and_malformed(tmp_path):
    n, m = 16, 10
    candidates = list(range(0, 300, 30))
    fell_back = make_selector(candidates, None, None, n, fallback="10 candidates at 1 per second for 16 frames: the backend's own rule")
    trace = make_trace(n, total_frames=300, method="uniform", selector=fell_back)  # frame_indices: the uniform ones
    out = viz.render_strip(trace, None, tmp_path / "f.png", thumb=48)
    with Image.open(out) as im:
        strip = np.asarray(im.convert("RGB")).astype(int)
    assert strip.shape[1::-1] == expected_size(n, False, 48, 48, has_selector=True)
    assert not tick_columns(strip)  # nothing was chosen
    note_line = strip[viz.HEADER_H + viz.LINE_H:viz.HEADER_H + 2 * viz.LINE_H]
    assert (note_line == np.array(viz.NOTE)).all(axis=2).sum() > 20, "the fallback line is not drawn in the note colour"
    plot_top, tick_top, _ = panel_rows()
    assert not (strip[plot_top + 1:tick_top - 1, viz.MARGIN + viz.LABEL_W + 1:-viz.MARGIN - 1] == np.array(viz.SEL_SCORE)).all(axis=2).any()
    # without a fallback or note, the second caption line stays empty
    quiet = make_trace(n, total_frames=300, method="uniform", selector=make_selector(candidates, [0.0] * m, list(range(m)), n))
    with Image.open(viz.render_strip(quiet, None, tmp_path / "q.png", thumb=48)) as im:
        blank = np.asarray(im.convert("RGB"))[viz.HEADER_H + viz.LINE_H:viz.HEADER_H + 2 * viz.LINE_H]
    assert (blank == np.array(viz.BG)).all()
    assert "not scored" not in viz._selector_caption(fell_back) and "none chosen" in viz._selector_caption(fell_back)
    assert viz._selector_caption(quiet["selector"]).startswith("selector: bolt · model clip-vit-large-patch14 · 10 of 10 candidates at 1 fps")

    for key, value, match in (("selected", [0, m], "selected"), ("scores", [1.0] * (m - 1), "scores"), ("candidates", "x", "candidates")):
        sel = make_selector(candidates, [0.0] * m, [0], n)
        sel[key] = value
        bad = make_trace(n, total_frames=300, method="uniform", selector=sel)
        with pytest.raises(ConfigError, match=f"selector {match}"):
            viz.render_strip(bad, None, tmp_path / "bad.png")


# -- report -----------------------------------------------------------------------------------------------
def write_log_folder(root: Path, data_dir: Path, docs: list[dict], n_frames: int = 16) -> dict:
    """A well-formed lmms-eval output folder: two runs (cos_longva, longva) on cos_needle, traces, errors."""
    failed_doc = 2
    expected = {"samples": [], "failures": [], "hits": {}}
    for model, method, sub in (("cos_longva", "cos", "cos_longva"), ("longva", "uniform", "longva")):
        trace_dir = root / "traces" / sub
        out = root / sub
        out.mkdir(parents=True)
        trace_dir.mkdir(parents=True)
        date = "20250101_120000" if method == "cos" else "20250101_130000"
        lines = []
        for doc_id, doc in enumerate(docs):
            video = str(data_dir / doc["video"])
            prompt = f"{QUESTION}\n(doc {doc_id})"
            pred = f"{'ABCD'[doc_id % 4]} [{model} doc {doc_id}]"
            if doc_id == failed_doc:
                pred = ""
                rec = {"task": "cos_needle", "split": "test", "doc_id": doc_id, "video": video, "error": "VideoDecodeError",
                       "cause": f"cannot decode video {video!r}: moov atom not found ({model})", "rank": 0}
                with open(trace_dir / "errors.jsonl", "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                expected["failures"].append(rec["cause"])
            else:
                # doc 0: the needle's frames are marked relevant (hit); doc 1 / 3: a shot far from the needle (miss)
                idx = frame_indices(doc["num_frames"], n_frames)
                needle_shots = {i // 4 for i, f in enumerate(idx) if doc["needle_start"] <= f < doc["needle_end"]}
                assert needle_shots, "the needle must fall on a sampled frame for this fixture"
                shots = needle_shots if doc_id == 0 else {min(set(range(n_frames // 4)) - needle_shots)}
                trace = make_trace(n_frames, total_frames=doc["num_frames"], relevant_shots=shots, method=method, video=video,
                                   question=prompt, answer=pred, doc_id=doc_id, decoder="pyav",
                                   timings={"decode_video": 0.1, "generate": 0.2 + doc_id, "total": 1.0 + doc_id + (method == "cos")})
                write_trace(trace, trace_dir / "cos_needle" / f"{trace_key(video, prompt)}.json")
                if method == "cos":
                    expected["hits"][doc_id] = doc_id == 0
            correct = float(pred[:1] == doc["answer"])
            lines.append({"doc_id": doc_id, "target": doc["answer"], "filtered_resps": pred, "input": prompt,
                          "needle_acc": {"id": doc["id"], "answer": doc["answer"], "pred": pred[:1] or None, "correct": correct},
                          "needle_grounding": {"id": doc["id"], "grounding": None}, "doc_hash": "x"})
            expected["samples"].append((model, doc_id, pred))
        # a stale trace (another prompt, same task and doc_id, e.g. an earlier run into this trace_dir) must be ignored
        stale = make_trace(n_frames, total_frames=docs[1]["num_frames"], relevant_shots=(), method=method,
                           video=str(data_dir / docs[1]["video"]), question="an older prompt", answer="STALE", doc_id=1)
        write_trace(stale, trace_dir / "cos_needle" / f"{trace_key(stale['video'], 'an older prompt')}.json")
        results = {
            "results": {"cos_needle": {"alias": "cos_needle", "needle_acc,none": 0.25, "needle_acc_stderr,none": "N/A",
                                       "needle_grounding,none": 0.5 if method == "cos" else float("nan")}},
            "n-samples": {"cos_needle": {"original": len(docs), "effective": len(docs)}},
            "config": {"model": model, "model_args": f"pretrained=/ckpt/tiny,max_frames_num={n_frames},trace_dir={trace_dir}"
                       + (",scorer=llava,alpha=dynamic" if method == "cos" else "")},
        }
        (out / f"{date}_results.json").write_text(json.dumps(results, indent=2))
        (out / f"{date}_samples_cos_needle.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return expected


class _Page(HTMLParser):
    """Tables (as rows of cell texts) under each h2 id, every href/src, and all text."""

    def __init__(self):
        super().__init__()
        self.section, self.tables, self.links, self.text = None, {}, [], []
        self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.section = a.get("id")
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        for key in ("href", "src"):
            if a.get(key):
                self.links.append((tag, a[key]))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables.setdefault(self.section, []).append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def test_report_lists_every_sample_and_failure(tmp_path, needle):
    data_dir, docs = needle
    expected = write_log_folder(tmp_path / "logs", data_dir, docs)
    out = build_report(tmp_path / "logs", tmp_path / "site" / "report.html", video_root=None)
    page = _Page()
    page.feed(out.read_text())
    text = " ".join(page.text)

    for model, doc_id, pred in expected["samples"]:
        if pred:
            assert pred in text, f"sample {model}/{doc_id} is missing"
    sample_rows = page.tables["samples"]
    assert len([r for r in sample_rows if r[0] != "doc_id"]) == len(expected["samples"])
    failures = page.tables["failures"][1:]
    assert sorted(r[6] for r in failures) == sorted(expected["failures"])
    assert all(r[5] == "VideoDecodeError" and r[3] == "2" for r in failures)

    # metrics side by side: one column per run, headed by what differs between them
    metrics = page.tables["metrics"]
    assert len(metrics[0]) == 2 + 2 and "cos_longva" in metrics[0][2] and "longva" in metrics[0][3]
    assert ["cos_needle", "n", "4", "4"] in metrics
    assert ["needle_grounding,none", "0.500", "n/a"] in metrics
    assert "STALE" not in text and "ignored" in text

    # grounding: doc 0 hits the needle, docs 1 and 3 do not -> hit rate 1/3; uniform run has no code
    hits = expected["hits"]
    cos_row = next(r for r in page.tables["cos"] if r[0].startswith("run 1") and r[1] == "cos_needle")
    header = page.tables["cos"][0]
    assert cos_row[header.index("hit rate")] == f"{sum(hits.values()) / len(hits):.3f}"
    assert cos_row[header.index("traces")] == "3"
    uni_row = next(r for r in page.tables["cos"] if r[0].startswith("run 2"))
    assert uni_row[header.index("hit rate")] == "n/a"

    # self-contained: only data URIs, in-page anchors and relative links to files that exist
    strips = [h for t, h in page.links if t == "a" and h.endswith(".png")]
    assert len(set(strips)) == 6  # 3 traced samples per run (also linked from "slowest")
    for tag, link in page.links:
        assert not re.match(r"^[a-z]+://", link), f"external resource {link}"
        if tag == "img":
            assert link.startswith("data:image/png;base64,")
        elif not link.startswith("#"):
            assert (out.parent / link).is_file(), f"dangling link {link}"
    with Image.open(out.parent / strips[0]) as im:
        assert im.width > 600


def _chromium_console(html_file: Path, tmp_path: Path) -> tuple[list[str], str]:
    """Console messages Chromium logs while loading ``html_file`` headless, and the DOM it ended with."""
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", html_file.resolve().as_uri()],
        capture_output=True, text=True, timeout=90)
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line], proc.stdout


# Skipped on a machine without Chromium, never in CI (.ci/run installs it; CI=true is set there).
@pytest.mark.skipif(not CHROMIUM.exists() and os.environ.get("CI") != "true",
                    reason="headless check needs Debian's chromium (/usr/bin/chromium): apt-get install -y chromium")
def test_report_opens_in_chromium_without_console_errors(tmp_path, needle):
    # negative control: a page with a script error must be caught by this method
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    messages, _ = _chromium_console(bad, tmp_path)
    assert any("undefinedFunction" in m for m in messages), "the console check cannot see a script error"

    data_dir, docs = needle
    write_log_folder(tmp_path / "logs", data_dir, docs)
    out = build_report(tmp_path / "logs", tmp_path / "report.html", strips=False)
    messages, dom = _chromium_console(out, tmp_path)
    assert "CoS run report" in dom, "chromium did not render the report"
    assert messages == []


def test_report_without_traces_or_results(tmp_path):
    from cos.errors import CosError

    with pytest.raises(CosError, match="no lmms-eval results"):
        build_report(tmp_path, tmp_path / "r.html")
    run = tmp_path / "logs" / "longva"
    run.mkdir(parents=True)
    (run / "d_results.json").write_text(json.dumps({"results": {"t": {"acc,none": 0.5}}, "config": {"model": "longva", "model_args": "trace_dir=/no/such"}}))
    (run / "d_samples_t.jsonl").write_text(json.dumps({"doc_id": 0, "target": "A", "filtered_resps": ["A"], "acc": 1.0}) + "\n")
    out = build_report(tmp_path / "logs", tmp_path / "r.html")
    text = out.read_text()
    assert "not found" in text and "/no/such" in text
    assert "✓" in text  # the sample is listed and its 0/1 metric read as correctness


# -- paired comparison (cos report --text) ------------------------------------------------------------------
def test_mcnemar_exact_on_hand_computed_cases():
    from cos_runtime.report import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == mcnemar_exact(0, 10) == 2 * 0.5**10
    assert mcnemar_exact(3, 5) == pytest.approx(2 * (1 + 8 + 28 + 56) / 256)  # 2 * P(X <= 3), X ~ Bin(8, 1/2)
    assert mcnemar_exact(4, 4) == 1.0  # capped


def test_paired_bootstrap_equals_a_naive_loop_and_constructed_extremes():
    from cos_runtime.report import paired_difference

    rng = np.random.default_rng(1)
    a = (rng.random(50) < 0.5).astype(int)
    b = (rng.random(50) < 0.7).astype(int)
    got = paired_difference(a, b, resamples=300, seed=7)
    naive_rng, means = np.random.default_rng(7), []
    for _ in range(300):  # the same resamples, one question at a time
        picks = naive_rng.integers(0, 50, 50)
        means.append(sum(b[i] - a[i] for i in picks) / 50)
    assert got["difference"] == pytest.approx(b.mean() - a.mean())
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert got["only_a"] == int(((a == 1) & (b == 0)).sum()) and got["only_b"] == int(((a == 0) & (b == 1)).sum())
    same = paired_difference(a, a)
    assert (same["difference"], same["low"], same["high"], same["mcnemar_p"]) == (0.0, 0.0, 0.0, 1.0)
    flip = paired_difference(np.zeros(12), np.ones(12))
    assert (flip["difference"], flip["low"], flip["high"]) == (1.0, 1.0, 1.0) and flip["mcnemar_p"] == 2 * 0.5**12
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1, 0], [1])


def test_report_text_pairs_cos_with_its_baseline(tmp_path, needle, capsys):
    from cos_runtime.report import load_runs, paired_rows, report_command

    data_dir, docs = needle
    write_log_folder(tmp_path / "logs", data_dir, docs)
    runs, _ = load_runs(tmp_path / "logs")
    (row,) = paired_rows(runs, resamples=200)
    # both runs predict letter doc_id % 4 and fail doc 2: the same correctness on every question
    right = [float("ABCD"[i % 4] == d["answer"]) if i != 2 else 0.0 for i, d in enumerate(docs)]
    assert (row["task"], row["cos"], row["baseline"], row["n"]) == ("cos_needle", "cos_longva", "longva", len(docs))
    assert row["acc_a"] == row["acc_b"] == pytest.approx(sum(right) / len(docs))
    assert (row["difference"], row["only_a"], row["only_b"], row["mcnemar_p"]) == (0.0, 0, 0, 1.0)
    report_command(argparse.Namespace(log_dir=str(tmp_path / "logs"), text=True))
    out = capsys.readouterr().out
    assert "paired cos_needle: cos_longva" in out and "McNemar exact p = 1" in out


def test_report_summary_names_runs_by_scorer_and_gives_grounding_precision(tmp_path, needle):
    """``summary_rows``: a CoS run is named with its scorer; recall and precision are the means of a naive count over
    each CoS sample's trace (sampled needle frames marked relevant / sampled needle frames; marked frames inside the
    needle / marked frames)."""
    from cos_runtime.report import format_summary, load_runs, summary_rows

    data_dir, docs = needle
    write_log_folder(tmp_path / "logs", data_dir, docs)
    runs, _ = load_runs(tmp_path / "logs")
    rows = {r["name"]: r for r in summary_rows(runs)}
    assert set(rows) == {"cos_longva:llava", "longva"}
    recalls, precisions = [], []
    for path in sorted((tmp_path / "logs" / "traces" / "cos_longva" / "cos_needle").glob("*.json")):
        t = json.loads(path.read_text())
        if t["answer"] == "STALE":
            continue
        doc = docs[t["doc_id"]]
        inside = [doc["needle_start"] <= f < doc["needle_end"] for f in t["frame_indices"]]
        marked = [bool(c) for c in t["binary_code"]]
        if any(inside):
            recalls.append(sum(m and i for m, i in zip(marked, inside)) / sum(inside))
        if any(marked):
            precisions.append(sum(m and i for m, i in zip(marked, inside)) / sum(marked))
    assert rows["cos_longva:llava"]["grounding"] == pytest.approx(sum(recalls) / len(recalls))
    assert rows["cos_longva:llava"]["precision"] == pytest.approx(sum(precisions) / len(precisions))
    assert rows["longva"]["grounding"] is None and rows["longva"]["precision"] is None
    text = format_summary(list(rows.values()))
    assert "cos_longva:llava" in text and "precision" in text.splitlines()[0]


def add_selector_to_baseline(root: Path, docs: list[dict], fallback_doc: int = 1, step: int = 2) -> dict:
    """Make the baseline run (longva) of :func:`write_log_folder` a BOLT run: its model_args name the selector and each
    trace gets a ``selector`` (candidates every ``step`` frames, the first 16 of them by score chosen and shown to the
    model), except ``fallback_doc``, whose selector scored nothing and fell back to the uniform frames. Returns the
    selectors by doc_id."""
    (results,) = (root / "longva").glob("*_results.json")
    data = json.loads(results.read_text())
    data["config"]["model_args"] += ",selector=bolt,selector_model=openai/clip-vit-large-patch14,candidate_fps=1"
    results.write_text(json.dumps(data))
    selectors = {}
    for path in sorted((root / "traces" / "longva" / "cos_needle").glob("*.json")):
        trace = json.loads(path.read_text())
        if trace["answer"] == "STALE":
            continue
        doc_id, n = trace["doc_id"], len(trace["frame_indices"])
        candidates = list(range(0, docs[doc_id]["num_frames"], step))
        if doc_id == fallback_doc:
            sel = make_selector(candidates, None, None, n, fallback=f"{len(candidates)} candidates: the backend's own sampling rule",
                                timings={"select_decode": 0.5})
        else:
            scores = [float((7 * p) % 11) for p in range(len(candidates))]
            chosen = sorted(sorted(range(len(candidates)), key=lambda p: -scores[p])[:n])
            sel = make_selector(candidates, scores, chosen, n, timings={"select_decode": 0.5, "select_score": 1.0 + doc_id, "select_rule": 0.0})
            trace["frame_indices"] = [candidates[p] for p in chosen]
        trace["selector"] = selectors[doc_id] = sel
        path.write_text(json.dumps(trace))
    return selectors


def test_report_shows_the_selector_its_fallbacks_and_the_panel(tmp_path, needle, capsys):
    from cos_runtime.report import load_runs, report_command, summary_rows

    data_dir, docs = needle
    write_log_folder(tmp_path / "logs", data_dir, docs)
    selectors = add_selector_to_baseline(tmp_path / "logs", docs)
    assert sorted(selectors) == [0, 1, 3]  # doc 2 failed

    runs, _ = load_runs(tmp_path / "logs")
    rows = {r["name"]: r for r in summary_rows(runs)}
    assert set(rows) == {"cos_longva:llava", "longva+bolt"}
    stats = rows["longva+bolt"]["selector_stats"]
    seconds = sorted(sum(sel["timings"].values()) for sel in selectors.values())
    assert stats == {"n": 3, "fallback": 1, "short": 0, "cache_hits": 0,
                     "candidates": sorted(len(sel["candidates"]) for sel in selectors.values())[1], "seconds": seconds[1]}
    assert rows["cos_longva:llava"]["selector_stats"] is None

    report_command(argparse.Namespace(log_dir=str(tmp_path / "logs"), text=True))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "selector"
    assert next(x for x in lines if x.startswith("longva+bolt ")).endswith(" bolt (1 fallback)")
    assert next(x for x in lines if x.startswith("cos_longva:llava ")).endswith(" -")

    out = build_report(tmp_path / "logs", tmp_path / "site" / "report.html")
    page = _Page()
    page.feed(out.read_text())
    header, *table = page.tables["runs"]
    run2 = dict(zip(header, next(r for r in table if r[0] == "2")))
    assert run2["selector"] == "bolt · openai/clip-vit-large-patch14"
    assert (run2["fell back"], run2["fewer"]) == ("1/3", "0")
    assert float(run2["selector s (median)"]) == pytest.approx(seconds[1], abs=0.005)
    run1 = dict(zip(header, next(r for r in table if r[0] == "1")))
    assert (run1["selector"], run1["fell back"]) == ("uniform", "–")

    # the strips of the selector run: the selector's frames decoded (no mismatch note) and the panel with its ticks
    strips = sorted((tmp_path / "site" / "report_strips").glob("run2_*.png"))
    assert len(strips) == 3
    assert "frames differ" not in out.read_text()
    tile_h = viz.tile_height(64, sample_frames(data_dir / docs[0]["video"], 1).frames.shape[1:])
    for path in strips:
        doc_id = int(path.stem.rsplit("_", 1)[1])
        sel = selectors[doc_id]
        with Image.open(path) as im:
            strip = np.asarray(im.convert("RGB")).astype(int)
        assert strip.shape[1::-1] == expected_size(16, False, 64, tile_h, has_selector=True)
        ticks = tick_columns(strip)
        if sel["selected"] is None:
            assert not ticks, f"doc {doc_id}: ticks although the selector chose nothing"
            continue
        want = {candidate_x(p, len(sel["candidates"]), strip.shape[1]) for p in sel["selected"]}
        assert want <= ticks and all(min(abs(c - x) for x in want) <= 1 for c in ticks), f"doc {doc_id}: ticks misplaced"


def test_each_run_is_paired_with_the_baselines_that_saw_the_same_frames(tmp_path):
    from cos_runtime.report import Run, _comparisons

    def run(i, model, **args):
        return Run(index=i, results_path=tmp_path / f"{i}.json", model=model, model_args=args, results={}, n_samples={},
                   trace_dir=None, trace_dir_given=None)

    plain = run(0, "longva")
    bolt3 = run(1, "longva", selector="bolt", power="3", selector_batch_size="8")
    bolt25 = run(2, "longva", selector="bolt", power="2.5")
    cos3 = run(3, "cos_longva", selector="bolt", power="3", scorer="llava")
    cos_plain = run(4, "cos_longva", scorer="llava")
    pairs = [(a.index, b.index) for a, b in _comparisons([plain, bolt3, bolt25, cos3, cos_plain])]
    assert [r.name for r in (plain, bolt3, bolt25, cos3, cos_plain)] == [
        "longva", "longva+bolt", "longva+bolt[power=2.5]", "cos_longva:llava+bolt", "cos_longva:llava"]
    # a selector baseline against the plain one; CoS against the plain baseline and the one on its own frames (power 3:
    # not the power-2.5 run; another batch size chooses the same frames)
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 3), (0, 4)]
