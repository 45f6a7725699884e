"""Typed view of Video-XL's ``config.json``: LongVA's fields plus the visual-summarisation ("beacon") memory.

Video-XL's release (``VectorSpaceLab/Video-XL``, weights ``sy1998/Video_XL`` folder ``VideoXL_weight_8``)
is LongVA's visual path (CLIP ViT-L/14-336, ``mlp2x_gelu``, 2x2 average pool after the projector, 144
tokens per frame, frames flattened without separators) in front of a Qwen2-7B whose attention compresses
the video window by window into beacon tokens (``videoxl-notes.md``). Everything but the beacon fields is
read by :class:`longva.config.LongVAConfig`.

The beacon fields keep the release's names. The released ``config.json`` has not been seen: a field that
is absent takes the value of :data:`BEACON_DEFAULTS` (what the release's ``scripts/finetune_v.sh`` and
``train.py`` write), and :attr:`VideoXLConfig.inferred` lists which ones were inferred so (the loader logs
them). Settings the release never ran with are refused with the field's name:

=============================  ============================  =======================================
field                          default when absent            accepted
=============================  ============================  =======================================
``beacon_window``              1440                           > 0, equal to ``beacon_stride``
``beacon_stride``              1440                           equal to ``beacon_window``
``beacon_attn``                ``"full-coverage"``            only that
``beacon_ratio``               ``[2, 4, 8]``                  recorded; the ratio used is the model
                                                              argument ``beacon_ratio`` (default 8)
``beacon_ratio_mix``           ``"step-random"``              recorded (see above)
``beacon_param``               ``["q", "k", "v"]``            only those three
``beacon_embed_init``          ``"eos"``                      recorded (the release uses it to fill
                                                              missing beacon weights; we refuse them)
``beacon_sink_size``           0                              only 0
``beacon_attend_prev``         true                           only true
``beacon_pos``                 ``"interleave"``               only that
``beacon_parallel_window``     1                              only 1
``beacon_accum``               true                           only true
=============================  ============================  =======================================

Two more values are not read from the file: ``tokenizer_model_max_length`` is ignored (Video-XL's
generation path never truncates), and when ``config.json`` has no ``vision_config`` and
``mm_vision_tower`` ends in ``clip-vit-large-patch14-336`` (the release's training script names a relative
directory of that name) the tower is taken to be ViT-L/14-336 (weights always come from the checkpoint).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any

from longva.config import DEFAULT_VISION_TOWER, KNOWN_VISION_CONFIGS, LongVAConfig

logger = logging.getLogger(__name__)

#: what an absent beacon field is taken to be (the release's training scripts; ``videoxl-notes.md`` §6)
BEACON_DEFAULTS: dict[str, Any] = {
    "beacon_window": 1440,
    "beacon_stride": 1440,
    "beacon_attn": "full-coverage",
    "beacon_ratio": [2, 4, 8],
    "beacon_ratio_mix": "step-random",
    "beacon_param": ["q", "k", "v"],
    "beacon_embed_init": "eos",
    "beacon_sink_size": 0,
    "beacon_attend_prev": True,
    "beacon_pos": "interleave",
    "beacon_parallel_window": 1,
    "beacon_accum": True,
}
#: the only value of these fields the release runs with (anything else is refused)
_ONLY = {
    "beacon_attn": "full-coverage",
    "beacon_sink_size": 0,
    "beacon_attend_prev": True,
    "beacon_pos": "interleave",
    "beacon_parallel_window": 1,
    "beacon_accum": True,
}
#: the compression ratio Video-XL's README fixes (``model.config.beacon_ratio = [8]``)
DEFAULT_RATIO = 8
_TOWER_BASENAME = DEFAULT_VISION_TOWER.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class BeaconSettings:
    """The beacon fields of ``config.json`` (release names without the ``beacon_`` prefix)."""

    window: int = 1440
    stride: int = 1440
    attn: str = "full-coverage"
    ratio: tuple[int, ...] = (2, 4, 8)
    ratio_mix: str = "step-random"
    param: tuple[str, ...] = ("q", "k", "v")
    embed_init: str = "eos"
    sink_size: int = 0
    attend_prev: bool = True
    pos: str = "interleave"
    parallel_window: int = 1
    accum: bool = True

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> tuple[BeaconSettings, tuple[str, ...]]:
        """The settings in ``raw`` (a ``config.json`` dict) and the names of the fields that were absent."""
        values, inferred = {}, []
        for name, default in BEACON_DEFAULTS.items():
            if name in raw and raw[name] is not None:
                values[name] = raw[name]
            else:
                values[name] = copy.deepcopy(default)
                inferred.append(name)
        for name, only in _ONLY.items():
            if values[name] != only:
                raise ValueError(f"config.json: {name}={values[name]!r} is not supported (Video-XL's release runs with {only!r})")
        window, stride = values["beacon_window"], values["beacon_stride"]
        if not isinstance(window, int) or window < 1 or window != stride:
            raise ValueError(f"config.json: beacon_window={window!r} and beacon_stride={stride!r} must be one positive number "
                             f"(Video-XL's release: 1440, ten frames)")
        param = values["beacon_param"]
        if sorted(param) != ["k", "q", "v"]:
            raise ValueError(f"config.json: beacon_param={param!r} is not supported (Video-XL's release: ['q', 'k', 'v'])")
        ratio = values["beacon_ratio"]
        ratio = (ratio,) if isinstance(ratio, int) else tuple(int(r) for r in ratio)
        return cls(window=window, stride=stride, attn=values["beacon_attn"], ratio=ratio, ratio_mix=str(values["beacon_ratio_mix"]),
                   param=tuple(param), embed_init=str(values["beacon_embed_init"]), sink_size=0, attend_prev=True, pos="interleave",
                   parallel_window=1, accum=True), tuple(inferred)

    def check_ratio(self, ratio: int) -> int:
        """``ratio`` if the window can be compressed by it (``0 < ratio <= window``, ``window % ratio == 0``)."""
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1 or ratio > self.window or self.window % ratio:
            raise ValueError(f"beacon_ratio={ratio!r} must divide beacon_window={self.window} (e.g. 2, 4 or 8, the release's ratios)")
        return ratio

    def as_dict(self) -> dict[str, Any]:
        return {f"beacon_{f.name}": list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass
class VideoXLConfig(LongVAConfig):
    """LongVA's configuration plus :class:`BeaconSettings`.

    Attributes:
        beacon: the beacon memory's settings.
        inferred: ``config.json`` fields that were absent and took their value from :data:`BEACON_DEFAULTS`.
    """

    beacon: BeaconSettings = field(default_factory=BeaconSettings)
    inferred: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any], checkpoint_dir: str | os.PathLike | None = None) -> VideoXLConfig:
        readable = copy.deepcopy(raw)
        tower = str(raw.get("mm_vision_tower") or "")
        tower_inferred = (raw.get("vision_config") is None and tower.rstrip("/").rsplit("/", 1)[-1] == _TOWER_BASENAME
                          and tower != DEFAULT_VISION_TOWER)
        if tower_inferred:  # the release's relative "clip-vit-large-patch14-336": ViT-L/14-336 settings
            readable["vision_config"] = dict(KNOWN_VISION_CONFIGS[DEFAULT_VISION_TOWER])
        config = super().from_dict(readable, checkpoint_dir)
        config.raw = copy.deepcopy(raw)  # written back as read
        config.beacon, inferred = BeaconSettings.from_raw(raw)
        config.inferred = inferred + (("vision_config",) if tower_inferred else ())
        config.tokenizer_model_max_length = None  # Video-XL's generation never truncates the prompt
        return config


__all__ = ["BEACON_DEFAULTS", "DEFAULT_RATIO", "BeaconSettings", "VideoXLConfig"]
