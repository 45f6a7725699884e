"""The project installs as one package set, registers its lmms-eval models, and keeps its boundaries."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_packages_import():
    import cos
    import cos_lmms_eval
    import longva

    assert cos.__version__
    assert Path(cos_lmms_eval.__file__).parent == REPO / "lmms-eval" / "cos_lmms_eval"
    assert Path(longva.__file__).parent == REPO / "longva"


def test_entry_point_is_registered_and_light():
    eps = [ep for ep in md.entry_points(group="lmms_eval.models") if ep.value.startswith("cos_lmms_eval.")]
    assert [ep.value for ep in eps] == ["cos_lmms_eval.registration:manifests"]
    # The target module is imported on every `import lmms_eval.models`: it must not pull torch in.
    code = "import sys, cos_lmms_eval.registration; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_manifests_name_models_and_aliases():
    from cos_lmms_eval.registration import manifests

    by_id = {m.model_id: m for m in manifests()}
    assert set(by_id) == {"cos_longva", "longva", "cos_llava_vid", "llava_vid", "cos_videoxl", "videoxl"}
    assert "longva_cos" in by_id["cos_longva"].aliases
    assert by_id["cos_longva"].simple_class_path == "cos_lmms_eval.models.CoSLongVA"
    assert by_id["longva"].simple_class_path == "cos_lmms_eval.models.LongVA"


def _imported_modules(path: Path) -> set[str]:
    """Top-level packages a module imports: import statements, and module names written as strings
    (``importlib.import_module("x.y")``, dotted paths in tables a module imports from later)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+(:\w+)?", node.value):
            names.add(node.value.split(".")[0])
    return names


OUR_PACKAGES = {"cos", "vlm_common", "longva", "llava_video", "videoxl", "cos_runtime", "cos_lmms_eval", "lmms_eval"}


@pytest.mark.parametrize("path", sorted((REPO / "cos").glob("*.py")), ids=lambda p: p.name)
def test_cos_imports_no_model_package_runtime_or_harness(path):
    assert not _imported_modules(path) & (OUR_PACKAGES - {"cos"})


MODEL_PACKAGES = ("longva", "llava_video", "videoxl")
#: a model package that is another one plus more: Video-XL is LongVA's visual path and prompt in front of a beacon LM
BUILDS_ON = {"videoxl": {"longva"}}


@pytest.mark.parametrize("path", sorted(p for pkg in MODEL_PACKAGES for p in (REPO / pkg).glob("*.py")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_model_packages_know_nothing_of_cos(path):
    """A model package imports none of ours but vlm_common (what model packages share) and the package it builds on."""
    allowed = {path.parent.name, "vlm_common"} | BUILDS_ON.get(path.parent.name, set())
    assert not _imported_modules(path) & (OUR_PACKAGES | set(MODEL_PACKAGES)) - allowed


@pytest.mark.parametrize("path", sorted((REPO / "vlm_common").glob("*.py")), ids=lambda p: p.name)
def test_vlm_common_imports_none_of_ours(path):
    assert not _imported_modules(path) & (OUR_PACKAGES - {"vlm_common"})


#: runtime modules that train one base model themselves (``cos train-tiny`` trains the demo's LongVA) and so import it
TRAINERS = {"train_tiny.py": {"longva"}}


@pytest.mark.parametrize("path", sorted((REPO / "runtime" / "cos_runtime").rglob("*.py")), ids=lambda p: p.name)
def test_runtime_never_imports_the_harness_and_models_only_in_backends(path):
    used = _imported_modules(path)
    assert not used & {"lmms_eval", "cos_lmms_eval"}
    if path.parent.name != "backends":
        allowed = TRAINERS.get(path.name, set())
        assert not used & set(MODEL_PACKAGES) - allowed, "model packages are imported by their backend module only"


def test_the_boundary_check_sees_import_strings():
    assert _imported_modules(Path(__file__)) >= {"cos_lmms_eval", "lmms_eval"}  # "cos_lmms_eval.registration:manifests", "lmms_eval.models"


def test_requirements_never_list_torchvision_or_timm():
    from packaging.requirements import Requirement

    declared = [Requirement(r).name.lower() for r in md.requires("cos-longva") or []]
    by_file = [ln.split("#")[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    declared += [Requirement(r).name.lower() for r in by_file if r]
    assert "transformers" in declared and "lmms-eval" not in [Requirement(r).name for r in by_file if r]
    assert not {"torchvision", "timm"} & set(declared)
    installed = {d.metadata["Name"].lower() for d in md.distributions()}
    assert not {"torchvision", "timm"} & installed


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "cos_runtime", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("make-needle-videos", "make-tiny-longva", "make-tiny-llava", "make-tiny-videoxl", "run", "env"):
        assert name in out


def test_non_editable_install_ships_and_runs_the_needle_task(tmp_path, tiny_longva_dir, needle_data):
    """``pip install .`` (a wheel, not the editable tree) carries the cos_needle task and registers the models."""
    import json
    import os

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import cos, longva, cos_lmms_eval; print(cos.__file__, longva.__file__, cos_lmms_eval.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.split()
    assert all(Path(p).is_relative_to(target) for p in where), where  # the installed copy, not the source tree
    tasks = subprocess.run([sys.executable, "-m", "cos_lmms_eval.tasks"], capture_output=True, text=True, env=env, cwd=tmp_path,
                           check=True).stdout.strip()
    assert Path(tasks) == target / "cos_lmms_eval" / "tasks" and (Path(tasks) / "cos_needle" / "cos_needle.yaml").is_file()
    import shutil

    shutil.copytree(needle_data, Path(tasks) / "cos_needle" / "data")  # what `cos make-needle-videos <tasks>/cos_needle/data` writes
    out = tmp_path / "logs"
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "cos_longva", "--model_args",
                           f"pretrained={tiny_longva_dir},max_frames_num=8,scorer=self,score_mode=logits", "--tasks", "cos_needle",
                           "--include_path", tasks, "--batch_size", "1", "--log_samples", "--output_path", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    samples = list(out.rglob("*_samples_cos_needle.jsonl"))
    assert samples, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    questions = json.loads((needle_data / "questions.json").read_text())
    assert sorted(r["doc_id"] for r in rows) == list(range(len(questions)))
    # the installed copy also runs VNBench (its YAML's placeholder dataset resolves inside site-packages) and `cos niah`
    from vnbench_fixture import build_vnbench

    build_vnbench(tmp_path / "vn_data", per_type=1, frames=12)  # not ./vnbench: lmms-eval would take it for the task's folder
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "longva", "--model_args",
                           f"pretrained={tiny_longva_dir},max_frames_num=4", "--tasks", "vnbench", "--include_path", tasks,
                           "--batch_size", "1", "--output_path", str(tmp_path / "vn_logs")],
                          capture_output=True, text=True, env={**env, "VNBENCH_DIR": str(tmp_path / "vn_data")}, cwd=tmp_path, timeout=600)
    results = list((tmp_path / "vn_logs").rglob("*_results.json"))
    assert results, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    metrics = json.loads(results[0].read_text())["results"]["vnbench"]
    assert {"overall,none", "ret,none", "try_acc,none"} <= set(metrics)
    niah = subprocess.run([sys.executable, "-m", "cos_runtime.niah", "--backend", "longva", "--model", str(tiny_longva_dir), "--methods",
                           "uniform", "--context_lengths_min", "4", "--context_lengths_max", "4", "--context_lengths_num_intervals", "1",
                           "--video_depth_percent_intervals", "2", "--num_needles", "1", "--result_dir", str(tmp_path / "niah"), "--quiet"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert niah.returncode == 0, niah.stderr[-3000:]
    assert "cos_runtime/niah.py" not in niah.stderr and (tmp_path / "niah" / "longva" / "heatmap_uniform.png").is_file()
