"""``cos niah`` (needle in a video haystack): the grid rules against their definitions, the QA file and scoring, a
3 x 3 grid on every registered backend with the model's answers checked against an independent route (the cell's
frames written as a frame folder and answered by the engine), out-of-memory and over-budget cells, refusing a
folder of other settings, resuming after ``kill -9``, and ``accelerate launch`` with two processes. Tiny random
checkpoints, CPU, offline."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cos import niah
from cos.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
GRID = ["--context_lengths_min", "4", "--context_lengths_max", "12", "--context_lengths_num_intervals", "3",
        "--video_depth_percent_intervals", "3", "--num_needles", "2", "--quiet"]


# ------------------------------------------------------------------------------------------------ rules
def test_grid_rules_match_their_definitions():
    for lo, hi, num in [(1, 2048, 12), (200, 3000, 15), (1, 320, 40), (3, 5, 7)]:
        naive = []
        for i in range(num):
            v = int(round(lo + (hi - lo) * i / (num - 1))) if num > 1 else lo
            if v not in naive:
                naive.append(v)
        assert niah.context_lengths(lo, hi, num) == naive
    assert niah.context_lengths(3, 5, 7) == [3, 4, 5]  # rounding repeats are kept once
    assert niah.depth_percents(0, 100, 5) == [0, 25, 50, 75, 100]
    sig = niah.depth_percents(0, 100, 5, "sigmoid")
    assert sig == sorted([0, 100] + [round(100 / (1 + math.exp(0.1 * (x - 50))), 3) for x in (25, 50, 75)])  # 7.586, 50, 92.414
    for n in (1, 7, 187, 2048):
        for d in (0, 12.5, 25, 33, 50, 99, 100):
            assert niah.insert_point(n, d) == int(n * (d * 0.01))  # Video-XL's expression, floating point included
            assert 0 <= niah.insert_point(n, d) <= n
    with pytest.raises(ConfigError, match="context_lengths_max .* below"):
        niah.context_lengths(10, 5, 3)
    with pytest.raises(ConfigError, match="video_depth_percent_max must be a number in"):
        niah.depth_percents(0, 120, 3)


def test_option_letters_and_answers():
    cases = {"C": "C", "(B) sleeping": "B", "D) reading": "D", "Best option:(A) play": "A", "Answer: C": "C", "It is B.": "B",
             "The answer is (D).": "D", "CCCC": "C", "CCDC": None, "none": None, "": None}
    assert {r: niah.option_letter(r) for r in cases} == cases
    assert niah.is_correct("(C) fighting", "C") and not niah.is_correct("(C) fighting", "D")
    assert niah.is_correct("It is Yellow!", "Yellow") and niah.is_correct("200 mg", "200") and not niah.is_correct("20 mg", "200")


def test_needle_qa_file_layout_and_errors(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = {"retrieval_question": ["Question: what?\nOptions:(A) x\n(B) y"], "answer": ["B"], "needle": ["a.png"]}
    (tmp_path / "qa.json").write_text(json.dumps(good))
    [qa] = niah.load_needle_qa(tmp_path / "qa.json", tmp_path)
    assert (qa.answer, qa.name, qa.image) == ("B", "a.png", str((tmp_path / "a.png").resolve()))
    niah.write_needle_qa(tmp_path / "copy.json", [qa])
    assert json.loads((tmp_path / "copy.json").read_text()) == good
    bad = [({**good, "answer": ["B", "C"]}, "different lengths"), ({**good, "needle": ["b.png"]}, "'b.png' .* is not in --needle_dir"),
           ([1, 2], "not an object with the three lists")]
    for data, message in bad:
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=message):
            niah.load_needle_qa(tmp_path / "bad.json", tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        niah.load_needle_qa(tmp_path / "bad.json", tmp_path)


# ------------------------------------------------------------------------------------------------ runs
def _niah(*args) -> int:
    from cos_runtime.cli import main

    return main(["niah", *map(str, args)])


def _cells(folder: Path) -> dict:
    return {(p.parent.name, p.name): json.loads(p.read_text()) for p in sorted(folder.glob("*/len_*.json"))}


@pytest.fixture(scope="module")
def longva_grid(tmp_path_factory, tiny_longva_dir, tiny_llava_dir):
    out = tmp_path_factory.mktemp("niah")
    assert _niah("--backend", "longva", "--model", tiny_longva_dir, "--scorer", "llava", "--scorer-pretrained", tiny_llava_dir,
                 "--result_dir", out, *GRID) == 0
    return out


def test_grid_writes_cells_heatmaps_and_summary(longva_grid):
    run = longva_grid / "longva"
    cells = _cells(run)
    assert len(cells) == 2 * 9 and {m for m, _ in cells} == {"uniform", "cos"}
    for (method, name), cell in cells.items():
        L, d = cell["context_length"], cell["depth_percent"]
        assert name == f"len_{L}_depth_{d:g}.json" and L in (4, 8, 12) and d in (0, 50, 100)
        assert cell["status"] == "ok" and cell["insert_point"] == int(L * d / 100) and cell["num_frames"] == L + 1
        per_frame = cell["visual_tokens"] // (L + 1)
        assert cell["visual_tokens"] == per_frame * (L + 1) and per_frame == cells[("uniform", "len_4_depth_0.json")]["visual_tokens"] // 5
        # the prompt is the question's text tokens plus the L + 1 frames' visual tokens
        assert cell["answers"][0]["sequence_length"] - cells[("uniform", "len_4_depth_0.json")]["answers"][0]["sequence_length"] == (L - 4) * per_frame
        assert cell["score"] == sum(a["correct"] for a in cell["answers"]) / 2
        for a in cell["answers"]:
            assert a["correct"] == int(niah.is_correct(a["response"], a["answer"]))
            if method == "cos":
                assert 0 <= a["relevant_frames"] <= L + 1 and a["alpha"] >= 0
    summary = json.loads((run / "summary.json").read_text())
    for method in ("uniform", "cos"):
        table = np.array(summary["methods"][method]["scores"])
        for (m, _), cell in cells.items():
            if m == method:
                assert table[[0, 50, 100].index(cell["depth_percent"]), [4, 8, 12].index(cell["context_length"])] == cell["score"]
        assert summary["methods"][method]["average"] == pytest.approx(table.mean())
        assert summary["methods"][method]["cells"] == {"ok": 9, "oom": 0, "over_context": 0, "missing": 0}
    diff = np.array(summary["cos_minus_uniform"]["scores"])
    assert np.allclose(diff, np.array(summary["methods"]["cos"]["scores"]) - np.array(summary["methods"]["uniform"]["scores"]))
    for png in ("heatmap_uniform.png", "heatmap_cos.png", "heatmap_cos_minus_uniform.png"):
        with Image.open(run / png) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    qa = json.loads((longva_grid / "inputs" / "needles_2" / "qa.json").read_text())
    assert set(qa) == {"retrieval_question", "answer", "needle"} and len(qa["needle"]) == 2


def test_a_cell_is_what_the_engine_answers_on_those_frames(tmp_path, longva_grid, tiny_longva_dir, tiny_llava_dir):
    """Independent route: the haystack sampled with cos.video.sample_frames, the needle inserted by hand, the frames
    written as a PNG folder, answered by the engine (as `cos run --video FOLDER` does) — same answers as the cells."""
    from cos.video import sample_frames
    from cos_runtime.engine import build_engine

    inputs = longva_grid / "inputs"
    [haystack] = inputs.glob("haystack_*.mp4")
    qa = niah.load_needle_qa(inputs / "needles_2" / "qa.json", inputs / "needles_2")
    L, d = 8, 50
    hay = sample_frames(haystack, L).frames  # np.linspace(0, total - 1, L, dtype=int), as Video-XL
    k = L * d // 100
    cells = _cells(longva_grid / "longva")
    for method in ("uniform", "cos"):
        values = {"pretrained": str(tiny_longva_dir), "max_frames_num": L + 1}
        if method == "cos":
            values.update(scorer="llava", scorer_pretrained=str(tiny_llava_dir))
        engine = build_engine("longva", method, {**values, "result_cache_dir": None, "score_cache_dir": None})
        for i, needle in enumerate(qa):
            image = np.asarray(Image.open(needle.image).convert("RGB"))
            assert image.shape == hay.shape[1:]  # same size, so the folder route shows the model the same pixels
            folder = tmp_path / f"{method}_{i}"
            folder.mkdir()
            for j, frame in enumerate(np.concatenate([hay[:k], image[None], hay[k:]])):
                Image.fromarray(frame).save(folder / f"{j:04d}.png")
            answer = engine.answer(str(folder), needle.question)
            cell = cells[(method, f"len_{L}_depth_{d}.json")]["answers"][i]
            assert answer.text == cell["response"]
            assert answer.trace.sequence_length == cell["sequence_length"]


@pytest.mark.parametrize("backend", ["llava_video", "videoxl"])
def test_every_other_registered_backend_runs_the_grid(tmp_path, backend, tiny_llava_video_dir, tiny_videoxl_dir, tiny_llava_dir):
    from cos_runtime import registry

    assert set(registry.names()) >= {"longva", "llava_video", "videoxl"}
    ckpt = {"llava_video": tiny_llava_video_dir, "videoxl": tiny_videoxl_dir}[backend]
    assert _niah("--backend", backend, "--model", ckpt, "--scorer", "llava", "--scorer-pretrained", tiny_llava_dir,
                 "--result_dir", tmp_path, *GRID) == 0
    cells = _cells(tmp_path / backend)
    assert len(cells) == 18 and all(c["status"] == "ok" and c["backend"] == backend for c in cells.values())
    assert (tmp_path / backend / "heatmap_cos_minus_uniform.png").exists()


def test_a_run_with_other_settings_in_the_same_folder_is_refused(longva_grid, tiny_longva_dir, tiny_llava_dir, capsys):
    before = _cells(longva_grid / "longva")
    common = ("--backend", "longva", "--model", tiny_longva_dir, "--scorer", "llava", "--scorer-pretrained", tiny_llava_dir,
              "--result_dir", longva_grid, *GRID)
    assert _niah(*common, "--max_new_tokens", "3") == 1
    assert "holds a grid run with other settings (they differ in: max_new_tokens)" in capsys.readouterr().err
    assert _niah(*common, "--alpha", "0.5") == 1  # CoS's own settings: its cells would not be comparable
    assert "(they differ in: cos (cos))" in capsys.readouterr().err
    assert _niah(*common, "--alpha", "0.5", "--methods", "uniform") == 0  # the baseline's cells do not depend on them
    assert "9 cell(s) of this shard already done in" in capsys.readouterr().err
    assert _cells(longva_grid / "longva") == before
    assert _niah(*common, "--plot_only") == 0  # the summary of both methods again (the uniform-only run drew its own)


def test_a_method_is_added_to_a_finished_grid_and_a_moved_haystack_is_the_same(tmp_path, tiny_longva_dir, tiny_llava_dir, capsys):
    from cos.synthetic import write_haystack

    write_haystack(tmp_path / "a" / "movie.mp4", 40, fps=2.0)
    args = ("--backend", "longva", "--model", tiny_longva_dir, "--scorer", "llava", "--scorer-pretrained", tiny_llava_dir,
            "--result_dir", tmp_path / "out", *GRID)
    assert _niah(*args, "--haystack_path", tmp_path / "a" / "movie.mp4", "--methods", "uniform") == 0
    baseline = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "longva" / "uniform").glob("*.json")}
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "movie.mp4").rename(tmp_path / "b" / "movie.mp4")  # the same content elsewhere (another machine's mount)
    capsys.readouterr()
    assert _niah(*args, "--haystack_path", tmp_path / "b" / "movie.mp4") == 0
    assert "9 cell(s) of this shard already done" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == t for p, t in baseline.items())
    assert len(_cells(tmp_path / "out" / "longva")) == 18 and (tmp_path / "out" / "longva" / "heatmap_cos_minus_uniform.png").exists()


def test_out_of_memory_and_over_budget_cells_are_recorded_and_the_grid_goes_on(tmp_path, tiny_longva_dir, monkeypatch):
    """A checkpoint whose context budget holds 8 haystack frames but not 12, and a model that runs out of memory on
    9 frames: those cells are recorded as such (grey in the heatmap), every other cell is answered."""
    import shutil

    import torch

    from cos.pipeline import CoSPipeline
    from cos_runtime.engine import build_engine
    from cos_runtime.niah import synthetic_needles

    needles = niah.load_needle_qa(*reversed(synthetic_needles(tmp_path / "out" / "inputs", 2)))
    engine = build_engine("longva", "uniform", {"pretrained": str(tiny_longva_dir), "max_frames_num": 4})
    text = max(int(engine.backend.prompt_ids(n.question).shape[-1]) - 1 for n in needles)
    per_frame = engine.facts.tokens_per_frame
    del engine
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_longva_dir, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["tokenizer_model_max_length"] = text + 10 * per_frame  # 9 frames (8 + the needle) fit; 13 do not
    (ckpt / "config.json").write_text(json.dumps(config))
    real = CoSPipeline.answer

    def answer(self, frames, question, **kw):
        if frames.shape[0] == 9:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, frames, question, **kw)

    monkeypatch.setattr(CoSPipeline, "answer", answer)
    assert _niah("--backend", "longva", "--model", ckpt, "--methods", "uniform", "--result_dir", tmp_path / "out", *GRID) == 0
    cells = _cells(tmp_path / "out" / "longva")
    status = {(c["context_length"], c["depth_percent"]): c["status"] for c in cells.values()}
    assert status == {(L, d): {4: "ok", 8: "oom", 12: "over_context"}[L] for L in (4, 8, 12) for d in (0, 50, 100)}
    oom = cells[("uniform", "len_8_depth_0.json")]
    assert oom["score"] is None and oom["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert "prompt too long" in cells[("uniform", "len_12_depth_0.json")]["error"]
    summary = json.loads((tmp_path / "out" / "longva" / "summary.json").read_text())
    assert summary["methods"]["uniform"]["cells"] == {"ok": 3, "oom": 3, "over_context": 3, "missing": 0}
    assert summary["methods"]["uniform"]["scores"][0][1] is None
    # on a "bigger GPU": --retry_oom runs the out-of-memory cells again, and only those
    monkeypatch.setattr(CoSPipeline, "answer", real)
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "longva" / "uniform").glob("len_*.json")}
    args = ("--backend", "longva", "--model", ckpt, "--methods", "uniform", *GRID)
    assert _niah(*args, "--result_dir", tmp_path / "out", "--retry_oom") == 0
    again = _cells(tmp_path / "out" / "longva")
    assert {(c["context_length"], c["depth_percent"]): c["status"] for c in again.values()} == {
        (L, d): {4: "ok", 8: "ok", 12: "over_context"}[L] for L in (4, 8, 12) for d in (0, 50, 100)}
    assert sorted(p.name for p, t in kept.items() if p.stat().st_mtime_ns != t) == sorted(f"len_8_depth_{d}.json" for d in (0, 50, 100))
    # --context_budget ignore feeds the long prompts anyway (LongVA's V-NIAH does); another setting, so another folder
    assert _niah(*args, "--result_dir", tmp_path / "out", "--context_budget", "ignore") == 1
    assert _niah(*args, "--result_dir", tmp_path / "ignore", "--context_budget", "ignore") == 0
    assert all(c["status"] == "ok" for c in _cells(tmp_path / "ignore" / "longva").values())


def _command(out: Path, ckpt, scorer, extra=()) -> list[str]:
    return ["-m", "cos_runtime.niah", "--backend", "longva", "--model", str(ckpt), "--scorer", "llava", "--scorer-pretrained",
            str(scorer), "--result_dir", str(out), *GRID, *extra]


def test_a_killed_run_resumes_cell_by_cell(tmp_path, longva_grid, tiny_longva_dir, tiny_llava_dir):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *_command(out, tiny_longva_dir, tiny_llava_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(out.glob("longva/*/len_*.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in out.glob("longva/*/len_*.json")}
    assert 3 <= len(before) < 18, len(before)
    done = subprocess.run([sys.executable, *_command(out, tiny_longva_dir, tiny_llava_dir)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(before)} cell(s) of this shard already done" in done.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # not recomputed
    resumed, whole = _cells(out / "longva"), _cells(longva_grid / "longva")
    assert resumed.keys() == whole.keys()
    assert all([a["response"] for a in resumed[k]["answers"]] == [a["response"] for a in whole[k]["answers"]] for k in whole)
    assert json.loads((out / "longva" / "summary.json").read_text()) == json.loads((longva_grid / "longva" / "summary.json").read_text())


def test_two_processes_under_accelerate_launch_split_the_grid(tmp_path, longva_grid, tiny_longva_dir, tiny_llava_dir):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533", *_command(out, tiny_longva_dir, tiny_llava_dir)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = _cells(out / "longva"), _cells(longva_grid / "longva")
    # each process ran its rank's cells: every 2nd cell of the grid (lengths x depths) from its rank
    grid = [(L, d) for L in (4, 8, 12) for d in (0, 50, 100)]
    assert {k: c["shard"] for k, c in two.items()} == {k: f"{grid.index((c['context_length'], c['depth_percent'])) % 2}/2" for k, c in two.items()}
    assert two.keys() == one.keys()
    assert all([a["response"] for a in two[k]["answers"]] == [a["response"] for a in one[k]["answers"]] for k in one)
    assert json.loads((out / "longva" / "summary.json").read_text()) == json.loads((longva_grid / "longva" / "summary.json").read_text())


def test_shards_cover_the_grid_once(tmp_path, longva_grid, tiny_longva_dir, tiny_llava_dir, capsys):
    out = tmp_path / "out"
    for i in range(3):
        assert _niah(*_command(out, tiny_longva_dir, tiny_llava_dir)[2:], "--shard", f"{i}/3", "--methods", "uniform") == 0
    cells = _cells(out / "longva")
    assert len(cells) == 9 and (out / "longva" / "heatmap_uniform.png").exists()
    capsys.readouterr()
    assert _niah(*_command(out, tiny_longva_dir, tiny_llava_dir)[2:], "--shard", "3/3") == 1
    assert "--shard 3/3: need 0 <= i < n" in capsys.readouterr().err


def test_the_model_sees_the_haystack_at_1fps_and_the_needle_preprocessed_at_its_own_size(tmp_path, tiny_longva_dir, monkeypatch):
    """A 96x64 haystack at 4 fps with ``--haystack_sampling 1fps`` (LongVA's rule: the first L frames, one per second)
    and an 80x48 needle: the pixel values the model gets are the processor's on those source frames, with the needle
    processed on its own (not resized to the video's frame size first); the scorer's frame is the letterboxed needle."""
    import torch

    from cos.pipeline import CoSPipeline
    from cos.synthetic import write_mp4
    from cos.video import sample_frames

    rng = np.random.default_rng(0)
    video = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(40)]
    write_mp4(tmp_path / "hay.mp4", video, 96, 64, 4.0)
    needles = tmp_path / "needles"
    needles.mkdir()
    needle = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    Image.fromarray(needle).save(needles / "n.png")
    (needles / "qa.json").write_text(json.dumps({"retrieval_question": ["Which?\nA. a\nB. b"], "answer": ["A"], "needle": ["n.png"]}))
    seen = []
    real = CoSPipeline.answer

    def spy(self, frames, question, **kw):  # records what the pipeline is given, then answers as usual
        seen.append((frames, kw["pixels"].clone(), kw["video"]))
        return real(self, frames, question, **kw)

    monkeypatch.setattr(CoSPipeline, "answer", spy)
    assert _niah("--backend", "longva", "--model", tiny_longva_dir, "--methods", "uniform", "--haystack_path", tmp_path / "hay.mp4",
                 "--haystack_sampling", "1fps", "--needle_dir", needles, "--needle_qa_path", needles / "qa.json",
                 "--context_lengths_min", "6", "--context_lengths_max", "6", "--context_lengths_num_intervals", "1",
                 "--video_depth_percent_min", "50", "--video_depth_percent_max", "50", "--video_depth_percent_intervals", "1",
                 "--result_dir", tmp_path / "out", "--quiet") == 0
    [(frames, pixels, info)] = seen
    from cos_runtime.backends.longva import Options, load

    backend = load(Options(pretrained=str(tiny_longva_dir)), "cpu", torch.float32)
    hay = sample_frames(tmp_path / "hay.mp4", None, rule=lambda total, fps: np.arange(0, 24, 4))  # seconds 0..5
    assert info.frame_indices == (0, 4, 8, 12, 12, 16, 20)  # the needle takes the time of the frame it precedes
    want = torch.cat([backend.preprocess(hay.frames[:3]), backend.preprocess(needle[None]), backend.preprocess(hay.frames[3:])])
    assert torch.equal(pixels, want)
    resized = backend.preprocess(np.asarray(Image.fromarray(needle).resize((96, 64)))[None])[0]
    assert not torch.allclose(pixels[3], resized, atol=1e-3)  # what resizing the needle to the frame size first would give
    assert frames.shape == (7, 64, 96, 3) and np.array_equal(frames[:3], hay.frames[:3]) and np.array_equal(frames[4:], hay.frames[3:])
    # letterboxed: the 80x48 needle scaled by 1.2 to 96x58, grey bars of 3 rows above and below
    assert np.all(frames[3][:2] == 128) and np.all(frames[3][-2:] == 128) and not np.all(frames[3][8:-8] == 128)
    cell = json.loads((tmp_path / "out" / "longva" / "uniform" / "len_6_depth_50.json").read_text())
    assert cell["insert_point"] == 3 and cell["num_frames"] == 7


def test_1fps_needs_a_haystack_long_enough(tmp_path, tiny_longva_dir, capsys):
    from cos.synthetic import write_haystack

    write_haystack(tmp_path / "short.mp4", 10, fps=2.0)  # 5 seconds
    assert _niah("--backend", "longva", "--model", tiny_longva_dir, "--haystack_path", tmp_path / "short.mp4", "--haystack_sampling", "1fps",
                 "--context_lengths_min", "2", "--context_lengths_max", "8", "--context_lengths_num_intervals", "2",
                 "--result_dir", tmp_path / "out", "--quiet") == 1
    assert "has 5 (10 frames at 2 fps), fewer than --context_lengths_max 8" in capsys.readouterr().err
