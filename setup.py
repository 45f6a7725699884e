"""One install for the four packages: ``cos`` (the method), ``longva`` (the model), ``cos_runtime`` (the
backend registry, engine and ``cos`` command; source under ``runtime/``) and ``cos_lmms_eval`` (the
lmms-eval plugin, source under ``lmms-eval/``).

lmms-eval itself is not in ``install_requires``: its 0.7.x metadata hard-requires torchvision and timm,
so letting pip resolve it into a CPU environment replaces CPU torch by a CUDA build and installs the
PyPI vision wheel that crashes beside CPU torch. ``scripts/demo.sh``/``scripts/test.sh`` install it with
``--no-deps``; everything lmms-eval needs on our code path is listed here instead. In an environment
that already has a matching torch + torchvision (a CUDA box), ``pip install -e .[lmms-eval]`` is fine.
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip() and not ln.startswith("-")]


setup(
    name="cos-longva",
    version="0.1.0",
    description="Chain-of-Shot prompting (arXiv 2502.06428) for long-video QA on LongVA, as an lmms-eval plugin",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["cos", "vlm_common", "longva", "llava_video", "videoxl", "cos_runtime", "cos_runtime.backends", "cos_lmms_eval", "cos_lmms_eval.tasks"],
    package_dir={"cos": "cos", "vlm_common": "vlm_common", "longva": "longva", "llava_video": "llava_video", "videoxl": "videoxl",
                 "cos_runtime": "runtime/cos_runtime", "cos_lmms_eval": "lmms-eval/cos_lmms_eval"},
    # the offline task (YAML + hooks) ships inside the package: --include_path $(python -m cos_lmms_eval.tasks)
    package_data={"cos_lmms_eval.tasks": ["*/*.yaml", "*/*.py"]},
    install_requires=_requirements(),
    extras_require={
        "lmms-eval": ["lmms-eval>=0.7.3,<0.8"],
        "gpu": ["flash-attn", "bitsandbytes"],
        "dev": ["pytest"],
        "plot": ["matplotlib"],
    },
    entry_points={
        "console_scripts": ["cos = cos_runtime.cli:main"],
        "lmms_eval.models": ["cos = cos_lmms_eval.registration:manifests"],
    },
)
