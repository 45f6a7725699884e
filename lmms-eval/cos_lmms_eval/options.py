"""``model_args`` of the lmms-eval models: names, types, defaults, validation.

lmms-eval turns ``--model_args k=v,...`` into keyword arguments (``true``/``false`` → bool, digits →
int/float, else str) and adds ``batch_size``/``device``/``max_batch_size`` when set. Every name is
declared here once; an unknown name or a bad value fails at start-up with the list of valid ones.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from cos.errors import ConfigError

SCORERS = ("llava", "self", "uniform")
SCORE_MODES = ("generate", "logits")
BACKENDS = ("decord", "pyav", "auto")


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise ConfigError(f"model_args {name}={value!r}: expected true or false")


def _choice(name: str, value: Any, choices: tuple) -> str:
    if str(value) not in choices:
        raise ConfigError(f"model_args {name}={value!r}: expected one of {list(choices)}")
    return str(value)


def _cache_dir(name: str, value: Any, trace_dir: str | None, default_subdir: str) -> str | None:
    """``auto`` → ``<trace_dir>/<default_subdir>`` when trace_dir is set, else off; ``none``/``off``/``false`` → off."""
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("", "none", "off", "false", "0", "no"):
        return None
    if text.lower() == "auto":
        return os.path.abspath(os.path.join(trace_dir, default_subdir)) if trace_dir else None
    if value is True:
        raise ConfigError(f"model_args {name}={value!r}: expected a directory, 'auto' or 'none'")
    return os.path.abspath(text)


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model_args {name}={value!r}: expected a positive integer") from None
    if number < 1 or float(value) != number:
        raise ConfigError(f"model_args {name}={value!r}: expected a positive integer")
    return number


@dataclass
class LongVAOptions:
    """Options of ``--model longva`` (the uniform-sampling baseline); names follow lmms-eval's builtin."""

    pretrained: str = "lmms-lab/LongVA-7B"
    max_frames_num: int = 128
    video_decode_backend: str = "decord"
    conv_template: str = "qwen_1_5"
    model_name: str = "llava_qwen"
    device: str | None = None
    device_map: str | None = None
    torch_dtype: str = "auto"
    attn_implementation: str = "sdpa"
    batch_size: int = 1
    max_batch_size: int | None = None
    encode_chunk_size: int = 32
    trace_dir: str | None = None
    #: finished samples (answer + trace, or the error record), so a killed run resumes where it stopped
    result_cache_dir: str | None = "auto"
    # accepted for compatibility with lmms-eval's builtin longva; fixed by LongVA's design
    truncation: bool = True
    use_cache: bool = True
    mm_spatial_pool_mode: str = "average"
    mm_spatial_pool_stride: int = 2

    def __post_init__(self):
        self.max_frames_num = _positive_int("max_frames_num", self.max_frames_num)
        self.encode_chunk_size = _positive_int("encode_chunk_size", self.encode_chunk_size)
        self.video_decode_backend = _choice("video_decode_backend", self.video_decode_backend, BACKENDS)
        self.conv_template = _choice("conv_template", self.conv_template, ("qwen_1_5",))
        self.model_name = _choice("model_name", self.model_name, ("llava_qwen", "longva"))
        self.attn_implementation = _choice("attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2"))
        self.truncation = _bool("truncation", self.truncation)
        self.use_cache = _bool("use_cache", self.use_cache)
        self.mm_spatial_pool_mode = _choice("mm_spatial_pool_mode", self.mm_spatial_pool_mode, ("average",))
        if int(self.mm_spatial_pool_stride) != 2:
            raise ConfigError(f"model_args mm_spatial_pool_stride={self.mm_spatial_pool_stride!r}: LongVA uses 2")
        if _positive_int("batch_size", self.batch_size) != 1:
            raise ConfigError(f"model_args batch_size={self.batch_size!r}: only batch_size=1 is supported (one video per forward)")
        self.batch_size = 1
        self.result_cache_dir = _cache_dir("result_cache_dir", self.result_cache_dir, self.trace_dir, "result_cache")

    #: options that never change an answer (where and how fast it runs, where files go, no-op names)
    NOT_IN_IDENTITY = ("device", "device_map", "batch_size", "max_batch_size", "encode_chunk_size", "trace_dir",
                       "result_cache_dir", "score_cache_dir", "scorer_batch_size", "truncation", "use_cache",
                       "conv_template", "model_name", "mm_spatial_pool_mode", "mm_spatial_pool_stride")

    def identity(self) -> dict:
        """The options that determine an answer: the model-configuration part of the result-cache key.

        Devices, batch sizes, chunk sizes and output locations are left out, so a run resumed on another
        number of processes (cuda:0 vs cuda:1) or with another trace directory reuses what was answered.
        A local checkpoint directory is made absolute.
        """
        out = {k: v for k, v in asdict(self).items() if k not in self.NOT_IN_IDENTITY}
        for key in ("pretrained", "scorer_pretrained"):
            if key in out and isinstance(out[key], str) and os.path.isdir(out[key]):
                out[key] = os.path.abspath(out[key])
        return out

    @classmethod
    def parse(cls, kwargs: dict) -> LongVAOptions:
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(f"unknown model_args {unknown} for this model; valid: {', '.join(valid)}")
        return cls(**kwargs)


@dataclass
class CoSLongVAOptions(LongVAOptions):
    """Options of ``--model cos_longva``: the baseline's plus the method's."""

    scorer: str = "llava"
    scorer_pretrained: str = "llava-hf/llava-1.5-13b-hf"
    scorer_load_in_4bit: bool = False
    scorer_batch_size: int = 16
    score_mode: str = "generate"
    score_threshold: float = 0.5
    shot_size: int = 4
    leftover: str = "pad"
    alpha: str = "auto"
    negative_order: str = "forward"
    share_prefix: str = "auto"
    #: scorer results per (video, frames, scorer, question): another alpha or decoding option does not re-score
    score_cache_dir: str | None = "auto"

    def __post_init__(self):
        super().__post_init__()
        self.scorer = _choice("scorer", self.scorer, SCORERS)
        self.score_mode = _choice("score_mode", self.score_mode, SCORE_MODES)
        self.scorer_load_in_4bit = _bool("scorer_load_in_4bit", self.scorer_load_in_4bit)
        self.scorer_batch_size = _positive_int("scorer_batch_size", self.scorer_batch_size)
        self.shot_size = _positive_int("shot_size", self.shot_size)
        self.leftover = _choice("leftover", self.leftover, ("pad", "drop"))
        self.negative_order = _choice("negative_order", self.negative_order, ("forward", "backward"))
        self.share_prefix = _choice("share_prefix", self.share_prefix, ("auto", "always", "never"))
        try:
            self.score_threshold = float(self.score_threshold)
        except (TypeError, ValueError):
            raise ConfigError(f"model_args score_threshold={self.score_threshold!r}: expected a number in [0, 1]") from None
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"model_args score_threshold={self.score_threshold!r}: expected a number in [0, 1]")
        if str(self.alpha) != "auto":
            try:
                value = float(self.alpha)
            except (TypeError, ValueError):
                raise ConfigError(f"model_args alpha={self.alpha!r}: expected 'auto' or a number in [0, 1]") from None
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"model_args alpha={self.alpha!r}: expected 'auto' or a number in [0, 1]")
            self.alpha = value
        self.score_cache_dir = _cache_dir("score_cache_dir", self.score_cache_dir, self.trace_dir, "score_cache")
