"""``cos niah``: the needle-in-a-video-haystack grid (V-NIAH) for any registered base model, baseline and CoS.

    cos niah --backend longva --model lmms-lab/LongVA-7B --haystack_path movie.mp4 \\
        --needle_dir NIAH/datas/needles --needle_qa_path NIAH/datas/qa/qa.json \\
        --context_lengths_min 1 --context_lengths_max 2048 --context_lengths_num_intervals 12 \\
        --video_depth_percent_intervals 5 --methods uniform,cos --result_dir niah_results

The grid flags are Video-XL's ``NIAH/run.py``'s (underscore names; dashed spellings work too), so its users'
commands carry over; the protocol (grid, insertion, scoring, colours) is :mod:`cos.niah`'s. Per cell
(context length ``L`` frames, depth ``d`` %) the haystack is sampled to ``L`` frames (``--haystack_sampling``:
``uniform`` over the whole video, Video-XL's rule, or ``1fps`` — the first ``L`` frames at one per second,
LongVA's), each needle image is inserted as one extra frame before haystack frame ``int(L * (d * 0.01))``, and the
model answers each needle's question with each method. The haystack is decoded and preprocessed once per length
(``1fps``: once, at the longest length; in chunks, so a long video never sits in memory at full resolution); the
needle is preprocessed by the model's own image processor at its own size, as the originals do. The CoS scorer sees
the frames at most :data:`THUMB` pixels on their short side, the needle letterboxed to that size.

Without ``--haystack_path`` the haystack is synthetic (:func:`cos.synthetic.write_haystack`, needle-free, at least
:data:`SYNTHETIC_FRAMES` frames at 1 fps); without ``--needle_dir``/``--needle_qa_path`` the needles are made here
(:func:`cos.synthetic.needle_image`: a coloured shape with a mark, "What colour is the mark inside the red shape?",
asked with the offline ``cos_needle`` task's prompt) and written in Video-XL's layout — so it all runs offline.

Outputs under ``--result_dir/--name`` (default: the backend's name):

* ``<method>/len_<L>_depth_<d>.json`` — one per cell: status (``ok``; ``oom``: the model ran out of memory;
  ``over_context``: a prompt exceeds the model's context budget, with ``--context_budget check``), score, per-needle
  answers, seconds, peak GPU memory, prompt tokens. Written atomically; a run started again skips the cells already
  there (``--retry_oom``: not those out of memory), so a killed run resumes cell by cell. ``config.json`` holds what
  determines the answers (:class:`NiahRun`): a run with other settings in the same folder is refused.
* ``heatmap_<method>.png`` per method and ``heatmap_cos_minus_uniform.png``; ``summary.json`` (the tables, averages).
  Drawn when the grid is complete (by whichever process completes it), or with ``--plot_only``.

Several processes: ``--shard i/n`` runs every n-th cell from the i-th; under ``accelerate launch -m cos_runtime.niah``
(or ``torchrun``) each process takes its rank's shard and its own GPU (``LOCAL_RANK``). Processes share nothing but
the result folder, so machines that share a filesystem can run shards of one grid.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cos import niah
from cos.cache import atomic_write, file_sha256, make_key
from cos.errors import ConfigError, ContextBudgetError
from cos_runtime import registry

#: the most pixels on a frame's short side that the CoS scorer is shown (its mosaics are smaller still)
THUMB = 336
#: frames decoded and preprocessed at a time
CHUNK = 32
METHODS = ("uniform", "cos")
SAMPLINGS = ("uniform", "1fps")
#: synthetic haystack (no --haystack_path): frame side, rate and fewest frames (so that most grids share one)
SYNTHETIC_SIZE = 64
SYNTHETIC_FPS = 1.0
SYNTHETIC_FRAMES = 3000
CELL_VERSION = 1

__all__ = ["Grid", "NiahRun", "add_parser", "main", "plot_results"]


@dataclass(frozen=True)
class Grid:
    lengths: tuple[int, ...]
    depths: tuple[float, ...]

    def cells(self) -> list[tuple[int, float]]:
        return [(L, d) for L in self.lengths for d in self.depths]


def cell_name(length: int, depth: float) -> str:
    return f"len_{int(length)}_depth_{float(depth):g}.json"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 <= i < n; None → this process's rank and world size (``RANK``/``WORLD_SIZE``, as
    ``accelerate launch`` and ``torchrun`` set them), else (0, 1)."""
    if text is None:
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        return (int(rank), int(world)) if rank is not None and world is not None else (0, 1)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must be i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _oom_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError, MemoryError)


# ------------------------------------------------------------------------------------------------ default inputs
def synthetic_haystack(folder: Path, frames: int, size: int = SYNTHETIC_SIZE) -> Path:
    """The synthetic haystack in ``folder``: at least :data:`SYNTHETIC_FRAMES` frames (``frames`` rounded up to a
    thousand), at 1 fps, so that grids up to that length share one haystack. Made once; the same bytes every time."""
    from cos.synthetic import write_haystack

    frames = max(SYNTHETIC_FRAMES, -(-int(frames) // 1000) * 1000)
    path = folder / f"haystack_{frames}f_{size}px.mp4"
    if not path.exists():
        write_haystack(path, frames, size=size, fps=SYNTHETIC_FPS)  # written under a name of this process, then renamed
    return path


def synthetic_needles(folder: Path, count: int, size: int = SYNTHETIC_SIZE) -> tuple[Path, Path]:
    """``count`` needle images and their QA file (Video-XL's layout) in ``folder/needles_<count>``; returns
    (needle_dir, qa_path). Made once (again when the QA file is unreadable); the same bytes every time."""
    from PIL import Image

    from cos.synthetic import needle_image
    from cos_runtime.train_tiny import task_prompt

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"--num_needles must be a positive integer, got {count!r}")
    folder = folder / f"needles_{count}"
    qa_path = folder / "qa.json"
    try:
        niah.load_needle_qa(qa_path, folder)
        return folder, qa_path
    except ConfigError:
        pass
    needles = []
    for i in range(count):
        image, record = needle_image(i, size=size)
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="png")
        path = atomic_write(folder / f"needle_{i}.png", png.getvalue())
        needles.append(niah.NeedleQA(question=task_prompt(record), answer=record["answer"], image=str(path)))
    niah.write_needle_qa(qa_path, needles)
    return folder, qa_path


def _letterbox(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` scaled to fit ``height`` x ``width`` and centred on a mid-grey canvas (the scorer's view of a needle)."""
    from PIL import Image, ImageOps

    out = ImageOps.pad(Image.fromarray(image), (width, height), method=Image.Resampling.BICUBIC, color=(128, 128, 128))
    return np.asarray(out, dtype=np.uint8)


def _thumb(frames: np.ndarray) -> np.ndarray:
    """Frames shrunk so that their short side is at most :data:`THUMB` pixels (unchanged when already that small)."""
    h, w = frames.shape[1:3]
    if min(h, w) <= THUMB:
        return frames
    from PIL import Image

    scale = THUMB / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class Haystack:
    """A haystack sampled to some frames: model pixel values, the scorer's frames and the source frames they came from."""

    pixels: object  # torch.Tensor (L, C, S, S) on the model's device
    thumbs: np.ndarray  # uint8 (L, h, w, 3)
    indices: np.ndarray
    fps: float
    duration: float
    total: int

    def first(self, n: int) -> Haystack:
        return Haystack(self.pixels[:n], self.thumbs[:n], self.indices[:n], self.fps, self.duration, self.total)


class NiahRun:
    """One model's grid: the engine (loaded once), the haystack, the needles and the result folder.

    What determines the answers is recorded in ``config.json``: the ``base`` part (backend and its options, the dtype
    actually used, the haystack's content and sampling, the decoder, the needles' images and questions, the prompt
    template, the answer length) and each method's part (CoS: its and the scorer's options). A run whose base part
    differs is refused, and so is one whose method part differs for a method the folder already has; a new method is
    added. Cells carry their method's key; only cells with the current key count as done.
    """

    def __init__(self, args, values: dict):
        from cos.device import normalise_device, resolve_dtype
        from cos.video import open_stream
        from cos_runtime.options import ModelOptions

        self.args = args
        self.spec = registry.get(args.backend)
        self.methods = args.methods
        self.out = Path(args.result_dir) / args.name
        self.grid = Grid(tuple(niah.context_lengths(args.context_lengths_min, args.context_lengths_max, args.context_lengths_num_intervals)),
                         tuple(niah.depth_percents(args.video_depth_percent_min, args.video_depth_percent_max,
                                                   args.video_depth_percent_intervals, args.video_depth_percent_interval_type)))
        if "{question}" not in args.question_template:
            raise ConfigError(f"--question_template must contain {{question}}, got {args.question_template!r}")
        if bool(args.needle_dir) != bool(args.needle_qa_path):
            raise ConfigError("--needle_dir and --needle_qa_path go together (the images and their questions)")
        self.values = values
        self.options = ModelOptions.parse(self.spec.name, "cos" if "cos" in self.methods else "uniform", values)
        self.device = normalise_device(self.options.run.device or self._rank_device())
        self.dtype = resolve_dtype(self.options.run.torch_dtype, self.device)
        self.decoder = str(self.options.backend.video_decode_backend or "auto")
        inputs = Path(args.result_dir) / "inputs"
        if args.haystack_path:
            self.haystack_path = str(args.haystack_path)
            if not Path(self.haystack_path).exists():
                raise ConfigError(f"--haystack_path {self.haystack_path!r} does not exist")
            haystack_id = {"name": Path(self.haystack_path).name, "size": Path(self.haystack_path).stat().st_size,
                           "sha256": file_sha256(self.haystack_path)}  # its content: the same movie elsewhere is the same haystack
        else:
            self.haystack_path = str(synthetic_haystack(inputs, max(self.grid.lengths)))
            haystack_id = {"synthetic": Path(self.haystack_path).name}
        needle_dir, qa_path = ((args.needle_dir, args.needle_qa_path) if args.needle_dir
                               else synthetic_needles(inputs, args.num_needles))
        self.needles = niah.load_needle_qa(qa_path, needle_dir)
        with open_stream(self.haystack_path, lambda total, fps: np.zeros(1, dtype=np.int64), backend=self.decoder, chunk_size=1) as s:
            self.total_frames, self.fps = s.total_frames, s.fps
        if args.haystack_sampling == "1fps":
            available = len(range(0, self.total_frames, max(1, round(self.fps or 1.0))))
            if available < max(self.grid.lengths):
                raise ConfigError(f"--haystack_sampling 1fps takes the first L frames at 1 fps: {self.haystack_path} has {available} "
                                  f"({self.total_frames} frames at {self.fps:g} fps), fewer than --context_lengths_max "
                                  f"{max(self.grid.lengths)}")
        from cos import options as opt

        backend = opt.identity(self.options.backend)
        backend.pop("max_frames_num", None)  # the grid sets the frames
        self.base = {
            "kind": "niah", "v": CELL_VERSION, "backend": self.spec.name, "options": backend, "dtype": str(self.dtype),
            "haystack": haystack_id, "haystack_sampling": args.haystack_sampling, "decoder": self.decoder,
            "needles": [{"image": n.name, "sha256": file_sha256(n.image), "question": n.question, "answer": n.answer} for n in self.needles],
            "question_template": args.question_template, "max_new_tokens": args.max_new_tokens, "context_budget": args.context_budget,
        }
        self.method_identity = {"uniform": {}}
        if "cos" in self.methods:
            self.method_identity["cos"] = {"cos": opt.identity(self.options.cos), "scorer": opt.identity(self.options.scorer)}
        self.keys = {m: make_key({"base": self.base, "method": m, **self.method_identity[m]}) for m in self.methods}
        self._check_folder()
        self.engine = None
        self._views = None  # ((h, w), needle views): see needle_views

    @staticmethod
    def _rank_device() -> str | None:
        """Under ``accelerate launch``/``torchrun``: this process's GPU (``LOCAL_RANK``); else None (the default device)."""
        import torch

        local = os.environ.get("LOCAL_RANK")
        return f"cuda:{int(local)}" if local is not None and torch.cuda.is_available() else None

    def _check_folder(self) -> None:
        path = self.out / "config.json"
        try:
            old = json.loads(path.read_text())
        except FileNotFoundError:
            old = None
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path} is unreadable ({err}); remove it, or use another --result_dir or --name") from None
        recorded = dict((old or {}).get("methods", {}))
        if old is not None:
            differ = sorted(k for k in set(old.get("base", {})) | set(self.base) if old.get("base", {}).get(k) != self.base.get(k))
            differ += sorted(f"{m} ({k})" for m in self.methods if m in recorded for k in set(recorded[m]) | set(self.method_identity[m])
                             if recorded[m].get(k) != self.method_identity[m].get(k))
            if differ:
                raise ConfigError(f"{self.out} holds a grid run with other settings (they differ in: {', '.join(differ)}); "
                                  "use another --result_dir or --name, or remove that folder")
        if old is None or any(m not in recorded for m in self.methods):
            recorded.update({m: self.method_identity[m] for m in self.methods})
            atomic_write(path, json.dumps({"base": self.base, "methods": recorded}, indent=2) + "\n")

    # -- cells ---------------------------------------------------------------------------------
    def cell_path(self, method: str, length: int, depth: float) -> Path:
        return self.out / method / cell_name(length, depth)

    def read_cell(self, method: str, length: int, depth: float) -> dict | None:
        """The cell's record when it was written with this run's settings, else None."""
        try:
            cell = json.loads(self.cell_path(method, length, depth).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return cell if cell.get("key") == self.keys[method] else None

    def done(self, method: str, length: int, depth: float) -> bool:
        cell = self.read_cell(method, length, depth)
        return cell is not None and not (self.args.retry_oom and cell["status"] == "oom")

    def load_engine(self):
        if self.engine is None:
            from cos_runtime.engine import build_engine

            self.engine = build_engine(self.spec.name, "cos" if "cos" in self.methods else "uniform", self.values, device=self.device)
        return self.engine

    def haystack(self, length: int) -> Haystack:
        """The haystack sampled to ``length`` frames, decoded and preprocessed chunk by chunk."""
        import torch

        from cos.video import open_stream

        if self.args.haystack_sampling == "uniform":
            def rule(total, fps):
                return np.linspace(0, total - 1, length, dtype=int)
        else:
            def rule(total, fps):
                return np.arange(0, total, max(1, round(fps or 1.0)), dtype=np.int64)[:length]
        model = self.engine.backend
        pixels, thumbs, got = [], [], []
        with open_stream(self.haystack_path, rule, backend=self.decoder, chunk_size=CHUNK) as stream:
            for idx, chunk in stream.chunks():
                pixels.append(model.preprocess(chunk))
                thumbs.append(_thumb(chunk))
                got.append(idx)
            if stream.delivered < len(stream.indices):
                raise ConfigError(f"{self.haystack_path}: the decoder delivered {stream.delivered} of the {len(stream.indices)} frames asked for")
            fps, duration, total = stream.fps, stream.duration, stream.total_frames
        return Haystack(pixels=torch.cat(pixels), thumbs=np.concatenate(thumbs), indices=np.concatenate(got), fps=float(fps),
                        duration=float(duration), total=int(total))

    def needle_views(self, hay: Haystack) -> list[tuple[object, np.ndarray]]:
        """Per needle: its model pixel values (the processor on the image itself) and the scorer's view of it, letterboxed
        to the haystack's frame size (the same at every length: computed once)."""
        from PIL import Image

        h, w = hay.thumbs.shape[1:3]
        if self._views is None or self._views[0] != (h, w):
            views = []
            for needle in self.needles:
                image = np.asarray(Image.open(needle.image).convert("RGB"), dtype=np.uint8)
                views.append((self.engine.backend.preprocess(image[None]), _letterbox(image, h, w)))
            self._views = ((h, w), views)
        return self._views[1]

    def new_record(self, method: str, length: int, depth: float) -> dict:
        return {"kind": "niah_cell", "v": CELL_VERSION, "key": self.keys[method], "name": self.args.name, "backend": self.spec.name,
                "method": method, "context_length": length, "depth_percent": depth, "insert_point": niah.insert_point(length, depth),
                "num_frames": length + 1, "visual_tokens": self.engine.facts.visual_tokens(length + 1), "device": str(self.engine.device)}

    def run_cell(self, method: str, length: int, depth: float, hay: Haystack, views) -> dict:
        """Every needle at (length, depth) with ``method``; the cell's record (also on an out-of-memory error and when
        a prompt exceeds the context budget: then no answer of the cell is kept)."""
        import torch

        from cos.pipeline import GenerationOptions
        from cos.protocol import VideoInfo

        engine, record = self.engine, self.new_record(method, length, depth)
        k = record["insert_point"]
        cuda = str(engine.device).startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(engine.device)
        start, answers, failure = time.perf_counter(), [], None
        # the needle stands where it is inserted: it takes the time of the frame it precedes (or the last one's)
        at = int(hay.indices[min(k, length - 1)])
        video = VideoInfo(frame_indices=tuple(int(i) for i in np.insert(hay.indices, k, at)), fps=hay.fps, duration=hay.duration,
                          total_frames=hay.total, source=self.haystack_path)
        gen = GenerationOptions(max_new_tokens=self.args.max_new_tokens)
        pixels = frames = None
        try:
            # one buffer per cell, the needle's slot rewritten per needle (at 3000 frames the pixel values are gigabytes)
            pixels = torch.cat([hay.pixels[:k], hay.pixels[:1], hay.pixels[k:]])
            frames = np.concatenate([hay.thumbs[:k], hay.thumbs[:1], hay.thumbs[k:]])
            for needle, (needle_pixels, needle_view) in zip(self.needles, views):
                question = self.args.question_template.format(question=needle.question)
                if self.args.context_budget == "check":
                    engine.check_question(question, length + 1)
                pixels[k] = needle_pixels[0]
                frames[k] = needle_view
                t0 = time.perf_counter()
                result = engine.pipeline.answer(frames, question, method=method, gen=gen, video=video, pixels=pixels)
                trace = result.trace
                entry = {"needle": needle.name, "answer": needle.answer, "response": result.text, "pred": niah.option_letter(result.text),
                         "correct": int(niah.is_correct(result.text, needle.answer)), "seconds": round(time.perf_counter() - t0, 4),
                         "sequence_length": trace.sequence_length}
                if method == "cos":
                    code = trace.binary_code or []
                    entry.update(alpha=trace.alpha, relevant_frames=int(sum(code)), needle_marked=bool(code and code[k]))
                answers.append(entry)
        except ContextBudgetError as err:
            failure = ("over_context", str(err))
        except _oom_errors() as err:
            failure = ("oom", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        del pixels, frames
        if failure is not None:
            status, error = failure
            record.update(status=status, score=None, error=error)
            answers = []
            if cuda and status == "oom":
                torch.cuda.empty_cache()  # out of the except block: the traceback no longer holds the tensors
        else:
            record.update(status="ok", score=sum(a["correct"] for a in answers) / len(answers))
        record.update(answers=answers, seconds=round(time.perf_counter() - start, 4),
                      peak_memory_bytes=int(torch.cuda.max_memory_allocated(engine.device)) if cuda else None)
        return record

    def run(self, shard: tuple[int, int], progress: bool = True) -> int:
        """This shard's cells not done yet; returns how many were computed."""
        from tqdm import tqdm

        mine = [cell for i, cell in enumerate(self.grid.cells()) if i % shard[1] == shard[0]]
        todo = [(L, d, m) for L, d in mine for m in self.methods if not self.done(m, L, d)]
        skipped = len(mine) * len(self.methods) - len(todo)
        if skipped:
            print(f"[niah] {skipped} cell(s) of this shard already done in {self.out}; {len(todo)} to run", file=sys.stderr)
        if not todo:
            return 0
        self.load_engine()
        lengths = sorted({L for L, _, _ in todo})
        longest = None
        if self.args.haystack_sampling == "1fps":  # every length is a prefix of the longest: decode it once
            longest = self._prepare(max(lengths))
        bar = tqdm(total=len(todo), desc=f"niah {self.args.name} shard {shard[0]}/{shard[1]}", unit="cell", disable=not progress)
        for length in lengths:
            cells = [(d, m) for L, d, m in todo if L == length]
            prepared = self._prepare(length) if longest is None else longest
            if isinstance(prepared, str):  # out of memory while preparing the haystack: every cell of this length
                hay = views = None
            else:
                hay = prepared[0] if longest is None else prepared[0].first(length)
                views = prepared[1]
            for depth, method in cells:
                if hay is None:
                    record = self.new_record(method, length, depth)
                    record.update(status="oom", score=None, error=prepared, answers=[], seconds=0.0, peak_memory_bytes=None)
                else:
                    record = self.run_cell(method, length, depth, hay, views)
                record["shard"] = f"{shard[0]}/{shard[1]}"
                atomic_write(self.cell_path(method, length, depth), json.dumps(record, indent=1) + "\n")
                bar.set_postfix_str(f"{method} L={length} d={depth:g}: {record['score'] if record['status'] == 'ok' else record['status']}")
                bar.update()
            del hay, views, prepared
        bar.close()
        return len(todo)

    def _prepare(self, length: int):
        """(haystack, needle views) for ``length`` frames, or the out-of-memory error's text."""
        try:
            hay = self.haystack(length)
            return hay, self.needle_views(hay)
        except _oom_errors() as err:
            message = f"{type(err).__name__} while preparing the haystack: {str(err).splitlines()[0] if str(err) else ''}"
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return message

    def complete(self) -> bool:
        return all(self.read_cell(m, L, d) is not None for L, d in self.grid.cells() for m in self.methods)


def plot_results(run: NiahRun) -> dict:
    """Read the grid's cells (those with the run's settings), write ``summary.json`` and the heatmaps; returns the summary."""
    grid, name = run.grid, run.args.name
    lengths, depths = list(grid.lengths), list(grid.depths)
    summary = {"name": name, "lengths": lengths, "depths": depths, "methods": {}}
    tables = {}
    for method in run.methods:
        cells = [c for L, d in grid.cells() if (c := run.read_cell(method, L, d)) is not None]
        scores, status = niah.grid_table(cells, lengths, depths)
        tables[method] = (scores, status)
        answered = scores[~np.isnan(scores)]
        counts = {s: int((status == s).sum()) for s in niah.CELL_STATUSES}
        counts["missing"] = int((status == "").sum())
        mean = float(answered.mean()) if answered.size else None
        summary["methods"][method] = {"average": mean, "cells": counts, "scores": [[None if np.isnan(v) else float(v) for v in row]
                                                                                  for row in scores]}
        label = "CoS" if method == "cos" else "baseline (uniform)"
        title = f"{name} · {label} · average {mean:.3f}" if mean is not None else f"{name} · {label}"
        niah.plot_heatmap(scores, status, lengths, depths, run.out / f"heatmap_{method}.png", title=title)
    if "uniform" in tables and "cos" in tables:
        diff = tables["cos"][0] - tables["uniform"][0]
        status = np.where(tables["cos"][1] != "ok", tables["cos"][1], tables["uniform"][1])
        both = diff[~np.isnan(diff)]
        mean = float(both.mean()) if both.size else None
        summary["cos_minus_uniform"] = {"average": mean, "scores": [[None if np.isnan(v) else float(v) for v in row] for row in diff]}
        title = f"{name} · CoS − baseline · average {mean:+.3f}" if mean is not None else f"{name} · CoS − baseline"
        niah.plot_heatmap(diff, status, lengths, depths, run.out / "heatmap_cos_minus_uniform.png", title=title, difference=True)
    atomic_write(run.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def text_table(summary: dict) -> str:
    """The summary's tables as text: one block per method (rows: depth %, columns: frames)."""
    lines = []
    blocks = [(m, s["scores"], s["average"]) for m, s in summary["methods"].items()]
    if "cos_minus_uniform" in summary:
        blocks.append(("cos - uniform", summary["cos_minus_uniform"]["scores"], summary["cos_minus_uniform"]["average"]))
    for label, rows, mean in blocks:
        lines.append(f"{label} (average {'-' if mean is None else f'{mean:.3f}'})")
        lines.append("depth\\frames " + " ".join(f"{n:>6}" for n in summary["lengths"]))
        for d, row in zip(summary["depths"], rows):
            lines.append(f"{d:>12g} " + " ".join("     -" if v is None else f"{v:>6.2f}" for v in row))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ command line
def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"--methods takes a comma list of {list(METHODS)}, got {text!r}")
    return list(dict.fromkeys(methods))


def niah_command(args) -> int:
    from cos_runtime.run import model_values

    args.methods = _methods(args.methods)
    args.name = args.name or args.backend
    values = model_values(args, args.backend, "cos" if "cos" in args.methods else "uniform", selector=False)
    shard = parse_shard(args.shard)
    run = NiahRun(args, values)
    if not args.plot_only:
        run.run(shard, progress=not args.quiet)
    if args.plot_only or run.complete():
        summary = plot_results(run)
        print(text_table(summary))
        print(f"[niah] heatmaps and summary.json in {run.out}")
    else:
        missing = sum(not run.done(m, L, d) for L, d in run.grid.cells() for m in args.methods)
        print(f"[niah] shard {shard[0]}/{shard[1]} done; {missing} cell(s) of the grid are left to other shards "
              f"(the process that completes the grid draws the heatmaps; or run again with --plot_only)")
    return 0


def add_parser(subparsers):
    from cos_runtime.run import add_model_arguments

    p = subparsers.add_parser("niah", help="needle-in-a-video-haystack grid (baseline and CoS) with heatmaps", allow_abbrev=False,
                              description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)

    def both(group, name: str, **kw):  # Video-XL's underscore flag, and the dashed spelling of our other flags
        group.add_argument(f"--{name}", *([f"--{name.replace('_', '-')}"] if "_" in name else []), **kw)

    g = p.add_argument_group("grid (Video-XL NIAH/run.py's flags)")
    both(g, "haystack_path", default=None, help="the haystack video (default: a synthetic needle-free video made here)")
    both(g, "needle_dir", default=None, help="folder of the needle images (default: needles made here)")
    both(g, "needle_qa_path", default=None, help="QA file in Video-XL's layout (retrieval_question, answer, needle lists)")
    both(g, "context_lengths_min", type=int, default=1, help="fewest haystack frames (default 1)")
    both(g, "context_lengths_max", type=int, default=320, help="most haystack frames (default 320)")
    both(g, "context_lengths_num_intervals", type=int, default=40, help="context lengths, np.linspace(min, max, num) rounded (default 40)")
    both(g, "video_depth_percent_min", type=float, default=0, help="default 0")
    both(g, "video_depth_percent_max", type=float, default=100, help="default 100")
    both(g, "video_depth_percent_intervals", type=int, default=12, help="depths, np.linspace(min, max, num) rounded (default 12)")
    both(g, "video_depth_percent_interval_type", choices=niah.DEPTH_SPACINGS, default="linear", help="linear (default) or sigmoid")
    both(g, "result_dir", default="niah_results", help="output folder (default niah_results)")
    o = p.add_argument_group("cos niah")
    o.add_argument("--backend", choices=registry.names(), default="longva", help="base model (default longva); --model is its checkpoint")
    both(o, "methods", default="uniform,cos", help="comma list of uniform (the baseline) and cos (default both)")
    both(o, "name", default=None, help="the run's folder under --result_dir and its title (default: the backend's name)")
    both(o, "haystack_sampling", choices=SAMPLINGS, default="uniform",
         help="uniform: L frames spread over the whole video (Video-XL); 1fps: the first L frames at 1 fps (LongVA)")
    both(o, "num_needles", type=int, default=4, help="needles made here when no --needle_qa_path is given (default 4)")
    both(o, "question_template", default="{question}",
         help="what the model is asked, {question} being the QA file's question (Video-XL's run: 'Question: {question}\\nAnswer: ')")
    both(o, "max_new_tokens", type=int, default=16)
    both(o, "shard", default=None, help="i/n: run every n-th cell from the i-th (default: RANK/WORLD_SIZE under accelerate, else 0/1)")
    both(o, "plot_only", action="store_true", help="only draw the heatmaps and summary from the cells already written")
    both(o, "retry_oom", action="store_true", help="run again the cells recorded as out of memory (e.g. on a bigger GPU)")
    both(o, "context_budget", choices=("check", "ignore"), default="check",
         help="check: a prompt over the model's tokenizer_model_max_length is recorded over_context (what the lmms-eval models "
              "refuse); ignore: feed it anyway, as LongVA's V-NIAH feeds embeddings past that limit")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=niah_command, _option_names=add_model_arguments(p, selector=False, skip=("max_frames_num",)))
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m cos_runtime.niah ...`` (what ``accelerate launch -m cos_runtime.niah`` runs): ``cos niah ...``."""
    from cos_runtime.cli import main as cli_main

    return cli_main(["niah", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
