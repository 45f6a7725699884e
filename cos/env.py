"""``cos env``: versions of everything that matters, for bug reports."""

from __future__ import annotations

import importlib.metadata as md
import platform


def collect() -> dict[str, str]:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("cos-longva", "torch", "transformers", "accelerate", "lmms_eval", "datasets", "decord", "av", "numpy", "filelock"):
        try:
            info[dist] = md.version(dist)
        except md.PackageNotFoundError:
            info[dist] = "not installed"
    try:
        import torch

        info["cuda"] = torch.version.cuda or "none"
        info["cuda_available"] = str(torch.cuda.is_available())
    except Exception as err:  # torch missing or broken: report, don't crash a bug-report command
        info["cuda"] = f"unavailable ({err})"
    return info


def env_command(args) -> int:
    for key, value in collect().items():
        print(f"{key:16s} {value}")
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser("env", help="print versions for bug reports", allow_abbrev=False)
    p.set_defaults(func=env_command)
    return p
