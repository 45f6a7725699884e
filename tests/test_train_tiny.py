"""``cos train-tiny`` and the trained demo checkpoints: deterministic training, the original on-disk formats loaded
through the real ``from_pretrained`` paths, the mark questions, the labels the vision stages learn from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cos import synthetic
from cos_runtime import train_tiny as T

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
SHORT = (T.Stage("vision", 4, (3, 3), 2), T.Stage("full", 1, (0, 0), 2), T.Stage("full", 16, (1, 2), 1))


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


# ------------------------------------------------------------------------------------------- the task
def test_mark_questions_name_the_needle_by_colour_and_ask_its_mark():
    for index in range(40):
        plan = synthetic._plan_video(index, 0, 48, 160, 64, 8.0, 3, "train", "mark")
        rec = plan["record"]
        needle = [e for e in rec["events"] if e["target"]]
        assert len(needle) == 1 and len(rec["events"]) == 4
        needle = needle[0]
        assert rec["question"] == f"What colour is the mark inside the {needle['colour']} shape?"
        assert rec["options"] == ["A. white", "B. black", "C. orange", "D. pink"]
        assert rec["answer"] == "ABCD"[list(synthetic.MARKS).index(needle["mark"])]
        assert all(e["colour"] != needle["colour"] for e in rec["events"] if not e["target"])
        assert (needle["start"], needle["end"]) == (rec["needle_start"], rec["needle_end"])
        # the needle's frames show its colour and its mark colour, and nothing else is saturated in that colour
        frame = next(synthetic._frames(rec, plan["render"], [rec["needle_start"]]))
        assert (frame == synthetic.COLOURS[needle["colour"]]).all(-1).sum() > 100
        assert (frame == synthetic.MARKS[needle["mark"]]).all(-1).sum() >= 36  # side 0.6 r >= 6 px


def test_make_needle_videos_refuses_an_unknown_question_kind(tmp_path):
    from cos.errors import ConfigError

    with pytest.raises(ConfigError, match="question must be one of attribute, mark"):
        synthetic.make_needle_videos(tmp_path, 1, question="where")


def test_selected_frames_equal_the_full_videos_frames():
    plan = synthetic._plan_video(5, 0, 48, 96, 64, 8.0, 2, "val", "mark")
    state = plan["render"]["rng"].bit_generator.state
    full = list(synthetic._frames(plan["record"], plan["render"]))
    plan["render"]["rng"].bit_generator.state = state
    idx = [0, 3, 3, 40, plan["record"]["num_frames"] - 1]
    assert all((full[i] == f).all() for i, f in zip(idx, synthetic._frames(plan["record"], plan["render"], idx)))


def test_the_training_prompt_is_the_lmms_eval_tasks_prompt():
    """The models learn on exactly what ``cos_needle`` gives them (its default pre/post prompt around the options)."""
    text = (REPO / "lmms-eval/cos_lmms_eval/tasks/cos_needle/cos_needle.yaml").read_text()
    pre = re.search(r'pre_prompt: "(.*)"', text).group(1).encode().decode("unicode_escape")
    post = re.search(r'post_prompt: "(.*)"', text).group(1).encode().decode("unicode_escape")
    assert (pre, post) == (T.PRE_PROMPT, T.POST_PROMPT)
    from cos_lmms_eval.tasks.cos_needle import utils  # noqa: F401 - the task module itself

    rec = synthetic._plan_video(0, 0, 48, 160, 64, 8.0, 2, "test", "mark")["record"]
    assert utils.doc_to_text(rec, {"pre_prompt": pre, "post_prompt": post}) == T.task_prompt(rec)


def test_cover_labels_on_a_constructed_mask():
    mask = np.zeros((64, 64), bool)
    mask[0:16, 0:16] = True  # cell 0 fully
    mask[16:20, 16:32] = True  # cell 5: 4 / 16 rows = 1/4
    mask[48:50, 48:64] = True  # cell 15: 2 / 16 rows = 1/8
    masks = [(10, 12, synthetic.COLOURS["blue"], mask)]
    out = T.cover_labels([9, 10, 11, 12], masks, 4, 64, synthetic.COLOURS, 0.25)
    blue = 1 + list(synthetic.COLOURS).index("blue")
    assert out[0].sum() == 0 and out[3].sum() == 0  # outside [start, end)
    expected = np.zeros(16, np.int64)
    expected[[0, 5]] = blue
    assert (out[1] == expected).all() and (out[2] == expected).all()
    assert T.cover_labels([10], masks, 4, 64, synthetic.COLOURS, 0.1)[0][15] == blue
    assert T.cover_labels([10], masks, 4, 64, synthetic.MARKS, 0.1).sum() == 0  # another palette


def test_scorer_samples_pair_a_relevant_and_an_irrelevant_mosaic():
    samples, _ = T.scorer_samples("val", 0, 12)
    assert [r for _, _, r in samples] == [True, False] * 6
    assert all(m.size == (128, 128) and p.startswith(T.PRE_PROMPT) for m, p, _ in samples)


# ------------------------------------------------------------------------------------------- training
def test_training_the_base_model_is_deterministic(tmp_path):
    logs = [T.train_longva(tmp_path / f"run{i}", seed=0, stages=SHORT, val_size=4, progress=False) for i in range(2)]
    a, b = _tensors(tmp_path / "run0"), _tensors(tmp_path / "run1")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert logs[0]["stages"] == logs[1]["stages"] and logs[0]["val"] == logs[1]["val"]
    from longva.tiny import SIZES, build_tiny_longva

    build_tiny_longva(tmp_path / "init", seed=0, size="demo", corpus=T.task_corpus())
    init = _tensors(tmp_path / "init")
    assert init.keys() == a.keys()
    # every tensor moved except what LongVA never uses: the tower's last layer and post-layernorm (it takes the features
    # of the second-to-last layer); the vocabulary rows are compared where both have them (the loader shrinks them)
    last = SIZES["demo"]["vision"]["num_hidden_layers"] - 1
    unused = {k for k in a if f"encoder.layers.{last}." in k or "post_layernorm" in k}
    unchanged = {k for k in a if torch.equal(a[k], init[k][: a[k].shape[0]])}
    assert unchanged == unused and len(unused) == 18


def test_training_the_scorer_is_deterministic(tmp_path):
    for i in range(2):
        T.train_llava(tmp_path / f"run{i}", seed=0, steps=2, vision_steps=2, val_size=4, progress=False)
    a, b = _tensors(tmp_path / "run0"), _tensors(tmp_path / "run1")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_the_selectors_clip_is_deterministic_and_labels_the_colours_shown(tmp_path):
    videos, _ = T.clip_samples("train", 0, 3)
    for frames, shown in videos:
        assert frames.shape == (T.CLIP_FRAMES, 64, 64, 3) and len(shown) == T.CLIP_FRAMES and all(s <= set(synthetic.COLOURS) for s in shown)
    assert any(shown for _, s in videos for shown in s)  # frames showing some shape are among them
    for i in range(2):
        T.train_clip(tmp_path / f"run{i}", seed=0, steps=2, batch_videos=2, val_size=2, progress=False)
    a, b = _tensors(tmp_path / "run0"), _tensors(tmp_path / "run1")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_tiny_writes_the_checkpoints_and_its_log(tmp_path):
    log = T.train_tiny(tmp_path, longva_stages=SHORT, llava_steps=1, llava_vision_steps=1, clip_steps=1, val_size=4, threads=1, progress=False)
    assert {"needle-longva", "needle-llava", "needle-clip", "task"} <= set(log)
    saved = json.loads((tmp_path / "train_log.json").read_text())
    assert saved["needle-longva"]["threads"] == saved["needle-llava"]["threads"] == saved["needle-clip"]["threads"] == 1
    assert saved["task"] == T.TASK
    assert all((tmp_path / d / "config.json").is_file() for d in ("needle-longva", "needle-llava", "needle-clip"))
    assert not (tmp_path / "needle-longva.init").exists()


def test_threads_must_be_a_positive_integer(tmp_path):
    from cos.errors import ConfigError

    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        T.train_tiny(tmp_path, threads=0)


# ------------------------------------------------------------------------------------------- the committed checkpoints
def test_committed_checkpoints_load_through_the_real_paths():
    """assets/needle-longva through ``LongVAForCausalLM.from_pretrained`` and the runtime backend; assets/needle-llava
    through ``LlavaScorer`` (``AutoProcessor`` + ``LlavaForConditionalGeneration``), as the real checkpoints load."""
    from transformers import LlavaForConditionalGeneration

    from cos.scoring import LlavaScorer
    from longva import LongVAForCausalLM

    model = LongVAForCausalLM.from_pretrained(ASSETS / T.LONGVA_DIR, torch_dtype=torch.float32, device_map="cpu")
    assert model.tokens_per_frame == 16 and model.image_size == 64
    cfg = json.loads((ASSETS / T.LONGVA_DIR / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaQwenForCausalLM"] and cfg["mm_projector_type"] == "mlp2x_gelu"
    keys = set(_tensors(ASSETS / T.LONGVA_DIR))
    assert "model.mm_projector.0.weight" in keys and "lm_head.weight" in keys
    assert any(k.startswith("model.vision_tower.vision_tower.vision_model.") for k in keys)
    scorer = LlavaScorer(str(ASSETS / T.LLAVA_DIR), mode="logits", device="cpu")
    assert isinstance(scorer.model, LlavaForConditionalGeneration)
    size = sum(f.stat().st_size for d in (T.LONGVA_DIR, T.LLAVA_DIR) for f in (ASSETS / d).iterdir())
    assert size < 12e6, f"the demo checkpoints take {size / 1e6:.1f} MB"


def test_committed_base_model_answers_questions_without_distractors(tmp_path):
    """Smoke test of assets/needle-longva through the runtime engine the lmms-eval adapters use, on real H.264 videos:
    without distractors it answers (train_log.json: 1.00 on 100 validation videos at 32 frames); the letter comes
    first, then the end of the answer."""
    from cos.pipeline import GenerationOptions
    from cos_lmms_eval.tasks.cos_needle.utils import extract_letter
    from cos_runtime.engine import build_engine

    synthetic.make_needle_videos(tmp_path, 8, min_frames=48, max_frames=160, size=64, split="val", question="mark",
                                 progress=False)
    docs = json.loads((tmp_path / "questions.json").read_text())
    engine = build_engine("longva", "uniform", {"pretrained": str(ASSETS / T.LONGVA_DIR), "max_frames_num": T.EVAL_FRAMES,
                                                "prefetch": 0, "result_cache_dir": "none", "score_cache_dir": "none"})
    answers = [engine.answer(str(tmp_path / d["video"]), T.task_prompt(d), GenerationOptions(max_new_tokens=8)).text for d in docs]
    assert all(re.fullmatch(r"[ABCD]", a.strip()) for a in answers), answers
    assert sum(extract_letter(a) == d["answer"] for a, d in zip(answers, docs)) >= 6


def test_committed_scorer_tells_needle_mosaics_from_others():
    """Smoke test of assets/needle-llava through ``LlavaScorer`` (logits mode): on validation mosaics it says yes more
    often to the ones showing the needle (train_log.json: 0.82 accuracy on 200)."""
    from cos.scoring import LlavaScorer

    scorer = LlavaScorer(str(ASSETS / T.LLAVA_DIR), mode="logits", device="cpu")
    samples, _ = T.scorer_samples("val", 0, 24)
    scores = [float(scorer.score([m], p).scores[0]) for m, p, _ in samples]
    relevant = [s for s, (_, _, r) in zip(scores, samples) if r]
    other = [s for s, (_, _, r) in zip(scores, samples) if not r]
    assert np.mean(relevant) > np.mean(other)
    assert sum((s >= 0.5) == r for s, (_, _, r) in zip(scores, samples)) >= 16


def test_committed_clip_ranks_the_needles_frames_first():
    """Smoke test of assets/needle-clip through ``cos.text_image`` (``CLIPModel.from_pretrained``, the selectors' path):
    on validation videos with four distractors the frames of the named colour score highest (train_log.json: mean
    R-precision 1.00 and AUC 1.00 on 100 videos)."""
    from cos.text_image import TextImageModel

    model = TextImageModel(str(ASSETS / T.CLIP_DIR), device="cpu")
    assert model.kind == "clip" and model.score_kind == "logits"
    for index in range(3):
        plan = synthetic._plan_video(index, 0, 48, 160, 64, 8.0, 4, "val", "mark")
        rec = plan["record"]
        scores = model.score(list(synthetic._frames(rec, plan["render"])), rec["question"])
        length = rec["needle_end"] - rec["needle_start"]
        top = np.argsort(-scores, kind="stable")[:length]
        assert ((top >= rec["needle_start"]) & (top < rec["needle_end"])).mean() >= 0.9
