"""``cos run``: answer one question about one video, print the answer, write the trace.

Uses the same :class:`~cos_runtime.engine.Engine` as the lmms-eval models, so a sample answered here is
answered the same way inside an evaluation run. Its option flags are generated from the option
dataclasses (the backend's, the method's, the scorer's, the frame selector's, the run's): ``--max-frames-num`` (alias
``--frames``), ``--shot-size``, ``--negative-order``, ... — the same names as ``model_args``.
"""

from __future__ import annotations

import json

from cos import options as opt
from cos.pipeline import CoSConfig, GenerationOptions
from cos.scoring import ScorerConfig
from cos.selector import SelectorConfig
from cos.trace import write_trace
from cos_runtime import registry
from cos_runtime.options import RunOptions


def _values(args, cls) -> dict:
    return opt.values_from_args(args, cls)


def model_values(args, backend: str, method: str, selector: bool = True) -> dict:
    """The option values given on the command line for ``backend`` and ``method`` (from the flags
    :func:`add_model_arguments` added), starting from the backend's documented command (``CLI_DEFAULTS``).
    A flag of another backend is refused; CoS and scorer flags are ignored with ``method="uniform"``."""
    from cos.errors import ConfigError

    spec = registry.get(backend)
    module = registry.load_module(spec)
    # a backend may start `cos run` from its documented command rather than from lmms-eval's defaults
    values = {**getattr(module, "CLI_DEFAULTS", {}), **_values(args, RunOptions), **_values(args, module.Options)}
    if selector:
        values.update(_values(args, SelectorConfig))
    foreign = sorted(set(vars(args)) & set(args._option_names) - set(values) - {f.name for f in opt.dataclass_fields(CoSConfig)}
                     - {f.name for f in opt.dataclass_fields(ScorerConfig)})
    if foreign:
        raise ConfigError(f"option(s) {foreign} do not apply to backend {spec.name!r}")
    if method == "cos":
        values.update(_values(args, CoSConfig), **_values(args, ScorerConfig))
    return values


def run_command(args) -> int:
    from cos_runtime.engine import build_engine

    engine = build_engine(args.backend, args.method, model_values(args, args.backend, args.method))
    result = engine.answer(args.video, args.question, GenerationOptions(max_new_tokens=args.max_new_tokens))
    print(result.text)
    if args.trace:
        write_trace(result.trace, args.trace)
        print(f"trace written to {args.trace}")
    if args.verbose:
        t = result.trace
        print(json.dumps({"alpha": t.alpha, "binary_code": t.binary_code, "positive_map": t.positive_map,
                          "negative_map": t.negative_map, "timings": t.timings}))
    return 0


def add_model_arguments(p, selector: bool = True, skip: tuple[str, ...] = ()) -> list[str]:
    """Every backend's option flags (a name shared by several backends appears once), then the run's, the frame
    selector's (``selector``), the method's and the scorer's; ``skip``: names left out. Returns the names added."""
    names: list[str] = list(skip)
    for spec in registry.specs():
        module = registry.load_module(spec)
        starts = getattr(module, "CLI_DEFAULTS", {})
        note = ("flags shown under an earlier backend apply too; defaults shown are that backend's" +
                (f"; with --backend {spec.name} unset flags start from " + ", ".join(f"{k}={v}" for k, v in starts.items()) if starts else ""))
        names += opt.add_arguments(p, module.Options, skip=names, title=f"{spec.name} options", description=note if names else None)
    names += opt.add_arguments(p, RunOptions, skip=names, title="run options")
    if selector:
        names += opt.add_arguments(p, SelectorConfig, skip=names, title="frame selector options (both methods)")
    names += opt.add_arguments(p, CoSConfig, skip=names, title="CoS options (--method cos)")
    names += opt.add_arguments(p, ScorerConfig, skip=names, title="scorer options (--method cos)")
    return [n for n in names if n not in skip]


def add_parser(subparsers):
    p = subparsers.add_parser("run", help="answer a question about a video (CoS or the uniform baseline)", allow_abbrev=False)
    p.add_argument("--video", required=True, help="video file (or a folder of frame images)")
    p.add_argument("--question", required=True)
    p.add_argument("--backend", choices=registry.names(), default="longva", help="base model (default longva)")
    p.add_argument("--method", choices=["cos", "uniform"], default="cos")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--trace", default=None, help="write the per-sample trace (JSON) here")
    p.add_argument("--verbose", action="store_true", help="also print α, the binary code, the maps and timings")
    p.set_defaults(func=run_command, _option_names=add_model_arguments(p))
    return p
