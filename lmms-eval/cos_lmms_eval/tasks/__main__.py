"""``python -m cos_lmms_eval.tasks``: print the folder to pass to lmms-eval's ``--include_path``."""

from cos_lmms_eval import TASKS_DIR

print(TASKS_DIR)
