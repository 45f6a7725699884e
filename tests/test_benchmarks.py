"""The paper's benchmarks through lmms-eval's own task code, offline, with both models.

Every benchmark the paper reports (Video-MME with and without subtitles, MLVU dev, LongVideoBench val,
NExT-QA MC, MVBench) runs here as lmms-eval's real task with local documents (``tests/tasks``): the
prompts, video lookup and scoring are the installed ``lmms_eval.tasks.<benchmark>.utils`` functions, the
videos are real H.264 files laid out under ``$HF_HOME`` where those functions look (``tests/benchmarks.py``),
and the run goes through ``scripts/eval_task.sh`` → ``accelerate launch -m lmms_eval`` with ``--model
longva`` then ``--model cos_longva`` (one run config holding both), as a user types it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import benchmarks
import numpy as np
import pytest
from benchmarks import MISSING, REAL_TASK, SUBTASKS, SUBTITLE_LINES, TASKS_DIR, docs, leaf_tasks

REPO = Path(__file__).resolve().parents[1]
FRAMES = 8
MODELS = ("longva", "cos_longva")
#: the metric each leaf task reports (the real task's metric name)
METRIC = {
    "cos_test_videomme": "videomme_perception_score",
    "cos_test_videomme_w_subtitle": "videomme_perception_score",
    "cos_test_mlvu_dev": "mlvu_percetion_score",
    "cos_test_longvideobench_val_v": "lvb_acc",
    "cos_test_nextqa_mc_test": "exact_match",
    **{sub: "mvbench_accuracy" for sub in SUBTASKS["cos_test_mvbench"]},
}


@pytest.fixture(scope="module")
def bench_home(needle_data) -> Path:
    """The benchmark fixtures under this session's ``HF_HOME`` (set by conftest before lmms-eval is imported)."""
    return benchmarks.lay_out(os.environ["HF_HOME"], needle_data)


# ------------------------------------------------------------------------------- the tasks are the real ones
@functools.lru_cache(maxsize=1)
def _task_index() -> dict:
    from lmms_eval.tasks import TaskManager

    return TaskManager("ERROR").task_index


def _real_config(name: str) -> dict:
    from lmms_eval import utils

    return utils.load_yaml_config(_task_index()[name]["yaml_path"], mode="full")


def _test_config(name: str) -> dict:
    from lmms_eval import utils

    path = next(TASKS_DIR.rglob(f"{name}.yaml"))
    return utils.load_yaml_config(str(path), mode="full")


def _function_id(fn):
    return None if fn is None else (Path(fn.__code__.co_filename).resolve(), fn.__qualname__)


@pytest.mark.parametrize("test_task", [t for t in leaf_tasks()])
def test_test_tasks_are_the_real_tasks_with_local_documents(test_task, bench_home):
    """Same functions (from the installed lmms-eval, not copies), prompt kwargs, generation and metrics as the real task."""
    real_name = REAL_TASK.get(test_task) or next(SUBTASKS[g][test_task] for g in SUBTASKS if test_task in SUBTASKS[g])
    real, ours = _real_config(real_name), _test_config(test_task)
    assert ours["dataset_path"] == "json" and real["dataset_path"] != "json"
    for key in ("doc_to_visual", "doc_to_text", "process_results"):
        assert _function_id(ours[key]) == _function_id(real[key]), key
        assert "site-packages" in str(_function_id(ours[key])[0]) or "lmms_eval" in str(_function_id(ours[key])[0])
    if callable(real["doc_to_target"]):
        assert _function_id(ours["doc_to_target"]) == _function_id(real["doc_to_target"])
    else:
        assert ours["doc_to_target"] == real["doc_to_target"]
    for key in ("output_type", "generation_kwargs", "test_split"):
        assert ours.get(key) == real.get(key), key
    # lmms-eval picks the prompt kwargs by --model name: ours keep "default" and the entries of our models' ids
    # (videomme has one for llava_vid; cos_llava_vid answers that one too, see cos_lmms_eval.models.baseline_prompt)
    from cos_runtime import registry

    ids = {"default"} | {mid for spec in registry.specs() for mid in spec.model_ids()}
    real_kwargs = real.get("lmms_eval_specific_kwargs")
    kept = {k: v for k, v in (real_kwargs or {}).items() if k in ids}
    assert ours.get("lmms_eval_specific_kwargs") == (kept or None)
    strip = [{k: (_function_id(v) if callable(v) else v) for k, v in m.items()} for m in real["metric_list"]]
    assert [{k: (_function_id(v) if callable(v) else v) for k, v in m.items()} for m in ours["metric_list"]] == strip
    assert len(docs(test_task)) >= 1


def test_fixture_videos_are_where_the_real_task_code_looks(bench_home):
    """The real ``doc_to_visual`` of each task finds every fixture video (and names the missing ones)."""
    from lmms_eval.tasks.longvideobench.utils import longvideobench_doc_to_visual_v
    from lmms_eval.tasks.mlvu.utils import mlvu_doc_to_visual_dev
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_visual
    from lmms_eval.tasks.nextqa.utils import nextqa_doc_to_visual
    from lmms_eval.tasks.videomme.utils import videomme_doc_to_visual

    fns = {"cos_test_videomme": videomme_doc_to_visual, "cos_test_mlvu_dev": mlvu_doc_to_visual_dev,
           "cos_test_longvideobench_val_v": longvideobench_doc_to_visual_v, "cos_test_nextqa_mc_test": nextqa_doc_to_visual}
    found = set()
    for task, fn in fns.items():
        for doc_id, doc in enumerate(docs(task)):
            if doc_id in MISSING.get(task, []):
                continue
            (path,) = fn(doc)
            assert Path(path).is_file(), (task, doc_id, path)
            found.add(Path(path))
    for sub in SUBTASKS["cos_test_mvbench"]:
        for doc_id, doc in enumerate(docs(sub)):
            if doc_id not in MISSING.get(sub, []):
                (path,) = mvbench_doc_to_visual(doc, {"sub_task": sub.removeprefix("cos_test_mvbench_")})
                assert Path(path).exists(), (sub, doc_id, path)
                found.add(Path(path))
    expected = {bench_home / rel for rel in [*benchmarks.VIDEOS, *benchmarks.FRAME_FOLDERS]}
    assert found == expected  # every fixture is used, and nothing else is
    assert any(not p.name.isascii() for p in found)


# ------------------------------------------------------------------------------------- the real launch path
@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, bench_home, tiny_longva_dir, tiny_llava_dir):
    """Both models on every benchmark: one ``scripts/eval_task.sh`` call with a two-entry run config."""
    out = tmp_path_factory.mktemp("bench_run")
    entries = []
    for model in MODELS:
        args = f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},video_decode_backend=auto,trace_dir={out / 'traces' / model}"
        if model == "cos_longva":
            args += f",scorer=llava,scorer_pretrained={tiny_llava_dir},score_mode=logits,shot_size=4"
        entries.append({"model": model, "model_args": args, "batch_size": 1, "log_samples": True, "output_path": str(out / "logs")})
    config = out / "both.yaml"
    config.write_text(json.dumps(entries))  # JSON is YAML
    tasks = ",".join(REAL_TASK)
    env = {**os.environ, "OUTPUT_PATH": str(out / "logs"), "PORT": "29531", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "eval_task.sh"), tasks, str(config), "1", "--include_path", str(TASKS_DIR),
                           "--timezone", "UTC"], capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, f"eval_task.sh exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    results = {}
    for path in sorted((out / "logs").rglob("*_results.json")):
        data = json.loads(path.read_text())
        model = data["config"]["model"]
        samples = {}
        for task in leaf_tasks():
            (sample_file,) = path.parent.glob(path.name.replace("_results.json", f"_samples_{task}.jsonl"))
            samples[task] = [json.loads(line) for line in sample_file.read_text(encoding="utf-8").splitlines()]
        results[model] = {"results": data, "samples": samples}
    assert sorted(results) == sorted(MODELS)
    return {"out": out, "runs": results, "stderr": proc.stderr, "stdout": proc.stdout}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", leaf_tasks())
def test_every_benchmark_runs_every_doc_with_both_models(bench_run, model, task):
    run = bench_run["runs"][model]
    rows = run["samples"][task]
    expected_docs = docs(task)
    assert sorted(r["doc_id"] for r in rows) == list(range(len(expected_docs)))  # every doc exactly once
    assert run["results"]["n-samples"][task]["effective"] == len(expected_docs)
    value = run["results"]["results"][task][f"{METRIC[task]},none"]
    assert isinstance(value, (int, float)) and math.isfinite(value)
    missing = MISSING.get(task, [])
    traces = bench_run["out"] / "traces" / model
    for row in rows:
        pred = row["filtered_resps"][0] if isinstance(row["filtered_resps"], list) else row["filtered_resps"]
        if row["doc_id"] in missing:
            assert pred == ""  # an error record and an empty prediction, not a crash
    errors = [json.loads(line) for line in (traces / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    mine = sorted(r["doc_id"] for r in errors if r["task"] == task)
    assert mine == missing
    for record in (r for r in errors if r["task"] == task):
        assert record["error"] in ("VisualUnavailable", "VideoDecodeError") and record["cause"]
        assert record["video"] and "missing" in record["video"]  # the path the task's code looked at
    # the answered docs have traces naming the fixture video and the uniform sample of its frames
    answered = len(expected_docs) - len(missing)
    task_traces = [json.loads(p.read_text(encoding="utf-8")) for p in (traces / task).glob("*.json")] if answered else []
    assert len(task_traces) == len({(t["video"], t["question"]) for t in task_traces})
    assert sorted(t["doc_id"] for t in task_traces) == [i for i in range(len(expected_docs)) if i not in missing]
    for trace in task_traces:
        assert Path(trace["video"]).exists() and len(trace["frame_indices"]) == FRAMES
        assert trace["frame_indices"] == np.linspace(0, trace["total_frames"] - 1, FRAMES, dtype=int).tolist()
        assert (trace["binary_code"] is None) == (model == "longva")


def test_non_ascii_paths_and_frame_folders_are_answered(bench_run):
    for model in MODELS:
        traces = [json.loads(p.read_text(encoding="utf-8")) for p in (bench_run["out"] / "traces" / model).glob("*/*.json")]
        videos = {t["video"] for t in traces}
        assert {v for v in videos if not Path(v).name.isascii()} == {str(Path(os.environ["HF_HOME"]) / rel) for rel in benchmarks.VIDEOS
                                                                      if not Path(rel).name.isascii()}
        (folder,) = [t for t in traces if t["task"] == "cos_test_mvbench_episodic_reasoning"]
        assert folder["decoder"] == "frames" and Path(folder["video"]).is_dir()


def test_subtitles_reach_the_prompt(bench_run):
    """videomme_w_subtitle's own code read our SRT (through cv2 on the H.264 file) into the prompt."""
    rows = {r["doc_id"]: r for r in bench_run["runs"]["cos_longva"]["samples"]["cos_test_videomme_w_subtitle"]}
    with_subs = rows[0]["input"]
    assert with_subs.startswith("This video's subtitles are listed below: \n" + "\n".join(SUBTITLE_LINES) + "\n")
    assert "No subtitles available" in rows[2]["input"]  # the second video has no .srt
    plain = {r["doc_id"]: r for r in bench_run["runs"]["cos_longva"]["samples"]["cos_test_videomme"]}
    assert "subtitles are listed" not in plain[0]["input"]


def test_the_launcher_counts_failed_samples_per_model(bench_run):
    n_missing = sum(len(v) for v in MISSING.values())
    assert f"{n_missing * len(MODELS)} failed" in bench_run["stdout"] + bench_run["stderr"]


# ------------------------------------------------------------------------------------------- the env check
def _check(*args, env_extra=None, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "cos_lmms_eval.check", *args], capture_output=True, text=True, env=env, timeout=300)


def test_env_check_says_ok_for_every_paper_benchmark(bench_home):
    proc = _check(*REAL_TASK.values())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert set(lines) == set(REAL_TASK.values())
    assert all(value.startswith("ok") for value in lines.values())
    assert "20 sub-tasks" in lines["mvbench"] and str(bench_home / "videomme") in lines["videomme"]


def test_env_check_names_what_is_missing(tmp_path):
    fake = tmp_path / "cv2"  # a cv2 that is "not installed"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'cv2'\", name='cv2')\n")
    proc = _check("videomme", "videomme_w_subtitle", "mlvu_dev", "no_such_task", env_extra={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert lines["videomme"] == "MISSING  module 'cv2' is not installed (pip install opencv-python-headless)"
    assert lines["videomme_w_subtitle"].startswith("MISSING  module 'cv2'")
    assert lines["mlvu_dev"].startswith("ok")
    assert lines["no_such_task"].startswith("MISSING  unknown task")
    proc = _check("nextqa_mc_test", drop=("HF_HOME",))
    assert proc.returncode == 1 and "HF_HOME is not set" in proc.stdout


def test_eval_script_refuses_a_task_that_cannot_run(tmp_path, tiny_longva_dir):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"model": "longva", "model_args": f"pretrained={tiny_longva_dir}", "output_path": str(tmp_path / "logs")}))
    env = {**os.environ, "OUTPUT_PATH": str(tmp_path / "logs"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "eval_task.sh"), "no_such_task", str(config), "1"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 1
    assert "unknown task" in proc.stdout and "cannot run in this environment" in proc.stderr
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*.log"))  # nothing was launched
