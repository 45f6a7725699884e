"""LongVA-7B (``LlavaQwenForCausalLM``) re-implemented on ``transformers`` 5.x classes.

Three parts, kept apart so that frames are encoded once and reused (``longva-notes.md`` §1):

- :meth:`LongVAForCausalLM.encode_frames`: CLIP ``hidden_states[select_layer]`` without CLS -> projector
  (Linear -> exact GELU -> Linear) -> 2x2 average pool, row-major: ``(N, T, D)``, ``T = 144`` at 336 px.
- :meth:`LongVAForCausalLM.embed_prompt`: token embeddings with the frame features spliced in place of
  the one ``IMAGE_TOKEN_INDEX`` (frames flattened in time order, no separator tokens).
- :meth:`LongVAForCausalLM.forward` / :meth:`~LongVAForCausalLM.generate`: the Qwen2 language model on
  ``inputs_embeds``; ``generate`` returns only the new tokens.

The class is a plain ``nn.Module`` holding ``vision_tower`` (``CLIPVisionModel``), ``mm_projector``
(``nn.Sequential``) and ``language_model`` (``Qwen2ForCausalLM``); checkpoint keys are mapped in
:mod:`longva.checkpoint`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel, GenerationConfig, Qwen2ForCausalLM

from longva.checkpoint import (
    CheckpointError,
    checkpoint_to_module_key,
    iter_checkpoint_tensors,
    module_to_checkpoint_key,
    resolve_checkpoint,
    write_checkpoint_tensors,
)
from longva.config import LongVAConfig
from longva.constants import IMAGE_TOKEN_INDEX
from vlm_common.loading import check_attn_implementation, resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

#: The warning ``generate`` gives for a repetition penalty without prompt ids. Penalising only the new
#: tokens is exactly LongVA's behaviour (``longva-notes.md`` §3), so it is silenced inside :meth:`generate`.
_PENALTY_WARNING = r"Passing `repetition_penalty` with `inputs_embeds`"


def _tokenizer_length(ckpt_dir: Path, config: LongVAConfig) -> int | None:
    """``len(tokenizer)`` of the checkpoint's tokenizer, or None when it ships none."""
    if not any((ckpt_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return None
    from longva.processing import load_tokenizer

    return len(load_tokenizer(ckpt_dir, config.text_config))


class LongVAForCausalLM(nn.Module):
    """LongVA: CLIP tower + 2-layer MLP projector + 2x2 pooling + Qwen2 LM. Load with :meth:`from_pretrained`."""

    def __init__(self, config: LongVAConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        check_attn_implementation(attn_implementation)
        self.config = config
        text_config = copy.deepcopy(config.text_config)
        vision_config = copy.deepcopy(config.vision_config)
        text_config._attn_implementation = attn_implementation
        vision_config._attn_implementation = attn_implementation
        # language_model first: state_dict order LM, tower, projector (what checkpoint_order writes too).
        self.language_model = Qwen2ForCausalLM(text_config)
        self.vision_tower = CLIPVisionModel(vision_config)
        self.mm_projector = nn.Sequential(
            nn.Linear(config.mm_hidden_size, config.hidden_size),
            nn.GELU(),  # exact (erf) GELU, as LongVA's "mlp2x_gelu"
            nn.Linear(config.hidden_size, config.hidden_size),
        )
        # One config object for the LM: resize_token_embeddings updates it, to_dict() reads it.
        self.config.text_config = self.language_model.config
        self.generation_config = GenerationConfig.from_model_config(self.language_model.config)
        self.generation_config.do_sample = False
        self._generation_config_file: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.language_model.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.model.embed_tokens.weight.dtype

    @property
    def tokens_per_frame(self) -> int:
        """``T``: visual tokens per frame (144 for LongVA-7B)."""
        return self.config.tokens_per_frame

    @property
    def image_size(self) -> int:
        """Side of the square pixel input the tower expects."""
        return self.config.image_size

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        torch_dtype: str | torch.dtype | None = None,
        device_map: str | torch.device | None = None,
        attn_implementation: str = "sdpa",
        *,
        dtype: str | torch.dtype | None = None,
    ) -> LongVAForCausalLM:
        """Load a checkpoint in the original LongVA format (local directory or hub id).

        Args:
            path_or_hub_id: checkpoint directory, or a hub id fetched with ``snapshot_download``.
            torch_dtype / dtype (alias): parameter dtype; default float32 on CPU, float16 on GPU.
            device_map: ``None``/``"cpu"``, ``"auto"`` (cuda if available) or a device such as ``"cuda:0"``.
            attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.

        Every checkpoint key must map to a module parameter and vice versa (:class:`CheckpointError`
        names the first offender). When the tokenizer is smaller than ``vocab_size`` the embeddings and
        LM head are shrunk with ``resize_token_embeddings(len(tokenizer))``, as LongVA's loader does.
        """
        if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
            raise ValueError(f"torch_dtype={torch_dtype} and dtype={dtype} disagree; pass one of them")
        ckpt_dir = resolve_checkpoint(path_or_hub_id)
        config = LongVAConfig.from_json_file(ckpt_dir / "config.json")
        device = resolve_device(device_map)
        param_dtype = resolve_dtype(dtype if dtype is not None else torch_dtype, device)
        if config.text_config.tie_word_embeddings:
            raise CheckpointError("config.json sets tie_word_embeddings=true; LongVA checkpoints have an untied lm_head")

        from accelerate import init_empty_weights

        # Parameters on the meta device (no random init of 8B weights); buffers (rotary inv_freq in
        # float32, CLIP position ids) are created for real and keep their dtypes.
        with init_empty_weights(include_buffers=False):
            model = cls(config, attn_implementation=attn_implementation)
        model.load_checkpoint_weights(ckpt_dir, device=device, dtype=param_dtype)
        model.to(device)  # buffers only; never .to(dtype), which would round inv_freq

        n_tokens = _tokenizer_length(ckpt_dir, config)
        vocab = model.language_model.config.vocab_size
        if n_tokens is not None and n_tokens < vocab:
            model.language_model.resize_token_embeddings(n_tokens)
        model._load_generation_config(ckpt_dir)
        model.eval()
        model.requires_grad_(False)
        return model

    def load_checkpoint_weights(self, ckpt_dir: str | os.PathLike, device: torch.device, dtype: torch.dtype) -> None:
        """Assign every parameter from the checkpoint shards (strict: missing/unexpected keys raise)."""
        expected = {name: p for name, p in self.named_parameters()}
        state: dict[str, torch.Tensor] = {}
        for ckpt_key, tensor in iter_checkpoint_tensors(ckpt_dir, device=device):
            key = checkpoint_to_module_key(ckpt_key)
            if key not in expected:
                raise CheckpointError(f"unexpected checkpoint key {ckpt_key!r} (maps to {key!r}, which the model lacks)")
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise CheckpointError(
                    f"checkpoint key {ckpt_key!r} has shape {tuple(tensor.shape)}, model expects {tuple(expected[key].shape)}"
                )
            state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        missing = [k for k in expected if k not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint {ckpt_dir} lacks key {module_to_checkpoint_key(missing[0])!r}"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            )
        self.load_state_dict(state, strict=False, assign=True)  # buffers are not in checkpoints
        still_meta = [n for n, p in self.named_parameters() if p.device.type == "meta"]
        if still_meta:
            raise CheckpointError(f"parameter {still_meta[0]!r} was not loaded")

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
        gen.do_sample = False  # greedy by default, as lmms-eval runs LongVA; generate(do_sample=True) overrides
        self.generation_config = gen

    # ------------------------------------------------------------------------------ saving
    def save_pretrained(self, out_dir: str | os.PathLike, max_shard_size: int | str = "5GB") -> Path:
        """Write ``config.json``, ``generation_config.json`` and sharded safetensors in the original format.

        Tensors are written in the model's current dtype (``torch_dtype`` in ``config.json`` follows);
        ``generation_config.json`` is the file as loaded when there was one. Tokenizer and image processor
        files are written by :meth:`longva.LongVAProcessor.save_pretrained`.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {module_to_checkpoint_key(k): v for k, v in self.named_parameters()}
        write_checkpoint_tensors(out_dir, tensors, max_shard_size=max_shard_size)
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

    # ------------------------------------------------------------------------------ vision
    def encode_frames(self, pixel_values: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """Pixel values ``(N, 3, S, S)`` -> frame features ``(N, T, D)`` in the LM's dtype and device.

        CLIP ``hidden_states[mm_vision_select_layer]`` (before ``post_layernorm``), CLS dropped, projector,
        then ``avg_pool2d`` with stride ``mm_spatial_pool_stride`` over the row-major patch grid (pooling
        comes after the projector in LongVA). Frames go through CLIP ``chunk_size`` at a time; the result
        does not depend on the chunking.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (N, 3, S, S), got {tuple(pixel_values.shape)}")
        size = self.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"pixel_values are {tuple(pixel_values.shape[-2:])}, the vision tower expects ({size}, {size}); "
                f"preprocess with the checkpoint's LongVAProcessor"
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

    @property
    def vision_dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    def _encode_chunk(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values=pixel_values, output_hidden_states=True)
        feats = out.hidden_states[self.config.mm_vision_select_layer][:, 1:]  # "patch": drop CLS
        feats = self.mm_projector(feats)
        n, p, c = feats.shape
        g = self.config.patch_grid
        if p != g * g:
            raise RuntimeError(f"vision tower returned {p} patches, expected {g}x{g}")
        grid = feats.view(n, g, g, c).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(grid, self.config.mm_spatial_pool_stride)
        return pooled.flatten(2).transpose(1, 2).contiguous().to(self.dtype)

    # ------------------------------------------------------------------------------ prompt
    def embed_prompt(
        self, prompt_ids: torch.Tensor, frame_features: torch.Tensor, *, truncate: bool = True
    ) -> torch.Tensor:
        """Splice ``frame_features (N, T, D)`` into the placeholder -> ``inputs_embeds (1, L - 1 + N*T, D)``.

        ``prompt_ids (1, L)`` must hold exactly one ``IMAGE_TOKEN_INDEX`` (-200). Frames are flattened in
        time order with no separator tokens. As LongVA does, the result is cut to
        ``config.tokenizer_model_max_length`` tokens when that is set (the tail, i.e. the question, is
        lost; a warning says so); ``truncate=False`` disables this.
        """
        if prompt_ids.ndim != 2 or prompt_ids.shape[0] != 1:
            raise ValueError(f"prompt_ids must be (1, L), got {tuple(prompt_ids.shape)}")
        slots = (prompt_ids[0] == IMAGE_TOKEN_INDEX).nonzero().flatten()
        if slots.numel() != 1:
            raise ValueError(f"prompt_ids must hold exactly one image placeholder ({IMAGE_TOKEN_INDEX}), found {slots.numel()}")
        if frame_features.ndim != 3 or frame_features.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"frame_features must be (N, T, {self.config.hidden_size}), got {tuple(frame_features.shape)}"
            )
        pos = int(slots[0])
        ids = prompt_ids[0].to(self.device)
        embed = self.language_model.get_input_embeddings()
        before = embed(ids[:pos])
        after = embed(ids[pos + 1 :])
        visual = frame_features.to(device=self.device, dtype=before.dtype).flatten(0, 1)
        embeds = torch.cat([before, visual, after], dim=0)
        limit = self.config.tokenizer_model_max_length
        if truncate and limit is not None and embeds.shape[0] > limit:
            logger.warning(
                "prompt of %d tokens truncated to tokenizer_model_max_length=%d (as LongVA does): the end of the "
                "prompt, including the question, is cut",
                embeds.shape[0],
                limit,
            )
            embeds = embeds[:limit]
        return embeds.unsqueeze(0)

    # ------------------------------------------------------------------------------ language model
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """The Qwen2 LM on ``inputs_embeds`` (or plain ``input_ids`` without placeholders); returns its output."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None and bool((input_ids == IMAGE_TOKEN_INDEX).any()):
            raise ValueError("input_ids hold an image placeholder; build inputs_embeds with embed_prompt first")
        return self.language_model(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs
        )

    def forward_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One uncached forward -> last-position logits ``(B, V)`` in float32."""
        with torch.no_grad():
            out = self.language_model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=1
            )
        return out.logits[:, -1].float()

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """``Qwen2ForCausalLM.generate`` from embeddings; returns only the new tokens ``(B, T_new)``.

        Starts from the checkpoint's ``generation_config.json`` (eos ids, ``repetition_penalty``) with
        greedy decoding. Generation keywords (``max_new_tokens``, ``temperature``, ``top_p``,
        ``num_beams``, ``do_sample``...) update a copy of it; ``temperature <= 0`` means greedy (as in
        lmms-eval) and ``None`` values are ignored. Other keywords (``logits_processor``,
        ``stopping_criteria``...) go to ``generate``. The repetition penalty sees only generated tokens,
        as in LongVA.
        """
        if inputs_embeds.ndim != 3:
            raise ValueError(f"inputs_embeds must be (B, L, D), got {tuple(inputs_embeds.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        gen = copy.deepcopy(self.generation_config)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        temperature = kwargs.get("temperature")
        if temperature is not None and temperature <= 0:
            kwargs.pop("temperature")
            kwargs["do_sample"] = False
        if not kwargs.get("do_sample", gen.do_sample):
            # Sampling knobs (the file's or the caller's) do not apply under greedy decoding; clear them
            # so that transformers does not warn on every call.
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


__all__ = ["LongVAForCausalLM", "resolve_device", "resolve_dtype"]
