"""lmms-eval integration: model adapters (``cos_longva``, ``longva``) registered through the
``lmms_eval.models`` entry point, plus offline task YAMLs under ``lmms-eval/tasks``. Not a fork."""
