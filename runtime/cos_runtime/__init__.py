"""The runtime: base models plugged in through a registry, composed options, the engine that answers one
sample, and the ``cos`` command line (run, bench, report, show, ...).

It sits between the method (``cos``, which imports no model) and the harness (``cos_lmms_eval``, which
adapts an engine to lmms-eval): it imports ``cos``, and a model package only inside that backend's
module, when the backend is loaded; it never imports lmms-eval.
"""

__version__ = "0.2.0"
