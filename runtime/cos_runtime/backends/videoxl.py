"""Video-XL-7B as a runtime backend: its lmms-eval adapter's options, frame rule and prompt, and beacon decoding.

Registered in :mod:`cos_runtime.registry` as ``videoxl`` (lmms-eval models ``videoxl``, the id of Video-XL's
own adapter ``eval/videoxl.py``, and ``cos_videoxl``). ``model_args`` carry the adapter's names; the
defaults follow Video-XL's documented evaluation command (``conv_template=qwen_1_5``, ``model_name=llava_qwen``,
``max_frames_num=128``, ``video_decode_backend=decord``), since the adapter's own defaults
(``pretrained=lmms-lab/LongVA-7B``, ``conv_template=vicuna_v1``) do not run Video-XL. ``beacon_ratio`` (default
8, the README's ``model.config.beacon_ratio = [8]``) fixes the compression, which the release otherwise
draws per window from {2, 4, 8}.

How CoS runs on it: every frame goes through CLIP and the projector once (features are per frame, so Sp
and Sn gather X's); what cannot be shared is the beacon compression, which is windowed over each video —
X, Sp and Sn each build their own beacon memory, as three rows of one batch, and are then decoded together
with the fused logits. The trace's ``visual_memory`` says so (``batch`` 3) with the memory's size.

Video-XL generates from ids, so its repetition penalty covers the expanded prompt (system text, question,
options and the ``144·T`` placeholder ids) as well as the answer; the backend hands the model those ids.
Under co-reasoning the fused penalty (:class:`cos.decoding.CoReasoningLogitsProcessor`) sees the same ids —
X, Sp and Sn share one expanded prompt — so it penalises exactly what the baseline penalises, applied
once to the fused scores, and α = 0 gives the baseline's tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from cos.errors import ConfigError
from cos.options import as_bool, choice, option, positive_int, validate
from cos.protocol import VideoInfo
from cos.video import BACKENDS as DECODERS
from cos.video import SampledVideo
from cos.video import sample_frames as _sample_uniform
from cos_runtime.backends.common import SplicedVideoLM

#: where ``sy1998/Video_XL`` keeps the weights (a folder of the hub repository)
DEFAULT_PRETRAINED = "sy1998/Video_XL/VideoXL_weight_8"


def _only(expected, why: str):
    """A reader for an adapter argument accepted for compatibility at one value only."""

    def read(name: str, value):
        if value in (None, "None", ""):
            got = None
        elif isinstance(expected, bool):
            got = as_bool(name, value)
        else:
            got = value if expected is None else type(expected)(value)
        if got != expected:
            raise ConfigError(f"{name}={value!r}: only {expected!r} is supported ({why})")
        return got

    return read


def _conv_template(name: str, value) -> str:
    if value != "qwen_1_5":
        raise ConfigError(f"{name}={value!r}: Video-XL is a Qwen2 chat model trained with qwen_1_5 (its adapter's default vicuna_v1 "
                          "is a leftover of LLaVA); pass conv_template=qwen_1_5")
    return value


def _optional_name(name: str, value):
    if value in (None, "None", "", "llava_qwen"):
        return None if value in (None, "None", "") else value
    raise ConfigError(f"{name}={value!r}: Video-XL loads as llava_qwen (the adapter's model_name)")


@dataclass
class Options:
    """Video-XL's lmms-eval adapter arguments (``eval/videoxl.py``), with the documented command's values as defaults."""

    pretrained: str = option(DEFAULT_PRETRAINED, flags=("--model",),
                             help="checkpoint directory (the release's VideoXL_weight_8 folder) or hub id[/subfolder]")
    max_frames_num: int = option(128, read=positive_int, flags=("--frames",),
                                 help="frames sampled uniformly: np.linspace(0, total - 1, n, dtype=int)")
    beacon_ratio: int = option(8, read=positive_int, help="raw visual tokens per beacon (the README's 8; must be <= the beacon window)")
    video_decode_backend: str = option("decord", read=choice(DECODERS), flags=("--decoder",),
                                       help="video decoder: decord (the documented command), pyav, or auto")
    attn_implementation: str = option("sdpa", read=choice(("sdpa", "eager", "flash_attention_2")),
                                      help="attention kernel of the vision tower (the beacon LM always runs torch SDPA)")
    encode_chunk_size: int = option(32, read=positive_int, identity=False, help="frames per vision-tower forward")
    conv_template: str = option("qwen_1_5", read=_conv_template, identity=False, cli=False)
    model_name: str | None = option("llava_qwen", read=_optional_name, identity=False, cli=False)
    token_strategy: str = option("single", read=choice(("single",)), identity=False, cli=False)
    mm_spatial_pool_stride: int = option(2, read=_only(2, "Video-XL's 144 tokens per frame"), identity=False, cli=False)
    mm_spatial_pool_mode: str = option("average", read=_only("average", "Video-XL's pooling"), identity=False, cli=False)
    truncation: bool = option(True, read=as_bool, identity=False, cli=False)
    truncate_context: bool = option(False, read=_only(False, "the adapter's default"), identity=False, cli=False)
    use_cache: bool = option(True, read=as_bool, identity=False, cli=False)
    customized_config: str | None = option(None, read=_only(None, "configure through the checkpoint's config.json"), identity=False, cli=False)

    def __post_init__(self):
        validate(self)


class VideoXLBackend(SplicedVideoLM):
    """A :class:`~cos.protocol.VideoLM` over ``videoxl.VideoXLForCausalLM`` (no cached prefill: the beacon
    memory is built by :meth:`generate` itself).

    :meth:`embed_prompt` remembers, per sequence length, the expanded ids and the visual span of the prompt
    it embedded; :meth:`generate` and :meth:`forward_logits` look them up (a longer sequence is the same
    prompt with answer tokens appended). X, Sp and Sn share one layout.
    """

    _kept_layouts = 8

    def __init__(self, model, processor, options: Options):
        super().__init__(model, processor, options.encode_chunk_size)
        self.options = options
        self._facts = self.make_facts("videoxl", independent_frames=True)  # CLIP + projector + pool per frame
        self._layouts: OrderedDict[int, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()

    def prompt_ids(self, question: str, video: VideoInfo | None = None) -> torch.Tensor:
        return self.processor.prompt_ids(question).to(self.device)  # Video-XL's prompt states no frame times

    def embed_prompt(self, prompt_ids: torch.Tensor, frame_features: torch.Tensor) -> torch.Tensor:
        embeds = self.model.embed_prompt(prompt_ids, frame_features)
        ids, span = self.model.expand_ids(prompt_ids.to(self.device), int(frame_features.shape[0] * frame_features.shape[1]))
        self._layouts[int(embeds.shape[1])] = (ids, span)
        self._layouts.move_to_end(int(embeds.shape[1]))
        while len(self._layouts) > self._kept_layouts:
            self._layouts.popitem(last=False)
        return embeds

    def _layout(self, inputs_embeds: torch.Tensor, exact: bool = True) -> tuple[torch.Tensor | None, tuple[int, int]]:
        """The expanded ids (one row per batch row) and visual span of the embedded prompt of this length; with
        ``exact=False`` a longer sequence is an embedded prompt with answer tokens appended (a naive decoder's
        input: they extend the text after the video, and no ids are returned)."""
        length, batch = int(inputs_embeds.shape[1]), int(inputs_embeds.shape[0])
        if length in self._layouts:
            ids, span = self._layouts[length]
            return ids.expand(batch, -1), span
        shorter = [] if exact else [n for n in reversed(self._layouts) if n < length]
        if not shorter:
            raise ConfigError(f"Video-XL: no prompt of {length} tokens was embedded by this backend; build the inputs with embed_prompt")
        return None, self._layouts[shorter[0]][1]

    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        _, span = self._layout(inputs_embeds, exact=False)
        return self.model.forward_logits(inputs_embeds, attention_mask, visual_span=span)

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        ids, span = self._layout(inputs_embeds)
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ConfigError("Video-XL decodes streams of one prompt layout without padding; the streams' prompts differ in length")
        return self.model.generate(inputs_embeds=inputs_embeds, attention_mask=None, visual_span=span, input_ids=ids, **kwargs)

    def memory_report(self) -> dict | None:
        """The beacon memory of the last decoding (for the trace's ``visual_memory``)."""
        return None if self.model.last_memory is None else dict(self.model.last_memory)

    def decode(self, token_ids) -> str:
        text = self.processor.decode(token_ids)
        return text.split("<|im_end|>", 1)[0].strip()  # the adapter's stopping keyword


def load(options: Options, device: str, dtype: torch.dtype, random_weights: int | None = None) -> VideoXLBackend:
    """Load Video-XL (a hub id[/subfolder] or a checkpoint directory in the release's format) as a VideoLM.
    ``random_weights``: a seed; the parameters are drawn on the device instead of read (``cos bench --size full``)."""
    from videoxl import VideoXLForCausalLM, VideoXLProcessor
    from vlm_common.checkpoints import CheckpointError

    try:
        model = VideoXLForCausalLM.from_pretrained(options.pretrained, torch_dtype=dtype, device_map=device,
                                                   attn_implementation=options.attn_implementation, beacon_ratio=options.beacon_ratio,
                                                   random_weights=random_weights)
        processor = VideoXLProcessor.from_pretrained(options.pretrained)
    except (CheckpointError, FileNotFoundError) as err:
        raise ConfigError(f"cannot load Video-XL from {options.pretrained!r}: {err}") from err
    except ValueError as err:  # a config.json setting the release never used, a bad beacon_ratio
        raise ConfigError(f"cannot load Video-XL from {options.pretrained!r}: {err}") from err
    model.eval()
    return VideoXLBackend(model, processor, options)


def sample_frames(path, options: Options) -> SampledVideo:
    """The adapter's rule: ``max_frames_num`` frames at ``np.linspace(0, total - 1, n, dtype=int)``."""
    return _sample_uniform(path, options.max_frames_num, backend=options.video_decode_backend)


def make_test_checkpoint(out_dir, size: str = "tiny", seed: int = 0):
    """A random checkpoint in the release's format (``tiny``: tests, 4-frame windows; ``small``: 144 tokens/frame)."""
    from videoxl import build_tiny_videoxl

    return build_tiny_videoxl(out_dir, seed=seed, size=size)


def add_parser(subparsers):
    """``cos make-tiny-videoxl OUT [--size tiny|small] [--seed S]``."""
    from videoxl.tiny import add_parser as add_tiny

    return add_tiny(subparsers)
