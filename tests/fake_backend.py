"""A second, minimal backend for the tests: a tiny random Qwen2 behind :class:`cos.protocol.VideoLM`,
with a toy vision encoder and NO ``prefill`` (the path a new backend hits first).

It is what adding a backend takes: this one module (``Options``, ``load``, ``sample_frames``,
``make_test_checkpoint``) plus one registry entry, :data:`SPEC` (registered in-process with
``cos_runtime.registry.register(SPEC)``, or through the ``cos.backends`` entry point group).

Geometry: frames are resized to 16x16; a frame becomes 4 tokens (the mean colour of each 8x8 quadrant,
projected by a fixed linear map to the LM width). The "tokenizer" maps bytes to ids 3..258
(1 = the video placeholder, 2 = end of answer; "yes"/"no" have tokens of their own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cos.errors import ConfigError
from cos.options import as_bool, choice, option, positive_int, validate
from cos.protocol import ModelFacts
from cos.video import BACKENDS as DECODERS
from cos.video import sample_frames as _sample_uniform
from cos_runtime.registry import BackendSpec

SPEC = BackendSpec(name="fake", module="fake_backend", baseline_model="fake_video", cos_model="cos_fake_video", class_name="FakeVideo",
                   title="a tiny random Qwen2 with a toy vision encoder (tests)")

PLACEHOLDER, EOS, OFFSET, SIDE = 1, 2, 3, 16
WORDS = {"yes": OFFSET + 256, "no": OFFSET + 257}  #: whole-word tokens (the self scorer's logits mode)


@dataclass
class Options:
    pretrained: str = option("", flags=("--model",), help="checkpoint folder written by make_test_checkpoint")
    max_frames_num: int = option(8, read=positive_int, flags=("--frames",), help="frames sampled uniformly")
    video_decode_backend: str = option("pyav", read=choice(DECODERS), flags=("--decoder",), help="video decoder")
    independent_frames: bool = option(True, read=as_bool, help="declare frame features independent (False: the pipeline encodes Sp/Sn)")
    state_times: bool = option(False, read=as_bool, help="the prompt states each frame's time (as LLaVA-Video's time instruction)")

    def __post_init__(self):
        validate(self)


class FakeVideoLM:
    def __init__(self, lm, proj: torch.Tensor, independent_frames: bool = True, state_times: bool = False):
        self.lm = lm.eval()
        self.proj = proj
        self.state_times = state_times
        self._facts = ModelFacts(name="fake", context_budget=None, tokens_per_frame=4, independent_frames=independent_frames,
                                 eos_token_ids=(EOS,))

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image

        small = np.stack([np.asarray(Image.fromarray(f).resize((SIDE, SIDE), Image.BILINEAR)) for f in frames])
        return torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255.0

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        quads = torch.nn.functional.avg_pool2d(pixel_values, SIDE // 2)  # (N, 3, 2, 2)
        return quads.flatten(2).transpose(1, 2) @ self.proj  # (N, 4, D)

    def prompt_ids(self, question: str, video=None) -> torch.Tensor:
        times = video.frame_times if (self.state_times and video is not None) else None
        said = f"\nFrames at {','.join(f'{t:g}s' for t in times)}." if times else ""
        ids = [OFFSET + b for b in b"Video: "] + [PLACEHOLDER] + [OFFSET + b for b in f"{said}\n{question}\nAnswer:".encode()]
        return torch.tensor([ids])

    def embed_prompt(self, prompt_ids: torch.Tensor, frame_features: torch.Tensor) -> torch.Tensor:
        ids = prompt_ids[0]
        at = int((ids == PLACEHOLDER).nonzero()[0])
        embed = self.lm.get_input_embeddings()
        parts = [embed(ids[:at]), frame_features.flatten(0, 1).to(embed.weight.dtype), embed(ids[at + 1 :])]
        return torch.cat(parts)[None]

    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).logits[:, -1].float()

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        kwargs.setdefault("pad_token_id", 0)
        return self.lm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def decode(self, token_ids) -> str:
        return bytes(int(t) - OFFSET for t in token_ids if OFFSET <= int(t) < OFFSET + 256).decode("utf-8", "replace").strip()

    def token_id(self, text: str) -> int:
        if text.strip().lower() in WORDS:
            return WORDS[text.strip().lower()]
        data = text.encode()
        if len(data) != 1:
            raise ConfigError(f"{text!r} is not a single token")
        return OFFSET + data[0]


def make_test_checkpoint(out_dir, size: str = "tiny", seed: int = 0) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=OFFSET + 258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=EOS, pad_token_id=0, initializer_range=0.2)
    lm = Qwen2ForCausalLM(config)
    lm.generation_config.eos_token_id = EOS
    lm.save_pretrained(out)
    proj = 8.0 * torch.randn(3, 32, generator=torch.Generator().manual_seed(seed + 1))  # strong enough that the video matters
    (out / "vision.json").write_text(json.dumps(proj.tolist()))
    return out


def load(options: Options, device: str, dtype: torch.dtype) -> FakeVideoLM:
    from transformers import Qwen2ForCausalLM

    path = Path(options.pretrained)
    if not (path / "vision.json").is_file():
        raise ConfigError(f"no fake checkpoint at {options.pretrained!r}")
    lm = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    proj = torch.tensor(json.loads((path / "vision.json").read_text()), dtype=torch.float32)
    return FakeVideoLM(lm, proj, independent_frames=options.independent_frames, state_times=options.state_times)


def sample_frames(path, options: Options):
    return _sample_uniform(path, options.max_frames_num, backend=options.video_decode_backend)
