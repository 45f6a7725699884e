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
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel, GenerationConfig, Qwen2ForCausalLM

from longva.checkpoint import (
    LAYOUT,
    CheckpointError,
    resolve_checkpoint,
)
from longva.config import LongVAConfig
from longva.constants import IMAGE_TOKEN_INDEX
from vlm_common.loading import check_attn_implementation, resolve_device, resolve_dtype
from vlm_common.modeling import SplicedCausalLM

logger = logging.getLogger(__name__)



def _tokenizer_length(ckpt_dir: Path, config: LongVAConfig) -> int | None:
    """``len(tokenizer)`` of the checkpoint's tokenizer, or None when it ships none."""
    if not any((ckpt_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return None
    from longva.processing import load_tokenizer

    return len(load_tokenizer(ckpt_dir, config.text_config))


class LongVAForCausalLM(SplicedCausalLM, nn.Module):
    """LongVA: CLIP tower + 2-layer MLP projector + 2x2 pooling + Qwen2 LM. Load with :meth:`from_pretrained`."""

    layout = LAYOUT
    processor_name = "LongVAProcessor"
    #: the ``config.json`` reader (a subclass with more fields, e.g. Video-XL's, sets its own)
    config_class = LongVAConfig

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
        random_weights: int | None = None,
        **model_kwargs: Any,
    ) -> LongVAForCausalLM:
        """Load a checkpoint in the original LongVA format (local directory or hub id).

        Args:
            path_or_hub_id: checkpoint directory, or a hub id fetched with ``snapshot_download``.
            torch_dtype / dtype (alias): parameter dtype; default float32 on CPU, float16 on GPU.
            device_map: ``None``/``"cpu"``, ``"auto"`` (cuda if available) or a device such as ``"cuda:0"``.
            attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.
            model_kwargs: passed to the constructor (a subclass's own arguments).
            random_weights: a seed: every parameter is drawn at random on the device instead of read
                (:meth:`~vlm_common.modeling.SplicedCausalLM.init_random_weights`), for benchmarks at full size;
                the directory then needs only ``config.json``, the tokenizer and ``generation_config.json``,
                and the vocabulary keeps ``config.json``'s size.

        Every checkpoint key must map to a module parameter and vice versa (:class:`CheckpointError`
        names the first offender). When the tokenizer is smaller than ``vocab_size`` the embeddings and
        LM head are shrunk with ``resize_token_embeddings(len(tokenizer))``, as LongVA's loader does.
        """
        if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
            raise ValueError(f"torch_dtype={torch_dtype} and dtype={dtype} disagree; pass one of them")
        ckpt_dir = resolve_checkpoint(path_or_hub_id)
        config = cls.config_class.from_json_file(ckpt_dir / "config.json")
        device = resolve_device(device_map)
        param_dtype = resolve_dtype(dtype if dtype is not None else torch_dtype, device)
        if config.text_config.tie_word_embeddings:
            raise CheckpointError("config.json sets tie_word_embeddings=true; LongVA checkpoints have an untied lm_head")

        from accelerate import init_empty_weights

        # Parameters on the meta device (no random init of 8B weights); buffers (rotary inv_freq in
        # float32, CLIP position ids) are created for real and keep their dtypes.
        with init_empty_weights(include_buffers=False):
            model = cls(config, attn_implementation=attn_implementation, **model_kwargs)
        if random_weights is None:
            model.load_checkpoint_weights(ckpt_dir, device=device, dtype=param_dtype)
        else:
            model.init_random_weights(device, param_dtype, seed=random_weights)
        model.to(device)  # buffers only; never .to(dtype), which would round inv_freq
        model._adjust_vocabulary(ckpt_dir, shrink=random_weights is None)
        model._load_generation_config(ckpt_dir)
        model.eval()
        model.requires_grad_(False)
        return model

    def _adjust_vocabulary(self, ckpt_dir: Path, shrink: bool = True) -> None:
        """LongVA's loader shrinks the embeddings and LM head to ``len(tokenizer)`` when that is smaller
        (``shrink=False``: random weights of a full-size config, whose test tokenizer is small, keep every row)."""
        if not shrink:
            return
        n_tokens = _tokenizer_length(ckpt_dir, self.config)
        if n_tokens is not None and n_tokens < self.language_model.config.vocab_size:
            self.language_model.resize_token_embeddings(n_tokens)

    # ------------------------------------------------------------------------------ vision
    @property
    def vision_dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    def _encode_chunk(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP ``hidden_states[mm_vision_select_layer]`` (before ``post_layernorm``), CLS dropped, projector, then
        ``avg_pool2d`` with stride ``mm_spatial_pool_stride`` over the row-major patch grid (pooling comes after
        the projector in LongVA): ``(n, T, D)``, ``T = 144`` at 336 px."""
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


__all__ = ["LongVAForCausalLM", "resolve_device", "resolve_dtype"]
