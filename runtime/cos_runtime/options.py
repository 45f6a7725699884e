"""A model's options, composed: run options + the backend's options + (CoS models) the method's and the scorer's.

lmms-eval's ``--model_args k=v,...`` (and ``cos run``'s flags) are one flat list of names; each name
belongs to exactly one group, declared once with its reader and help (:mod:`cos.options`):

* :class:`RunOptions` — where and how it runs: device, dtype, traces, caches (this module);
* the backend's ``Options`` — checkpoint, frame count, decoder, ... (``cos_runtime.backends.<name>``);
* :class:`cos.selector.SelectorConfig` — which frames the model sees (every model; ``uniform``: the backend's rule);
* :class:`cos.pipeline.CoSConfig` and :class:`cos.scoring.ScorerConfig` — the method (CoS models only).

An unknown name or a bad value fails at start-up with the list of valid names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cos import options as opt
from cos.device import DTYPES
from cos.errors import ConfigError
from cos.pipeline import METHODS, CoSConfig
from cos.scoring import ScorerConfig
from cos.selector import SelectorConfig


def _batch_size(name: str, value: Any) -> int:
    if opt.positive_int(name, value) != 1:
        raise ConfigError(f"{name}={value!r}: only batch_size=1 is supported (one video per forward)")
    return 1


@dataclass
class RunOptions:
    """Where and how a model runs; none of these changes an answer except the dtype."""

    device: str | None = opt.option(None, read=opt.optional_str, identity=False,
                                    help="cpu, cuda, cuda:1 ... (default: the process's accelerator device, else cuda when available)")
    device_map: str | None = opt.option(None, read=opt.optional_str, identity=False, cli=False)
    torch_dtype: str = opt.option("auto", read=opt.choice(("auto", *DTYPES)), flags=("--dtype",),
                                  help="auto (float32 on CPU, bfloat16/float16 on GPU), float32, float16, bfloat16")
    batch_size: int = opt.option(1, read=_batch_size, identity=False, cli=False)
    max_batch_size: int | None = opt.option(None, identity=False, cli=False)
    trace_dir: str | None = opt.option(None, read=opt.optional_str, identity=False, cli=False)
    #: finished samples (answer + trace, or the error record), so a killed run resumes where it stopped
    result_cache_dir: str | None = opt.option("auto", read=opt.cache_dir, identity=False, cli=False)
    #: scorer results per (video, frames, scorer, question): another alpha or decoding option does not re-score
    score_cache_dir: str | None = opt.option("auto", read=opt.cache_dir, identity=False, cli=False)
    #: CoS models in lmms-eval: answer the prompt the task gives the baseline model (see
    #: ``cos_lmms_eval.models.baseline_prompt``), so CoS and its baseline answer the same prompt
    prompt_as_baseline: bool = opt.option(True, read=opt.as_bool, cli=False)
    #: lmms-eval models: the next samples' videos are decoded and preprocessed in a background thread while
    #: the current one runs on the model (same answers and error records as serial; 0 = serial)
    prefetch: int = opt.option(2, read=opt.non_negative_int, identity=False, cli=False,
                               help="samples decoded and preprocessed ahead in a background thread (0: serial)")

    def __post_init__(self):
        opt.validate(self)
        for name, sub in (("result_cache_dir", "result_cache"), ("score_cache_dir", "score_cache")):
            if getattr(self, name) == "auto":  # <trace_dir>/<sub> when there is a trace folder, else off
                setattr(self, name, os.path.abspath(os.path.join(self.trace_dir, sub)) if self.trace_dir else None)


@dataclass
class ModelOptions:
    """Everything one model (a backend with a method) is configured with."""

    backend_name: str
    method: str
    run: RunOptions
    backend: Any
    selector: SelectorConfig
    cos: CoSConfig | None = None
    scorer: ScorerConfig | None = None

    @staticmethod
    def groups(backend_options: type, method: str) -> dict[str, type]:
        if method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
        groups = {"run": RunOptions, "backend": backend_options, "selector": SelectorConfig}
        if method == "cos":
            groups.update(cos=CoSConfig, scorer=ScorerConfig)
        return groups

    @classmethod
    def parse(cls, backend_name: str, method: str, kwargs: dict, what: str = "model_args") -> ModelOptions:
        """Build from a flat mapping of names to values (``model_args``, flags)."""
        from cos_runtime import registry

        module = registry.load_module(registry.get(backend_name))
        parts = opt.parse(cls.groups(module.Options, method), kwargs, what=what)
        return cls(backend_name=backend_name, method=method, **parts)

    def valid_names(self) -> list[str]:
        return [f.name for group in self.groups(type(self.backend), self.method).values() for f in opt.dataclass_fields(group)]

    def identity(self) -> dict:
        """The options that determine an answer: the model-configuration part of the result-cache key (the frame
        selector's part is empty for ``selector=uniform``, so existing keys stay valid).

        Devices, batch sizes, chunk sizes and output locations are left out, so a run resumed on another
        number of processes (cuda:0 vs cuda:1) or with another trace directory reuses what was answered.
        """
        out = {"backend": self.backend_name, "method": self.method, **opt.identity(self.run), **opt.identity(self.backend),
               **self.selector.identity()}
        for part in (self.cos, self.scorer):
            if part is not None:
                out.update(opt.identity(part))
        return out

    def __getattr__(self, name: str):
        """``opts.max_frames_num`` etc.: the one group that declares ``name`` (names are unique across groups)."""
        if name.startswith("__") or name in ("run", "backend", "selector", "cos", "scorer", "backend_name", "method"):
            raise AttributeError(name)
        for part in (self.run, self.backend, self.selector, self.cos, self.scorer):
            if part is not None and name in {f.name for f in opt.dataclass_fields(part)}:
                return getattr(part, name)
        raise AttributeError(f"no option {name!r}")
