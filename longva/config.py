"""Typed view of LongVA's ``config.json``.

The released file is a flat Qwen2 config plus LLaVA's ``mm_*`` fields (see ``longva-notes.md`` §5). This
module splits it into a ``transformers.Qwen2Config`` for the language model, a ``CLIPVisionConfig`` for the
vision tower and typed multimodal fields, and writes the original flat layout back unchanged (apart from
``vocab_size`` after a vocabulary shrink, ``torch_dtype``, and a ``vision_config`` dict when the tower's
settings came from a directory or the HF cache, so that the written copy loads anywhere).

``model_type`` is ``qwen2`` in the release (its hub tag) and ``llava_qwen`` in checkpoints saved by
LLaVA/LongVA's own code (``LlavaQwenConfig``); both are accepted, any other value is loaded anyway with a
warning. The language model is always built as ``Qwen2Config``, whatever the file says.

Vision config. Only the tower's *settings* are read here; its weights always come from the checkpoint (the
fine-tuned CLIP inside it), never from the place named below. The first rule that applies wins:

1. an explicit ``vision_config`` dict in ``config.json`` (the released file has none; the tiny test
   checkpoints use it);
2. ``mm_vision_tower`` names an existing local directory (how locally fine-tuned checkpoints name their
   tower; LongVA's loader accepts a path too): its ``config.json``, either a full ``CLIPConfig`` (model_type
   ``clip``, nested ``vision_config``) or a ``CLIPVisionConfig`` (``clip_vision_model``), read with
   ``CLIPVisionConfig.from_pretrained``. A relative path is looked up against the checkpoint directory
   first, then against the current working directory (LongVA's loader only knows the latter); the
   checkpoint directory wins when both exist, since it does not depend on where the process was started
   (a warning says so when the two differ);
3. a known hub id: the built-in table :data:`KNOWN_VISION_CONFIGS` (ViT-L/14-336 for LongVA), never
   downloaded;
4. any other hub id: ``CLIPVisionConfig.from_pretrained(mm_vision_tower)``, i.e. the HF cache (or the hub,
   unless ``HF_HUB_OFFLINE`` is set).

When none applies, :class:`~longva.checkpoint.CheckpointError` names ``mm_vision_tower``, its value, what
was tried and how to fix the file.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from transformers import CLIPVisionConfig, Qwen2Config

from longva.checkpoint import CheckpointError
from vlm_common.checkpoints import tower_directory
from vlm_common.qwen import text_config_from_dict as _text_config_from_dict

logger = logging.getLogger(__name__)

DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"
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
#: ``CLIPVisionConfig`` fields written to ``config.json`` as ``vision_config`` (the keys of the table above).
_VISION_KEYS = tuple(KNOWN_VISION_CONFIGS[DEFAULT_VISION_TOWER])
#: ``model_type`` of LongVA-format files: the release (``qwen2``) and LLaVA's ``LlavaQwenConfig`` (``llava_qwen``).
LONGVA_MODEL_TYPES = ("qwen2", "llava_qwen")
#: ``model_type`` of a tower directory's ``config.json`` that :class:`CLIPVisionConfig` reads.
_CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
#: A name that may be a hub id (``name`` or ``owner/name``); paths such as ``/x``, ``./x``, ``~/x`` are not.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

#: Where the vision settings came from (rules 1-4 of the module docstring).
VisionSource = Literal["config.json", "directory", "builtin", "hub"]
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


def text_config_from_dict(raw: dict[str, Any]) -> Qwen2Config:
    """The language model's ``Qwen2Config`` from the flat ``config.json`` dict (wrapper fields dropped)."""
    return _text_config_from_dict(raw, lambda key: key in _MM_KEYS)


def _clip_vision_config(source: str, tower: str) -> CLIPVisionConfig:
    """``CLIPVisionConfig.from_pretrained(source)`` after checking that ``source`` holds a CLIP config."""
    config_dict, _ = CLIPVisionConfig.get_config_dict(source)
    model_type = config_dict.get("model_type")
    if model_type is not None and model_type not in _CLIP_MODEL_TYPES:
        clip_types = " or ".join(map(repr, _CLIP_MODEL_TYPES))
        raise CheckpointError(
            f"config.json: mm_vision_tower={tower!r} leads to {source}, whose config.json has "
            f"model_type={model_type!r}; LongVA's tower must be a CLIP vision model ({clip_types})"
        )
    if model_type == "clip" and not isinstance(config_dict.get("vision_config"), dict):
        raise CheckpointError(
            f"config.json: mm_vision_tower={tower!r} leads to {source}, a CLIPConfig without a 'vision_config' dict"
        )
    return CLIPVisionConfig.from_pretrained(source)


def resolve_vision_config(
    raw: dict[str, Any], checkpoint_dir: str | os.PathLike | None = None
) -> tuple[CLIPVisionConfig, VisionSource]:
    """The tower's ``CLIPVisionConfig`` and where it came from, by the rules of the module docstring.

    Args:
        raw: the flat ``config.json`` dict.
        checkpoint_dir: the directory holding ``config.json``; a relative ``mm_vision_tower`` is looked up
            there first (None: only against the working directory).

    Raises:
        CheckpointError: no rule applies (the message names ``mm_vision_tower``, its value, what was tried
            and how to fix the file), or the directory or hub config named is not a CLIP config.
    """
    if raw.get("vision_config") is not None:
        vision_dict = dict(raw["vision_config"])
        vision_dict.pop("model_type", None)
        return CLIPVisionConfig(**vision_dict), "config.json"
    tower = raw.get("mm_vision_tower", DEFAULT_VISION_TOWER)
    if not isinstance(tower, str) or not tower.strip():
        raise CheckpointError(
            f"config.json: mm_vision_tower={tower!r} names no vision tower and there is no 'vision_config' dict; "
            f"add a 'vision_config' dict (CLIPVisionConfig fields) to config.json"
        )
    tried = ["no 'vision_config' dict in config.json"]
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    directory, looked_at = tower_directory(tower, ckpt)
    if directory is not None:
        if not (directory / "config.json").is_file():
            # CLIPVisionConfig.from_pretrained would silently return its defaults here.
            raise CheckpointError(
                f"config.json: mm_vision_tower={tower!r} is the directory {directory}, which has no config.json; put "
                f"the tower's CLIP config.json there or add a 'vision_config' dict to the checkpoint's config.json"
            )
        logger.info("vision tower settings of %r read from %s", tower, directory / "config.json")
        return _clip_vision_config(str(directory), tower), "directory"
    tried.append(f"no directory at {' or '.join(map(str, looked_at))}")
    if tower in KNOWN_VISION_CONFIGS:
        return CLIPVisionConfig(**KNOWN_VISION_CONFIGS[tower]), "builtin"
    tried.append(f"not a built-in tower ({', '.join(KNOWN_VISION_CONFIGS)})")
    if _HUB_ID.fullmatch(tower) and ".." not in tower:
        try:
            vision_config = _clip_vision_config(tower, tower)
        except CheckpointError:
            raise
        except (OSError, ValueError) as err:  # not cached offline, no network, no such repo, invalid id
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            tried.append(
                f"no CLIP config.json for hub id {tower!r} in the HF cache or on the hub ({type(err).__name__}: {reason})"
            )
        else:
            logger.info("vision tower settings of %r read from the Hugging Face cache/hub", tower)
            return vision_config, "hub"
    else:
        tried.append("not a hub id")
    raise CheckpointError(
        f"config.json: cannot find the settings of the vision tower mm_vision_tower={tower!r}. Tried: "
        + "; ".join(tried)
        + ". Fix: add a 'vision_config' dict (CLIPVisionConfig fields such as hidden_size, num_hidden_layers, "
        "image_size, patch_size) to config.json, or point mm_vision_tower at a directory holding the tower's CLIP "
        "config.json (tower weights are always read from the checkpoint)"
    )


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
        mm_vision_tower: hub id or local directory of the tower, as written in ``config.json`` (its settings
            only; weights come from the checkpoint).
        tokenizer_model_max_length: LongVA truncates the spliced embeddings to this length (None: never).
        raw: the ``config.json`` dict as read; :meth:`to_dict` writes it back.
        vision_config_source: which rule of the module docstring gave ``vision_config``.
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
    mm_vision_tower: str = DEFAULT_VISION_TOWER
    tokenizer_model_max_length: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    vision_config_source: VisionSource = "config.json"

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
    def from_dict(cls, raw: dict[str, Any], checkpoint_dir: str | os.PathLike | None = None) -> LongVAConfig:
        """Build from the flat ``config.json`` dict (see module docstring for the vision config rule).

        ``checkpoint_dir`` is the directory holding the file (:meth:`from_json_file` passes it): a relative
        ``mm_vision_tower`` is looked up there before the working directory.
        """
        raw = copy.deepcopy(raw)
        if "mm_hidden_size" not in raw:
            raise ValueError("config.json has no 'mm_hidden_size': this is not a LongVA/LLaVA checkpoint")
        model_type = raw.get("model_type")
        if model_type is not None and model_type not in LONGVA_MODEL_TYPES:
            logger.warning(
                "config.json: model_type=%r is not a LongVA type (%s); loading it as LongVA (Qwen2 + CLIP) anyway",
                model_type, ", ".join(LONGVA_MODEL_TYPES),
            )
        text_config = text_config_from_dict(raw)
        vision_config, source = resolve_vision_config(raw, checkpoint_dir)
        return cls(
            text_config=text_config,
            vision_config=vision_config,
            mm_hidden_size=int(raw["mm_hidden_size"]),
            mm_projector_type=raw.get("mm_projector_type", "mlp2x_gelu"),
            mm_vision_select_layer=int(raw.get("mm_vision_select_layer", -2)),
            mm_vision_select_feature=raw.get("mm_vision_select_feature", "patch"),
            mm_spatial_pool_mode=raw.get("mm_spatial_pool_mode", "average"),
            mm_spatial_pool_stride=int(raw.get("mm_spatial_pool_stride", 2)),
            mm_patch_merge_type=raw.get("mm_patch_merge_type", "unires"),
            mm_vision_tower=raw.get("mm_vision_tower", DEFAULT_VISION_TOWER),
            tokenizer_model_max_length=raw.get("tokenizer_model_max_length"),
            raw=raw,
            vision_config_source=source,
        )

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> LongVAConfig:
        """Read ``config.json`` (or the one in directory ``path``); its directory anchors a relative tower path."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no LongVA config.json at {path}")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), checkpoint_dir=path.parent)

    def to_dict(self) -> dict[str, Any]:
        """The flat ``config.json`` layout: the file as read, with the current ``vocab_size``.

        When the vision settings came from a directory or the HF cache (rules 2 and 4), they are added as a
        ``vision_config`` dict (rule 1), so the written checkpoint no longer depends on that place (a relative
        ``mm_vision_tower`` would not resolve from a new location); ``mm_vision_tower`` is kept as read.
        """
        out = copy.deepcopy(self.raw)
        out["vocab_size"] = int(self.text_config.vocab_size)
        if self.vision_config_source in ("directory", "hub"):
            out["vision_config"] = {k: copy.deepcopy(getattr(self.vision_config, k)) for k in _VISION_KEYS}
        return out

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


__all__ = [
    "DEFAULT_VISION_TOWER",
    "KNOWN_VISION_CONFIGS",
    "LONGVA_MODEL_TYPES",
    "LongVAConfig",
    "VisionSource",
    "resolve_vision_config",
    "text_config_from_dict",
]
