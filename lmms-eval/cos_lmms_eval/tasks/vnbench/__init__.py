"""The ``vnbench`` task's hooks (lmms-eval loads them by file path; a package only so that pytest tells the tasks' ``utils`` modules apart)."""
