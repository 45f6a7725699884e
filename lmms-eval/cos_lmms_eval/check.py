"""Can this environment run these lmms-eval tasks? One line per task, before a 10-hour run.

    python -m cos_lmms_eval.check videomme mlvu_dev longvideobench_val_v [--include_path DIR] [--config RUN.yaml]
    bash scripts/check_env.sh videomme ...          # the same

For every task (a group or tag is checked through its sub-tasks) it loads the task's YAML the way
lmms-eval does, which imports the task's ``utils.py`` and every ``!function`` it names, and reports:

* ``ok`` — the task's code imports; the line also says where its data is expected under ``HF_HOME``
  and whether that folder exists (a missing folder is not an error: lmms-eval downloads the dataset on
  the first run when the hub is reachable); a task whose hooks define ``data_status()`` (our ``vnbench``:
  annotation and videos in ``$VNBENCH_DIR``) says where it looks and what is there itself;
* ``MISSING`` — a module the task imports is not installed (with the pip package that provides it),
  ``HF_HOME`` is unset while the task reads it at import (NExT-QA), the task is unknown, or data that no run can
  download is missing (``vnbench``'s videos), or a folder in the current directory has the task's name (lmms-eval
  would read it as a folder of task YAMLs and run nothing).

lmms-eval's own CLI prints such failures in its log and exits 0; this check exits 1 when any task is
not runnable, so ``scripts/eval_task.sh`` runs it before launching.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

#: modules benchmark tasks import -> the pip package that provides them
PIP_PACKAGES = {
    "cv2": "opencv-python-headless",
    "decord": "decord",
    "av": "av",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "pandas": "pandas",
    "sklearn": "scikit-learn",
    "nltk": "nltk",
    "pywsd": "pywsd",
    "pysrt": "pysrt",
    "moviepy": "moviepy",
    "openai": "openai",
    "spacy": "spacy",
    "Levenshtein": "levenshtein",
}


@dataclass
class TaskStatus:
    task: str
    ok: bool
    detail: str

    def line(self, width: int) -> str:
        return f"{self.task:<{width}}  {'ok' if self.ok else 'MISSING':<7}  {self.detail}"


def _root_cause(err: BaseException) -> BaseException:
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            break
        err = nxt
    return err


def _missing_from(err: BaseException) -> str:
    """A one-line description of why a task's code does not import, with the fix when known."""
    cause = _root_cause(err)
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        top = cause.name.split(".")[0]
        return f"module {top!r} is not installed (pip install {PIP_PACKAGES.get(top, top)})"
    if isinstance(cause, KeyError) and cause.args and cause.args[0] in ("HF_HOME", b"HF_HOME"):
        return "HF_HOME is not set (the task reads it when its code is imported): export HF_HOME=/path/to/hf_cache"
    text = " ".join(str(cause).split())
    return f"its code does not import: {type(cause).__name__}: {text[:300]}"


def _own_data_status(config: dict) -> tuple[bool, str] | None:
    """(ready, note) of a task whose ``process_docs`` hook's module defines ``data_status()`` (``vnbench``: its videos
    cannot be downloaded, so a run without them cannot succeed), else None."""
    hook = config.get("process_docs")
    status = getattr(hook, "__globals__", {}).get("data_status")
    if not callable(status):
        return None
    try:
        ready, note = status()
        return bool(ready), str(note)
    except Exception as err:  # noqa: BLE001 - a broken note must not hide the import check's result
        return True, f"data: cannot tell ({type(err).__name__}: {err})"


def _data_note(config: dict) -> str:
    kwargs = config.get("dataset_kwargs") or {}
    cache_dir = kwargs.get("cache_dir")
    if not cache_dir:
        return f"data: {config.get('dataset_path', '?')}"
    hf_home = os.environ.get("HF_HOME")
    if not hf_home:
        return f"data: $HF_HOME/{cache_dir} (HF_HOME is not set: tasks fall back to their own defaults; export it)"
    path = os.path.join(os.path.expanduser(hf_home), os.path.expandvars(os.path.expanduser(cache_dir)))
    if os.path.isdir(path):
        return f"data: {path}"
    return f"data: {path} not found (lmms-eval downloads {config.get('dataset_path', 'the dataset')} there on the first run; needs the hub)"


class Checker:
    def __init__(self, include_path: list[str] | None = None):
        from lmms_eval.tasks import TaskManager

        self.manager = TaskManager("ERROR", include_path=include_path or None)
        self.index = self.manager.task_index

    def subtasks(self, name: str) -> list[str]:
        """The task itself, or the tasks a group/tag stands for (recursively)."""
        from lmms_eval import utils

        entry = self.index[name]
        if entry["type"] == "tag":
            names = list(entry["task"])
        elif entry["type"] == "group":
            config = utils.load_yaml_config(entry["yaml_path"], mode="simple")
            names = [t["task"] if isinstance(t, dict) else t for t in config.get("task", [])]
        else:
            return [name]
        out = []
        for sub in names:
            out.extend(self.subtasks(sub) if sub in self.index else [sub])
        return out

    def check_one(self, name: str) -> TaskStatus:
        from lmms_eval import utils

        if name not in self.index:
            return TaskStatus(name, False, "unknown task (not in lmms-eval's task index; a local task needs --include_path)")
        try:
            config = utils.load_yaml_config(self.index[name]["yaml_path"], mode="full")
        except Exception as err:  # noqa: BLE001 - any import failure of the task's code is the finding
            return TaskStatus(name, False, _missing_from(err))
        own = _own_data_status(config)
        if own is not None:
            return TaskStatus(name, *own)
        return TaskStatus(name, True, _data_note(config))

    def check(self, name: str) -> TaskStatus:
        if name not in self.index or self.index[name]["type"] not in ("group", "tag"):
            return self.check_one(name)
        subs = self.subtasks(name)
        results = [self.check_one(s) for s in subs]
        bad = [r for r in results if not r.ok]
        if not bad:
            notes = sorted({r.detail for r in results})
            return TaskStatus(name, True, f"{len(subs)} sub-tasks; " + ("; ".join(notes) if len(notes) == 1 else notes[0] + f" (+{len(notes) - 1} more)"))
        causes = sorted({r.detail for r in bad})
        return TaskStatus(name, False, f"{len(bad)} of {len(subs)} sub-tasks: " + "; ".join(causes))


def shadowed(tasks: str) -> TaskStatus | None:
    """lmms-eval reads a ``--tasks`` value that names a folder in the current directory as a folder of task YAMLs, not as
    task names: with a data folder ``./vnbench`` beside you, ``--tasks vnbench`` selects no task (and the CLI exits 0)."""
    if not os.path.isdir(tasks):
        return None
    return TaskStatus(tasks, False, f"the current directory holds a folder named {tasks!r}, which lmms-eval reads as a folder of task "
                                    "YAMLs instead of the task; run from another directory (or rename that folder)")


def _include_paths_from_config(path: str) -> list[str]:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    entries = data if isinstance(data, list) else [data]
    out = []
    for entry in entries:
        value = entry.get("include_path") if isinstance(entry, dict) else None
        if value:
            out.extend(value if isinstance(value, list) else [value])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cos_lmms_eval.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="task names (comma-separated lists are accepted)")
    parser.add_argument("--include_path", action="append", default=[], help="extra task folder (as lmms-eval's --include_path)")
    parser.add_argument("--config", help="an lmms-eval run config: its include_path entries are used too")
    parser.add_argument("--quiet", action="store_true", help="print only the tasks that are not runnable")
    args = parser.parse_args(argv)
    include = list(args.include_path)
    if args.config:
        include += _include_paths_from_config(args.config)
    names = [t for arg in args.tasks for t in arg.split(",") if t]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from loguru import logger

    logger.remove()  # lmms-eval logs every task it indexes; the lines below are the report
    checker = Checker(include)
    results = [shadowed(arg) for arg in args.tasks if shadowed(arg) is not None]  # a folder here named like the --tasks value
    results += [checker.check(name) for name in names]
    width = max(len(r.task) for r in results)
    for r in results:
        if r.ok and args.quiet:
            continue
        print(r.line(width), flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
