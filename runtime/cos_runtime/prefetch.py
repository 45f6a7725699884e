"""Decode and preprocess the next samples' videos in a background thread while the current sample runs on the model.

:class:`Prefetcher` walks a list of items (lmms-eval requests, or ``(video, question)`` pairs) in order. When item
``i``'s turn comes (:meth:`Prefetcher.take`), items up to ``i + depth`` are *resolved* in the calling thread (the
caller's ``resolve(item)``: what the item asks, and whether its video should be prepared) and their videos are
handed to ``prepare`` (:meth:`cos_runtime.engine.Engine.prepare`: a frame selector's choice, decode, preprocess) in
one worker thread. The
caller answers item ``i`` with what was prepared for it (``Engine.answer(..., prepared=ahead.prepared)``).

What keeps the results equal to a serial run: resolution has no side effects (the caller records nothing then);
an item whose resolution fails, or that ``resolve`` says not to prepare, gets ``None`` from :meth:`take`, so its
turn runs the serial path; ``prepare`` keeps an error with the prepared video and ``Engine.answer`` raises it in
the item's turn, after the same checks as the serial path. At most ``depth`` prepared videos wait besides the
current one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass


@dataclass
class Ahead:
    """An item resolved ahead of its turn (``job``: what ``resolve`` returned) and its video's preparation (a future
    of :class:`~cos_runtime.engine.PreparedVisual`; None when ``resolve`` asked for none)."""

    job: object
    prepared: Future | None


class Prefetcher:
    """See the module docstring.

    Args:
        items: the work, in the order it is answered.
        resolve: ``resolve(item) -> (job, what) | None`` in the calling thread: ``None`` for an item not to look
            at ahead (padding), ``what=None`` for one whose video is not to be prepared (already answered); else
            what ``prepare`` gets (the lmms-eval models: ``(visual, prompt)``, the prompt for a frame selector).
            Exceptions (and ``SystemExit``) mean "not ahead": the item's turn resolves it again, serially.
        prepare: ``prepare(what)`` in the worker thread; must not raise (it keeps errors in its result).
        depth: items prepared ahead of the current one; 0 turns prefetching off (:meth:`take` returns None).
    """

    def __init__(self, items: Sequence, resolve: Callable, prepare: Callable, depth: int):
        self.items, self.resolve, self.prepare, self.depth = items, resolve, prepare, int(depth)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cos-prefetch") if self.depth > 0 else None
        self.pending: dict[int, Ahead] = {}
        self.scheduled = 0

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is not None:
            for ahead in self.pending.values():
                if ahead.prepared is not None:
                    ahead.prepared.cancel()
            self.pending.clear()
            # normally the queue is empty by now; on an exception (a fatal error, Ctrl-C) don't wait for a decode
            self.pool.shutdown(wait=exc_type is None, cancel_futures=True)

    def take(self, index: int) -> Ahead | None:
        """Item ``index``'s turn: look ahead up to ``index + depth``, and hand over what was resolved and prepared for it."""
        if self.pool is None:
            return None
        while self.scheduled < min(len(self.items), index + self.depth + 1):
            self._schedule(self.scheduled)
            self.scheduled += 1
        return self.pending.pop(index, None)

    def _schedule(self, index: int) -> None:
        try:
            resolved = self.resolve(self.items[index])
        except (Exception, SystemExit):  # noqa: BLE001 - the serial path, in the item's turn, records it
            return
        if resolved is None:
            return
        job, visual = resolved
        self.pending[index] = Ahead(job, None if visual is None else self.pool.submit(self.prepare, visual))
