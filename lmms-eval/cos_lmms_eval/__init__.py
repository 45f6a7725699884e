"""lmms-eval integration: model adapters (``cos_longva``, ``longva``) registered through the
``lmms_eval.models`` entry point, plus offline task YAMLs in :data:`TASKS_DIR` (pass it to lmms-eval's
``--include_path``; ``python -m cos_lmms_eval.tasks`` prints it). Not a fork."""

from pathlib import Path

#: folder of this package's lmms-eval tasks (``cos_needle``), inside the installed package
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
