"""Shared pytest fixtures: tiny random checkpoints and synthetic needle videos, each built once per session.

The whole suite runs offline: Hugging Face caches go to a temporary ``HF_HOME`` (set before any test
module imports ``datasets``/``lmms_eval``, which read it at import time) and hub access is disabled.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HF_HOME = tempfile.mkdtemp(prefix="cos-tests-hf-")
os.environ.update(
    HF_HOME=_HF_HOME,
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
)
os.environ.pop("COS_TRACE_DIR", None)


@pytest.fixture(scope="session")
def tiny_longva_dir(tmp_path_factory) -> Path:
    """A random LongVA checkpoint in the released on-disk format (``longva.tiny``, size "tiny", seed 0), built once."""
    from longva.tiny import build_tiny_longva

    return build_tiny_longva(tmp_path_factory.mktemp("tiny_longva"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A random LLaVA scorer checkpoint (``cos.tiny_llava``, seed 0), built once."""
    from cos.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), seed=0)


@pytest.fixture(scope="session")
def needle_data(tmp_path_factory) -> Path:
    """Four synthetic needle videos (real H.264) + questions.json, built once."""
    from cos.synthetic import make_needle_videos

    out = tmp_path_factory.mktemp("needle")
    make_needle_videos(out, 4, seed=0, min_frames=32, max_frames=64, size=64, progress=False)
    return out
