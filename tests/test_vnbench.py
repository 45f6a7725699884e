"""VNBench as an lmms-eval task (``lmms-eval/cos_lmms_eval/tasks/vnbench``), offline.

The scoring against an independent naive transcription of VideoNIAH's official code (``evaluation/eval.py``'s
parser, ``llava_examples/evaluation_utils.py``'s circular 4-try rule, ret_insert swap and averages), the ground-truth
letters, missing data, the data note of ``cos_lmms_eval.check``, and runs on a fixture in the official layout
(``tests/vnbench_fixture.py``): lmms-eval in-process with a scripted model (exact scores), ``accelerate launch -m
lmms_eval --model longva`` with the tiny LongVA, and ``scripts/eval_vnbench.sh`` on two processes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vnbench_fixture import ANNOTATION_FILE, PERMUTATIONS, annotation, build_vnbench

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "lmms-eval" / "cos_lmms_eval" / "tasks"
METRICS = ["overall", "ret", "ord", "cnt", "ret_edit1", "ret_insert1", "ret_insert2", "ord_edit1", "ord_insert1", "ord_insert2",
           "cnt_edit1", "cnt_edit2", "cnt_insert1", "try_acc"]
FRAMES = 8
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def _utils():
    """The task's utils.py, imported as lmms-eval imports it (from its file, not registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location("utils", TASKS_DIR / "vnbench" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


U = _utils()


# ------------------------------------------------------------------- the official code, transcribed naively


def official_gt(entry: dict) -> str:
    """model_video_niah.py: ``chr(options.index(q_dict['gt']) + ord('A'))`` on the raw annotation entry."""
    return chr(entry["options"].index(entry["gt"]) + ord("A"))


def official_parse(pred: str) -> str:
    """evaluation/eval.py: the text before the first '.', then the first of A, B, C, D it contains."""
    pred = pred.split(".")[0]
    if "A" in pred:
        pred = "A"
    elif "B" in pred:
        pred = "B"
    elif "C" in pred:
        pred = "C"
    elif "D" in pred:
        pred = "D"
    return pred


def naive_scores(rows: list[dict]) -> dict[str, float]:
    """rows: ``video``, ``type``, ``try``, ``gt`` (letter), ``response``. A question (type, video) is right when it has
    one row for each try 0-3 and all parse to gt; per type the share of right questions, then the official swap of
    ret_insert1/ret_insert2, category means, overall = mean of the categories; try_acc over rows."""
    questions: dict = {}
    for row in rows:
        questions.setdefault((row["type"], row["video"]), []).append(row)
    right, total = {}, {}
    for (kind, _), group in questions.items():
        ok = sorted(r["try"] for r in group) == [0, 1, 2, 3] and all(official_parse(r["response"]) == r["gt"] for r in group)
        right[kind] = right.get(kind, 0) + int(ok)
        total[kind] = total.get(kind, 0) + 1
    acc = {kind: right[kind] / total[kind] for kind in total}
    acc["ret_insert1"], acc["ret_insert2"] = acc["ret_insert2"], acc["ret_insert1"]
    out = dict(acc)
    for category in ("ret", "ord", "cnt"):
        out[category] = sum(v for k, v in acc.items() if k.startswith(category)) / 3
    out["overall"] = (out["ret"] + out["ord"] + out["cnt"]) / 3
    out["try_acc"] = sum(official_parse(r["response"]) == r["gt"] for r in rows) / len(rows)
    return out


def _rows(entries: list[dict], responses: dict[int, str]) -> list[dict]:
    return [{"video": e["video"], "type": e["type"], "try": e["try"], "gt": official_gt(e), "response": responses[i]}
            for i, e in enumerate(entries) if i in responses]


def _ours(entries: list[dict], responses: dict[int, str]):
    """Our score of ``responses`` (doc index -> text) through the task's process_results records."""
    docs = [U.normalise_entry(e, i) for i, e in enumerate(entries)]
    records = []
    for i, text in responses.items():
        out = U.process_results(docs[i], [text])
        assert sorted(out) == sorted(METRICS) and all(out[m] is out["overall"] for m in METRICS)
        records.append(out["overall"])
    return U.score(records)


def _answer(letter: str, style: int) -> str:
    """A response the official parser reads as ``letter``."""
    return [letter, f"{letter}.", f"({letter}) the one", f" {letter}. because", f"{letter}\n"][style % 5]


def _wrong(letter: str) -> str:
    return "ABCD"[("ABCD".index(letter) + 1) % 4]


# ------------------------------------------------------------------------------------------ unit tests


def test_ground_truth_letters_and_documents_follow_the_official_annotation():
    entries = annotation(per_type=2, seed=3)
    assert len(entries) == 9 * 2 * 4
    docs = [U.normalise_entry(e, i) for i, e in enumerate(entries)]
    for entry, doc in zip(entries, docs):
        assert doc["gt_letter"] == official_gt(entry) == entry["gt_option"]
        assert doc["options"] == [str(o) for o in entry["options"]] and doc["gt"] == str(entry["gt"])
        assert doc["video_name"] == entry["video"].rsplit("/", 1)[-1] and doc["try"] == entry["try"]
        assert U.doc_to_text(doc, {"pre_prompt": "", "post_prompt": POST_PROMPT}) == (
            f"{entry['question']}\nA. {entry['options'][0]}\nB. {entry['options'][1]}\nC. {entry['options'][2]}\nD. {entry['options'][3]}"
            "\nAnswer with the option's letter from the given choices directly.")
    # the options of a question's tries are the official permutation of try 0's
    first = entries[:4]
    assert [[first[0]["options"][i] for i in perm] for perm in PERMUTATIONS] == [e["options"] for e in first]
    # counting questions: gt is the option's value (a count, not an index), found as a number or as text
    assert U.gt_letter([2, 5, 3, 1], 3) == "C" and U.gt_letter(["2", "5", "3", "1"], 3) == "C" and U.gt_letter([2, 5, 3, 1], "3") == "C"
    assert U.gt_letter([0, 1, 2, 3], 1) == "B" and U.gt_letter([True, 1, 2, 3], 1) == "B"
    assert U.gt_letter(["x", "y", "z", "w"], "q", "D") == "D"  # not among the options: this try's gt_option
    assert U.gt_letter(["x", "y", "z", "w"], "q", "AB") is None and U.gt_letter(["x", "y", "z", "w"], "q") is None
    with pytest.raises(U.VNBenchDataError, match="entry 5 .* gt 'q' is none of the options"):
        U.normalise_entry({**entries[5], "gt": "q", "gt_option": None}, 5)
    with pytest.raises(U.VNBenchDataError, match=r"lacks \['options'\]"):
        U.normalise_entry({k: v for k, v in entries[0].items() if k != "options"}, 0)


def test_the_parser_is_the_official_one():
    strings = ["A", "B", "C.", "D. The answer", "(B) the bird", " C", "B\n", "Answer: C", "The answer is D.", "the answer is b",
               "b", "", "E", "CD", "DC", "I think. B", "1. B", "Option B", "BA", "x\nD", "cat.A"]
    for text in strings:
        parsed = official_parse(text)
        assert U.parse_prediction(text) == (parsed if parsed in ("A", "B", "C", "D") else None), text
    assert [U.parse_prediction(s) for s in ("B.", "(C) cat", "Answer: C", "b", "DC", "I think. B", "")] == ["B", "C", "A", None, "C", None, None]
    assert U.parse_prediction(None) is None


def test_scores_equal_a_naive_implementation_with_the_swap_and_the_all_four_tries_rule():
    entries = annotation(per_type=3, seed=1)
    # right questions per type (of 3); ord_insert1: q0 right, q1 all right but its try 2 missing, q2 wrong
    design = {"ret_edit1": 2, "ret_insert1": 3, "ret_insert2": 1, "ord_edit1": 0, "ord_insert1": 1, "ord_insert2": 3,
              "cnt_edit1": 0, "cnt_edit2": 2, "cnt_insert1": 0}
    responses, question_of = {}, {}
    for i, entry in enumerate(entries):
        question_of.setdefault((entry["type"], entry["video"]), len([k for k in question_of if k[0] == entry["type"]]))
        q = question_of[(entry["type"], entry["video"])]
        gt = official_gt(entry)
        if q < design[entry["type"]] or (entry["type"] == "ord_insert1" and q == 1):
            responses[i] = _answer(gt, i)
        elif entry["try"] == 0:
            responses[i] = _wrong(gt)  # one wrong try sinks the question
        else:  # the other tries: right, wrong, empty (a failed sample) or official-parser quirks
            responses[i] = [_answer(gt, i), "", "Answer: " + gt, _wrong(gt) + "."][(i + q) % 4]
        if entry["type"] == "ord_insert1" and q == 1 and entry["try"] == 2:
            del responses[i]
    scores = _ours(entries, responses)
    naive = naive_scores(_rows(entries, responses))
    assert scores.metrics == pytest.approx(naive, abs=1e-12)
    expected = {"ret_edit1": 2 / 3, "ret_insert1": 1 / 3, "ret_insert2": 1.0,  # reported names: the swap
                "ord_edit1": 0.0, "ord_insert1": 1 / 3, "ord_insert2": 1.0, "cnt_edit1": 0.0, "cnt_edit2": 2 / 3, "cnt_insert1": 0.0,
                "ret": 2 / 3, "ord": 4 / 9, "cnt": 2 / 9, "overall": 4 / 9}
    assert {k: scores.metrics[k] for k in expected} == pytest.approx(expected, abs=1e-12)
    assert list(scores.metrics) == METRICS and 0 < scores.metrics["try_acc"] < 1
    assert scores.questions == 27 and len(scores.incomplete) == 1 and "ord_insert1): tries [0, 1, 3]" in scores.incomplete[0]
    assert scores.absent_types == [] and scores.unknown_types == []


def test_partial_runs_are_not_silently_scored():
    entries = annotation(per_type=1, seed=2)
    right = {i: official_gt(e) for i, e in enumerate(entries)}
    assert _ours(entries, right).metrics == {m: 1.0 for m in METRICS}
    # a repeated try does not make up for a missing one
    records = [U.process_results(U.normalise_entry(e, i), [right[i]])["overall"] for i, e in enumerate(entries)]
    records[1] = {**records[1], "try": 0}
    scores = U.score(records)
    assert scores.metrics["ret_edit1"] == 0.0 and scores.incomplete == [f"{entries[0]['video']} (ret_edit1): tries [0, 0, 2, 3]"]
    # a type without questions: it, its category and overall are NaN; the rest is scored
    no_cnt = {i: r for i, r in right.items() if entries[i]["type"] != "cnt_edit2"}
    scores = _ours(entries, no_cnt)
    assert math.isnan(scores.metrics["cnt_edit2"]) and math.isnan(scores.metrics["cnt"]) and math.isnan(scores.metrics["overall"])
    assert scores.metrics["ret"] == scores.metrics["ord"] == scores.metrics["try_acc"] == 1.0 and scores.absent_types == ["cnt_edit2"]
    assert math.isnan(U.score([]).metrics["try_acc"])


# ------------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="session")
def vnbench_dir(tmp_path_factory) -> Path:
    """The fixture: 9 types x 2 questions x 4 tries = 72 samples, 18 videos in videos/."""
    root = tmp_path_factory.mktemp("vnbench")
    build_vnbench(root, per_type=2, seed=0)
    return root


@pytest.fixture(scope="session")
def entries(vnbench_dir) -> list[dict]:
    return json.loads((vnbench_dir / ANNOTATION_FILE).read_text(encoding="utf-8"))


def _warnings():
    """Collects loguru warnings (lmms-eval's logger) while the block runs."""
    from loguru import logger

    class Sink(list):
        def __enter__(self):
            self.id = logger.add(lambda m: self.append(str(m)), level="WARNING", format="{message}")
            return self

        def __exit__(self, *exc):
            logger.remove(self.id)

    return Sink()


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, vnbench_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("VNBENCH_DIR", str(empty))
    with pytest.raises(U.VNBenchDataError) as info:
        U.load_docs()
    text = str(info.value)
    assert f"{empty / ANNOTATION_FILE}" in text and f"{empty / 'VNBench' / ANNOTATION_FILE}" in text and "$VNBENCH_DIR=" in text
    assert "videoniah/VNBench" in text and "failed (" in text and "drive.google.com" in text
    # the annotation without videos: where it looked, and where the videos come from (not the hub)
    (empty / ANNOTATION_FILE).write_bytes((vnbench_dir / ANNOTATION_FILE).read_bytes())
    with pytest.raises(U.VNBenchDataError) as info:
        U.load_docs()
    text = str(info.value)
    assert "VNBench videos not found: none of the 18 videos" in text and str(empty / "VNBench_new") in text
    assert "not on the hub" in text and "drive.google.com" in text and "github.com/joez17/VideoNIAH" in text
    # no VNBENCH_DIR: $HF_HOME/vnbench
    monkeypatch.delenv("VNBENCH_DIR")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(U.VNBenchDataError, match=r"VNBENCH_DIR is not set, default \$HF_HOME/vnbench") as info:
        U.load_docs()
    assert str(tmp_path / "hf" / "vnbench" / ANNOTATION_FILE) in str(info.value)
    (empty / ANNOTATION_FILE).write_text("{not json")
    monkeypatch.setenv("VNBENCH_DIR", str(empty))
    with pytest.raises(U.VNBenchDataError, match="cannot read the VNBench annotation"):
        U.load_docs()


def test_the_annotation_comes_from_the_hub_when_not_local(tmp_path, monkeypatch, vnbench_dir, entries):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, repo_type=None, **kwargs):
        calls.append((repo_id, filename, repo_type))
        return str(vnbench_dir / ANNOTATION_FILE)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("VNBENCH_DIR", str(tmp_path))
    (tmp_path / "videos").symlink_to(vnbench_dir / "videos")
    assert len(U.load_docs()) == len(entries) and calls == [("videoniah/VNBench", ANNOTATION_FILE, "dataset")]


@pytest.fixture(scope="module")
def task_manager():
    """lmms-eval's task index with our tasks folder (built once: indexing every task takes seconds)."""
    from lmms_eval.tasks import TaskManager

    return TaskManager("WARNING", include_path=str(TASKS_DIR), model_name="scripted")


def test_missing_data_fails_the_lmms_eval_task(tmp_path, monkeypatch, task_manager):
    """Through lmms-eval: building the task raises (after its download retries) with our message in the chain."""
    import tenacity
    from lmms_eval.api.task import ConfigurableTask
    from lmms_eval.tasks import get_task_dict

    monkeypatch.setattr(ConfigurableTask.download.retry, "wait", tenacity.wait_none())  # lmms-eval retries 5x, 2 s apart
    monkeypatch.setenv("VNBENCH_DIR", str(tmp_path))
    with pytest.raises(Exception) as info:
        get_task_dict(["vnbench"], task_manager)
    chain, err = [], info.value
    while err is not None:
        chain.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    assert any(line.startswith("VNBenchDataError: VNBench annotation not found") for line in chain), chain


def test_official_folder_names_and_partly_missing_videos(tmp_path, monkeypatch, vnbench_dir, entries):
    monkeypatch.setenv("VNBENCH_DIR", str(tmp_path))
    (tmp_path / "VNBench").mkdir()
    (tmp_path / "VNBench" / ANNOTATION_FILE).write_bytes((vnbench_dir / ANNOTATION_FILE).read_bytes())
    (tmp_path / "VNBench_new").symlink_to(vnbench_dir / "videos")
    with _warnings() as warned:
        docs = U.load_docs()
    assert len(docs) == len(entries) and not warned
    assert U.doc_to_visual(docs[0]) == [str(tmp_path / "VNBench_new" / docs[0]["video_name"])]
    # the zip's videos next to the annotation in VNBench/, one of them missing: a warning with the count
    (tmp_path / "VNBench_new").unlink()
    names = sorted({d["video_name"] for d in docs})
    for name in names[1:]:
        (tmp_path / "VNBench" / name).symlink_to(vnbench_dir / "videos" / name)
    with _warnings() as warned:
        docs = U.load_docs()
    assert len(docs) == len(entries) and any(f"1 of {len(names)} videos are missing" in w and names[0] in w for w in warned), warned
    missing = next(d for d in docs if d["video_name"] == names[0])
    assert U.doc_to_visual(missing) == [str(tmp_path / "videos" / names[0])]  # where it is expected; the model reports it


def test_check_reports_where_the_vnbench_data_is(tmp_path, monkeypatch, vnbench_dir):
    from cos_lmms_eval import check

    checker = check.Checker([str(TASKS_DIR)])
    monkeypatch.setenv("VNBENCH_DIR", str(vnbench_dir))
    status = checker.check("vnbench")
    assert status.ok and status.detail == f"data ($VNBENCH_DIR): annotation {vnbench_dir / ANNOTATION_FILE}; videos {vnbench_dir / 'videos'}"
    monkeypatch.setenv("VNBENCH_DIR", str(tmp_path))
    status = checker.check("vnbench")
    # no videos: not runnable (they cannot be downloaded), so eval_task.sh stops before loading a model
    assert not status.ok and "not found (downloaded from the hub dataset videoniah/VNBench" in status.detail
    assert "videos NOT FOUND" in status.detail and "drive.google.com" in status.detail
    assert check.main(["vnbench", "--include_path", str(TASKS_DIR), "--quiet"]) == 1
    assert checker.check("cos_needle").ok and checker.check("cos_needle").detail == "data: json"  # other tasks: as before
    # a folder named like the task in the current directory: lmms-eval would read it as a folder of YAMLs and run nothing
    monkeypatch.setenv("VNBENCH_DIR", str(vnbench_dir))
    monkeypatch.chdir(vnbench_dir.parent)
    (vnbench_dir.parent / "vnbench").mkdir(exist_ok=True)
    assert check.main(["vnbench", "--include_path", str(TASKS_DIR), "--quiet"]) == 1
    assert "holds a folder named 'vnbench'" in check.shadowed("vnbench").detail


def test_the_launch_script_stops_before_loading_a_model_without_the_videos(tmp_path):
    env = {**os.environ, "VNBENCH_DIR": str(tmp_path / "none"), "OUTPUT_PATH": str(tmp_path / "logs")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "eval_vnbench.sh"), str(REPO / "configs" / "longva_uniform_64.yaml")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1
    assert "vnbench" in proc.stdout and "MISSING" in proc.stdout and "videos NOT FOUND" in proc.stdout
    assert "task vnbench cannot run in this environment" in proc.stderr
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*_results.json"))


# ------------------------------------------------------------------------------------------------- runs


def _scripted_model(answers: dict[int, str]):
    """An lmms-eval model that answers each doc id from ``answers`` and records, in ``asked``, what it was given."""
    from lmms_eval.api.model import lmms

    class Scripted(lmms):
        def __init__(self):
            super().__init__()
            self.asked = {}

        @property
        def device(self):
            return "cpu"

        def generate_until(self, requests):
            out = []
            for req in requests:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
                self.asked[doc_id] = (context, gen_kwargs, doc_to_visual(self.task_dict[task][split][doc_id]))
                out.append(answers[doc_id])
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    return Scripted()


def test_lmms_eval_scores_a_scripted_model_exactly(monkeypatch, vnbench_dir, entries, task_manager):
    """In-process lmms-eval: prompts, generation options and videos as the official protocol; every metric in the
    results equals the naive score (the official swap included)."""
    from lmms_eval.evaluator import simple_evaluate

    monkeypatch.setenv("VNBENCH_DIR", str(vnbench_dir))
    first = {}
    for e in entries:
        first.setdefault(e["type"], e["video"])
    # json type ret_insert1: all right; every other type: its first question right, the second wrong on one try
    answers = {i: _answer(official_gt(e), i) if e["type"] == "ret_insert1" or e["video"] == first[e["type"]] or e["try"] != 1
               else ("" if e["type"] == "cnt_edit2" else _wrong(official_gt(e))) for i, e in enumerate(entries)}
    model = _scripted_model(answers)
    out = simple_evaluate(model=model, tasks=["vnbench"], task_manager=task_manager, bootstrap_iters=0, log_samples=True, verbosity="WARNING")
    results = {m: out["results"]["vnbench"][f"{m},none"] for m in METRICS}
    assert results == pytest.approx(naive_scores(_rows(entries, answers)), abs=1e-12)
    assert results["ret_insert2"] == 1.0 and results["ret_insert1"] == 0.5 and results["ret"] == pytest.approx(2 / 3)
    assert results["overall"] == pytest.approx(5 / 9) and results["try_acc"] == pytest.approx(1 - 8 / 72)
    assert sorted(model.asked) == list(range(len(entries)))
    for doc_id, (context, gen_kwargs, visual) in model.asked.items():
        e = entries[doc_id]
        assert context == f"{e['question']}\nA. {e['options'][0]}\nB. {e['options'][1]}\nC. {e['options'][2]}\nD. {e['options'][3]}{POST_PROMPT}"
        assert gen_kwargs["max_new_tokens"] == 5 and gen_kwargs["do_sample"] is False and gen_kwargs["temperature"] == 0
        assert visual == [str(vnbench_dir / "videos" / e["video"].rsplit("/", 1)[-1])]


def _env(vnbench_dir: Path, **extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "VNBENCH_DIR": str(vnbench_dir),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


def _outputs(out_dir: Path, entries: list[dict], log: str) -> tuple[dict, dict]:
    """(metrics of the results file, doc id -> response of the samples file); checks both against the naive score."""
    results = list(out_dir.rglob("*_results.json"))
    samples = list(out_dir.rglob("*_samples_vnbench.jsonl"))
    assert len(results) == 1 and len(samples) == 1, log
    metrics = json.loads(results[0].read_text())["results"]["vnbench"]
    metrics = {m: metrics[f"{m},none"] for m in METRICS}
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    responses = {r["doc_id"]: r["filtered_resps"][0] if isinstance(r["filtered_resps"], list) else r["filtered_resps"] for r in rows}
    assert sorted(r["doc_id"] for r in rows) == list(range(len(entries))), log  # every sample once
    for r in rows:
        assert r["overall"]["gt"] == official_gt(entries[r["doc_id"]]) and r["overall"]["question"] == entries[r["doc_id"]]["video"]
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    assert metrics == pytest.approx(naive_scores(_rows(entries, responses)), abs=1e-12)
    return metrics, responses


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_longva_dir, vnbench_dir, entries):
    """``accelerate launch -m lmms_eval --model longva ... --tasks vnbench --include_path <tasks>``, one process."""
    out = tmp_path_factory.mktemp("vnbench_logs")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "29561", "-m", "lmms_eval", "--model", "longva", "--model_args",
           f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},video_decode_backend=pyav", "--tasks", "vnbench",
           "--include_path", str(TASKS_DIR), "--batch_size", "1", "--log_samples", "--output_path", str(out), "--verbosity", "WARNING"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(vnbench_dir), timeout=600)
    log = f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and "Error during evaluation" not in proc.stdout + proc.stderr, log
    return _outputs(out, entries, log)


def test_accelerate_launch_with_the_tiny_longva(launched):
    metrics, responses = launched
    assert set(metrics) == set(METRICS) and len(responses) == 72


def test_eval_vnbench_script_on_two_processes_equals_one(tmp_path, tiny_longva_dir, vnbench_dir, entries, launched):
    config = tmp_path / "longva.yaml"
    config.write_text(json.dumps({"model": "longva", "model_args": f"pretrained={tiny_longva_dir},max_frames_num={FRAMES},video_decode_backend=pyav",
                                  "batch_size": 1, "log_samples": True}))
    out = tmp_path / "logs"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "eval_vnbench.sh"), str(config), "2"], capture_output=True, text=True, cwd=REPO,
                          env=_env(vnbench_dir, OUTPUT_PATH=str(out), MASTER_PORT="29562"), timeout=600)
    log = f"rc {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and "[eval] results:" in proc.stdout, log
    assert _outputs(out, entries, log) == launched
