"""Shared pytest fixtures: tiny random checkpoints and synthetic needle videos, each built once per session.

The whole suite runs offline: Hugging Face caches go to a temporary ``HF_HOME`` (set before any test
module imports ``datasets``/``lmms_eval``, which read it at import time) and hub access is disabled.
"""

from __future__ import annotations

import json
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


@pytest.fixture(scope="session")
def tiny_longva_dir(tmp_path_factory) -> Path:
    """A random LongVA checkpoint in the released on-disk format (``longva.tiny``, size "tiny", seed 0), built once."""
    from longva.tiny import build_tiny_longva

    return build_tiny_longva(tmp_path_factory.mktemp("tiny_longva"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A random LLaVA scorer checkpoint (``cos_runtime.tiny_llava``, seed 0), built once."""
    from cos_runtime.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), seed=0)


@pytest.fixture(scope="session")
def tiny_llava_video_dir(tmp_path_factory) -> Path:
    """A random LLaVA-Video checkpoint in the release's on-disk format (``llava_video.tiny``, size "tiny", seed 0)."""
    from llava_video import build_tiny_llava_video

    return build_tiny_llava_video(tmp_path_factory.mktemp("tiny_llava_video"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_videoxl_dir(tmp_path_factory) -> Path:
    """A random Video-XL checkpoint in the release's on-disk format (``videoxl.tiny``, size "tiny", seed 0)."""
    from videoxl.tiny import build_tiny_videoxl

    return build_tiny_videoxl(tmp_path_factory.mktemp("tiny_videoxl"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_text_image_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP, BLIP ITM and SigLIP checkpoints (``cos make-tiny-text-image``, seed 0), built once."""
    from cos_runtime.tiny_text_image import build_tiny_text_image

    root = tmp_path_factory.mktemp("tiny_text_image")
    return {kind: build_tiny_text_image(root / kind, kind, seed=0) for kind in ("clip", "blip", "siglip")}


@pytest.fixture(scope="session")
def needle_data(tmp_path_factory) -> Path:
    """Four synthetic needle videos (real H.264) + questions.json, built once."""
    from cos.synthetic import make_needle_videos

    out = tmp_path_factory.mktemp("needle")
    make_needle_videos(out, 4, seed=0, min_frames=32, max_frames=64, size=64, progress=False)
    return out


@pytest.fixture(scope="session")
def backend(tiny_longva_dir):
    """The tiny LongVA checkpoint loaded as a ``cos.protocol.VideoLM`` (CPU, fp32)."""
    from cos_runtime.backends.longva import load_path

    return load_path(str(tiny_longva_dir), device="cpu")


@pytest.fixture(scope="session")
def frames(needle_data):
    """8 frames sampled from the first needle video."""
    from cos.video import sample_frames

    docs = json.loads((needle_data / "questions.json").read_text())
    return sample_frames(needle_data / docs[0]["video"], 8).frames


def three_streams(backend, frames, code, question):
    """Input embeddings of (X, Sp, Sn) for a binary ``code`` over ``frames``: Eq. 6/7 maps, features gathered."""
    import numpy as np

    from cos.compose import gather_features, negative_map, positive_map

    ids = backend.prompt_ids(question)
    feats = backend.encode_frames(backend.preprocess(frames))
    black = backend.encode_frames(backend.preprocess(np.zeros_like(frames[:1])))[0]
    maps = [np.arange(len(code)), positive_map(code), negative_map(code)]
    return [backend.embed_prompt(ids, gather_features(feats, m, black)) for m in maps]
