"""Entry-point target for ``lmms_eval.models``.

lmms-eval imports this module on every ``import lmms_eval.models``, so it must stay light: no torch,
no model code. Class paths are dotted strings imported lazily by lmms-eval's registry.
"""

from __future__ import annotations


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(
            model_id="cos_longva",
            simple_class_path="cos_lmms_eval.models.CoSLongVA",
            aliases=("longva_cos",),
        ),
        # Takes over lmms-eval's builtin id, whose implementation cannot import on transformers 5.
        ModelManifest(model_id="longva", simple_class_path="cos_lmms_eval.models.LongVA"),
    ]
