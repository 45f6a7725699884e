"""The backend registry: one declaration per base model.

A *backend* is a base video LM (LongVA, LLaVA-Video, Video-XL) plugged into the runtime.
Its declaration (:class:`BackendSpec`) names the module that implements it and the lmms-eval model ids
of its uniform baseline and its Chain-of-Shot model; everything else is read from that module when the
backend is used:

* ``Options`` — a dataclass of the backend's own options (checkpoint, frame count, decoder, prompt
  template, ...), whose fields become ``model_args`` names and ``cos run`` flags;
* ``load(options, run) -> VideoLM`` — the loaded model behind :class:`cos.protocol.VideoLM`, whose
  ``facts`` give the context budget, tokens per frame and default generation settings;
* ``sample_frames(visual, options) -> (frames, info)`` — the backend's frame-sampling rule.

Every backend's ``Options`` has ``max_frames_num`` (the frame budget) and ``pretrained``.

This module is imported by lmms-eval's entry point on every ``import lmms_eval.models`` (through
``cos_lmms_eval.registration``), so it stays free of torch and of every model package: a declaration
holds dotted module paths only. Adding a backend is one module plus one registry entry: an entry in
:data:`BUILTIN`, a :func:`register` call, or — from another installed package, so that every process
(``accelerate launch`` workers included) sees it — an entry point in the group ``cos.backends`` naming a
:class:`BackendSpec` in a torch-free module::

    [project.entry-points."cos.backends"]
    myvlm = "mypkg.cos_spec:SPEC"
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field

#: entry-point group through which other packages add backends
ENTRY_POINT_GROUP = "cos.backends"

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "BackendSpec", "get", "load_module", "names", "register", "resolve_model_id", "specs", "unregister"]


@dataclass(frozen=True)
class BackendSpec:
    """The declaration of one base model.

    Args:
        name: registry name (``cos run --backend NAME``, ``cos bench --backend NAME``).
        module: dotted path of the module with ``Options``, ``load`` and ``sample_frames``.
        baseline_model: lmms-eval model id of the uniform-sampling baseline (e.g. ``longva``).
        cos_model: lmms-eval model id of the Chain-of-Shot model (e.g. ``cos_longva``).
        cos_aliases: more lmms-eval ids for the CoS model.
        class_name: Python name of the baseline's lmms-eval class (``cos_lmms_eval.models.<class_name>``;
            the CoS class is ``CoS<class_name>``).
        title: one line for help texts and reports.
        default_pretrained: the checkpoint the paper used.
    """

    name: str
    module: str
    baseline_model: str
    cos_model: str
    class_name: str
    title: str = ""
    default_pretrained: str = ""
    cos_aliases: tuple[str, ...] = field(default_factory=tuple)

    def model_ids(self) -> dict[str, str]:
        """lmms-eval model id (and alias) -> method (``uniform`` or ``cos``)."""
        out = {self.baseline_model: "uniform", self.cos_model: "cos"}
        out.update({alias: "cos" for alias in self.cos_aliases})
        return out


#: the backends this project ships
BUILTIN: tuple[BackendSpec, ...] = (
    BackendSpec(name="longva", module="cos_runtime.backends.longva", baseline_model="longva", cos_model="cos_longva",
                cos_aliases=("longva_cos",), class_name="LongVA", title="LongVA-7B (CLIP ViT-L/14-336 + Qwen2-7B, 144 tokens/frame)",
                default_pretrained="lmms-lab/LongVA-7B"),
    BackendSpec(name="llava_video", module="cos_runtime.backends.llava_video", baseline_model="llava_vid", cos_model="cos_llava_vid",
                class_name="LlavaVid", title="LLaVA-Video-7B-Qwen2 (SigLIP so400m + Qwen2-7B, 182 tokens/frame at average pooling)",
                default_pretrained="lmms-lab/LLaVA-Video-7B-Qwen2"),
    BackendSpec(name="videoxl", module="cos_runtime.backends.videoxl", baseline_model="videoxl", cos_model="cos_videoxl",
                class_name="VideoXL", title="Video-XL-7B (CLIP ViT-L/14-336 + Qwen2-7B with beacon memory, 144 tokens/frame kept as 1/8)",
                default_pretrained="sy1998/Video_XL/VideoXL_weight_8"),
)

_REGISTRY: dict[str, BackendSpec] = {spec.name: spec for spec in BUILTIN}
_ENTRY_POINTS_LOADED = False


def _load_entry_points() -> None:
    """Register the backends other packages declare (once per process). A broken declaration is a
    warning, not a failure: the other backends stay usable."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = ep.load()
            if not isinstance(spec, BackendSpec):
                raise TypeError(f"{ep.value} is a {type(spec).__name__}, not a cos_runtime.registry.BackendSpec")
            if _REGISTRY.get(spec.name) != spec:
                register(spec)
        except Exception as err:  # noqa: BLE001 - one bad plugin must not disable the others
            warnings.warn(f"cos backend entry point {ep.name!r} ({ep.value}) was not registered: {err}", stacklevel=2)


def register(spec: BackendSpec, replace: bool = False) -> BackendSpec:
    """Add a backend. Its name and model ids must not collide with a registered one (unless ``replace``)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"backend {spec.name!r} is already registered")
    taken = {mid: other.name for other in _REGISTRY.values() if other.name != spec.name for mid in other.model_ids()}
    clash = sorted(set(spec.model_ids()) & set(taken))
    if clash:
        raise ValueError(f"backend {spec.name!r}: lmms-eval model id(s) {clash} already belong to {sorted({taken[c] for c in clash})}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    if any(spec.name == name for spec in BUILTIN):
        raise ValueError(f"backend {name!r} is built in")
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    _load_entry_points()
    return list(_REGISTRY)


def specs() -> list[BackendSpec]:
    _load_entry_points()
    return list(_REGISTRY.values())


def get(name: str) -> BackendSpec:
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        from cos.errors import ConfigError

        raise ConfigError(f"unknown backend {name!r}; registered: {', '.join(_REGISTRY)}") from None


def resolve_model_id(model_id: str) -> tuple[BackendSpec, str] | None:
    """The backend and method (``uniform``/``cos``) behind an lmms-eval model id, or None."""
    _load_entry_points()
    for spec in _REGISTRY.values():
        method = spec.model_ids().get(model_id)
        if method:
            return spec, method
    return None


def load_module(spec: BackendSpec):
    """The backend's implementation module (imported on first use)."""
    return importlib.import_module(spec.module)
