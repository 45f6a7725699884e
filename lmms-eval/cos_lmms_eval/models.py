"""lmms-eval models: ``longva`` (uniform-sampling baseline) and ``cos_longva`` (LongVA + Chain-of-Shot).

Both are simple models (``is_simple = True``): each ``generate_until`` request is one call of
:class:`cos_lmms_eval.engine.Engine`. The model never knows the task: it reads the request tuple, asks
the task's ``doc_to_visual`` for the visual, and answers. A sample whose visual cannot be read gets an
empty prediction and an error record (task, doc id, path, cause) — the run goes on, nothing is
skipped silently, and the end of the run prints how many samples failed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import torch
from accelerate import Accelerator
from loguru import logger
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from cos.errors import CosError
from cos.pipeline import GenerationOptions
from cos.trace import to_jsonable, trace_key, write_trace

from cos_lmms_eval.engine import Engine
from cos_lmms_eval.options import CoSLongVAOptions, LongVAOptions

TRACE_DIR_ENV = "COS_TRACE_DIR"


class LongVA(lmms):
    """LongVA-7B on transformers 5, uniform frame sampling (the paper's baseline)."""

    is_simple = True
    options_class = LongVAOptions

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.opts = self.options_class.parse(kwargs)
        self.accelerator = Accelerator()
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        if self.opts.device is None and self.opts.device_map in (None, "", "auto"):
            self.opts.device = str(self.accelerator.device)
        self.engine = Engine(self.opts)
        self.errors: list[dict] = []
        self.trace_dir = Path(self.opts.trace_dir) if self.opts.trace_dir else None
        if self.trace_dir is not None:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            os.environ[TRACE_DIR_ENV] = str(self.trace_dir.resolve())
        self._lock = threading.Lock()

    # -- properties lmms-eval relies on ------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.engine.backend.device

    @property
    def batch_size(self) -> int:
        return self.opts.batch_size

    @property
    def method(self) -> str:
        return self.engine.method

    # -- requests -----------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = []
        failed_before = len(self.errors)
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc=f"{type(self).__name__} answering")
        for request in requests:
            answers.append(self._answer_one(*request.args[:6]))
            bar.update(1)
        bar.close()
        failed = len(self.errors) - failed_before
        if failed:
            where = f" (records in {self.trace_dir / 'errors.jsonl'})" if self.trace_dir else ""
            msg = f"[{type(self).__name__} rank {self.rank}] {failed} of {len(requests)} samples failed and were answered with an empty prediction{where}"
            logger.error(msg)
            print(msg, file=sys.stderr, flush=True)
        return answers

    def _answer_one(self, context, gen_kwargs, doc_to_visual, doc_id, task, split) -> str:
        visual = None
        try:
            try:
                visual = doc_to_visual(self.task_dict[task][split][doc_id])
            except SystemExit as exc:  # some tasks sys.exit() on a missing video; don't let it end the run
                raise CosError(f"the task's doc_to_visual exited ({exc.code!r}): video missing?") from None
            result = self.engine.answer(visual, context, GenerationOptions.from_gen_kwargs(gen_kwargs))
        except (CosError, torch.OutOfMemoryError) as err:
            self._record_error(task, split, doc_id, visual, err)
            return ""
        if self.trace_dir is not None:
            video = result.trace.get("video") or f"{task}-{split}-{doc_id}"
            result.trace.update(task=task, split=split, doc_id=doc_id, error=None)
            write_trace(result.trace, self.trace_dir / task / f"{trace_key(video, context)}.json")
        return result.text

    def _record_error(self, task, split, doc_id, visual, err: BaseException) -> None:
        path = visual[0] if isinstance(visual, (list, tuple)) and visual and isinstance(visual[0], str) else visual
        record = {"task": task, "split": split, "doc_id": doc_id, "video": path if isinstance(path, str) else None,
                  "error": type(err).__name__, "cause": str(err), "rank": self.rank}
        self.errors.append(record)
        logger.error(f"[{type(self).__name__}] sample failed: task={task} doc_id={doc_id} video={record['video']}: {err}")
        if self.trace_dir is not None:
            with self._lock, open(self.trace_dir / "errors.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(to_jsonable(record)) + "\n")

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{type(self).__name__} answers generate_until requests only; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{type(self).__name__} does not support multi-round generation")


class CoSLongVA(LongVA):
    """LongVA + Chain-of-Shot prompting (shot scoring, positive/negative videos, co-reasoning)."""

    options_class = CoSLongVAOptions
