"""LLaVA-Video-7B-Qwen2 as a runtime backend: lmms-eval ``llava_vid``'s options, frame rule and prompt.

Registered in :mod:`cos_runtime.registry` as ``llava_video`` (lmms-eval models ``llava_vid``, which takes
over the builtin id that cannot import without the LLaVA-NeXT repository, and ``cos_llava_vid``).

``model_args`` are lmms-eval 0.7.3 ``llava_vid``'s, with its defaults when an argument is not given
(``conv_template=vicuna_v1``, ``max_frames_num=20``, ``video_fps=1``, ``mm_spatial_pool_mode=average``,
``mm_newline_position=grid``, ``force_sample=False``, ``add_time_instruction=False``), so the documented
command runs verbatim::

    --model llava_vid --model_args pretrained=lmms-lab/LLaVA-Video-7B-Qwen2,conv_template=qwen_1_5,max_frames_num=64,mm_spatial_pool_mode=average

``cos run --backend llava_video`` starts from that documented command instead (:data:`CLI_DEFAULTS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from cos.errors import ConfigError
from cos.options import as_bool, choice, number, option, positive_int, validate
from cos.protocol import VideoInfo
from cos.video import BACKENDS as DECODERS
from cos.video import SampledVideo, frame_indices
from cos.video import sample_frames as _sample_video
from cos_runtime.backends.common import CachedVideoLM

#: chat templates (lmms-eval ``conv_template``) the prompt builder implements
CONV_TEMPLATES = ("qwen_1_5", "qwen_2", "vicuna_v1")
#: pooling after the projector (lmms-eval's ``mm_spatial_pool_mode``)
POOL_MODES = ("average", "max", "bilinear")
#: where the learned newline vector goes (``mm_newline_position``)
NEWLINE_POSITIONS = ("grid", "frame", "no_token", "one_token")
#: what ``cos run --backend llava_video`` uses when a flag is not given: the documented evaluation command
CLI_DEFAULTS = {"pretrained": "lmms-lab/LLaVA-Video-7B-Qwen2", "conv_template": "qwen_1_5", "max_frames_num": 64}


def _fixed(expected):
    """A reader for an lmms-eval argument accepted for compatibility but only at its (working) default."""

    def read(name: str, value):
        got = as_bool(name, value) if isinstance(expected, bool) else type(expected)(value)
        if got != expected:
            raise ConfigError(f"{name}={value!r}: only {expected!r} is supported (lmms-eval's default)")
        return got

    return read


@dataclass
class Options:
    """lmms-eval ``llava_vid``'s arguments (0.7.3 defaults)."""

    pretrained: str = option("lmms-lab/LLaVA-Video-7B-Qwen2", flags=("--model",), help="checkpoint directory or hub id (original format)")
    conv_template: str = option("vicuna_v1", read=choice(CONV_TEMPLATES), help="chat template (the documented command: qwen_1_5)")
    max_frames_num: int = option(20, read=positive_int, flags=("--frames",),
                                 help="at most this many frames: video_fps frames per second, else linspace to this many")
    video_fps: float = option(1.0, read=number(1e-3, 1000.0), help="frames per second sampled before the max_frames_num cap")
    force_sample: bool = option(False, read=as_bool, help="always take max_frames_num frames with linspace")
    add_time_instruction: bool = option(False, read=as_bool, help="state the video's length and frame times in the prompt")
    mm_spatial_pool_mode: str = option("average", read=choice(POOL_MODES), help="average: 13x13 per frame; bilinear: 14x14")
    mm_newline_position: str = option("grid", read=choice(NEWLINE_POSITIONS), help="grid: a newline after each pooled row")
    overwrite: bool = option(True, read=as_bool, help="false: keep the checkpoint's pool mode and newline position")
    video_decode_backend: str = option("decord", read=choice(DECODERS), flags=("--decoder",),
                                       help="video decoder: decord, pyav, or auto (decord, falling back to PyAV)")
    attn_implementation: str = option("sdpa", read=choice(("sdpa", "eager", "flash_attention_2")), help="attention kernel of the LM")
    encode_chunk_size: int = option(32, read=positive_int, identity=False, help="frames per vision-tower forward")
    # accepted for compatibility with lmms-eval's llava_vid; only their defaults are supported
    mm_spatial_pool_stride: int = option(2, read=_fixed(2), identity=False, cli=False)
    truncate_context: bool = option(False, read=_fixed(False), identity=False, cli=False)
    tie_weights: bool = option(True, read=as_bool, identity=False, cli=False)
    use_cache: bool = option(True, read=as_bool, identity=False, cli=False)
    mm_resampler_type: str = option("spatial_pool", read=_fixed("spatial_pool"), identity=False, cli=False)
    mm_spatial_pool_out_channels: int = option(1024, identity=False, cli=False)
    mm_pooling_position: str = option("before", read=_fixed("before"), identity=False, cli=False)
    add_faster_video: bool = option(False, read=_fixed(False), identity=False, cli=False)
    faster_token_stride: int = option(10, identity=False, cli=False)
    model_name: str | None = option(None, identity=False, cli=False)

    def __post_init__(self):
        validate(self)


class LlavaVideoBackend(CachedVideoLM):
    """A :class:`~cos.protocol.VideoLM` (with prefill) over ``llava_video.LlavaVideoForCausalLM`` + its processor."""

    def __init__(self, model, processor, options: Options):
        super().__init__(model, processor, options.encode_chunk_size)
        self.options = options
        # SigLIP, projector and pooling run per frame; grid newlines are part of each frame's block. With
        # mm_newline_position=one_token one newline follows the last frame: not per frame, and one more token.
        facts = self.make_facts("llava_video", independent_frames=bool(model.frames_independent))
        self._facts = dataclasses.replace(facts, visual_tokens_fn=model.visual_tokens)

    def prompt_ids(self, question: str, video: VideoInfo | None = None) -> torch.Tensor:
        """lmms-eval's prompt: ``<image>\\n`` + [time instruction + ``\\n``] + the task's text, in the template."""
        from llava_video import time_instruction

        said = None
        if self.options.add_time_instruction and video is not None and video.frame_times is not None:
            said = time_instruction(video.duration, video.frame_times)
        return self.processor.prompt_ids(question, conv_template=self.options.conv_template, time_instruction=said).to(self.device)

    def decode(self, token_ids) -> str:
        """The answer, cut at the template's stop keyword (lmms-eval's stopping criterion)."""
        text = self.processor.decode(token_ids)
        for stop in self.processor.stop_strings(self.options.conv_template):
            if stop and stop in text:
                text = text.split(stop, 1)[0]
        return text.strip()


def load(options: Options, device: str, dtype: torch.dtype, random_weights: int | None = None) -> LlavaVideoBackend:
    """Load LLaVA-Video (a hub id or a checkpoint directory in the original format) as a VideoLM.
    ``random_weights``: a seed; the parameters are drawn on the device instead of read (``cos bench --size full``)."""
    from llava_video import CheckpointError, LlavaVideoForCausalLM, LlavaVideoProcessor

    overrides = dict(mm_spatial_pool_mode=options.mm_spatial_pool_mode, mm_newline_position=options.mm_newline_position)
    if not options.overwrite:  # lmms-eval's overwrite=False keeps the checkpoint's own settings
        overrides = dict(mm_spatial_pool_mode=None, mm_newline_position=None)
    try:
        model = LlavaVideoForCausalLM.from_pretrained(options.pretrained, torch_dtype=dtype, device_map=device,
                                                      attn_implementation=options.attn_implementation, **overrides,
                                                      random_weights=random_weights)
        processor = LlavaVideoProcessor.from_pretrained(options.pretrained)
    except (CheckpointError, FileNotFoundError) as err:
        raise ConfigError(f"cannot load LLaVA-Video from {options.pretrained!r}: {err}") from err
    model.eval()
    return LlavaVideoBackend(model, processor, options)


def frame_rule(max_frames_num: int, video_fps: float, force_sample: bool):
    """lmms-eval ``llava_vid``'s ``load_video``: every ``round(avg_fps / video_fps)``-th frame (times ``i / step``);
    when that gives more than ``max_frames_num`` frames, or with ``force_sample``, ``linspace`` to
    ``max_frames_num`` (times ``i / avg_fps``). A video of unknown frame rate (a folder of frames) gets the
    linspace sample and no times. Returns ``(rule, times)``: the :data:`cos.video.IndexRule` and a dict
    the rule fills with ``"times"``."""
    state: dict = {}

    def rule(total: int, fps: float) -> np.ndarray:
        idx = None
        if fps > 0 and not force_sample:
            step = max(1, round(fps / video_fps))
            idx = np.arange(0, total, step)
            state["times"] = idx / step
        if idx is None or len(idx) > max_frames_num:
            idx = frame_indices(total, max_frames_num)
            state["times"] = idx / fps if fps > 0 else None
        return idx

    return rule, state


def sample_frames(path, options: Options) -> SampledVideo:
    rule, state = frame_rule(options.max_frames_num, options.video_fps, options.force_sample)
    video = _sample_video(path, None, backend=options.video_decode_backend, rule=rule)
    video.times = state.get("times")
    return video


def make_test_checkpoint(out_dir, size: str = "tiny", seed: int = 0):
    """A random checkpoint in the original format (``tiny``: tests; ``small``: LLaVA-Video's token geometry)."""
    from llava_video import build_tiny_llava_video

    return build_tiny_llava_video(out_dir, seed=seed, size=size)


def add_parser(subparsers):
    """``cos make-tiny-llava_video OUT [--size tiny|small] [--seed S]`` (also ``make-tiny-llava-video``)."""
    from llava_video.tiny import add_parser as add_tiny

    return add_tiny(subparsers)
