"""What the LLaVA-family model classes share: chunked frame encoding, loading and saving the checkpoint, the
generation config, and decoding from spliced embeddings through their ``language_model`` (a transformers causal LM).

A model class mixes in :class:`SplicedCausalLM` and sets :attr:`~SplicedCausalLM.layout` (its checkpoint
key names); it keeps its own vision path (``_encode_chunk``, ``image_size``, ``vision_dtype``) and prompt splicing.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from vlm_common.checkpoints import CheckpointError, KeyLayout, iter_checkpoint_tensors, write_checkpoint_tensors

logger = logging.getLogger(__name__)

#: The warning ``generate`` gives for a repetition penalty without prompt ids. Penalising only the new tokens
#: is exactly what the original LongVA and LLaVA-NeXT code do (they generate from embeddings), so it is silenced.
_PENALTY_WARNING = r"Passing `repetition_penalty` with `inputs_embeds`"


class SplicedCausalLM:
    """Mixin for an ``nn.Module`` with ``language_model``, ``config`` (``to_dict()``) and ``generation_config``.

    Attributes:
        layout: the checkpoint's key names (:class:`vlm_common.checkpoints.KeyLayout`).
        optional_parameters: module parameters a checkpoint may lack (filled with the identity: ones for
            weights, zeros for biases; e.g. a norm the model never applies).
    """

    layout: KeyLayout
    optional_parameters: tuple[str, ...] = ()
    #: the processor that makes this model's pixel values (named in the error for a wrong frame size)
    processor_name: str = "processor"
    _generation_config_file: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        return self.language_model.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.model.embed_tokens.weight.dtype

    # ------------------------------------------------------------------------------ vision
    def encode_frames(self, pixel_values: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """Pixel values ``(N, 3, S, S)`` -> frame features ``(N, T, D)`` in the LM's dtype and device.

        Frames go through the model's ``_encode_chunk`` (its vision tower, projector and pooling)
        ``chunk_size`` at a time, in ``vision_dtype``; the result does not depend on the chunking.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (N, 3, S, S), got {tuple(pixel_values.shape)}")
        size = self.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"pixel_values are {tuple(pixel_values.shape[-2:])}, the vision tower expects ({size}, {size}); "
                f"preprocess with the checkpoint's {self.processor_name}"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if pixel_values.shape[0] == 0:
            raise ValueError("pixel_values holds no frames")
        outs = []
        with torch.no_grad():
            for start in range(0, pixel_values.shape[0], chunk_size):
                chunk = pixel_values[start : start + chunk_size].to(device=self.device, dtype=self.vision_dtype)
                outs.append(self._encode_chunk(chunk))
        return torch.cat(outs, dim=0)

    # ------------------------------------------------------------------------------ loading
    def load_checkpoint_weights(self, ckpt_dir: str | os.PathLike, device: torch.device, dtype: torch.dtype) -> None:
        """Assign every parameter from the checkpoint shards (strict: missing/unexpected keys raise)."""
        expected = dict(self.named_parameters())
        state: dict[str, torch.Tensor] = {}
        for ckpt_key, tensor in iter_checkpoint_tensors(ckpt_dir, device=device):
            key = self.layout.checkpoint_to_module_key(ckpt_key)
            if key not in expected:
                raise CheckpointError(self._unexpected_key_message(ckpt_key, key))
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise CheckpointError(
                    f"checkpoint key {ckpt_key!r} has shape {tuple(tensor.shape)}, model expects {tuple(expected[key].shape)}"
                )
            state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        for key in self.optional_parameters:
            if key not in state and key in expected:
                logger.info("checkpoint has no %r (never applied by %s); using the identity", self.layout.module_to_checkpoint_key(key), self.layout.model)
                fill = torch.ones if key.endswith("weight") else torch.zeros
                state[key] = fill(expected[key].shape, dtype=dtype, device=device)
        missing = [k for k in expected if k not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint {ckpt_dir} lacks key {self.layout.module_to_checkpoint_key(missing[0])!r}"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            )
        self._assign(state, "loaded")

    def init_random_weights(self, device: torch.device, dtype: torch.dtype, seed: int = 0) -> None:
        """Draw every parameter at random, directly on ``device`` in ``dtype`` (no checkpoint, no float32 copy):
        benchmarks at a checkpoint's full size without its weights.

        Norm weights are ones and their biases (and every other bias) zeros; other tensors are
        ``N(0, 1/fan_in)`` (embeddings ``N(0, 0.02²)``), so activations stay O(1) through the depth.
        """
        gen = torch.Generator(device=device).manual_seed(int(seed))
        state: dict[str, torch.Tensor] = {}
        for key, param in self.named_parameters():
            tensor = torch.empty(tuple(param.shape), device=device, dtype=dtype)
            leaf, shape = key.rsplit(".", 1)[-1], tuple(param.shape)
            if "norm" in key:  # layer_norm, post_layernorm, CLIP's pre_layrnorm, RMSNorm
                tensor.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf == "bias":
                tensor.zero_()
            else:
                embedding = "embed" in key
                fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
                tensor.normal_(0.0, 0.02 if embedding else fan_in ** -0.5, generator=gen)
            state[key] = tensor
        self._assign(state, "initialised")

    def _assign(self, state: dict[str, torch.Tensor], done: str) -> None:
        """Make ``state``'s tensors the module's parameters (no copy); every parameter must leave the meta device."""
        self.load_state_dict(state, strict=False, assign=True)  # buffers are not in checkpoints
        still_meta = [n for n, p in self.named_parameters() if p.device.type == "meta"]
        if still_meta:
            raise CheckpointError(f"parameter {still_meta[0]!r} was not {done}")

    def _unexpected_key_message(self, ckpt_key: str, key: str) -> str:
        return f"unexpected checkpoint key {ckpt_key!r} (maps to {key!r}, which the model lacks)"

    def _load_generation_config(self, ckpt_dir: Path) -> None:
        path = ckpt_dir / "generation_config.json"
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                self._generation_config_file = json.load(f)
            gen = GenerationConfig.from_dict(self._generation_config_file)
        else:
            gen = GenerationConfig.from_model_config(self.language_model.config)
        if gen.pad_token_id is None:
            gen.pad_token_id = self.language_model.config.bos_token_id
        gen.do_sample = False  # greedy by default, as lmms-eval runs these models; generate(do_sample=True) overrides
        self.generation_config = gen

    # ------------------------------------------------------------------------------ saving
    def save_pretrained(self, out_dir: str | os.PathLike, max_shard_size: int | str = "5GB") -> Path:
        """Write ``config.json``, ``generation_config.json`` and sharded safetensors in the original format.

        Tensors are written in the model's current dtype (``torch_dtype`` in ``config.json`` follows);
        ``config.json`` is the file as read (load-time pool/newline overrides are not written);
        ``generation_config.json`` is the file as loaded when there was one. Tokenizer files are written by
        :meth:`llava_video.LlavaVideoProcessor.save_pretrained`.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {self.layout.module_to_checkpoint_key(k): v for k, v in self.named_parameters()}
        write_checkpoint_tensors(out_dir, tensors, max_shard_size=max_shard_size, order=self.layout.order)
        raw = self.config.to_dict()
        raw["torch_dtype"] = str(self.dtype).removeprefix("torch.")
        with open(out_dir / "config.json", "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=2, sort_keys=True)
            f.write("\n")
        gen = self._generation_config_file
        if gen is None:
            gen = {k: v for k, v in self.generation_config.to_diff_dict().items() if k != "transformers_version"}
        with open(out_dir / "generation_config.json", "w", encoding="utf-8") as f:
            json.dump(gen, f, indent=2, sort_keys=True)
            f.write("\n")
        return out_dir

    # ------------------------------------------------------------------------------ decoding
    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One uncached forward -> last-position logits ``(B, V)`` in float32."""
        if inputs_embeds.ndim != 3:
            raise ValueError(f"inputs_embeds must be (B, L, D), got {tuple(inputs_embeds.shape)}")
        with torch.no_grad():
            out = self.language_model(
                inputs_embeds=inputs_embeds.to(self.device),
                attention_mask=None if attention_mask is None else attention_mask.to(self.device),
                use_cache=False,
                logits_to_keep=1,
            )
        return out.logits[:, -1].float()

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """``Qwen2ForCausalLM.generate`` from embeddings; returns only the new tokens ``(B, T_new)``.

        Starts from the checkpoint's ``generation_config.json`` (eos ids, ``repetition_penalty``) with greedy decoding. Generation keywords
        (``max_new_tokens``, ``temperature``, ``top_p``, ``num_beams``, ``do_sample``...) update a copy of it;
        ``temperature <= 0`` means greedy (as in lmms-eval) and ``None`` values are ignored, except
        ``eos_token_id=None``, which turns the end-of-answer tokens off. Other keywords
        (``logits_processor``, ``stopping_criteria``...) go to ``generate``. The repetition penalty sees only
        generated tokens, as in LongVA and LLaVA-NeXT (which also generate from ``inputs_embeds``).
        """
        if inputs_embeds.ndim != 3:
            raise ValueError(f"inputs_embeds must be (B, L, D), got {tuple(inputs_embeds.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        gen = copy.deepcopy(self.generation_config)
        if "eos_token_id" in kwargs and kwargs["eos_token_id"] is None:
            gen.eos_token_id = None  # an explicit None: no end-of-answer token (exactly max_new_tokens)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        temperature = kwargs.get("temperature")
        if temperature is not None and temperature <= 0:
            kwargs.pop("temperature")
            kwargs["do_sample"] = False
        if not kwargs.get("do_sample", gen.do_sample):
            # Sampling knobs (the file's or the caller's) do not apply under greedy decoding; clear them so that
            # transformers does not warn on every call.
            gen.temperature = gen.top_p = gen.top_k = None
            for name in ("temperature", "top_p", "top_k"):
                kwargs.pop(name, None)
        rest = gen.update(**kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PENALTY_WARNING)
            with torch.no_grad():
                return self.language_model.generate(
                    inputs_embeds=inputs_embeds.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    generation_config=gen,
                    **rest,
                )



__all__ = ["SplicedCausalLM"]
