"""The lmms-eval plugin on stock lmms-eval 0.7.x: registry, model_args, the offline needle task with both
models, per-sample error records, and 1 vs 2 processes. Tiny random checkpoints, CPU, no network."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cos.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
N_VIDEOS = 4
FRAMES = 16


@pytest.fixture(scope="session")
def needle_tasks(tmp_path_factory, needle_data):
    """A copy of lmms-eval/cos_lmms_eval/tasks/cos_needle with generated data, plus a variant with a missing and a corrupt video."""
    root = tmp_path_factory.mktemp("tasks")
    good = root / "good" / "cos_needle"
    shutil.copytree(REPO / "lmms-eval" / "cos_lmms_eval" / "tasks" / "cos_needle", good, ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copytree(needle_data, good / "data")
    bad = root / "bad" / "cos_needle"
    shutil.copytree(good, bad)
    docs = json.loads((bad / "data" / "questions.json").read_text())
    (bad / "data" / docs[1]["video"]).unlink()  # missing
    corrupt = bad / "data" / docs[2]["video"]
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # cut mid-stream
    return {"good": good.parent, "bad": bad.parent, "docs": docs}


def _evaluate(model: str, model_args: str, include_path: Path):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    tm = TaskManager("WARNING", include_path=str(include_path), model_name=model)
    return simple_evaluate(model=model, model_args=model_args, tasks=["cos_needle"], task_manager=tm,
                           bootstrap_iters=0, log_samples=True, verbosity="WARNING")


def _predictions(out) -> dict[int, str]:
    return {s["doc_id"]: s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
            for s in out["samples"]["cos_needle"]}


def test_registry_resolves_our_models_and_aliases():
    from lmms_eval.models import get_model

    from cos_lmms_eval.models import CoSLongVA, LongVA

    assert get_model("longva") is LongVA  # takes over the builtin id
    assert get_model("cos_longva") is CoSLongVA
    assert get_model("longva_cos") is CoSLongVA


def test_seed_style_model_args_are_accepted(tiny_longva_dir):
    from cos_lmms_eval.models import LongVA

    args = f"pretrained={tiny_longva_dir},conv_template=qwen_1_5,model_name=llava_qwen,max_frames_num=8,video_decode_backend=decord"
    model = LongVA.create_from_arg_string(args, {"batch_size": 1, "device": None})
    assert model.opts.max_frames_num == 8 and model.opts.video_decode_backend == "decord"
    assert str(model.device) == "cpu" and model.rank == 0 and model.world_size == 1


@pytest.mark.parametrize(
    "args, message",
    [
        ("frames=8", "unknown model_args ['frames']"),
        ("scorer=clip", "scorer='clip': expected one of ['llava', 'self', 'uniform', 'oracle']"),
        ("scorer=oracle", "scorer=oracle needs scorer_truth=<questions.json>"),
        ("score_mode=sample", "expected one of ['generate', 'logits']"),
        ("alpha=-1", "alpha=-1"),
        ("shot_size=0", "shot_size=0"),
        ("conv_template=vicuna_v1", "conv_template='vicuna_v1'"),
        ("batch_size=4", "only batch_size=1"),
    ],
)
def test_bad_model_args_fail_at_startup_with_the_valid_names(args, message):
    from cos_lmms_eval.models import CoSLongVA

    with pytest.raises(ConfigError) as info:
        CoSLongVA.create_from_arg_string(f"pretrained=unused,{args}")
    assert message in str(info.value)
    if "unknown" in message:
        assert "scorer_pretrained" in str(info.value) and "max_frames_num" in str(info.value)


def _grounding(trace_dir: Path, docs: list[dict]) -> float:
    """Mean recall of the needle's sampled frames over the traces (NaN when no trace has a code)."""
    from cos.grounding import window_grounding
    from cos.trace import read_trace

    values = []
    for path in (trace_dir / "cos_needle").glob("*.json"):
        trace = read_trace(path)
        doc = docs[trace.doc_id]
        g = window_grounding(trace.frame_indices, trace.binary_code, doc["needle_start"], doc["needle_end"])
        if g is not None and g["recall"] is not None:
            values.append(g["recall"])
    return sum(values) / len(values) if values else math.nan


def test_both_models_on_the_needle_task(tmp_path, tiny_longva_dir, tiny_llava_dir, needle_tasks):
    base_dir, cos_dir = tmp_path / "base", tmp_path / "cos"
    common = f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},video_decode_backend=pyav"
    base = _evaluate("longva", f"{common},trace_dir={base_dir}", needle_tasks["good"])
    cos = _evaluate("cos_longva", f"{common},scorer=llava,scorer_pretrained={tiny_llava_dir},score_mode=logits,trace_dir={cos_dir}",
                    needle_tasks["good"])
    for out in (base, cos):
        metrics = out["results"]["cos_needle"]
        assert 0.0 <= metrics["needle_acc,none"] <= 1.0
        assert sorted(_predictions(out)) == list(range(N_VIDEOS))  # every doc exactly once
    # The baseline has no binary code, so no grounding value; CoS has one from its traces (cos.grounding,
    # as `cos report` computes it; the task no longer reads traces).
    assert math.isnan(_grounding(base_dir, needle_tasks["docs"]))
    assert 0.0 <= _grounding(cos_dir, needle_tasks["docs"]) <= 1.0
    traces = sorted((cos_dir / "cos_needle").glob("*.json"))
    assert len(traces) == N_VIDEOS
    trace = json.loads(traces[0].read_text())
    for key in ("frame_indices", "shot_scores", "shot_decisions", "binary_code", "positive_map", "negative_map", "alpha", "scorer", "answer", "timings"):
        assert key in trace
    assert len(trace["binary_code"]) == FRAMES and trace["scorer"] == "llava"
    assert not (cos_dir / "errors.jsonl").exists()


def test_missing_and_corrupt_videos_are_error_records_not_crashes(tmp_path, tiny_longva_dir, needle_tasks):
    traces = tmp_path / "traces"
    out = _evaluate("cos_longva", f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},scorer=uniform,trace_dir={traces}",
                    needle_tasks["bad"])
    preds = _predictions(out)
    assert sorted(preds) == list(range(N_VIDEOS))
    assert preds[1] == "" and preds[2] == ""
    records = [json.loads(line) for line in (traces / "errors.jsonl").read_text().splitlines()]
    assert sorted(r["doc_id"] for r in records) == [1, 2]
    docs = needle_tasks["docs"]
    for record in records:
        assert record["video"].endswith(docs[record["doc_id"]]["video"])
        assert record["error"] == "VideoDecodeError" and record["cause"]
    assert len(list((traces / "cos_needle").glob("*.json"))) == N_VIDEOS - 2


def _samples(out_dir: Path, where: str) -> dict[int, str]:
    samples = list(out_dir.rglob("*_samples_cos_needle.jsonl"))
    assert len(samples) == 1, f"{len(samples)} samples files\n{where}"
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    doc_ids = [r["doc_id"] for r in rows]
    assert sorted(doc_ids) == list(range(N_VIDEOS)), doc_ids  # none lost, none duplicated
    return {r["doc_id"]: r["filtered_resps"] for r in rows}


def _launch(nproc: int, out_dir: Path, tiny_longva_dir, include_path: Path, port: int, env_extra: dict | None = None) -> dict[int, str]:
    """``accelerate launch ... -m lmms_eval`` exactly as a user types it (one machine)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    if nproc > 1:
        cmd.append("--multi_gpu")
    cmd += ["-m", "lmms_eval", "--model", "cos_longva", "--model_args",
            f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},scorer=self,score_mode=logits",
            "--tasks", "cos_needle", "--include_path", str(include_path), "--batch_size", "1", "--log_samples",
            "--output_path", str(out_dir), "--verbosity", "WARNING"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return _samples(out_dir, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_longva_dir, needle_tasks):
    return _launch(1, tmp_path_factory.mktemp("one"), tiny_longva_dir, needle_tasks["good"], 29511)


@pytest.mark.parametrize("use_cpu", ["", "1"], ids=["default", "ACCELERATE_USE_CPU=1"])
def test_two_processes_give_the_same_predictions_as_one(tmp_path, tiny_longva_dir, needle_tasks, one_process, use_cpu):
    # ACCELERATE_USE_CPU=1 makes accelerate's device "cpu:0", which safetensors rejected (every rank died)
    env = {"ACCELERATE_USE_CPU": use_cpu} if use_cpu else {}
    two = _launch(2, tmp_path / "two", tiny_longva_dir, needle_tasks["good"], 29512 + bool(use_cpu), env)
    assert two == one_process


def test_two_machines_on_loopback_give_the_same_predictions_as_one(tmp_path, tiny_longva_dir, needle_tasks, one_process):
    """scripts/eval_task.sh on two "machines" (node ranks 0 and 1, one process each, 127.0.0.1) = one process."""
    config = tmp_path / "needle.yaml"
    config.write_text(json.dumps({"model": "cos_longva", "model_args": f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},scorer=self,"
                                  "score_mode=logits", "batch_size": 1, "log_samples": True}))
    out = tmp_path / "logs"
    base = {**os.environ, "OMP_NUM_THREADS": "1", "NNODES": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29521",
            "OUTPUT_PATH": str(out), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = ["bash", str(REPO / "scripts" / "eval_task.sh"), "cos_needle", str(config), "1", "--include_path", str(needle_tasks["good"])]
    nodes = [subprocess.Popen(cmd, env={**base, "NODE_RANK": str(rank)}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in (1, 0)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "node 1: processes finished" in logs[0] and "[eval] results:" in logs[1]
    assert sorted(p.name.rsplit("_", 1)[-1] for p in out.glob("eval_*.log")) == ["node0.log", "node1.log"]
    assert _samples(out, logs[1][-3000:]) == one_process
    summaries = [line for log in logs for line in log.splitlines() if line.startswith("COS-SUMMARY")]
    assert sorted(line.split()[2] for line in summaries) == ["rank=0", "rank=1"] and all("world=2" in line for line in summaries)


def test_cos_answers_the_prompt_the_task_gives_its_baseline(tmp_path, tiny_longva_dir, needle_tasks):
    """A task with a prompt entry for the baseline's id (videomme has one for llava_vid) gives that prompt to
    --model longva; --model cos_longva answers the same prompt (prompt_as_baseline, the default)."""
    import yaml

    root = tmp_path / "tasks"
    shutil.copytree(needle_tasks["good"], root)
    task_yaml = root / "cos_needle" / "cos_needle.yaml"
    text = task_yaml.read_text()
    entry = '  longva:\n    pre_prompt: "BASELINE-ONLY PROMPT. "\n    post_prompt: "\\nThe best answer is:"\n'
    task_yaml.write_text(text.replace("lmms_eval_specific_kwargs:\n", "lmms_eval_specific_kwargs:\n" + entry))
    assert "longva" in yaml.safe_load(task_yaml.read_text().replace("!function ", ""))["lmms_eval_specific_kwargs"]
    args = f"pretrained={tiny_longva_dir},max_frames_num={FRAMES}"
    questions = {}
    for name, model, extra in (("base", "longva", ""), ("cos", "cos_longva", ",scorer=uniform"),
                               ("cos_own", "cos_longva", ",scorer=uniform,prompt_as_baseline=false")):
        _evaluate(model, f"{args},trace_dir={tmp_path / name}{extra}", root)
        traces = {json.loads(p.read_text())["doc_id"]: json.loads(p.read_text()) for p in (tmp_path / name / "cos_needle").glob("*.json")}
        assert sorted(traces) == list(range(N_VIDEOS))
        questions[name] = {d: (t["question"], t.get("prompt_from")) for d, t in traces.items()}
    for doc_id in range(N_VIDEOS):
        base_q, _ = questions["base"][doc_id]
        assert base_q.startswith("BASELINE-ONLY PROMPT. ") and base_q.endswith("The best answer is:")
        assert questions["cos"][doc_id] == (base_q, "longva")
        own_q, own_from = questions["cos_own"][doc_id]
        assert own_from is None and own_q.startswith("Select the best answer") and own_q != base_q


def test_baseline_and_cos_with_aks_and_bolt_through_the_launch_script(tmp_path, tiny_longva_dir, tiny_text_image_dirs, needle_tasks):
    """scripts/eval_task.sh (``accelerate launch -m lmms_eval``) with a config list: --model longva and --model
    cos_longva, each with selector=aks (tiny BLIP ITM) and selector=bolt (tiny CLIP); every sample is answered on the
    frames its selector chose."""
    import yaml

    from cos.video import rate_indices

    common = f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},video_decode_backend=pyav,candidate_fps=8"
    selectors = {"aks": f"selector=aks,selector_model={tiny_text_image_dirs['blip']}",
                 "bolt": f"selector=bolt,selector_model={tiny_text_image_dirs['clip']},power=2.5"}
    runs = {f"{model}_{sel}": (model, f"{common},{args}" + (",scorer=self,score_mode=logits" if model == "cos_longva" else ""))
            for model in ("longva", "cos_longva") for sel, args in selectors.items()}
    out = tmp_path / "logs"
    config = [{"model": model, "model_args": f"{args},trace_dir={tmp_path / 'traces' / name}", "tasks": "cos_needle",
               "include_path": str(needle_tasks["good"]), "batch_size": 1, "log_samples": True, "output_path": str(out)}
              for name, (model, args) in runs.items()]
    (tmp_path / "selectors.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OUTPUT_PATH": str(out), "MASTER_PORT": "29531",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "eval_task.sh"), "cos_needle", str(tmp_path / "selectors.yaml"), "1",
                           "--include_path", str(needle_tasks["good"])], capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    log = f"rc {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, log
    assert len(list(out.rglob("*_samples_cos_needle.jsonl"))) == len(runs), log
    docs = needle_tasks["docs"]
    for name in runs:
        traces = [json.loads(p.read_text()) for p in (tmp_path / "traces" / name / "cos_needle").glob("*.json")]
        assert sorted(t["doc_id"] for t in traces) == list(range(N_VIDEOS)), name
        for trace in traces:
            sel = trace["selector"]
            assert sel["method"] == name.rsplit("_", 1)[1] and sel["fallback"] is None, (name, sel)
            doc = docs[trace["doc_id"]]
            assert sel["candidates"] == rate_indices(doc["num_frames"], doc["fps"], 8).tolist()
            assert trace["frame_indices"] == [sel["candidates"][p] for p in sel["selected"]] and len(trace["frame_indices"]) == FRAMES
            assert (trace["binary_code"] is not None) == name.startswith("cos_longva")
        assert not (tmp_path / "traces" / name / "errors.jsonl").exists()
