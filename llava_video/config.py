"""Typed view of LLaVA-Video's ``config.json``.

The released file is a flat Qwen2 config plus LLaVA's ``mm_*`` fields, with ``model_type: "llava"``
(``llava-video-notes.md`` §6). This module splits it into a ``transformers.Qwen2Config`` for the language
model, a ``SiglipVisionConfig`` for the vision tower and typed multimodal fields, and writes the original
flat layout back (apart from ``vocab_size`` after a vocabulary shrink, ``torch_dtype``, and a
``vision_config`` dict when the tower's settings came from a directory, so that the written copy loads
anywhere).

``model_type`` is ``llava`` in the release; ``llava_qwen`` (LLaVA's ``LlavaQwenConfig``) and ``qwen2`` are
accepted too, any other value is loaded anyway with a warning. The language model is always built as
``Qwen2Config`` (``rope_scaling`` dropped, as LLaVA's Qwen loader does), whatever the file says; never use
``AutoConfig`` on these files (it would read ``llava`` as the HF-native Llava config).

Vision config. ``vision_config`` always describes the *intact* SigLIP tower as named (27 layers for
so400m); the model runs all layers but the last (the original code deletes it, and its output equals
``hidden_states[-2]`` of the intact tower) and never its ``post_layernorm`` or head. Only the tower's
settings are read here; its weights always come from the checkpoint (the fine-tuned copy inside it). The
first rule that applies wins:

1. an explicit ``vision_config`` dict in ``config.json`` (``SiglipVisionConfig`` fields);
2. ``mm_vision_tower`` names an existing local directory holding a SigLIP ``config.json``, either a
   ``SiglipVisionConfig`` (model_type ``siglip_vision_model``) or a full ``SiglipConfig`` (``siglip``, nested
   ``vision_config``). A relative path is looked up against the checkpoint directory first, then against
   the current working directory; the checkpoint's wins when both exist (a warning says so when they
   differ). The tiny checkpoints of :mod:`llava_video.tiny` name ``siglip_tower``, a directory inside the
   checkpoint (relative, so a copied checkpoint keeps working);
3. the known hub id ``google/siglip-so400m-patch14-384`` (the release): the built-in so400m geometry of
   :data:`KNOWN_VISION_CONFIGS`, never downloaded (the original code also builds the tower from a default
   ``SigLipVisionConfig()``, whatever the hub file says).

When none applies, :class:`~llava_video.checkpoint.CheckpointError` names ``mm_vision_tower``, its value,
what was tried and how to fix the file.

Video path fields (``llava-video-notes.md`` §1, §5). ``mm_spatial_pool_mode`` (``average``/``max``/
``bilinear``) and ``mm_newline_position`` (``grid``/``frame``/``one_token``/``no_token``) come from the file
unless overridden at load time (lmms-eval's ``llava_vid`` overwrites them with ``average`` and ``grid``); a
missing ``mm_newline_position`` means ``one_token`` (the original's default), a missing pool mode is an
error unless overridden. ``mm_patch_merge_type`` decides whether newline vectors exist at all: ``flat``
gives none (``no_token``), a ``spatial*`` type without ``unpad`` has no ``image_newline`` (``grid``/``frame``
are impossible, ``one_token`` adds nothing), ``spatial_unpad`` (the release) follows the newline position.
``get_2dPool`` always pools with its default stride 2 (``mm_spatial_pool_stride`` and
``mm_vision_select_layer`` are kept as read but not used, as in the original).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from transformers import Qwen2Config, SiglipVisionConfig

from llava_video.checkpoint import CheckpointError
from llava_video.constants import DEFAULT_VISION_TOWER, POOL_STRIDE
from vlm_common.checkpoints import tower_directory
from vlm_common.qwen import text_config_from_dict as _text_config_from_dict

logger = logging.getLogger(__name__)

#: SigLIP settings of towers LLaVA-Video-style checkpoints may name (so400m-patch14-384: notes §1).
KNOWN_VISION_CONFIGS: dict[str, dict[str, Any]] = {
    DEFAULT_VISION_TOWER: {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_channels": 3,
        "image_size": 384,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    },
}
#: ``SiglipVisionConfig`` fields written to ``config.json`` as ``vision_config`` (the keys of the table above).
_VISION_KEYS = tuple(KNOWN_VISION_CONFIGS[DEFAULT_VISION_TOWER])
#: ``model_type`` of LLaVA-Video-format files: the release (``llava``), LLaVA's ``LlavaQwenConfig``, plain Qwen2.
LLAVA_VIDEO_MODEL_TYPES = ("llava", "llava_qwen", "qwen2")
#: ``model_type`` of a tower directory's ``config.json`` that :class:`SiglipVisionConfig` reads.
_SIGLIP_MODEL_TYPES = ("siglip", "siglip_vision_model")

#: Where the vision settings came from (rules 1-3 of the module docstring).
VisionSource = Literal["config.json", "directory", "builtin"]
ProjectorType = Literal["mlp2x_gelu"]
PoolMode = Literal["average", "max", "bilinear"]
NewlinePosition = Literal["grid", "frame", "one_token", "no_token"]

#: ``config.json`` keys of the multimodal wrapper (besides every ``mm_*`` key) that are not ``Qwen2Config``'s.
_WRAPPER_KEYS = (
    "vision_config",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "image_aspect_ratio",
    "image_grid_pinpoints",
    "image_crop_resolution",
    "image_split_resolution",
    "use_mm_proj",
    "add_faster_video",
    "faster_token_stride",
    "force_sample",
    "add_time_instruction",
    "frames_upbound",
    "vision_tower_pretrained",
    "unfreeze_mm_vision_tower",
    "use_pos_skipping",
    "pos_skipping_range",
    "delay_load",
)


def _check_choice(name: str, value: Any, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported (supported: {', '.join(map(repr, allowed))})")


def text_config_from_dict(raw: dict[str, Any]) -> Qwen2Config:
    """The language model's ``Qwen2Config`` from the flat ``config.json`` dict (wrapper fields dropped)."""
    return _text_config_from_dict(raw, lambda key: key.startswith("mm_") or key in _WRAPPER_KEYS)


def _siglip_vision_config(directory: Path, tower: str) -> SiglipVisionConfig:
    """``SiglipVisionConfig.from_pretrained(directory)`` after checking that it holds a SigLIP config."""
    try:
        config_dict, _ = SiglipVisionConfig.get_config_dict(str(directory))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"config.json: mm_vision_tower={tower!r} leads to {directory}, whose config.json cannot be read ({err})") from err
    model_type = config_dict.get("model_type")
    if model_type not in _SIGLIP_MODEL_TYPES:
        raise CheckpointError(
            f"config.json: mm_vision_tower={tower!r} leads to {directory}, whose config.json has model_type={model_type!r}; "
            f"LLaVA-Video's tower must be a SigLIP vision model ({' or '.join(map(repr, _SIGLIP_MODEL_TYPES))})"
        )
    if model_type == "siglip" and not isinstance(config_dict.get("vision_config"), dict):
        raise CheckpointError(f"config.json: mm_vision_tower={tower!r} leads to {directory}, a SiglipConfig without a 'vision_config' dict")
    return SiglipVisionConfig.from_pretrained(str(directory))


def resolve_vision_config(raw: dict[str, Any], checkpoint_dir: str | os.PathLike | None = None) -> tuple[SiglipVisionConfig, VisionSource]:
    """The intact tower's ``SiglipVisionConfig`` and where it came from, by the rules of the module docstring.

    Args:
        raw: the flat ``config.json`` dict.
        checkpoint_dir: the directory holding ``config.json``; a relative ``mm_vision_tower`` is looked up
            there first (None: only against the working directory).

    Raises:
        CheckpointError: no rule applies (the message names ``mm_vision_tower``, its value, what was tried
            and how to fix the file), or the directory named does not hold a SigLIP config.
    """
    if raw.get("vision_config") is not None:
        if not isinstance(raw["vision_config"], dict):
            raise CheckpointError(f"config.json: 'vision_config' must be a dict of SiglipVisionConfig fields, got {raw['vision_config']!r}")
        vision_dict = dict(raw["vision_config"])
        vision_dict.pop("model_type", None)
        return SiglipVisionConfig(**vision_dict), "config.json"
    tower = raw.get("mm_vision_tower")
    if not isinstance(tower, str) or not tower.strip():
        raise CheckpointError(
            f"config.json: mm_vision_tower={tower!r} names no vision tower and there is no 'vision_config' dict; "
            f"set mm_vision_tower to {DEFAULT_VISION_TOWER!r} or add a 'vision_config' dict (SiglipVisionConfig fields)"
        )
    tried = ["no 'vision_config' dict in config.json"]
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    directory, looked_at = tower_directory(tower, ckpt)
    if directory is not None:
        if not (directory / "config.json").is_file():
            raise CheckpointError(
                f"config.json: mm_vision_tower={tower!r} is the directory {directory}, which has no config.json; put the "
                f"tower's SigLIP config.json there or add a 'vision_config' dict to the checkpoint's config.json"
            )
        logger.info("vision tower settings of %r read from %s", tower, directory / "config.json")
        return _siglip_vision_config(directory, tower), "directory"
    tried.append(f"no directory at {' or '.join(map(str, looked_at))}")
    if tower in KNOWN_VISION_CONFIGS:
        return SiglipVisionConfig(**KNOWN_VISION_CONFIGS[tower]), "builtin"
    tried.append(f"not a known tower ({', '.join(KNOWN_VISION_CONFIGS)})")
    raise CheckpointError(
        f"config.json: cannot find the settings of the vision tower mm_vision_tower={tower!r}. Tried: "
        + "; ".join(tried)
        + ". Fix: add a 'vision_config' dict (SiglipVisionConfig fields such as hidden_size, num_hidden_layers, "
        "image_size, patch_size) to config.json, or point mm_vision_tower at a directory holding the tower's SigLIP "
        "config.json (tower weights are always read from the checkpoint); nothing is downloaded"
    )


@dataclass
class LlavaVideoConfig:
    """LLaVA-Video's configuration, split into typed parts.

    Args:
        text_config: the Qwen2 language model.
        vision_config: the intact SigLIP tower (the model runs ``num_hidden_layers - 1`` of its layers).
        mm_hidden_size: width of the SigLIP features fed to the projector (must equal ``vision_config.hidden_size``).
        mm_projector_type: only ``"mlp2x_gelu"`` (Linear -> exact GELU -> Linear).
        mm_spatial_pool_mode: ``get_2dPool``'s mode in force (the file's value or the load-time override).
        mm_newline_position: where ``image_newline`` vectors go, in force (file or override).
        mm_patch_merge_type: ``flat`` or ``spatial*``; ``image_newline`` exists only when it contains ``unpad``.
        mm_vision_select_layer / mm_spatial_pool_stride: as read; not used (see module docstring).
        mm_vision_tower: hub id or local directory of the tower, as written in ``config.json``.
        tokenizer_model_max_length: prompts are cut to this many embeddings (None: no cut).
        raw: the ``config.json`` dict as read; :meth:`to_dict` writes it back.
        vision_config_source: which rule of the module docstring gave ``vision_config``.
    """

    text_config: Qwen2Config
    vision_config: SiglipVisionConfig
    mm_hidden_size: int
    mm_projector_type: ProjectorType = "mlp2x_gelu"
    mm_spatial_pool_mode: PoolMode = "average"
    mm_newline_position: NewlinePosition = "grid"
    mm_patch_merge_type: str = "spatial_unpad"
    mm_vision_select_layer: int = -2
    mm_spatial_pool_stride: int = POOL_STRIDE
    mm_vision_tower: str = DEFAULT_VISION_TOWER
    tokenizer_model_max_length: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    vision_config_source: VisionSource = "config.json"

    def __post_init__(self) -> None:
        _check_choice("mm_projector_type", self.mm_projector_type, ProjectorType)
        _check_choice("mm_spatial_pool_mode", self.mm_spatial_pool_mode, PoolMode)
        _check_choice("mm_newline_position", self.mm_newline_position, NewlinePosition)
        merge = self.mm_patch_merge_type
        if not isinstance(merge, str) or not (merge == "flat" or merge.startswith("spatial")):
            raise ValueError(f"mm_patch_merge_type={merge!r} is not supported (supported: 'flat' or 'spatial...', e.g. 'spatial_unpad')")
        if not self.has_image_newline and merge != "flat" and self.mm_newline_position in ("grid", "frame"):
            raise ValueError(
                f"mm_newline_position={self.mm_newline_position!r} needs model.image_newline, which a checkpoint with "
                f"mm_patch_merge_type={merge!r} (no 'unpad') does not have"
            )
        vc = self.vision_config
        if self.mm_hidden_size != vc.hidden_size:
            raise ValueError(f"config.json: mm_hidden_size={self.mm_hidden_size} but the vision tower has hidden_size={vc.hidden_size}")
        if vc.num_hidden_layers < 2:
            raise ValueError(f"the vision tower has {vc.num_hidden_layers} layer(s); LLaVA-Video drops the last one, so it needs at least 2")
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(vc, name), int):
                raise ValueError(f"vision {name} must be one int (square frames), got {getattr(vc, name)!r}")
        if self.patch_grid < POOL_STRIDE:
            raise ValueError(f"vision image_size {vc.image_size} / patch_size {vc.patch_size} gives a {self.patch_grid}x{self.patch_grid} grid, too small to pool")
        if self.tokenizer_model_max_length is not None and self.tokenizer_model_max_length < 1:
            raise ValueError(f"config.json: tokenizer_model_max_length must be positive, got {self.tokenizer_model_max_length}")

    # ----------------------------------------------------------------------------------- geometry
    @property
    def image_size(self) -> int:
        """Side ``S`` of the square frames the tower expects (384)."""
        return int(self.vision_config.image_size)

    @property
    def patch_grid(self) -> int:
        """Patches per side (``floor(384 / 14) = 27``; the conv drops the last 6 pixels)."""
        return self.image_size // int(self.vision_config.patch_size)

    @property
    def tower_layers(self) -> int:
        """Encoder layers the model runs: all but the tower's last (26 for so400m)."""
        return int(self.vision_config.num_hidden_layers) - 1

    @property
    def pooled_grid(self) -> int:
        """Tokens per side after ``get_2dPool`` (stride 2): floor for average/max (13), ceil for bilinear (14)."""
        if self.mm_spatial_pool_mode == "bilinear":
            return math.ceil(self.patch_grid / POOL_STRIDE)
        return self.patch_grid // POOL_STRIDE

    @property
    def has_image_newline(self) -> bool:
        """Whether the checkpoint has ``model.image_newline`` (``unpad`` in ``mm_patch_merge_type``)."""
        return "unpad" in self.mm_patch_merge_type

    @property
    def newline_layout(self) -> NewlinePosition:
        """The newline layout really produced: ``mm_newline_position`` after the merge type's rules."""
        if self.mm_patch_merge_type == "flat":
            return "no_token"
        if self.mm_newline_position == "one_token" and not self.has_image_newline:
            return "no_token"
        return self.mm_newline_position

    @property
    def tokens_per_frame(self) -> int:
        """Embeddings per frame block ``T``: grid ``p(p+1)`` (182 average, 210 bilinear), frame ``p^2+1``, else ``p^2``."""
        p = self.pooled_grid
        layout = self.newline_layout
        if layout == "grid":
            return p * (p + 1)
        if layout == "frame":
            return p * p + 1
        return p * p

    @property
    def frames_independent(self) -> bool:
        """Whether the visual block is the frames' blocks back to back (False for ``one_token``'s trailing newline)."""
        return self.newline_layout != "one_token"

    def visual_tokens(self, num_frames: int) -> int:
        """Embeddings that ``num_frames`` frames occupy in the prompt (``one_token`` adds one at the end)."""
        return int(num_frames) * self.tokens_per_frame + (1 if self.newline_layout == "one_token" else 0)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    # ----------------------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(
        cls,
        raw: dict[str, Any],
        checkpoint_dir: str | os.PathLike | None = None,
        mm_spatial_pool_mode: str | None = None,
        mm_newline_position: str | None = None,
    ) -> LlavaVideoConfig:
        """Build from the flat ``config.json`` dict; ``mm_spatial_pool_mode``/``mm_newline_position`` win over the file.

        ``checkpoint_dir`` is the directory holding the file (:meth:`from_json_file` passes it): a relative
        ``mm_vision_tower`` is looked up there before the working directory.
        """
        raw = copy.deepcopy(raw)
        if "mm_hidden_size" not in raw:
            raise CheckpointError("config.json has no 'mm_hidden_size': this is not a LLaVA/LLaVA-Video checkpoint")
        model_type = raw.get("model_type")
        if model_type is not None and model_type not in LLAVA_VIDEO_MODEL_TYPES:
            logger.warning(
                "config.json: model_type=%r is not a LLaVA-Video type (%s); loading it as LLaVA-Video (Qwen2 + SigLIP) anyway",
                model_type, ", ".join(LLAVA_VIDEO_MODEL_TYPES),
            )
        if mm_spatial_pool_mode is not None:
            _check_choice("mm_spatial_pool_mode", mm_spatial_pool_mode, PoolMode)
        if mm_newline_position is not None:
            _check_choice("mm_newline_position", mm_newline_position, NewlinePosition)
        pool_mode = mm_spatial_pool_mode if mm_spatial_pool_mode is not None else raw.get("mm_spatial_pool_mode")
        if pool_mode is None:
            raise CheckpointError(
                "config.json has no 'mm_spatial_pool_mode' and none was passed; pass mm_spatial_pool_mode='average' "
                "(lmms-eval's llava_vid default), 'max' or 'bilinear'"
            )
        newline = mm_newline_position if mm_newline_position is not None else raw.get("mm_newline_position", "one_token")
        select_layer = int(raw.get("mm_vision_select_layer", -2))
        if select_layer != -2:
            logger.warning(
                "config.json: mm_vision_select_layer=%d is not read by LLaVA-Video's SigLIP tower, which always uses the "
                "output of all but its last layer (= -2)", select_layer,
            )
        stride = int(raw.get("mm_spatial_pool_stride", POOL_STRIDE))
        if stride != POOL_STRIDE:
            logger.warning(
                "config.json: mm_spatial_pool_stride=%d is not used on LLaVA-Video's video path; get_2dPool pools with stride %d",
                stride, POOL_STRIDE,
            )
        text_config = text_config_from_dict(raw)
        vision_config, source = resolve_vision_config(raw, checkpoint_dir)
        try:
            return cls(
                text_config=text_config,
                vision_config=vision_config,
                mm_hidden_size=int(raw["mm_hidden_size"]),
                mm_projector_type=raw.get("mm_projector_type", "mlp2x_gelu"),
                mm_spatial_pool_mode=pool_mode,
                mm_newline_position=newline,
                mm_patch_merge_type=raw.get("mm_patch_merge_type", "flat"),
                mm_vision_select_layer=select_layer,
                mm_spatial_pool_stride=stride,
                mm_vision_tower=raw.get("mm_vision_tower", DEFAULT_VISION_TOWER),
                tokenizer_model_max_length=raw.get("tokenizer_model_max_length"),
                raw=raw,
                vision_config_source=source,
            )
        except ValueError as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(str(err) if str(err).startswith("config.json") else f"config.json: {err}") from err

    @classmethod
    def from_json_file(
        cls, path: str | os.PathLike, mm_spatial_pool_mode: str | None = None, mm_newline_position: str | None = None
    ) -> LlavaVideoConfig:
        """Read ``config.json`` (or the one in directory ``path``); its directory anchors a relative tower path."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise CheckpointError(f"no config.json at {path}: not a LLaVA-Video checkpoint directory")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path} is not valid JSON ({err})") from err
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path} does not hold a JSON object")
        return cls.from_dict(raw, checkpoint_dir=path.parent, mm_spatial_pool_mode=mm_spatial_pool_mode, mm_newline_position=mm_newline_position)

    def to_dict(self) -> dict[str, Any]:
        """The flat ``config.json`` layout: the file as read, with the current ``vocab_size``.

        Load-time overrides of the pool mode and newline position are not written (the file keeps its own
        values; pass the same overrides when loading the copy). When the vision settings came from a
        directory (rule 2) they are added as a ``vision_config`` dict (rule 1), so the written checkpoint no
        longer depends on that place; ``mm_vision_tower`` is kept as read.
        """
        out = copy.deepcopy(self.raw)
        out["vocab_size"] = int(self.text_config.vocab_size)
        if self.vision_config_source == "directory":
            out["vision_config"] = {k: copy.deepcopy(getattr(self.vision_config, k)) for k in _VISION_KEYS}
        return out

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


__all__ = [
    "KNOWN_VISION_CONFIGS",
    "LLAVA_VIDEO_MODEL_TYPES",
    "LlavaVideoConfig",
    "NewlinePosition",
    "PoolMode",
    "VisionSource",
    "resolve_vision_config",
    "text_config_from_dict",
]
