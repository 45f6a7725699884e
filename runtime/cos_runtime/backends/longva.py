"""LongVA-7B as a runtime backend: its options, loader, frame-sampling rule and test checkpoints.

``longva`` knows nothing of CoS and ``cos`` imports no model; :class:`LongVABackend` is the one place that
knows both, behind :class:`cos.protocol.VideoLM`. Registered in :mod:`cos_runtime.registry` as
``longva`` (lmms-eval models ``longva`` and ``cos_longva``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cos.errors import ConfigError
from cos.options import as_bool, choice, option, positive_int, validate
from cos.protocol import VideoInfo
from cos.video import BACKENDS as DECODERS
from cos.video import SampledVideo
from cos.video import sample_frames as _sample_uniform
from cos_runtime.backends.common import CachedVideoLM

#: attention kernels LongVA's language model can run with
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def _pool_stride(name: str, value) -> int:
    if positive_int(name, value) != 2:
        raise ConfigError(f"{name}={value!r}: LongVA uses 2")
    return 2


@dataclass
class Options:
    """LongVA's options; names follow lmms-eval's builtin ``longva`` model, so its commands carry over."""

    pretrained: str = option("lmms-lab/LongVA-7B", flags=("--model",), help="checkpoint directory or hub id (original LongVA format)")
    max_frames_num: int = option(128, read=positive_int, flags=("--frames",),
                                 help="frames sampled uniformly: np.linspace(0, total - 1, n, dtype=int)")
    video_decode_backend: str = option("decord", read=choice(DECODERS), flags=("--decoder",),
                                       help="video decoder: decord, pyav, or auto (decord, falling back to PyAV)")
    attn_implementation: str = option("sdpa", read=choice(ATTN_IMPLEMENTATIONS), help="attention kernel of the language model")
    encode_chunk_size: int = option(32, read=positive_int, identity=False, help="frames per vision-tower forward")
    # accepted for compatibility with lmms-eval's builtin longva; fixed by LongVA's design
    conv_template: str = option("qwen_1_5", read=choice(("qwen_1_5",)), identity=False, cli=False)
    model_name: str = option("llava_qwen", read=choice(("llava_qwen", "longva")), identity=False, cli=False)
    truncation: bool = option(True, read=as_bool, identity=False, cli=False)
    use_cache: bool = option(True, read=as_bool, identity=False, cli=False)
    mm_spatial_pool_mode: str = option("average", read=choice(("average",)), identity=False, cli=False)
    mm_spatial_pool_stride: int = option(2, read=_pool_stride, identity=False, cli=False)

    def __post_init__(self):
        validate(self)


class LongVABackend(CachedVideoLM):
    """A :class:`~cos.protocol.VideoLM` (with prefill) over ``longva.LongVAForCausalLM`` + ``longva.LongVAProcessor``."""

    def __init__(self, model, processor, encode_chunk_size: int = 32):
        super().__init__(model, processor, encode_chunk_size)
        self._facts = self.make_facts("longva", independent_frames=True)  # CLIP per frame, pooled per frame, no separators

    def prompt_ids(self, question: str, video: VideoInfo | None = None) -> torch.Tensor:
        return self.processor.prompt_ids(question).to(self.device)  # LongVA's prompt does not state frame times


def load(options: Options, device: str, dtype: torch.dtype, random_weights: int | None = None) -> LongVABackend:
    """Load LongVA (a hub id or a checkpoint directory in the original format) as a VideoLM.
    ``random_weights``: a seed; the parameters are drawn on the device instead of read (``cos bench --size full``)."""
    from longva import LongVAForCausalLM, LongVAProcessor
    from longva.checkpoint import CheckpointError

    try:
        model = LongVAForCausalLM.from_pretrained(options.pretrained, torch_dtype=dtype, device_map=device,
                                                  attn_implementation=options.attn_implementation,
                                                  random_weights=random_weights)
        processor = LongVAProcessor.from_pretrained(options.pretrained)
    except (CheckpointError, FileNotFoundError) as err:  # as a CosError, so `cos run` and the harness report it without a traceback
        raise ConfigError(f"cannot load LongVA from {options.pretrained!r}: {err}") from err
    model.eval()
    return LongVABackend(model, processor, encode_chunk_size=options.encode_chunk_size)


def sample_frames(path, options: Options) -> SampledVideo:
    """LongVA's rule: ``max_frames_num`` frames at ``np.linspace(0, total - 1, n, dtype=int)``."""
    return _sample_uniform(path, options.max_frames_num, backend=options.video_decode_backend)


def make_test_checkpoint(out_dir, size: str = "tiny", seed: int = 0):
    """A random checkpoint in the original format (``tiny``: tests; ``small``: LongVA's token geometry)."""
    from longva.tiny import build_tiny_longva

    return build_tiny_longva(out_dir, seed=seed, size=size)


def load_path(pretrained: str, device: str | None = None, torch_dtype="auto", attn_implementation: str = "sdpa",
              encode_chunk_size: int = 32) -> LongVABackend:
    """Shortcut: LongVA from a path with default options (tests, notebooks)."""
    from cos.device import normalise_device, resolve_dtype

    device = normalise_device(device)
    options = Options(pretrained=str(pretrained), attn_implementation=attn_implementation, encode_chunk_size=encode_chunk_size)
    return load(options, device, resolve_dtype(torch_dtype, device))


def add_parser(subparsers):
    """``cos make-tiny-longva OUT [--size tiny|small] [--seed S]``."""
    from longva.tiny import add_parser as add_tiny

    return add_tiny(subparsers)
