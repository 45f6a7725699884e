"""lmms-eval models: per registered backend (:mod:`cos_runtime.registry`) a uniform-sampling baseline and
a Chain-of-Shot model — for LongVA ``longva`` (class :class:`LongVA`) and ``cos_longva`` (:class:`CoSLongVA`).

All are simple models (``is_simple = True``): each ``generate_until`` request is one call of
:class:`cos_runtime.engine.Engine`. The model never knows the task: it reads the request tuple, asks
the task's ``doc_to_visual`` for the visual, and answers.

Long runs
---------
* **Bad samples.** A sample whose input cannot be answered — the video is missing, empty, not a video,
  truncated or corrupt; the task's ``doc_to_visual`` calls ``sys.exit`` (videomme and mlvu do that for a
  missing video) or raises ``OSError``; the question is empty or too long for the context budget; any
  other :class:`~cos.errors.CosError`, or CUDA out-of-memory — gets an empty prediction and an error
  record (sample, task, split, doc id, path, error type, cause). The run goes on. Records are logged,
  kept in ``<trace_dir>/errors.jsonl`` (one line per failed sample: a later failure of the same sample
  replaces its line, a later success removes it), and counted in the ``COS-SUMMARY`` line each process
  prints at the end of its requests.
* **Anything else is a bug and fails the run loudly.** lmms-eval catches exceptions and exits 0, and in
  a multi-process run the other ranks would then wait in a collective (NCCL: for lmms-eval's 60000 s
  timeout). So with several processes the failing rank prints the traceback and leaves with exit code
  :data:`FATAL_EXIT_CODE`, which makes ``accelerate launch``/``torchrun`` stop the other ranks and exit
  non-zero; with one process the exception propagates (lmms-eval logs it, writes no results file, and
  ``scripts/eval_task.sh`` exits 1).
* **Resume.** With a result cache (``result_cache_dir``; default ``<trace_dir>/result_cache``) every
  finished sample (answer + trace, or its error record) is written to disk atomically as soon as it is
  done, keyed by (model configuration, task, split, doc id, prompt, generation options, video file
  identity). Starting the same command again after a crash answers those samples from the cache without
  touching the model, so the logged samples equal those of an uninterrupted run. Out-of-memory errors are
  not cached (they may pass on a retry); input errors are (a fixed or re-downloaded video has a new
  size/mtime, hence a new key).
* Padding requests (lmms-eval repeats a rank's last request so all ranks run equally many) are not
  computed: their answers are discarded by lmms-eval.
* **Prefetching.** With ``prefetch`` > 0 (default 2) the next requests are resolved ahead and their videos
  decoded and preprocessed in a background thread (:mod:`cos_runtime.prefetch`) while the current one runs on
  the model. Nothing is recorded ahead: failures, cache replays and error records happen in each request's
  turn, exactly as in a serial run (``prefetch=0``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import threading
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

import cos
from cos.cache import ResultCache, file_identity, make_key
from cos.device import normalise_device
from cos.errors import CosError
from cos.pipeline import GenerationOptions
from cos.trace import CoSTrace, to_jsonable, trace_key, write_trace
from cos_runtime import registry
from cos_runtime.engine import Engine
from cos_runtime.options import ModelOptions
from cos_runtime.prefetch import Ahead, Prefetcher

#: exit status of a rank that hit an unexpected error in a multi-process run (EX_SOFTWARE)
FATAL_EXIT_CODE = 70
#: prefix of the per-process summary line (scripts/eval_task.sh sums these)
SUMMARY_PREFIX = "COS-SUMMARY"
#: result-cache format version (part of every key)
RESULT_CACHE_VERSION = 2


class VisualUnavailable(CosError):
    """The task's ``doc_to_visual`` could not produce the sample's visual (``sys.exit``, ``OSError``)."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(message)


_EXIT_PATH = re.compile(r"path\s*:?\s*(.+?)\s+does not exist")
_QUOTED_PATH = re.compile(r"""['"](/[^'"]+)['"]""")


def _path_from_exit_message(message) -> str | None:
    """The video path a task's error message names: videomme/mlvu exit with ``"video path:{path} does not
    exist, please check"``; nextqa raises ``FileNotFoundError("Tried both ['{path}', ...] ...")``."""
    text = str(message or "")
    match = _EXIT_PATH.search(text) or _QUOTED_PATH.search(text)
    return match.group(1) if match else None


def _visual_path(visual) -> str | None:
    if isinstance(visual, (str, os.PathLike)):
        return os.fspath(visual)
    if isinstance(visual, (list, tuple)) and len(visual) == 1 and isinstance(visual[0], (str, os.PathLike)):
        return os.fspath(visual[0])
    return None


def _describe_visual(visual) -> str | None:
    path = _visual_path(visual)
    if path is not None:
        return path
    if isinstance(visual, (list, tuple)):
        return f"<list of {len(visual)} images>"
    return None if visual is None else f"<{type(visual).__name__}>"


def visual_identity(visual) -> object:
    """What identifies a sample's visual content in the result-cache key."""
    if visual is None:
        return None
    path = _visual_path(visual)
    if path is not None:
        return file_identity(path)
    if isinstance(visual, (list, tuple)):
        digest = hashlib.sha256()
        for item in visual:
            if isinstance(item, (str, os.PathLike)):
                digest.update(json.dumps(file_identity(item), sort_keys=True).encode())
            else:
                try:
                    array = np.asarray(item)
                except Exception:  # noqa: BLE001 - an unhashable item: identify by type only
                    digest.update(type(item).__name__.encode())
                    continue
                digest.update(str((array.dtype, array.shape)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        return {"images": len(visual), "sha256": digest.hexdigest()}
    return {"type": type(visual).__name__}


class ErrorLog:
    """``errors.jsonl``: one record per failed sample, safe for several processes (``flock``).

    ``upsert`` replaces the sample's previous line (a resumed run never duplicates it); ``discard``
    removes it when the sample is answered later. Every rewrite is atomic (temporary file + rename).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.Lock()

    @staticmethod
    def sample_key(record: dict) -> tuple:
        return (record.get("task"), record.get("split"), record.get("doc_id"))

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> list[dict]:
        """The records, one per sample (if a file has duplicates, e.g. from older runs, the last wins)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        records: dict[tuple, dict] = {}
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            records.pop(self.sample_key(record), None)
            records[self.sample_key(record)] = record
        return list(records.values())

    def _write(self, records: list[dict]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(to_jsonable(r), ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, self.path)

    def upsert(self, record: dict) -> None:
        key = self.sample_key(record)
        with self._locked():
            records = [r for r in self.read() if self.sample_key(r) != key]
            self._write(records + [record])

    def discard(self, task, split, doc_id) -> None:
        if not self.path.exists():
            return
        key = (task, split, doc_id)
        with self._locked():
            records = self.read()
            kept = [r for r in records if self.sample_key(r) != key]
            if len(kept) != len(records):
                self._write(kept)


def baseline_prompt(doc_to_visual, doc, context: str, gen_kwargs: dict, spec) -> tuple[str, dict, str | None]:
    """The prompt and generation kwargs lmms-eval gives the CoS model's *baseline* for this document.

    Tasks pick prompt kwargs by the ``--model`` name (videomme has an entry for ``llava_vid``, so
    ``--model llava_vid`` is asked "...The best answer is:" while any other name gets the ``default``
    prompt). CoS and its baseline must answer the same prompt to be compared, so a CoS model whose task
    has an entry for its baseline's id (and none for its own) rebuilds the prompt with that entry through
    the task's own ``doc_to_text`` (reached through the bound ``doc_to_visual`` lmms-eval passes), and
    takes the baseline's model-specific generation kwargs. Returns ``(context, gen_kwargs, the baseline id
    or None when nothing changed)``.
    """
    task = getattr(doc_to_visual, "__self__", None)
    config = getattr(task, "config", None)
    kwargs = getattr(config, "lmms_eval_specific_kwargs", None)
    baseline = spec.baseline_model
    if not isinstance(kwargs, dict) or baseline not in kwargs or spec.cos_model in kwargs:
        return context, gen_kwargs, None
    doc_to_text = getattr(config, "doc_to_text", None)
    if not callable(doc_to_text):
        return context, gen_kwargs, None
    context = doc_to_text(doc, lmms_eval_specific_kwargs=dict(kwargs[baseline]))
    generation = getattr(config, "model_specific_generation_kwargs", None)
    if isinstance(generation, dict) and isinstance(generation.get(baseline), dict):
        gen_kwargs = {**(gen_kwargs or {}), **generation[baseline]}
    return context, gen_kwargs, baseline


def _padding(request) -> bool:
    """A padding request (lmms-eval repeats a rank's last request so all ranks run equally many)."""
    return isinstance(request.metadata, dict) and bool(request.metadata.get("__padding_only__"))


@dataclass
class Resolved:
    """A request as :meth:`VideoModel.resolve` reads it: its visual, prompt, generation kwargs, result-cache key."""

    visual: object
    context: str
    gen_kwargs: dict | None
    prompt_from: str | None
    key: str | None


class VideoModel(lmms):
    """A registered backend as an lmms-eval model: the uniform baseline (``method = "uniform"``) or
    Chain-of-Shot (``method = "cos"``). Concrete classes (``LongVA``, ``CoSLongVA``, ...) are made per
    backend by :func:`model_class`."""

    is_simple = True
    backend_name: str = ""
    method_name: str = "uniform"

    @classmethod
    def parse_options(cls, kwargs: dict) -> ModelOptions:
        return ModelOptions.parse(cls.backend_name, cls.method_name, kwargs)

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.opts = self.parse_options(kwargs)
        self.accelerator = Accelerator()
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        run = self.opts.run
        device = None
        if run.device is None and run.device_map in (None, "", "auto"):
            device = normalise_device(self.accelerator.device)  # "cpu:0" under ACCELERATE_USE_CPU=1
        self.engine = Engine(self.opts, device=device)
        self.errors: list[dict] = []
        self.trace_dir = Path(run.trace_dir) if run.trace_dir else None
        self.error_log = ErrorLog(self.trace_dir / "errors.jsonl") if self.trace_dir is not None else None
        if self.trace_dir is not None:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
        self.result_cache = ResultCache(run.result_cache_dir) if run.result_cache_dir else None
        self.model_identity = {"model": type(self).__name__, "method": self.engine.method, "cos": cos.__version__,
                               "options": self.opts.identity()}
        self.stats: Counter = Counter()  # over the model's lifetime: answered, failed, cached, padding

    # -- properties lmms-eval relies on ------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device(self.engine.device)

    @property
    def batch_size(self) -> int:
        return self.opts.batch_size

    @property
    def method(self) -> str:
        return self.engine.method

    # -- requests -----------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = []
        run: Counter = Counter()
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc=f"{type(self).__name__} answering")
        with Prefetcher(requests, self._resolve_ahead, lambda job: self.engine.prepare(*job), self.opts.run.prefetch) as ahead:
            for index, request in enumerate(requests):
                if _padding(request):
                    answers.append("")  # lmms-eval drops padding answers; don't spend a forward on them
                    run["padding"] += 1
                else:
                    text, outcome = self._answer_one(*request.args[:6], ahead=ahead.take(index))
                    answers.append(text)
                    run[outcome] += 1
                bar.update(1)
        bar.close()
        self.stats.update(run)
        self._summarize(run, len(requests))
        return answers

    def _summarize(self, run: Counter, n_requests: int) -> None:
        failed = run["failed"] + run["cached_failed"]
        answered = run["answered"] + run["cached_answered"]
        cached = run["cached_answered"] + run["cached_failed"]
        where = str(self.error_log.path) if self.error_log is not None else "-"
        line = (f"{SUMMARY_PREFIX} model={type(self).__name__} rank={self.rank} world={self.world_size} "
                f"requests={n_requests} answered={answered} failed={failed} from_cache={cached} padding={run['padding']} "
                f"errors={where}")
        print(line, file=sys.stderr, flush=True)
        if failed:
            logger.error(f"[{type(self).__name__} rank {self.rank}] {failed} of {n_requests - run['padding']} samples failed and were "
                         f"answered with an empty prediction (records: {where})")

    def _result_key(self, context, gen_kwargs, doc_id, task, split, visual) -> str:
        gen = {k: v for k, v in sorted((gen_kwargs or {}).items()) if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}
        return make_key({"kind": "sample", "v": RESULT_CACHE_VERSION, "model": self.model_identity, "task": task, "split": split,
                         "doc_id": doc_id, "context": context, "gen_kwargs": gen, "visual": visual_identity(visual)})

    def _resolve_ahead(self, request) -> tuple[Resolved, object] | None:
        """The prefetcher's look at a later request: resolved, and what to prepare — ``(visual, prompt)``, the prompt
        for a frame selector — or None when its answer is already in the result cache, or its question would be
        refused before any decoding; padding is skipped."""
        if _padding(request):
            return None
        resolved = self.resolve(*request.args[:6])
        if resolved.key is not None and resolved.key in self.result_cache:
            return resolved, None
        try:
            self.engine.check_question(resolved.context, self.opts.backend.max_frames_num)
        except CosError:  # refused in its turn, before decoding, as in a serial run
            return resolved, None
        return resolved, (resolved.visual, resolved.context)  # a selector chooses the frames for the question

    def resolve(self, context, gen_kwargs, doc_to_visual, doc_id, task, split) -> Resolved:
        """A request's visual (the task's ``doc_to_visual``), the prompt and generation kwargs it is answered
        with, and its result-cache key. No side effects: errors are the caller's to record."""
        visual = doc_to_visual(self.task_dict[task][split][doc_id])
        prompt_from = None
        if self.method_name == "cos" and self.opts.run.prompt_as_baseline:
            context, gen_kwargs, prompt_from = baseline_prompt(doc_to_visual, self.task_dict[task][split][doc_id], context, gen_kwargs,
                                                               registry.get(self.backend_name))
        key = self._result_key(context, gen_kwargs, doc_id, task, split, visual) if self.result_cache is not None else None
        return Resolved(visual=visual, context=context, gen_kwargs=gen_kwargs, prompt_from=prompt_from, key=key)

    def _answer_one(self, context, gen_kwargs, doc_to_visual, doc_id, task, split, ahead: Ahead | None = None) -> tuple[str, str]:
        """One sample -> (prediction, outcome); outcome in answered/failed/cached_answered/cached_failed.
        ``ahead``: the request as the prefetcher resolved it, with its video decoding in the background."""
        if ahead is not None:
            resolved = ahead.job
        else:
            try:
                resolved = self.resolve(context, gen_kwargs, doc_to_visual, doc_id, task, split)
            except SystemExit as exc:  # videomme/mlvu sys.exit() on a missing video; don't let it end the run
                path = _path_from_exit_message(exc.code)
                err = VisualUnavailable(f"the task's doc_to_visual called sys.exit({exc.code!r}): video missing?", path)
                return self._fail(task, split, doc_id, path, err, cache_key=None), "failed"
            except OSError as exc:
                path = getattr(exc, "filename", None) or _path_from_exit_message(exc)
                err = VisualUnavailable(f"the task's doc_to_visual raised {type(exc).__name__}: {exc}", path)
                return self._fail(task, split, doc_id, err.path, err, cache_key=None), "failed"
            except CosError as exc:
                return self._fail(task, split, doc_id, None, exc, cache_key=None), "failed"
            except Exception as exc:  # a bug in the task: fail loudly
                self._fatal(task, split, doc_id, None, exc)
        visual, context, key = resolved.visual, resolved.context, resolved.key
        if key is not None:
            entry = self.result_cache.get(key)
            if entry is not None:
                return self._replay(entry, context, task, split, doc_id)

        try:
            result = self.engine.answer(visual, context, GenerationOptions.from_gen_kwargs(resolved.gen_kwargs),
                                        prepared=ahead.prepared if ahead is not None else None)
        except CosError as err:
            return self._fail(task, split, doc_id, _describe_visual(visual), err, cache_key=key), "failed"
        except torch.OutOfMemoryError as err:  # may pass on a retry: recorded, not cached
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return self._fail(task, split, doc_id, _describe_visual(visual), err, cache_key=None), "failed"
        except Exception as err:  # a bug: fail loudly
            self._fatal(task, split, doc_id, visual, err)

        prompt_from = resolved.prompt_from
        trace = None
        if self.trace_dir is not None:
            result.trace.update(task=task, split=split, doc_id=doc_id, error=None, prompt_from=prompt_from)
            trace = result.trace.to_json()
            write_trace(trace, self._trace_path(result.trace, context))
        if key is not None:  # after the trace: a crash in between only means recomputing this sample
            self.result_cache.put(key, {"text": result.text, "trace": trace, "error": None})
        if self.error_log is not None:
            self.error_log.discard(task, split, doc_id)
        return result.text, "answered"

    def _trace_path(self, trace: CoSTrace, context: str) -> Path:
        video = trace.video or f"{trace.task}-{trace.split}-{trace.doc_id}"
        return self.trace_dir / str(trace.task) / f"{trace_key(video, context)}.json"

    def _replay(self, entry: dict, context, task, split, doc_id) -> tuple[str, str]:
        """A sample answered (or failed) by an earlier run: restore its trace / error record, touch nothing else."""
        if entry.get("error"):
            record = dict(entry["error"], rank=self.rank)
            self.errors.append(record)
            if self.error_log is not None:
                self.error_log.upsert(record)
            return "", "cached_failed"
        trace = entry.get("trace")
        if self.trace_dir is not None and trace:
            path = self._trace_path(CoSTrace.from_json(trace), context)
            if not path.exists():
                write_trace(trace, path)
        if self.error_log is not None:
            self.error_log.discard(task, split, doc_id)
        return entry["text"], "cached_answered"

    def _error_record(self, task, split, doc_id, path, err: BaseException) -> dict:
        if path is None and isinstance(getattr(err, "path", None), str):
            path = err.path
        return {"sample": f"{task}/{split}/{doc_id}", "task": task, "split": split, "doc_id": doc_id,
                "video": path if isinstance(path, str) else None, "error": type(err).__name__, "cause": str(err), "rank": self.rank}

    def _fail(self, task, split, doc_id, path, err: BaseException, cache_key: str | None) -> str:
        record = self._error_record(task, split, doc_id, path, err)
        self.errors.append(record)
        logger.error(f"[{type(self).__name__}] sample failed: {record['sample']} video={record['video']}: {record['error']}: {err}")
        if self.error_log is not None:
            self.error_log.upsert(record)
        if cache_key is not None:
            self.result_cache.put(cache_key, {"text": "", "trace": None, "error": {k: v for k, v in record.items() if k != "rank"}})
        return ""

    def _fatal(self, task, split, doc_id, visual, err: BaseException):
        record = dict(self._error_record(task, split, doc_id, _describe_visual(visual), err), fatal=True)
        if self.error_log is not None:
            with contextlib.suppress(Exception):
                self.error_log.upsert(record)
        message = (f"[{type(self).__name__} rank {self.rank}] FATAL: unexpected {type(err).__name__} on {record['sample']} "
                   f"(video {record['video']}): {err}. This is a bug, not a bad sample; the run stops.")
        logger.critical(message)
        print(message, file=sys.stderr, flush=True)
        if self.world_size > 1:
            # lmms-eval would catch the exception and exit 0 while the other ranks wait in a collective:
            # leave non-zero now so the launcher stops them and fails.
            traceback.print_exception(err, file=sys.stderr)
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(FATAL_EXIT_CODE)
        raise err

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{type(self).__name__} answers generate_until requests only; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{type(self).__name__} does not support multi-round generation")


_CLASSES: dict[str, type] = {}


def model_class(backend: str, method: str) -> type:
    """The lmms-eval model class of ``backend`` with ``method`` (made once, then reused), named
    ``<class_name>`` (baseline) or ``CoS<class_name>`` (Chain-of-Shot) after the registry's declaration."""
    spec = registry.get(backend)
    name = spec.class_name if method == "uniform" else f"CoS{spec.class_name}"
    cls = _CLASSES.get(name)
    if cls is None:
        what = "uniform frame sampling (the baseline)" if method == "uniform" else "with Chain-of-Shot prompting"
        cls = type(name, (VideoModel,), {"backend_name": spec.name, "method_name": method, "__module__": __name__,
                                         "__qualname__": name, "__doc__": f"{spec.title or spec.name}: {what}."})
        _CLASSES[name] = cls
    return cls


def class_path(backend: str, method: str) -> str:
    """Dotted path lmms-eval imports the class from (see :func:`__getattr__`)."""
    spec = registry.get(backend)
    return f"{__name__}.{spec.class_name if method == 'uniform' else 'CoS' + spec.class_name}"


def __getattr__(name: str):
    """``cos_lmms_eval.models.LongVA``, ``...CoSLongVA`` and the classes of every other registered backend."""
    for spec in registry.specs():
        if name == spec.class_name:
            return model_class(spec.name, "uniform")
        if name == f"CoS{spec.class_name}":
            return model_class(spec.name, "cos")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
