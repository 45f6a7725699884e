"""``cos`` command line: a thin layer over the runtime that the lmms-eval models use too.

Each subcommand lives in its own module and exposes ``add_parser(subparsers)``, which registers the
subcommand and sets ``func`` (called with the parsed args, returns an exit code). Modules are imported
only when their subcommand is used, so ``cos --help`` stays fast. Every registered backend adds
``make-tiny-<backend>`` (``_`` written ``-``; a random checkpoint in its original format, from its backend module).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cos.errors import CosError
from cos_runtime import registry

#: subcommand -> (module defining ``add_parser(subparsers)``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("cos_runtime.run", "answer a question about a video with CoS or the uniform baseline"),
    "bench": ("cos_runtime.bench", "stage-by-stage cost: CoS vs the uniform baseline vs a release-style pipeline"),
    "show": ("cos.viz", "draw a trace as a shot strip (frames, relevance, positive/negative videos)"),
    "report": ("cos_runtime.report", "HTML report (or --text table) of an lmms-eval output folder with traces"),
    "niah": ("cos_runtime.niah", "needle-in-a-video-haystack grid, baseline and CoS, with heatmaps"),
    "make-needle-videos": ("cos.synthetic", "write synthetic needle-in-a-haystack videos + questions"),
    "select": ("cos.selection", "a frame-selection rule (AKS, BOLT, Q-Frame, uniform) on precomputed scores, as JSON"),
    "make-tiny-llava": ("cos_runtime.tiny_llava", "write a random LLaVA scorer checkpoint"),
    "make-tiny-text-image": ("cos_runtime.tiny_text_image", "write a random CLIP/BLIP/SigLIP checkpoint (frame selectors' scorer)"),
    "train-tiny": ("cos_runtime.train_tiny", "train the demo's small LongVA, LLaVA scorer and selectors' CLIP on the needle task (CPU)"),
    "env": ("cos.env", "print versions for bug reports"),
}


def subcommands() -> dict[str, tuple[str, str]]:
    out = dict(SUBCOMMANDS)
    for spec in registry.specs():
        out[f"make-tiny-{spec.name.replace('_', '-')}"] = (spec.module, f"write a random {spec.name} checkpoint in the original format")
    return out


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cos", description="Chain-of-Shot prompting for long-video QA.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in subcommands().items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in subcommands() else None
    # Import only the module of the chosen subcommand; the others get placeholder entries.
    parser = build_parser(only=command if command else "__none__")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.func(args) or 0)
    except CosError as err:
        print(f"cos {command}: error: {err}", file=sys.stderr)
        return 1
