"""``cos report``: one static HTML page about an lmms-eval output folder written with CoS traces.

Input: ``LOG_DIR`` as written by ``lmms_eval --output_path LOG_DIR --log_samples`` — one or more
``<model>/<date>_results.json`` with their ``<date>_samples_<task>.jsonl`` — and, for each run, the
``trace_dir`` named in its ``model_args`` (``trace_dir/<task>/<key>.json`` per sample and
``trace_dir/errors.jsonl`` per failed sample, see :mod:`cos_lmms_eval.models`).

The page shows, per run (one results file = one model configuration):

* the metrics of every task side by side (one column per run; the model arguments that differ between
  runs head the columns);
* CoS statistics per run and task: the α distribution (histogram, embedded PNG), the fraction of sampled
  frames marked relevant, and, where the task knows where the answer is (the needle task's docs carry
  ``needle_start`` / ``needle_end``), the grounding: *hit rate* (share of samples with at least one
  sampled needle frame marked relevant), *recall* (share of the sampled needle frames marked relevant,
  the task's ``needle_grounding``) and *precision* (share of the relevant frames inside the needle);
* the frame selector of each run (``selector`` / ``selector_model`` in its model_args, else its traces'
  ``selector``; "uniform": the backend's own sampling rule) and, from the traces, how many samples fell back to
  the backend's rule, how many selections returned fewer frames than requested, the median candidates per
  sample and the median selector seconds per sample (the sum of the trace's ``selector.timings``);
* every failed sample with its cause (from ``errors.jsonl``), the slowest samples (``timings.total``),
  and every sample with its prediction, target, correctness, α and a link to its shot strip
  (:mod:`cos.viz`), rendered into ``<report>_strips/`` beside the page.

Traces are matched to samples by (task, doc_id) and checked against the sample's prompt
(``input``) and the run's method; a trace that does not belong to the run (a trace_dir reused by
another run) is ignored and counted. The needle position comes from the sample's ``doc`` when
lmms-eval kept it, from the per-sample metric record, or from the ``questions.json`` next to the video
(as ``cos make-needle-videos`` writes it).

The page is self-contained: inline CSS, the histogram as a data URI, no script, no external resource;
strip images and the results files are linked by relative path.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from cos.errors import ConfigError, CosError
from cos.grounding import window_grounding
from cos.trace import CoSTrace, read_trace
from cos_runtime import registry

__all__ = ["build_report", "load_runs", "add_parser", "selector_stats"]

def expected_method(model: str) -> str | None:
    """The trace "method" an lmms-eval model's traces must have (from the backend registry; None: not checked)."""
    found = registry.resolve_model_id(model)
    return found[1] if found else None
#: model_args that never distinguish two runs' configurations in the column headers
_NOT_CONFIG = {"trace_dir"}
SLOWEST = 10


# -- loading -----------------------------------------------------------------------------------
@dataclass
class Sample:
    run: int
    task: str
    doc_id: int
    record: dict | None  #: the line of the samples file (None when only a trace / error is known)
    trace: CoSTrace | None = None
    trace_path: Path | None = None
    error: dict | None = None
    needle: tuple[int, int] | None = None
    strip: Path | None = None
    strip_note: str = ""

    @property
    def prediction(self) -> str:
        if self.record is not None:
            resp = self.record.get("filtered_resps", self.record.get("resps"))
            while isinstance(resp, list) and len(resp) == 1:
                resp = resp[0]
            return "" if resp is None else str(resp)
        return str((self.trace.answer if self.trace else None) or "")

    @property
    def target(self) -> str:
        return "" if self.record is None else str(self.record.get("target", ""))


@dataclass
class Run:
    index: int
    results_path: Path
    model: str
    model_args: dict
    results: dict
    n_samples: dict
    trace_dir: Path | None
    trace_dir_given: str | None
    samples: dict[str, list[Sample]] = field(default_factory=dict)  #: task -> samples, by doc_id
    errors: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stale_traces: int = 0
    label: str = ""

    @property
    def expected_method(self) -> str | None:
        return expected_method(self.model)

    def _trace_selector(self) -> dict | None:
        """The first of the run's traces' ``selector`` dicts (None when no trace has one)."""
        return next((s.trace.selector for s in self.all_samples() if s.trace and isinstance(s.trace.selector, dict)), None)

    @property
    def selector(self) -> str:
        """The frame selector (``aks``, ``bolt``, ``qframe``), or "uniform" (the backend's own sampling rule)."""
        given = (self.model_args.get("selector") or "").strip()
        if given:
            return given
        found = self._trace_selector()
        return str(found.get("method") or "?") if found else "uniform"

    @property
    def selector_model(self) -> str | None:
        """The selector's scoring model (model_args ``selector_model``, else the traces'); None for "uniform" or unknown."""
        if self.selector == "uniform":
            return None
        found = self._trace_selector()
        return (self.model_args.get("selector_model") or "").strip() or (str(found["model"]) if found and found.get("model") else None)

    @property
    def selector_key(self) -> tuple:
        """What decides the frames a selector chooses, from ``model_args`` (the selector, its model, rate, query and rule
        parameters; not its batch size): runs with equal keys saw the same frames."""
        from cos.options import dataclass_fields
        from cos.selector import SelectorConfig

        names = {f.name for f in dataclass_fields(SelectorConfig)} - {"selector_batch_size"}
        return (self.selector, *sorted((k, str(v)) for k, v in self.model_args.items() if k in names and k != "selector"))

    @property
    def selector_changes(self) -> str:
        """The selector's rule parameters set to other values than the defaults, as ``k=v,...`` ("" when none, or when
        the model_args do not parse)."""
        from cos.errors import CosError
        from cos.selection import RULE_PARAMS
        from cos.selector import SelectorConfig

        names = RULE_PARAMS.get(self.selector, ())
        given = {k: v for k, v in self.model_args.items() if k in names}
        try:
            parsed, default = SelectorConfig(selector=self.selector, **given), SelectorConfig(selector=self.selector)
        except (CosError, TypeError):
            return ""
        return ",".join(f"{k}={self.model_args[k]}" for k in names if k in given and getattr(parsed, k) != getattr(default, k))

    @property
    def name(self) -> str:
        """The model, for a CoS run its scorer (``cos_longva:oracle``), and a selector other than uniform (``longva+bolt``,
        with its rule parameters that differ from the defaults: ``longva+bolt[duplicates=keep]``): runs of one model told
        apart in tables."""
        name = self.model if self.expected_method != "cos" else f"{self.model}:{self.model_args.get('scorer') or 'llava'}"
        if self.selector == "uniform":
            return name
        changes = self.selector_changes
        return f"{name}+{self.selector}" + (f"[{changes}]" if changes else "")

    def all_samples(self) -> list[Sample]:
        return [s for task in self.samples for s in self.samples[task]]


def _parse_model_args(value) -> dict:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if not value:
        return {}
    return dict(kv.split("=", 1) for kv in str(value).split(",") if "=" in kv)


def _read_jsonl(path: Path, notes: list[str]) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            notes.append(f"{path}: line {n} is not JSON ({err.msg}); skipped")
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _resolve_trace_dir(given: str | None, root: Path, results_path: Path) -> Path | None:
    if not given:
        return None
    p = Path(given).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, root / p, results_path.parent / p, root.parent / p]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def load_runs(log_dir) -> tuple[list[Run], list[str]]:
    """The runs (results files) under ``log_dir`` with their samples, traces and errors; plus notes."""
    root = Path(log_dir)
    if not root.is_dir():
        raise CosError(f"no such log folder: {str(root)!r}")
    notes: list[str] = []
    results_files = sorted(root.rglob("*_results.json"))
    if not results_files:
        raise CosError(f"no lmms-eval results (*_results.json) under {str(root)!r}")
    runs = []
    for path in results_files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            notes.append(f"{path}: unreadable results file ({err}); skipped")
            continue
        config = data.get("config") or {}
        model_args = _parse_model_args(config.get("model_args"))
        given = model_args.get("trace_dir")
        run = Run(index=len(runs) + 1, results_path=path, model=str(config.get("model") or path.parent.name),
                  model_args=model_args, results=data.get("results") or {}, n_samples=data.get("n-samples") or {},
                  trace_dir=_resolve_trace_dir(given, root, path), trace_dir_given=given)
        if given and run.trace_dir is None:
            run.notes.append(f"trace_dir {given!r} not found (tried it as given and relative to the log folder): no traces, no error records")
        elif not given:
            run.notes.append("the run has no trace_dir in its model_args: no traces, no error records")
        _load_run(run, path, data)
        runs.append(run)
    if not runs:
        raise CosError(f"no readable results file under {str(root)!r}")
    _label_runs(runs)
    return runs, notes


def _load_run(run: Run, path: Path, data: dict) -> None:
    date_id = path.name[: -len("_results.json")]
    tasks = [t for t in run.results if isinstance(run.results[t], dict)]
    # traces of this run: (task, doc_id) -> (trace, path)
    traces: dict[tuple[str, object], list[tuple[CoSTrace, Path]]] = {}
    if run.trace_dir is not None:
        for tpath in sorted(run.trace_dir.glob("*/*.json")):
            try:
                trace = read_trace(tpath)
            except (OSError, ValueError, TypeError, AttributeError) as err:
                run.notes.append(f"trace {tpath}: unreadable ({err}); skipped")
                continue
            key = (str(trace.task or tpath.parent.name), _as_int(trace.doc_id))
            traces.setdefault(key, []).append((trace, tpath))
        err_file = run.trace_dir / "errors.jsonl"
        if err_file.exists():
            seen = set()
            for rec in _read_jsonl(err_file, run.notes):
                ident = (rec.get("task"), rec.get("split"), _as_int(rec.get("doc_id")), rec.get("cause"))
                if ident not in seen:  # one line per failed sample today; older logs may repeat records
                    seen.add(ident)
                    run.errors.append(rec)
    errors = {(str(e.get("task")), _as_int(e.get("doc_id"))): e for e in run.errors}
    for task in tasks:
        spath = path.parent / f"{date_id}_samples_{task}.jsonl"
        samples: list[Sample] = []
        if spath.exists():
            for rec in _read_jsonl(spath, run.notes):
                samples.append(Sample(run.index, task, _as_int(rec.get("doc_id")), rec))
        else:
            run.notes.append(f"task {task}: no samples file {spath.name} (run without --log_samples?); samples listed from traces and errors")
            ids = {d for (t, d) in list(traces) + list(errors) if t == task}
            samples = [Sample(run.index, task, d, None) for d in ids]
        for s in samples:
            key = (task, s.doc_id)
            for trace, tpath in traces.get(key, []):
                if s.trace is None and _belongs(run, s, trace):
                    s.trace, s.trace_path = trace, tpath
                else:
                    run.stale_traces += 1
            s.error = errors.get(key)
            s.needle = _needle_of(s)
        samples.sort(key=lambda s: (not isinstance(s.doc_id, int), s.doc_id if isinstance(s.doc_id, int) else str(s.doc_id)))
        run.samples[task] = samples
    if run.stale_traces:
        run.notes.append(f"{run.stale_traces} trace(s) in {run.trace_dir} have this run's (task, doc_id) but another prompt or "
                         f"method (left by another run into the same trace_dir?); ignored")
    stray = [k for k in errors if k[0] not in run.samples]
    if stray:
        run.notes.append(f"{len(stray)} error record(s) in errors.jsonl are for tasks this results file does not have")


def _belongs(run: Run, sample: Sample, trace: CoSTrace) -> bool:
    if sample.record is not None and isinstance(sample.record.get("input"), str) and trace.question is not None and not trace.prompt_from:
        if sample.record["input"] != trace.question:
            return False
    expected = run.expected_method
    return not (expected and trace.method and trace.method != expected)


# -- needle position ---------------------------------------------------------------------------
_questions_cache: dict[Path, dict[str, dict]] = {}


def _questions_near(video: Path) -> dict[str, dict]:
    """``questions.json`` records (by resolved video path) from the folders above ``video``."""
    out: dict[str, dict] = {}
    for folder in list(video.parents)[:3]:
        qfile = folder / "questions.json"
        if qfile not in _questions_cache:
            table: dict[str, dict] = {}
            if qfile.is_file():
                try:
                    for rec in json.loads(qfile.read_text(encoding="utf-8")):
                        if isinstance(rec, dict) and rec.get("video"):
                            table[os.path.realpath(folder / rec["video"])] = rec
                except (OSError, json.JSONDecodeError, TypeError):
                    pass
            _questions_cache[qfile] = table
        out.update(_questions_cache[qfile])
    return out


def _needle_from(record) -> tuple[int, int] | None:
    if isinstance(record, dict) and record.get("needle_start") is not None and record.get("needle_end") is not None:
        try:
            return int(record["needle_start"]), int(record["needle_end"])
        except (TypeError, ValueError):
            return None
    return None


def _needle_of(s: Sample) -> tuple[int, int] | None:
    rec = s.record or {}
    found = _needle_from(rec.get("doc"))
    if found:
        return found
    for value in rec.values():  # a metric record that carries the doc's fields
        found = _needle_from(value)
        if found:
            return found
    video = (s.trace.video if s.trace else None) or (s.error or {}).get("video")
    if video:
        rec = _questions_near(Path(video)).get(os.path.realpath(video))
        return _needle_from(rec)
    return None


# -- per-sample facts --------------------------------------------------------------------------
def _num(x) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)):
        return float(x)
    return None


def correctness(s: Sample, metric_names: list[str]) -> float | None:
    """1.0 / 0.0 when the sample's metric entries say whether it is right, else None."""
    rec = s.record
    if rec is None:
        return None
    names = sorted(metric_names, key=lambda m: ("acc" not in m, m))
    for m in names:
        value = rec.get(m)
        if _num(value) is not None and _num(value) in (0.0, 1.0):
            return _num(value)
        if isinstance(value, dict):
            for key in ("correct", "acc", "score"):
                if _num(value.get(key)) is not None and _num(value.get(key)) in (0.0, 1.0):
                    return _num(value[key])
            if "pred_answer" in value and "answer" in value:
                return float(str(value["pred_answer"]).strip() == str(value["answer"]).strip())
    return None


def grounding(s: Sample) -> dict | None:
    """Needle grounding of one sample (:func:`cos.grounding.window_grounding`): None when the trace has no
    code or the needle is unknown."""
    if s.trace is None or s.needle is None:
        return None
    return window_grounding(s.trace.frame_indices, s.trace.binary_code, *s.needle)


def _relevant_fraction(trace: CoSTrace | None) -> float | None:
    if not trace or trace.binary_code is None:
        return None
    code = trace.binary_code
    return sum(1 for c in code if c) / len(code) if code else None


def _total_time(trace: CoSTrace | None) -> float | None:
    timings = (trace.timings if trace else None) or {}
    if _num(timings.get("total")) is not None:
        return float(timings["total"])
    values = [v for v in timings.values() if _num(v) is not None]
    return float(sum(values)) if values else None


def _selector_seconds(selector: dict) -> float | None:
    values = [float(v) for v in (selector.get("timings") or {}).values() if _num(v) is not None]
    return sum(values) if values else None


def selector_stats(samples: list[Sample]) -> dict | None:
    """What the frame selector did over ``samples`` (None when none of their traces has a ``selector``): ``n`` traces
    with one, ``fallback`` (the backend's own rule was used), ``short`` (the rule returned fewer frames than requested),
    ``cache_hits``, and the medians of ``candidates`` per sample and of ``seconds`` (sum of ``selector.timings``).

    >>> from cos.trace import CoSTrace
    >>> sel = {"candidates": [0, 30, 60], "selected": [0], "requested": 2, "fallback": "too few", "timings": {"select_score": 0.5}}
    >>> stats = selector_stats([Sample(1, "t", 0, None, CoSTrace(selector=sel)), Sample(1, "t", 1, None, CoSTrace())])
    >>> (stats["n"], stats["fallback"], stats["short"], stats["candidates"], stats["seconds"])
    (1, 1, 1, 3, 0.5)
    """
    sels = [s.trace.selector for s in samples if s.trace is not None and isinstance(s.trace.selector, dict)]
    if not sels:
        return None

    def short(sel: dict) -> bool:
        selected, requested = sel.get("selected"), sel.get("requested")
        return isinstance(selected, list) and _num(requested) is not None and len(selected) < requested

    return {"n": len(sels), "fallback": sum(1 for x in sels if x.get("fallback")), "short": sum(1 for x in sels if short(x)),
            "cache_hits": sum(1 for x in sels if x.get("cache_hit")),
            "candidates": _median([len(x.get("candidates") or []) for x in sels]), "seconds": _median([_selector_seconds(x) for x in sels])}


def selector_label(method: str, stats: dict | None) -> str:
    """The compact selector column: ``-`` (uniform), ``bolt``, ``aks (3 fallback, 2 short)``.

    >>> selector_label("aks", {"fallback": 3, "short": 0}), selector_label("uniform", None)
    ('aks (3 fallback)', '-')
    """
    if method == "uniform" and stats is None:
        return "-"
    extra = [f"{stats[k]} {k}" for k in ("fallback", "short") if stats and stats.get(k)]
    return method + (f" ({', '.join(extra)})" if extra else "")


# -- strips --------------------------------------------------------------------------------------
def _find_video(video: str | None, video_root) -> Path | None:
    if not video:
        return None
    p = Path(video)
    candidates = [p]
    if video_root is not None:
        root = Path(video_root)
        candidates += [root / p] if not p.is_absolute() else []
        candidates += [root / p.name]
        candidates += [root / Path(*p.parts[-2:])] if len(p.parts) >= 2 else []
    for c in candidates:
        if c.is_file():
            return c
    return None


def _render_strips(runs: list[Run], strip_dir: Path, video_root, max_strips: int | None, thumb: int) -> tuple[int, int, list[str]]:
    from cos.viz import frames_for_trace, render_strip

    done, skipped, notes = 0, 0, []
    for run in runs:
        for s in run.all_samples():
            if s.trace is None or not s.trace.frame_indices:
                continue
            if max_strips is not None and done >= max_strips:
                skipped += 1
                continue
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"run{run.index}_{s.task}_{s.doc_id}") + ".png"
            frames, note = None, None
            video = _find_video(s.trace.video, video_root)
            if video is None:
                s.strip_note = "no video: placeholders" if s.trace.video else "no video file (images): placeholders"
                note = f"video not found ({s.trace.video}): placeholder tiles" if s.trace.video else None
            else:
                try:
                    frames, note = frames_for_trace(s.trace, video)
                    if note:
                        s.strip_note = "frames differ from the trace"
                except CosError as err:
                    note, s.strip_note = f"cannot read the video: {err}", "video unreadable: placeholders"
            try:
                s.strip = render_strip(s.trace, frames, strip_dir / name, thumb=thumb, note=note, truth=s.needle)
                done += 1
            except CosError as err:
                s.strip_note = f"no strip: {err}"
    if skipped:
        notes.append(f"strips were drawn for the first {done} samples with traces; {skipped} more were skipped (max_strips={max_strips})")
    return done, skipped, notes


# -- HTML ------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:1.5em auto;max-width:1400px;
color:#1b1b1b;line-height:1.35;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:.15em}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.88em}
th,td{border:1px solid #d4d4d4;padding:.22em .5em;text-align:left;vertical-align:top}
th{background:#f1f1f1}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fdecec}.ok{color:#1d7a35}.bad{color:#b3261e}.muted{color:#777}
.small{font-size:.85em}code{font-size:.92em;background:#f5f5f5;padding:0 .2em}
details{margin:.3em 0}summary{cursor:pointer;font-weight:600}
.cause{max-width:48em;white-space:pre-wrap;word-break:break-word}
.pred{max-width:24em;white-space:pre-wrap;word-break:break-word}
ul.notes li{color:#7a4b00}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _f(x, spec=".3f", na="n/a") -> str:
    v = _num(x)
    return na if v is None else format(v, spec)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _rel(target: Path, base: Path) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(target), os.path.abspath(base))
    except ValueError:  # another drive (Windows)
        rel = os.path.abspath(target)
    return "/".join(rel.split(os.sep))


def _href(target: Path, base: Path) -> str:
    from urllib.parse import quote

    return quote(_rel(target, base), safe="/._-~")


def _label_runs(runs: list[Run]) -> None:
    keys = sorted({k for r in runs for k in r.model_args} - _NOT_CONFIG)
    differing = [k for k in keys if len({r.model_args.get(k) for r in runs}) > 1]
    for r in runs:
        parts = [f"{k}={r.model_args[k]}" for k in differing if k in r.model_args]
        r.label = f"run {r.index}: {r.model}" + (f" ({', '.join(parts)})" if parts else "")


def _metric_value_cells(run: Run, task: str, metric: str) -> str:
    value = (run.results.get(task) or {}).get(metric)
    if _num(value) is None:
        shown = "–" if value is None else "n/a" if isinstance(value, float) else _e(value)  # NaN: not available
        return f'<td class="num muted">{shown}</td>'
    v = float(value)
    return f'<td class="num">{v:.3f}</td>' if abs(v) <= 1.0 else f'<td class="num">{v:.2f}</td>'


def _histogram(runs: list[Run]) -> str | None:
    """α histogram of the CoS runs as a PNG data URI (None when no run has α)."""
    series = []
    for r in runs:
        alphas = [float(s.trace.alpha) for s in r.all_samples()
                  if s.trace and s.trace.binary_code is not None and _num(s.trace.alpha) is not None]
        if alphas:
            series.append((r.label if len(r.label) < 60 else r.label[:57] + "…", alphas))
    if not series:
        return None
    try:
        import matplotlib
    except ImportError:  # an optional extra (cos-longva[plot]); the table above the image still gives the numbers
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 2.4), dpi=100)
    bins = [i / 20 for i in range(21)]
    top = 0
    for label, alphas in series:
        counts, _, _ = ax.hist(alphas, bins=bins, histtype="step" if len(series) > 1 else "bar", linewidth=1.6, label=f"{label} (n={len(alphas)})",
                color=None if len(series) > 1 else "#3a78b5")
        top = max(top, max(counts))
    ax.set_ylim(0, top * (1.25 + 0.15 * len(series)) + 0.5)  # room for the legend above the bars
    ax.set_xlim(0, 1)
    ax.set_xlabel("α")
    ax.set_ylabel("samples")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _render_html(runs: list[Run], notes: list[str], log_dir: Path, out_path: Path, strips_dir: Path | None) -> str:
    base = out_path.parent
    all_samples = [s for r in runs for s in r.all_samples()]
    failures = [(r, e) for r in runs for e in r.errors]
    n_traces = sum(1 for s in all_samples if s.trace)
    h: list[str] = []
    w = h.append
    w("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">")
    w("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    w(f"<title>CoS report: {_e(log_dir.name)}</title><style>{CSS}</style></head><body>")
    w("<h1>CoS run report</h1>")
    w(f"<p class=\"small\">log folder <code>{_e(log_dir)}</code> · {len(runs)} run(s) · {len(all_samples)} sample(s) · "
      f"{n_traces} with a trace · {len(failures)} failed · generated {_e(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}</p>")
    w('<p class="small">Sections: <a href="#runs">runs</a> · <a href="#metrics">metrics</a> · <a href="#cos">CoS statistics</a> · '
      '<a href="#failures">failed samples</a> · <a href="#slowest">slowest samples</a> · <a href="#samples">all samples</a></p>')

    # runs
    w('<h2 id="runs">Runs</h2><p class="small"><b>selector</b>: who chose the frames ("uniform": the backend\'s own sampling rule) '
      'and its scoring model; from the traces: samples that <b>fell back</b> to the backend\'s rule, selections that returned '
      '<b>fewer</b> frames than requested, the median <b>candidates</b> per sample and the median selector seconds per sample '
      '(decode + score + rule).</p><table><tr><th>run</th><th>model</th><th>model_args</th><th>results file</th><th>trace_dir</th>'
      '<th>traces</th><th>failed</th><th>selector</th><th>fell back</th><th>fewer</th><th>candidates (median)</th>'
      '<th>selector s (median)</th></tr>')
    for r in runs:
        st = selector_stats(r.all_samples())
        sel_name = r.selector if r.selector == "uniform" else " · ".join(x for x in (r.selector, r.selector_model) if x)
        sel_cells = (f'<td class="small">{_e(sel_name)}</td>' + (
            f'<td class="num{" bad" if st["fallback"] else ""}">{st["fallback"]}/{st["n"]}</td><td class="num">{st["short"]}</td>'
            f'<td class="num">{_f(st["candidates"], "g")}</td><td class="num">{_f(st["seconds"], ".2f")}</td>' if st else
            '<td class="num muted">–</td>' * 4))
        args = ", ".join(f"{k}={v}" for k, v in r.model_args.items())
        td = (f"<code>{_e(r.trace_dir)}</code>" if r.trace_dir else
              f'<span class="bad">{_e(r.trace_dir_given)} (not found)</span>' if r.trace_dir_given else '<span class="muted">none</span>')
        w(f"<tr><td>{r.index}</td><td>{_e(r.model)}</td><td class=\"small cause\">{_e(args)}</td>"
          f"<td><a href=\"{_href(r.results_path, base)}\">{_e(r.results_path.name)}</a></td><td class=\"small\">{td}</td>"
          f"<td class=\"num\">{sum(1 for s in r.all_samples() if s.trace)}</td><td class=\"num\">{len(r.errors)}</td>{sel_cells}</tr>")
    w("</table>")

    # metrics side by side
    w('<h2 id="metrics">Metrics per task</h2><p class="small">One column per run (model configuration); the headers name the '
      'model arguments that differ between runs. n = samples evaluated.</p>')
    tasks = sorted({t for r in runs for t in r.results if isinstance(r.results[t], dict)})
    w("<table><tr><th>task</th><th>metric</th>" + "".join(f"<th>{_e(r.label)}</th>" for r in runs) + "</tr>")
    for task in tasks:
        metrics = sorted({m for r in runs for m, v in (r.results.get(task) or {}).items()
                          if m != "alias" and "_stderr" not in m and (_num(v) is not None or v is None or isinstance(v, str))})
        metrics = [m for m in metrics if any(_num((r.results.get(task) or {}).get(m)) is not None for r in runs)] or metrics
        rows = [("n", None)] + [(m, m) for m in metrics] + [("failed samples", "__failed")]
        for i, (name, key) in enumerate(rows):
            cells = []
            for r in runs:
                if key is None:
                    eff = (r.n_samples.get(task) or {}).get("effective") if task in r.results else None
                    cells.append(f'<td class="num">{_e(eff if eff is not None else len(r.samples.get(task, [])) if task in r.results else "–")}</td>')
                elif key == "__failed":
                    k = sum(1 for e in r.errors if str(e.get("task")) == task) if task in r.results else None
                    cells.append(f'<td class="num{" bad" if k else ""}">{"–" if k is None else k}</td>')
                else:
                    cells.append(_metric_value_cells(r, task, key))
            head = f'<td rowspan="{len(rows)}"><b>{_e(task)}</b></td>' if i == 0 else ""
            w(f"<tr>{head}<td>{_e(name)}</td>{''.join(cells)}</tr>")
    w("</table>")

    # CoS statistics
    w('<h2 id="cos">CoS statistics</h2>')
    w('<p class="small">Per run and task, from the traces. <b>relevant</b>: fraction of the sampled frames the binary code marks '
      'relevant (mean over samples; pooled = over all frames). <b>Grounding</b> (tasks whose docs carry <code>needle_start</code> / '
      '<code>needle_end</code>): <b>hit rate</b> = share of samples with at least one sampled needle frame marked relevant; '
      '<b>recall</b> = share of the sampled needle frames marked relevant (the task\'s <code>needle_grounding</code>); '
      '<b>precision</b> = share of the relevant frames that lie in the needle. Samples whose needle fell between the sampled frames '
      'have no hit/recall.</p>')
    w("<table><tr><th>run</th><th>task</th><th>traces</th><th>with code</th><th>α mean</th><th>α median</th><th>α min–max</th>"
      "<th>relevant (mean)</th><th>relevant (pooled)</th><th>needle known</th><th>needle not sampled</th><th>hit rate</th>"
      "<th>recall</th><th>precision</th><th>median s/sample</th></tr>")
    for r in runs:
        for task, samples in r.samples.items():
            traced = [s for s in samples if s.trace]
            coded = [s for s in traced if s.trace.binary_code is not None]
            alphas = [_num(s.trace.alpha) for s in coded]
            alphas = [a for a in alphas if a is not None]
            fr = [_relevant_fraction(s.trace) for s in coded]
            total_frames = sum(len(s.trace.binary_code) for s in coded)
            pooled = sum(sum(1 for c in s.trace.binary_code if c) for s in coded) / total_frames if total_frames else None
            g = [grounding(s) for s in coded]
            known = [x for x in g if x is not None]
            sampled = [x for x in known if x["sampled"]]
            w(f"<tr><td>{_e(r.label)}</td><td>{_e(task)}</td><td class=\"num\">{len(traced)}</td><td class=\"num\">{len(coded)}</td>"
              f"<td class=\"num\">{_f(_mean(alphas))}</td><td class=\"num\">{_f(_median(alphas))}</td>"
              f"<td class=\"num\">{(_f(min(alphas)) + '–' + _f(max(alphas))) if alphas else 'n/a'}</td>"
              f"<td class=\"num\">{_f(_mean(fr))}</td><td class=\"num\">{_f(pooled)}</td>"
              f"<td class=\"num\">{len(known)}</td><td class=\"num\">{len(known) - len(sampled)}</td>"
              f"<td class=\"num\">{_f(_mean([x['hit'] for x in sampled]))}</td>"
              f"<td class=\"num\">{_f(_mean([x['recall'] for x in sampled]))}</td>"
              f"<td class=\"num\">{_f(_mean([x['precision'] for x in known]))}</td>"
              f"<td class=\"num\">{_f(_median([_total_time(s.trace) for s in traced]), '.2f')}</td></tr>")
    w("</table>")
    w("<h3>α distribution</h3>")
    bins = [(i / 10, (i + 1) / 10) for i in range(10)]
    rows = []
    for r in runs:
        alphas = [_num(s.trace.alpha) for s in r.all_samples() if s.trace and s.trace.binary_code is not None]
        alphas = [a for a in alphas if a is not None]
        if alphas:
            counts = [sum(1 for a in alphas if lo <= a < hi or (hi == 1.0 and a == 1.0)) for lo, hi in bins]
            rows.append(f"<tr><td>{_e(r.label)}</td>" + "".join(f'<td class="num">{c}</td>' for c in counts) + "</tr>")
    if rows:
        w("<table class=\"small\"><tr><th>samples with α in</th>" + "".join(f"<th>[{lo:.1f}, {hi:.1f}{']' if hi == 1.0 else ')'}</th>"
                                                             for lo, hi in bins) + "</tr>" + "".join(rows) + "</table>")
        hist = _histogram(runs)
        if hist:
            w(f'<img src="{hist}" alt="histogram of α per CoS run" width="520" height="240">')
    else:
        w('<p class="muted">No trace with a binary code (no CoS run with traces): no α distribution.</p>')

    # failures
    w(f'<h2 id="failures">Failed samples ({len(failures)})</h2>')
    if failures:
        w('<p class="small">From <code>errors.jsonl</code> in each run\'s trace_dir; these samples were answered with an empty '
          'prediction.</p><table><tr><th>run</th><th>task</th><th>split</th><th>doc_id</th><th>video</th><th>error</th>'
          '<th>cause</th><th>rank</th></tr>')
        for r, e in failures:
            w(f"<tr class=\"fail\"><td>{r.index}</td><td>{_e(e.get('task'))}</td><td>{_e(e.get('split'))}</td>"
              f"<td class=\"num\">{_e(e.get('doc_id'))}</td><td class=\"small cause\">{_e(e.get('video'))}</td>"
              f"<td>{_e(e.get('error'))}</td><td class=\"small cause\">{_e(e.get('cause'))}</td><td class=\"num\">{_e(e.get('rank'))}</td></tr>")
        w("</table>")
    else:
        w('<p class="ok">No failed sample recorded.</p>')

    # slowest
    timed = sorted(((t, r, s) for r in runs for s in r.all_samples() if (t := _total_time(s.trace)) is not None),
                   key=lambda x: -x[0])[:SLOWEST]
    w('<h2 id="slowest">Slowest samples</h2>')
    if timed:
        w("<table><tr><th>run</th><th>task</th><th>doc_id</th><th>total s</th><th>largest stages (s)</th><th>frames</th><th>strip</th></tr>")
        for t, r, s in timed:
            stages = sorted(((k, v) for k, v in (s.trace.timings or {}).items() if k != "total" and _num(v) is not None),
                            key=lambda kv: -kv[1])[:4]
            w(f"<tr><td>{r.index}</td><td>{_e(s.task)}</td><td class=\"num\">{_e(s.doc_id)}</td><td class=\"num\">{t:.2f}</td>"
              f"<td class=\"small\">{_e(', '.join(f'{k} {v:.2f}' for k, v in stages))}</td>"
              f"<td class=\"num\">{len(s.trace.frame_indices or [])}</td><td>{_strip_link(s, base)}</td></tr>")
        w("</table>")
    else:
        w('<p class="muted">No trace has timings.</p>')

    # all samples
    w(f'<h2 id="samples">All samples ({len(all_samples)})</h2>')
    if strips_dir is not None:
        w(f'<p class="small">Strips (see <code>cos show --help</code> for how to read them) are in <code>{_e(_rel(strips_dir, base))}/</code>.</p>')
    for r in runs:
        for task, samples in r.samples.items():
            metric_names = [m.split(",")[0] for m in (r.results.get(task) or {}) if "," in m and "_stderr" not in m]
            right = [c for c in (correctness(s, metric_names) for s in samples) if c is not None]
            acc = f" · correct {int(sum(right))}/{len(right)}" if right else ""
            failed = sum(1 for s in samples if s.error)
            w(f"<details{' open' if len(samples) <= 200 else ''}><summary>{_e(r.label)} · {_e(task)} · {len(samples)} samples{acc}"
              f"{f' · {failed} failed' if failed else ''}</summary>")
            w("<table><tr><th>doc_id</th><th>target</th><th>prediction</th><th>correct</th><th>α</th><th>relevant</th>"
              "<th>needle</th><th>grounding (hit / recall)</th><th>total s</th><th>status</th><th>strip</th></tr>")
            for s in samples:
                c = correctness(s, metric_names)
                mark = '<span class="ok">✓</span>' if c == 1.0 else '<span class="bad">✗</span>' if c == 0.0 else '<span class="muted">–</span>'
                t = s.trace
                code = t.binary_code if t else None
                rel = f"{sum(1 for x in code if x)}/{len(code)}" if code is not None else "–"
                g = grounding(s)
                gtxt = ("needle not sampled" if g and not g["sampled"] else
                        f"{'hit' if g['hit'] else 'miss'} / {g['recall']:.2f}" if g else "–")
                status = (f'<span class="bad">failed: {_e(s.error.get("error"))}: {_e(s.error.get("cause"))}</span>' if s.error else
                          "ok" if s.trace else '<span class="muted">no trace</span>')
                fell_back = t.selector.get("fallback") if t and isinstance(t.selector, dict) else None
                if fell_back:
                    status += f'<br><span class="muted">selector fell back: {_e(fell_back)}</span>'
                needle = f"[{s.needle[0]}, {s.needle[1]})" if s.needle else "–"
                alpha = _f(t.alpha) if code is not None else "–"
                row_class = ' class="fail"' if s.error else ""
                pred = _e(s.prediction) if s.prediction else '<span class="muted">(empty)</span>'
                w(f"<tr{row_class}><td class=\"num\">{_e(s.doc_id)}</td><td>{_e(s.target)}</td>"
                  f"<td class=\"pred\">{pred}</td><td>{mark}</td>"
                  f"<td class=\"num\">{alpha}</td><td class=\"num\">{rel}</td><td class=\"num\">{needle}</td><td>{_e(gtxt)}</td>"
                  f"<td class=\"num\">{_f(_total_time(t) if s.trace else None, '.2f', '–')}</td><td class=\"small cause\">{status}</td>"
                  f"<td>{_strip_link(s, base)}</td></tr>")
            w("</table></details>")

    all_notes = notes + [f"run {r.index}: {n}" for r in runs for n in r.notes]
    if all_notes:
        w('<h2 id="notes">Notes</h2><ul class="notes small">' + "".join(f"<li>{_e(n)}</li>" for n in all_notes) + "</ul>")
    w("</body></html>")
    return "\n".join(h)


def _strip_link(s: Sample, base: Path) -> str:
    if s.strip is None:
        return f'<span class="muted small">{_e(s.strip_note)}</span>' if s.strip_note else '<span class="muted">–</span>'
    extra = f' <span class="muted small">({_e(s.strip_note)})</span>' if s.strip_note else ""
    return f'<a href="{_href(s.strip, base)}">strip</a>{extra}'


def build_report(log_dir, out_path, strips: bool = True, video_root=None, *, max_strips: int | None = 200,
                 strip_thumb: int = 64) -> Path:
    """Write the HTML report of the lmms-eval output folder ``log_dir`` to ``out_path`` and return its path.

    ``strips``: draw each sample's shot strip (at most ``max_strips``, None = all) into
    ``<out stem>_strips/`` beside the report and link it; videos are looked up at the trace's path,
    then under ``video_root``; a sample whose video is not found gets a strip with placeholder tiles.
    """
    return _build(log_dir, out_path, strips, video_root, max_strips, strip_thumb)[0]


def _build(log_dir, out_path, strips, video_root, max_strips, strip_thumb) -> tuple[Path, list[Run]]:
    log_dir, out_path = Path(log_dir), Path(out_path)
    if max_strips is not None and max_strips < 0:
        raise ConfigError(f"max_strips must be >= 0 or None, got {max_strips}")
    runs, notes = load_runs(log_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    strips_dir = None
    if strips:
        strips_dir = out_path.parent / f"{out_path.stem}_strips"
        _, _, strip_notes = _render_strips(runs, strips_dir, video_root, max_strips, strip_thumb)
        notes += strip_notes
    text = _render_html(runs, notes, log_dir, out_path, strips_dir)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path, runs


# -- command line ----------------------------------------------------------------------------------
def summary_rows(runs: list[Run]) -> list[dict]:
    """One row per (run, task): samples, the task's headline metric, grounding (mean recall over the
    samples whose needle was sampled, mean precision over the samples with a relevant frame; None without codes or
    needles), median seconds per sample, failed; the frame selector (``selector``: :func:`selector_label`;
    ``selector_stats``: :func:`selector_stats` of the task's samples, None when no trace has a selector)."""
    rows = []
    for r in runs:
        for task in sorted(r.results):
            if not isinstance(r.results[task], dict) or task not in r.samples:
                continue
            samples = r.samples.get(task, [])
            metrics = [(k, v) for k, v in r.results[task].items() if k.endswith(",none") and "stderr" not in k and _num(v) is not None]
            found = [g for s in samples if (g := grounding(s)) is not None]
            recalls = [g["recall"] for g in found if g["recall"] is not None]
            precisions = [g["precision"] for g in found if g["precision"] is not None]
            times = [t for s in samples if (t := _total_time(s.trace)) is not None]
            eff = (r.n_samples.get(task) or {}).get("effective")
            sel = selector_stats(samples)
            rows.append({"selector": selector_label(r.selector, sel), "selector_stats": sel,
                         "model": r.model, "name": r.name, "task": task, "n": eff if eff is not None else len(samples),
                         "metric": metrics[0][0].split(",")[0] if metrics else None, "value": _num(metrics[0][1]) if metrics else None,
                         "grounding": _mean(recalls), "precision": _mean(precisions), "seconds": _median(times),
                         "failed": sum(1 for e in r.errors if str(e.get("task")) == task)})
    return rows


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` pairs right only under A and ``c`` right only under B:
    ``min(1, 2 · P(X ≤ min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)`` (1.0 when no pair disagrees).

    >>> mcnemar_exact(10, 0)
    0.001953125
    """
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_difference(a, b, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy of B minus accuracy of A over the same questions (``a[i]``, ``b[i]`` ∈ {0, 1}): the difference, its
    ``level`` percentile interval from a paired bootstrap (``resamples`` resamples of the questions, drawn with
    ``numpy.random.default_rng(seed)``), and the exact McNemar test of the discordant pairs."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"a and b must be equally long, non-empty 0/1 vectors, got {a.shape} and {b.shape}")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(resamples)])
    lo, hi = np.percentile(means, [50 * (1 - level), 100 - 50 * (1 - level)])
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return {"n": int(a.size), "acc_a": float(a.mean()), "acc_b": float(b.mean()), "difference": float(diff.mean()),
            "low": float(lo), "high": float(hi), "level": level, "only_a": only_a, "only_b": only_b,
            "mcnemar_p": mcnemar_exact(only_a, only_b)}


def _comparisons(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(reference, run) pairs: every CoS run against the baselines on the same frames (no selector, or the same selector
    with the same settings: :attr:`Run.selector_key`) and against the plain baseline; every baseline with a selector
    against the plain baseline."""
    plain = [r for r in runs if r.expected_method == "uniform" and r.selector == "uniform"]
    pairs = []
    for run in runs:
        if run.expected_method == "cos":
            same = [b for b in runs if b.expected_method == "uniform" and b.selector_key == run.selector_key and b not in plain]
            pairs += [(base, run) for base in plain + same]
        elif run.expected_method == "uniform" and run.selector != "uniform":
            pairs += [(base, run) for base in plain]
    return pairs


def paired_rows(runs: list[Run], resamples: int = 2000) -> list[dict]:
    """Paired accuracy differences (see :func:`_comparisons` for which runs are compared) on the same task, over the
    documents both answered with a known correctness (failed samples count as wrong, as lmms-eval scores their empty
    prediction). ``acc_a``/``only_a``: the reference run ("baseline"); ``acc_b``/``only_b``: the run ("cos")."""
    rows = []
    for base, other in _comparisons(runs):
        for task in sorted(set(other.samples) & set(base.samples)):
            def right(run, task=task):
                metrics = [k.split(",")[0] for k in (run.results.get(task) or {}) if "stderr" not in k]
                return {s.doc_id: c for s in run.samples[task] if (c := correctness(s, metrics)) is not None}

            a, b = right(base), right(other)
            docs = sorted(set(a) & set(b))
            if not docs:
                continue
            stats = paired_difference([a[d] for d in docs], [b[d] for d in docs], resamples=resamples)
            rows.append({"task": task, "baseline": base.model, "cos": other.model, "baseline_name": base.name,
                         "cos_name": other.name, **stats})
    return rows


def format_paired(rows: list[dict]) -> str:
    def line(r: dict) -> str:
        run, ref = r.get("cos_name", r["cos"]), r.get("baseline_name", r["baseline"])
        cos_vs_same_frames = ref.split("+")[1:] == run.split("+")[1:] and ":" in run  # CoS against its own frames' baseline
        only = (f"right only with CoS {r['only_b']}, only without {r['only_a']}" if cos_vs_same_frames
                else f"right only in {run} {r['only_b']}, only in {ref} {r['only_a']}")
        return (f"paired {r['task']}: {run} {r['acc_b']:.3f} vs {ref} {r['acc_a']:.3f} over {r['n']} questions: "
                f"difference {r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] ({100 * r['level']:.0f}% paired bootstrap), "
                f"{only}, McNemar exact p = {r['mcnemar_p']:.3g}")

    return "\n".join(line(r) for r in rows)


def format_summary(rows: list[dict]) -> str:
    """The rows of :func:`summary_rows` as a fixed-width table."""
    def fmt(x, spec=".3f"):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

    width = max([22] + [len(str(row.get("name", row["model"]))) for row in rows])  # long run names keep the columns aligned
    lines = [f"{'run':{width}s} {'task':22s} {'n':>4s} {'metric':>12s} {'value':>6s} {'recall':>7s} {'precision':>9s} {'s/sample':>9s} "
             f"{'failed':>6s} selector"]
    for row in rows:
        lines.append(f"{row.get('name', row['model']):{width}s} {row['task']:22s} {row['n']!s:>4s} {str(row['metric'] or '-'):>12s} "
                     f"{fmt(row['value']):>6s} {fmt(row['grounding']):>7s} {fmt(row.get('precision')):>9s} "
                     f"{fmt(row['seconds'], '.2f'):>9s} {row['failed']:>6d} {row.get('selector', '-')}")
    return "\n".join(lines)


def report_command(args) -> int:
    if args.text:
        runs, notes = load_runs(args.log_dir)
        print(format_summary(summary_rows(runs)))
        paired = paired_rows(runs)
        if paired:
            print(format_paired(paired))
        for path in sorted({str(r.results_path) for r in runs}):
            print(f"results: {path}")
        return 0
    out = Path(args.out) if args.out else Path(args.log_dir) / "report.html"
    path, runs = _build(args.log_dir, out, not args.no_strips, args.video_root,
                        None if args.all_strips else args.max_strips, args.strip_thumb)
    n = sum(len(r.all_samples()) for r in runs)
    failed = sum(len(r.errors) for r in runs)
    print(f"wrote {path} ({len(runs)} run(s), {n} sample(s), {failed} failed)")
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser(
        "report", allow_abbrev=False, help="one static HTML page about an lmms-eval output folder with CoS traces",
        description="Summarise an lmms-eval output folder (results, samples, and the traces / errors.jsonl in each run's "
                    "trace_dir) as one self-contained HTML page, with a shot strip per sample.")
    p.add_argument("log_dir", help="lmms-eval --output_path folder")
    p.add_argument("--out", help="output HTML file (default: LOG_DIR/report.html)")
    p.add_argument("--no-strips", action="store_true", help="do not draw the per-sample shot strips")
    p.add_argument("--video-root", help="folder to look for videos in when a trace's video path does not exist here")
    p.add_argument("--max-strips", type=int, default=200, help="draw at most this many strips (default 200)")
    p.add_argument("--all-strips", action="store_true", help="draw a strip for every sample with a trace")
    p.add_argument("--strip-thumb", type=int, default=64, help="thumbnail width in the strips (default 64)")
    p.add_argument("--text", action="store_true",
                   help="print a table (per run and task: metric, grounding, s/sample, failed, selector) instead")
    p.set_defaults(func=report_command)
    return p
