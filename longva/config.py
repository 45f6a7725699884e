"""Typed view of LongVA's ``config.json``.

The released file is a flat Qwen2 config plus LLaVA's ``mm_*`` fields (see ``longva-notes.md`` §5). This
module splits it into a ``transformers.Qwen2Config`` for the language model, a ``CLIPVisionConfig`` for the
vision tower and typed multimodal fields, and writes the original flat layout back unchanged (apart from
``vocab_size`` after a vocabulary shrink and ``torch_dtype``).

Vision config. The released file names its tower only by hub id (``mm_vision_tower``); LongVA builds the
tower from that repo's config. We never download it: known tower ids map to their config in
:data:`KNOWN_VISION_CONFIGS` (ViT-L/14-336 for LongVA). A checkpoint may instead carry an explicit
``vision_config`` dict in ``config.json`` (the released file has none; the tiny test checkpoints use it);
when present it wins. An unknown tower without ``vision_config`` is an error.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from transformers import CLIPVisionConfig, Qwen2Config

#: CLIP settings of towers LongVA-style checkpoints may name (ViT-L/14-336: ``longva-notes.md`` §1).
KNOWN_VISION_CONFIGS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "num_channels": 3,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 768,
    },
}

ProjectorType = Literal["mlp2x_gelu"]
SelectFeature = Literal["patch"]
PoolMode = Literal["average"]
PatchMergeType = Literal["unires", "flat"]

#: ``config.json`` keys that belong to the multimodal wrapper, not to ``Qwen2Config``.
_MM_KEYS = (
    "mm_hidden_size",
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_spatial_pool_mode",
    "mm_spatial_pool_stride",
    "mm_patch_merge_type",
    "mm_vision_tower",
    "tokenizer_model_max_length",
    "vision_config",
)


def _check_choice(name: str, value: Any, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"config.json: {name}={value!r} is not supported (supported: {', '.join(map(repr, allowed))})")


@dataclass
class LongVAConfig:
    """LongVA's configuration, split into typed parts.

    Args:
        text_config: the Qwen2 language model (``rope_scaling`` dropped, as LongVA's loader does).
        vision_config: the CLIP vision tower.
        mm_hidden_size: width of the CLIP features fed to the projector (must equal ``vision_config.hidden_size``).
        mm_projector_type: only ``"mlp2x_gelu"`` (Linear -> GELU -> Linear).
        mm_vision_select_layer: index into CLIP ``hidden_states`` (-2: second-to-last layer output).
        mm_vision_select_feature: only ``"patch"`` (CLS dropped).
        mm_spatial_pool_mode / mm_spatial_pool_stride: average pooling of the projected patch grid.
        mm_patch_merge_type: how frames are merged; both supported values flatten frames in time order.
        mm_vision_tower: hub id of the tower (config only; weights come from the checkpoint).
        tokenizer_model_max_length: LongVA truncates the spliced embeddings to this length (None: never).
        raw: the ``config.json`` dict as read; :meth:`to_dict` writes it back.
    """

    text_config: Qwen2Config
    vision_config: CLIPVisionConfig
    mm_hidden_size: int
    mm_projector_type: ProjectorType = "mlp2x_gelu"
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: SelectFeature = "patch"
    mm_spatial_pool_mode: PoolMode = "average"
    mm_spatial_pool_stride: int = 2
    mm_patch_merge_type: PatchMergeType = "unires"
    mm_vision_tower: str = "openai/clip-vit-large-patch14-336"
    tokenizer_model_max_length: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _check_choice("mm_projector_type", self.mm_projector_type, ProjectorType)
        _check_choice("mm_vision_select_feature", self.mm_vision_select_feature, SelectFeature)
        _check_choice("mm_spatial_pool_mode", self.mm_spatial_pool_mode, PoolMode)
        _check_choice("mm_patch_merge_type", self.mm_patch_merge_type, PatchMergeType)
        vc = self.vision_config
        if self.mm_hidden_size != vc.hidden_size:
            raise ValueError(
                f"config.json: mm_hidden_size={self.mm_hidden_size} but the vision tower has hidden_size={vc.hidden_size}"
            )
        n_states = vc.num_hidden_layers + 1
        if not -n_states <= self.mm_vision_select_layer < n_states:
            raise ValueError(
                f"config.json: mm_vision_select_layer={self.mm_vision_select_layer} is out of range for a tower "
                f"with {vc.num_hidden_layers} layers"
            )
        if vc.image_size % vc.patch_size:
            raise ValueError(f"vision image_size {vc.image_size} is not a multiple of patch_size {vc.patch_size}")
        if self.mm_spatial_pool_stride < 1:
            raise ValueError(f"config.json: mm_spatial_pool_stride must be >= 1, got {self.mm_spatial_pool_stride}")
        if self.tokenizer_model_max_length is not None and self.tokenizer_model_max_length < 1:
            raise ValueError(
                f"config.json: tokenizer_model_max_length must be positive, got {self.tokenizer_model_max_length}"
            )

    # ----------------------------------------------------------------------------------- geometry
    @property
    def image_size(self) -> int:
        """Side ``S`` of the square frames the tower expects."""
        return int(self.vision_config.image_size)

    @property
    def patch_grid(self) -> int:
        """Patches per side before pooling (24 for ViT-L/14-336)."""
        return self.image_size // int(self.vision_config.patch_size)

    @property
    def pooled_grid(self) -> int:
        """Tokens per side after pooling (``floor`` as ``avg_pool2d``; 12 for LongVA)."""
        return self.patch_grid // self.mm_spatial_pool_stride

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame ``T`` (144 for LongVA)."""
        return self.pooled_grid**2

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    # ----------------------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LongVAConfig:
        """Build from the flat ``config.json`` dict (see module docstring for the vision config rule)."""
        raw = copy.deepcopy(raw)
        tower = raw.get("mm_vision_tower", "openai/clip-vit-large-patch14-336")
        if raw.get("vision_config") is not None:
            vision_dict = dict(raw["vision_config"])
        elif tower in KNOWN_VISION_CONFIGS:
            vision_dict = dict(KNOWN_VISION_CONFIGS[tower])
        else:
            raise ValueError(
                f"config.json names vision tower {tower!r}, whose CLIP settings are unknown; add a 'vision_config' "
                f"dict to config.json (known towers: {', '.join(KNOWN_VISION_CONFIGS)})"
            )
        vision_dict.pop("model_type", None)
        text_dict = {k: v for k, v in raw.items() if k not in _MM_KEYS}
        # LongVA's loader forces rope_scaling=None; 5.x maps rope_theta to rope_parameters itself.
        text_dict.pop("rope_scaling", None)
        text_dict.pop("architectures", None)
        text_dict.pop("model_type", None)  # "qwen2" in the release; a derivative may say "llava_qwen"
        text_config = Qwen2Config(**text_dict)
        if "mm_hidden_size" not in raw:
            raise ValueError("config.json has no 'mm_hidden_size': this is not a LongVA/LLaVA checkpoint")
        return cls(
            text_config=text_config,
            vision_config=CLIPVisionConfig(**vision_dict),
            mm_hidden_size=int(raw["mm_hidden_size"]),
            mm_projector_type=raw.get("mm_projector_type", "mlp2x_gelu"),
            mm_vision_select_layer=int(raw.get("mm_vision_select_layer", -2)),
            mm_vision_select_feature=raw.get("mm_vision_select_feature", "patch"),
            mm_spatial_pool_mode=raw.get("mm_spatial_pool_mode", "average"),
            mm_spatial_pool_stride=int(raw.get("mm_spatial_pool_stride", 2)),
            mm_patch_merge_type=raw.get("mm_patch_merge_type", "unires"),
            mm_vision_tower=tower,
            tokenizer_model_max_length=raw.get("tokenizer_model_max_length"),
            raw=raw,
        )

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> LongVAConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no LongVA config.json at {path}")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """The flat ``config.json`` layout: the file as read, with the current ``vocab_size``."""
        out = copy.deepcopy(self.raw)
        out["vocab_size"] = int(self.text_config.vocab_size)
        return out

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


__all__ = ["KNOWN_VISION_CONFIGS", "LongVAConfig"]
