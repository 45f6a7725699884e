"""Entry-point target for ``lmms_eval.models``: one baseline and one CoS model per registered backend.

lmms-eval imports this module on every ``import lmms_eval.models``, so it must stay light: no torch, no
model code (the backend registry holds dotted paths only). Class paths are strings imported lazily by
lmms-eval's registry; ``cos_lmms_eval.models`` makes each class on first use.
"""

from __future__ import annotations


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    from cos_runtime import registry

    out = []
    for spec in registry.specs():
        base = f"cos_lmms_eval.models.{spec.class_name}"
        out.append(ModelManifest(model_id=spec.cos_model, simple_class_path=f"cos_lmms_eval.models.CoS{spec.class_name}",
                                 aliases=tuple(spec.cos_aliases)))
        # For LongVA this takes over lmms-eval's builtin id, whose implementation cannot import on transformers 5.
        out.append(ModelManifest(model_id=spec.baseline_model, simple_class_path=base))
    return out
