"""LLaVA-Video-7B-Qwen2 (``LlavaQwenForCausalLM``, video path) re-implemented on ``transformers`` 5.x classes.

Three parts, kept apart so that frames are encoded once and reused (``llava-video-notes.md`` §1):

- :meth:`LlavaVideoForCausalLM.encode_frames`: SigLIP without its last encoder layer and without
  ``post_layernorm`` (27x27 patches at 384 px) -> projector (Linear -> exact GELU -> Linear) on all patches
  -> ``get_2dPool`` (stride 2: ``average``/``max`` 13x13, ``bilinear`` 14x14) -> newline vectors
  (``grid``: one ``image_newline`` after every pooled row): ``(N, T, D)`` with ``T`` = 182 (average/grid)
  or 210 (bilinear/grid). Each frame's block already holds its own newlines, so frames can be gathered by
  index (except for ``one_token``, whose single newline follows the last frame; see ``frames_independent``).
- :meth:`LlavaVideoForCausalLM.embed_prompt`: token embeddings with the frame blocks spliced in place of the
  one ``IMAGE_TOKEN_INDEX`` (time order, nothing between frames), cut to ``tokenizer_model_max_length``.
- :meth:`LlavaVideoForCausalLM.forward_logits` / :meth:`~LlavaVideoForCausalLM.generate`: the Qwen2 language
  model on ``inputs_embeds``; ``generate`` returns only the new tokens.

The class is a plain ``nn.Module`` holding ``language_model`` (``Qwen2ForCausalLM``), ``vision_tower``
(``SiglipVisionModel`` built with ``num_hidden_layers - 1`` layers and no head), ``mm_projector``
(``nn.Sequential``) and ``image_newline``; checkpoint keys are mapped in :mod:`llava_video.checkpoint`.
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
from transformers import GenerationConfig, Qwen2ForCausalLM, SiglipVisionModel

from llava_video.checkpoint import (
    LAYOUT,
    TOWER_PREFIX,
    CheckpointError,
    resolve_checkpoint,
)
from llava_video.config import LlavaVideoConfig
from llava_video.constants import IMAGE_TOKEN_INDEX, POOL_STRIDE
from vlm_common.loading import check_attn_implementation, resolve_device, resolve_dtype
from vlm_common.modeling import SplicedCausalLM

logger = logging.getLogger(__name__)

#: Module parameters a checkpoint may lack: the tower's ``post_layernorm`` is never applied (identity if absent).
_OPTIONAL_PARAMETERS = ("vision_tower.post_layernorm.weight", "vision_tower.post_layernorm.bias")


def _tokenizer_length(ckpt_dir: Path, config: LlavaVideoConfig) -> int | None:
    """``len(tokenizer)`` of the checkpoint's tokenizer, or None when it ships none."""
    if not any((ckpt_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return None
    from llava_video.processing import load_tokenizer

    return len(load_tokenizer(ckpt_dir, config.text_config))


class LlavaVideoForCausalLM(SplicedCausalLM, nn.Module):
    """LLaVA-Video: SigLIP tower (last layer dropped) + MLP projector + 2x2 pooling + newlines + Qwen2 LM.

    Load with :meth:`from_pretrained`.
    """

    layout = LAYOUT
    processor_name = "LlavaVideoProcessor"
    optional_parameters = _OPTIONAL_PARAMETERS

    def __init__(self, config: LlavaVideoConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        check_attn_implementation(attn_implementation)
        self.config = config
        text_config = copy.deepcopy(config.text_config)
        text_config._attn_implementation = attn_implementation
        vision_config = copy.deepcopy(config.vision_config)
        vision_config.num_hidden_layers = config.tower_layers  # the original deletes the last encoder layer
        vision_config.vision_use_head = False  # ... and the attention-pool head
        vision_config._attn_implementation = attn_implementation
        # language_model first: state_dict order LM, tower, projector, newline.
        self.language_model = Qwen2ForCausalLM(text_config)
        self.vision_tower = SiglipVisionModel(vision_config)
        self.mm_projector = nn.Sequential(
            nn.Linear(config.mm_hidden_size, config.hidden_size),
            nn.GELU(),  # exact (erf) GELU, as LLaVA's "mlp2x_gelu"
            nn.Linear(config.hidden_size, config.hidden_size),
        )
        if config.has_image_newline:
            self.image_newline = nn.Parameter(torch.empty(config.hidden_size))
        else:
            self.register_parameter("image_newline", None)
        # One config object for the LM: resize_token_embeddings updates it, to_dict() reads it.
        self.config.text_config = self.language_model.config
        self.generation_config = GenerationConfig.from_model_config(self.language_model.config)
        self.generation_config.do_sample = False
        self._generation_config_file: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------ properties
    @property
    def vision_dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    @property
    def tokens_per_frame(self) -> int:
        """``T``: embeddings per frame block, newlines included (182 average/grid, 210 bilinear/grid at 384 px)."""
        return self.config.tokens_per_frame

    @property
    def frames_independent(self) -> bool:
        """Whether the visual block is the frame blocks back to back (a frame's block depends on that frame only).

        True for ``grid``, ``frame`` and ``no_token``; False for ``one_token`` (one newline after the last frame,
        added by :meth:`embed_prompt`).
        """
        return self.config.frames_independent

    def visual_tokens(self, num_frames: int) -> int:
        """Embeddings ``num_frames`` frames occupy in the prompt (``num_frames * T``, +1 for ``one_token``)."""
        return self.config.visual_tokens(num_frames)

    @property
    def image_size(self) -> int:
        """Side of the square pixel input the tower expects (384)."""
        return self.config.image_size

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        torch_dtype: str | torch.dtype | None = None,
        device_map: str | torch.device | None = None,
        attn_implementation: str = "sdpa",
        mm_spatial_pool_mode: str | None = None,
        mm_newline_position: str | None = None,
        *,
        dtype: str | torch.dtype | None = None,
        random_weights: int | None = None,
    ) -> LlavaVideoForCausalLM:
        """Load a checkpoint in the original LLaVA-Video format (local directory or hub id).

        Args:
            path_or_hub_id: checkpoint directory, or a hub id fetched with ``snapshot_download``.
            torch_dtype / dtype (alias): parameter dtype; default float32 on CPU, float16 on GPU.
            device_map: ``None``/``"cpu"``, ``"auto"`` (cuda if available) or a device such as ``"cuda:0"``.
            attn_implementation: ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.
            mm_spatial_pool_mode: ``"average"``, ``"max"`` or ``"bilinear"``; wins over ``config.json``
                (None: the file's value). lmms-eval's ``llava_vid`` passes ``"average"`` by default.
            mm_newline_position: ``"grid"``, ``"frame"``, ``"one_token"`` or ``"no_token"``; wins over
                ``config.json`` (None: the file's value). lmms-eval's ``llava_vid`` passes ``"grid"`` by default.
            random_weights: a seed: every parameter is drawn at random on the device instead of read, for
                benchmarks at full size; the directory needs no weights, and the vocabulary keeps ``config.json``'s size.

        Every checkpoint key must map to a module parameter and vice versa (:class:`CheckpointError` names
        the first offender; the tower's unused ``post_layernorm`` may be absent). When the tokenizer is
        smaller than ``vocab_size`` the embeddings and LM head are shrunk with
        ``resize_token_embeddings(len(tokenizer))``, as LLaVA's loader does (152064 -> 151646 rows).
        """
        if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
            raise ValueError(f"torch_dtype={torch_dtype} and dtype={dtype} disagree; pass one of them")
        check_attn_implementation(attn_implementation)
        ckpt_dir = resolve_checkpoint(path_or_hub_id)
        config = LlavaVideoConfig.from_json_file(
            ckpt_dir / "config.json", mm_spatial_pool_mode=mm_spatial_pool_mode, mm_newline_position=mm_newline_position
        )
        device = resolve_device(device_map)
        param_dtype = resolve_dtype(dtype if dtype is not None else torch_dtype, device)
        if config.text_config.tie_word_embeddings:
            raise CheckpointError("config.json sets tie_word_embeddings=true; LLaVA-Video checkpoints have an untied lm_head")

        from accelerate import init_empty_weights

        # Parameters on the meta device (no random init of 8B weights); buffers (rotary inv_freq in float32,
        # SigLIP position ids) are created for real and keep their dtypes.
        with init_empty_weights(include_buffers=False):
            model = cls(config, attn_implementation=attn_implementation)
        if random_weights is None:
            model.load_checkpoint_weights(ckpt_dir, device=device, dtype=param_dtype)
        else:
            model.init_random_weights(device, param_dtype, seed=random_weights)
        model.to(device)  # buffers only; never .to(dtype), which would round inv_freq

        n_tokens = _tokenizer_length(ckpt_dir, config) if random_weights is None else None
        if n_tokens is not None and n_tokens < model.language_model.config.vocab_size:
            model.language_model.resize_token_embeddings(n_tokens)
        model._load_generation_config(ckpt_dir)
        model.eval()
        model.requires_grad_(False)
        return model

    def _unexpected_key_message(self, ckpt_key: str, key: str) -> str:
        message = f"unexpected checkpoint key {ckpt_key!r} (maps to {key!r}, which the model lacks)"
        if ckpt_key.startswith(TOWER_PREFIX + "encoder.layers."):
            n = self.config.vision_config.num_hidden_layers
            message += (
                f"; the tower config has {n} layers and LLaVA-Video keeps layers 0..{n - 2} (the last one is deleted), "
                f"so vision_config/mm_vision_tower may not describe this checkpoint's tower"
            )
        elif ckpt_key == "model.image_newline":
            message += f"; mm_patch_merge_type={self.config.mm_patch_merge_type!r} has no 'unpad', so the model has no image_newline"
        return message

    # ------------------------------------------------------------------------------ vision
    def _encode_chunk(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frame blocks ``(n, T, D)``: each frame's pooled, projected patches with its newline vectors already in
        place (``grid``: rows of ``p`` tokens each followed by ``image_newline``), so blocks can be gathered by index."""
        hidden = self.vision_tower.embeddings(pixel_values)
        hidden = self.vision_tower.encoder(inputs_embeds=hidden).last_hidden_state  # no post_layernorm
        feats = self.mm_projector(hidden)
        pooled = self._pool(feats)
        return self._add_newlines(pooled).to(self.dtype)

    def _pool(self, feats: torch.Tensor) -> torch.Tensor:
        """``get_2dPool`` with stride 2: ``(n, g*g, c)`` -> ``(n, p, p, c)``, row-major."""
        n, patches, c = feats.shape
        g = self.config.patch_grid
        if patches != g * g:
            raise RuntimeError(f"vision tower returned {patches} patches, expected {g}x{g}")
        grid = feats.view(n, g, g, c).permute(0, 3, 1, 2)
        mode = self.config.mm_spatial_pool_mode
        if mode == "average":
            pooled = F.avg_pool2d(grid, POOL_STRIDE)
        elif mode == "max":
            pooled = F.max_pool2d(grid, POOL_STRIDE)
        elif mode == "bilinear":
            p = self.config.pooled_grid
            pooled = F.interpolate(grid, size=(p, p), mode="bilinear")  # align_corners unset (False), as get_2dPool
        else:  # unreachable: LlavaVideoConfig validates the mode
            raise ValueError(f"unexpected mm_spatial_pool_mode {mode!r}")
        return pooled.permute(0, 2, 3, 1)

    def _add_newlines(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(n, p, p, c)`` -> ``(n, T, c)`` with the per-frame newline vectors of the layout in force."""
        n, p, _, c = pooled.shape
        layout = self.config.newline_layout
        if layout == "grid":
            newline = self.image_newline.to(pooled.dtype).view(1, 1, 1, c).expand(n, p, 1, c)
            return torch.cat([pooled, newline], dim=2).reshape(n, p * (p + 1), c)
        flat = pooled.reshape(n, p * p, c)
        if layout == "frame":
            newline = self.image_newline.to(pooled.dtype).view(1, 1, c).expand(n, 1, c)
            return torch.cat([flat, newline], dim=1)
        return flat  # one_token (its newline follows the last frame: embed_prompt) and no_token

    # ------------------------------------------------------------------------------ prompt
    def embed_prompt(self, prompt_ids: torch.Tensor, frame_features: torch.Tensor, *, truncate: bool = True) -> torch.Tensor:
        """Splice ``frame_features (N, T, D)`` into the placeholder -> ``inputs_embeds (1, L - 1 + N*T, D)``.

        ``prompt_ids (1, L)`` must hold exactly one ``IMAGE_TOKEN_INDEX`` (-200). Frame blocks go in time
        order with nothing between them (``one_token`` adds one ``image_newline`` after the last, so its
        length is ``L + N*T``). As LLaVA does, the result is cut to ``config.tokenizer_model_max_length``
        embeddings when that is set (the tail, i.e. the question, is lost; a warning says so);
        ``truncate=False`` disables this.
        """
        if prompt_ids.ndim != 2 or prompt_ids.shape[0] != 1:
            raise ValueError(f"prompt_ids must be (1, L), got {tuple(prompt_ids.shape)}")
        slots = (prompt_ids[0] == IMAGE_TOKEN_INDEX).nonzero().flatten()
        if slots.numel() != 1:
            raise ValueError(f"prompt_ids must hold exactly one image placeholder ({IMAGE_TOKEN_INDEX}), found {slots.numel()}")
        d, t = self.config.hidden_size, self.tokens_per_frame
        if frame_features.ndim != 3 or frame_features.shape[-1] != d or frame_features.shape[1] != t:
            raise ValueError(f"frame_features must be (N, {t}, {d}) (encode_frames' output), got {tuple(frame_features.shape)}")
        if frame_features.shape[0] == 0:
            raise ValueError("frame_features holds no frames")
        pos = int(slots[0])
        ids = prompt_ids[0].to(self.device)
        embed = self.language_model.get_input_embeddings()
        before = embed(ids[:pos])
        after = embed(ids[pos + 1 :])
        parts = [before, frame_features.to(device=self.device, dtype=before.dtype).flatten(0, 1)]
        if self.config.newline_layout == "one_token":
            parts.append(self.image_newline.to(before.dtype)[None])
        embeds = torch.cat([*parts, after], dim=0)
        limit = self.config.tokenizer_model_max_length
        if truncate and limit is not None and embeds.shape[0] > limit:
            logger.warning(
                "prompt of %d embeddings truncated to tokenizer_model_max_length=%d (as LLaVA-Video does): the end of "
                "the prompt, including the question, is cut", embeds.shape[0], limit,
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
        return self.language_model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)


__all__ = ["LlavaVideoForCausalLM", "resolve_device", "resolve_dtype"]
