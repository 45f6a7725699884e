"""``cos`` command line: a thin layer over the functions the lmms-eval adapter uses.

Each subcommand lives in its own module and exposes ``add_parser(subparsers)``, which registers the
subcommand and sets ``func`` (called with the parsed args, returns an exit code). Subcommands are named
here by dotted path and imported only when used, so ``cos --help`` stays fast and this package never
imports a model package at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cos.errors import CosError

#: subcommand -> (module defining ``add_parser(subparsers)``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("cos_lmms_eval.run", "answer a question about a video with CoS or the uniform baseline"),
    "bench": ("cos_lmms_eval.bench", "stage-by-stage cost: CoS vs the uniform baseline vs a release-style pipeline"),
    "show": ("cos.viz", "draw a trace as a shot strip (frames, relevance, positive/negative videos)"),
    "report": ("cos.report", "HTML report of an lmms-eval output folder with traces"),
    "make-needle-videos": ("cos.synthetic", "write synthetic needle-in-a-haystack videos + questions"),
    "make-tiny-longva": ("longva.tiny", "write a random LongVA checkpoint in the original format"),
    "make-tiny-llava": ("cos.tiny_llava", "write a random LLaVA scorer checkpoint"),
    "env": ("cos.env", "print versions for bug reports"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cos", description="Chain-of-Shot prompting for long-video QA (LongVA).", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
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
