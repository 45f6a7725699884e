"""``cos train-tiny OUT``: train the demo's small models on the distractor needle task, on a CPU.

Three checkpoints, each in its original on-disk format and loaded by the same ``from_pretrained`` code as the real
models (no special path):

* ``OUT/needle-longva`` — a LongVA (CLIP tower + ``mlp2x_gelu`` projector + 2x2 pooling + Qwen2), size ``demo`` of
  :mod:`longva.tiny` (0.9 M parameters, 64 px frames, patch 8, 16 tokens per frame), trained to answer the needle
  task's multiple-choice questions with the option letter (then ``<|im_end|>``).
* ``OUT/needle-llava`` — a LLaVA-1.5-shaped scorer (``LlavaForConditionalGeneration``, CLIP 112 px / patch 14,
  Llama), trained to answer the release's scoring prompt (:func:`cos.scoring.llava_prompt` of the whole task prompt)
  with ``yes`` when a 2x2 mosaic of four sampled frames (:func:`cos.shots.make_mosaics`) shows the needle, else ``no``.
* ``OUT/needle-clip`` — a ``CLIPModel`` (64 px, patch 8) for the frame selectors (:mod:`cos.selector`), trained to
  score a frame against the needle question of each colour: high when a shape of that colour is on it
  (:func:`train_clip`).

**The task** (:mod:`cos.synthetic`, ``question="mark"``, 64 px videos of 48-160 frames): every event is a shape in a
saturated colour with a square mark in one of four colours at its centre; besides the needle, distractor shapes
flash at other times. The question names the needle by its colour (no distractor has it) and asks for the colour of
its mark; the options are the four mark colours in a fixed order. A model that averages over all frames mixes the
marks of the needle and the distractors; one that looks at the frames with the named colour does not. Training
videos come from the ``train`` split's seed stream; the demo evaluates on ``test``, which training never sees.

**Why this task**: the tiny LM did not learn, in 2,500 steps, to read a shuffled option list (to point from the
answer word to its letter, even with the answer word spelt out in the prompt); with the options in a fixed order
the letter is a function of what is seen. Colours are the cheapest thing to see; the grounding problem — find the
one event of the named colour among distractors and read it — is the one the paper is about. (The generator's
shape/colour questions stay for larger models.)

**Curriculum** (base model, :data:`LONGVA_STAGES`): a vision stage on four frames of videos with three distractors
(throw-away linear heads on the frame tokens learn, per token, the shape colour covering >= 1/4 of it and the mark
colour covering >= 1/10), then one frame showing only the needle, then four frames with up to two distractors,
then sixteen uniformly sampled frames with up to four (the demo samples 32). One AdamW run (lr 2e-3, batches of
16, 100 warm-up steps, cosine decay to 10 %); loss = cross-entropy on the answer letter and on ``<|im_end|>`` after
it; the tower and projector are trained too (through ``_encode_chunk``: ``encode_frames`` is inference-only). The scorer: a vision stage (per
mosaic patch, the shape colour), then yes/no on mosaics of 32 uniformly sampled frames, one with the needle and one
without per video.

**Determinism**: every sample is drawn from the task's seed streams, the weights from ``--seed``, and torch runs on
``--threads`` threads (default 2); the same arguments on the same machine and software stack give identical
tensors. Other thread counts or CPUs change float rounding; the accuracies then agree within a few points.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cos import synthetic
from cos.errors import ConfigError
from cos.scoring import llava_prompt
from cos.shots import make_mosaics

#: the lmms-eval ``cos_needle`` task's default prompt around the question and options (tests check they match)
PRE_PROMPT = ("Select the best answer to the following multiple-choice question based on the video. "
              "Respond with only the letter (A, B, C, or D) of the correct option.\n")
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
#: the videos the models are trained on (and the demo's test split is made with)
TASK = {"question": "mark", "size": 64, "min_frames": 48, "max_frames": 160, "fps": 8.0}
#: frames the demo samples per video (``max_frames_num``); the scorer sees their mosaics
EVAL_FRAMES = 32
SHOT_SIZE = 4
#: the models ``cos train-tiny`` trains (``--only`` picks one)
MODELS = ("longva", "llava", "clip")
LONGVA_DIR, LLAVA_DIR, CLIP_DIR = "needle-longva", "needle-llava", "needle-clip"


#: what a stage trains on: ``vision`` (per-token labels through throw-away heads) or ``full`` (the task's whole prompt
#: and the answer letter, as at evaluation)
STAGE_KINDS = ("vision", "full")


@dataclass(frozen=True)
class Stage:
    """``steps`` optimiser steps of ``kind`` on samples of ``frames`` frames with ``distractors`` (an inclusive range)."""

    kind: str
    frames: int
    distractors: tuple[int, int]
    steps: int

    def __post_init__(self):
        if self.kind not in STAGE_KINDS:
            raise ConfigError(f"stage kind must be one of {STAGE_KINDS}, got {self.kind!r}")


#: the base model's curriculum (see the module docstring)
LONGVA_STAGES = (Stage("vision", 4, (3, 3), 400), Stage("full", 1, (0, 0), 500), Stage("full", 4, (0, 2), 500),
                 Stage("full", 16, (0, 4), 400))
#: the scorer's steps (mosaics of 32 uniformly sampled frames, one relevant and one irrelevant per video)
LLAVA_STEPS = 1000
#: the scorer's vision stage first: per mosaic patch, the shape colour it shows (throw-away head)
LLAVA_VISION_STEPS = 300


def task_prompt(record: dict) -> str:
    """What lmms-eval's ``cos_needle`` task gives the model for one questions.json record."""
    return f"{PRE_PROMPT}{record['question']}\n" + "\n".join(record["options"]) + POST_PROMPT


def task_corpus() -> str:
    """Tokenizer training text of the task (its prompts and words), so that its prompts are short."""
    lines = [PRE_PROMPT + POST_PROMPT] * 20
    for colour in synthetic.COLOURS:
        lines.append(synthetic.MARK_QUESTION.format(colour=colour))
    lines += [f"{letter}. {mark}" for letter, mark in zip(synthetic.LETTERS, synthetic.MARKS)] * 10
    lines += [" ".join(synthetic.COLOURS), " ".join(synthetic.SHAPES)] * 10
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- data
def sample_video(index: int, split: str, frames: int, distractors: int, seed: int = 0, with_masks: bool = False):
    """One training/validation sample: ``(frames (F, 64, 64, 3) uint8, record, source indices)`` or None when the
    uniformly sampled frames miss the needle. ``frames >= 8``: ``linspace(0, n - 1, F)`` as at evaluation; fewer:
    one frame of the needle, one of each distractor (as many as fit), the rest anywhere, in time order.
    ``with_masks``: a fourth item, the events' ``(start, end, rgb, mask)`` as drawn."""
    plan = synthetic._plan_video(index, seed, TASK["min_frames"], TASK["max_frames"], TASK["size"], TASK["fps"],
                                 distractors, split, TASK["question"])
    masks = list(plan["render"]["events"])
    rec = plan["record"]
    n = rec["num_frames"]
    if frames >= 8:
        idx = np.linspace(0, n - 1, frames, dtype=int)
    else:
        rng = np.random.default_rng(rec["seed"])
        events = sorted(rec["events"], key=lambda e: not e["target"])  # the needle first
        picks = [int(rng.integers(e["start"], e["end"])) for e in events][:frames]
        picks += [int(rng.integers(0, n)) for _ in range(frames - len(picks))]
        idx = np.sort(np.asarray(picks))
    if not ((idx >= rec["needle_start"]) & (idx < rec["needle_end"])).any():
        return None
    frames_ = np.stack(list(synthetic._frames(rec, plan["render"], idx)))
    return (frames_, rec, idx, masks) if with_masks else (frames_, rec, idx)


def _samples(split: str, start: int, count: int, frames: int, distractors: tuple[int, int], seed: int, with_masks: bool = False):
    """``count`` samples from video index ``start`` on (skipping misses); distractor counts cycle through the range.
    Returns the samples and the next unused index."""
    out, index = [], start
    lo, hi = distractors
    while len(out) < count:
        s = sample_video(index, split, frames, lo + index % (hi - lo + 1), seed, with_masks)
        index += 1
        if s is not None:
            out.append(s)
    return out, index


def cover_labels(idx, masks, grid: int, side: int, palette: dict, threshold: float) -> np.ndarray:
    """``(frames, grid * grid)``: per sampled frame (source indices ``idx``) and square cell of a ``grid`` x ``grid``
    split, 1 + the index in ``palette`` (name -> RGB) of the event colour covering at least ``threshold`` of the cell,
    else 0. ``masks``: the events' ``(start, end, rgb, mask)``."""
    index = {tuple(int(c) for c in rgb): i + 1 for i, rgb in enumerate(palette.values())}
    cell = side // grid
    out = np.zeros((len(idx), grid * grid), dtype=np.int64)
    for k, t in enumerate(idx):
        for start, end, rgb, mask in masks:
            label = index.get(tuple(int(c) for c in rgb))
            if label is not None and start <= t < end:
                cover = mask.reshape(grid, cell, grid, cell).mean(axis=(1, 3)).reshape(-1)
                out[k][cover >= threshold] = label
    return out


def _weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weight: float = 8.0) -> torch.Tensor:
    """Cross-entropy with the labelled classes (all but 0, "nothing") weighted ``weight`` x: they are rare."""
    w = torch.full((logits.shape[-1],), weight)
    w[0] = 1.0
    return torch.nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten(), weight=w)


def _step(opt, sched, loss: torch.Tensor, params) -> None:
    """One optimiser step: gradients of ``loss``, clipped to norm 1, AdamW, the learning-rate schedule."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def _schedule(total: int, warmup: int = 100):
    return lambda step: min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(step, total) / total)))


# ----------------------------------------------------------------------------------------------- LongVA
class _LongVATrainer:
    def __init__(self, ckpt: Path):
        from longva import LongVAForCausalLM, LongVAProcessor

        self.model = LongVAForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32, device_map="cpu")
        self.processor = LongVAProcessor.from_pretrained(ckpt)
        tok = self.processor.tokenizer
        self.letters = [tok.convert_tokens_to_ids(c) for c in synthetic.LETTERS]
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")

        config = self.model.config
        self.grid = config.patch_grid // config.mm_spatial_pool_stride  # tokens per side of a frame
        hidden = config.hidden_size
        # throw-away heads of the vision stage: per frame token, the shape colour and the mark colour it shows (or none)
        self.fill_head = torch.nn.Linear(hidden, len(synthetic.COLOURS) + 1)
        self.mark_head = torch.nn.Linear(hidden, len(synthetic.MARKS) + 1)

    def heads(self) -> list[torch.nn.Parameter]:
        return [*self.fill_head.parameters(), *self.mark_head.parameters()]

    def features(self, frames: np.ndarray) -> torch.Tensor:
        """Frame features with gradients: the model's own tower, projector and pooling (``_encode_chunk``, what
        ``encode_frames`` runs chunk by chunk under ``no_grad`` at inference)."""
        return self.model._encode_chunk(self.processor.preprocess(frames))

    def vision_loss(self, batch) -> tuple[torch.Tensor, float]:
        """Cross-entropy of the two token heads — per frame token, the shape colour covering >= 1/4 of its square and
        the mark colour covering >= 1/10 of it —, and the accuracy on the tokens that show a mark."""
        frames = np.concatenate([b[0] for b in batch])
        side = frames.shape[1]
        fill = np.concatenate([cover_labels(b[2], b[3], self.grid, side, synthetic.COLOURS, 0.25) for b in batch])
        mark = torch.from_numpy(np.concatenate([cover_labels(b[2], b[3], self.grid, side, synthetic.MARKS, 0.1) for b in batch]))
        feats = self.features(frames)
        marks = self.mark_head(feats)
        loss = _weighted_ce(self.fill_head(feats), torch.from_numpy(fill)) + _weighted_ce(marks, mark)
        shown = mark > 0
        return loss, float((marks.argmax(-1)[shown] == mark[shown]).float().mean()) if shown.any() else 0.0

    def logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, 2, V)`` where the answer letter and ``<|im_end|>`` are predicted, and those targets."""
        model = self.model
        feats = self.features(np.concatenate([b[0] for b in batch]))
        embeds, targets, k = [], [], 0
        for frames, rec, *_ in batch:
            letter = self.letters[synthetic.LETTERS.index(rec["answer"])]
            ids = torch.cat([self.processor.prompt_ids(task_prompt(rec)), torch.tensor([[letter]])], dim=1)
            embeds.append(model.embed_prompt(ids, feats[k:k + len(frames)])[0])
            targets.append([letter, self.im_end])
            k += len(frames)
        # right padding: causal attention never lets a position see the padding after it
        length = max(e.shape[0] for e in embeds)
        padded = torch.stack([torch.cat([e, e.new_zeros(length - e.shape[0], e.shape[1])]) for e in embeds])
        hidden = model.language_model.model(inputs_embeds=padded).last_hidden_state
        ends = torch.tensor([e.shape[0] for e in embeds])
        picked = hidden[torch.arange(len(batch))[:, None], torch.stack([ends - 2, ends - 1], dim=1)]
        return model.language_model.lm_head(picked), torch.tensor(targets)

    @torch.no_grad()
    def accuracy(self, samples, batch_size: int = 25) -> float:
        self.model.eval()
        right = 0
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            logits, targets = self.logits(chunk)
            right += int((logits[:, 0, self.letters].argmax(-1) == torch.tensor(
                [synthetic.LETTERS.index(b[1]["answer"]) for b in chunk])).sum())
        self.model.train()
        return right / len(samples)


def train_longva(out_dir: str | Path, seed: int = 0, stages=LONGVA_STAGES, batch_size: int = 16, lr: float = 2e-3,
                 val_size: int = 100, progress: bool = True) -> dict:
    """Train the base model (see the module docstring); writes ``out_dir`` and returns the training log."""
    from tqdm import tqdm

    from longva.tiny import build_tiny_longva

    out_dir = Path(out_dir)
    init = out_dir.with_name(out_dir.name + ".init")
    build_tiny_longva(init, seed=seed, size="demo", corpus=task_corpus())
    torch.manual_seed(seed)
    try:
        trainer = _LongVATrainer(init)
    finally:
        shutil.rmtree(init)  # everything is loaded; the random start is rebuilt from the seed when needed
    model = trainer.model
    model.train()
    model.requires_grad_(True)
    total = sum(s.steps for s in stages)
    params = [*model.parameters(), *trainer.heads()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total))
    log = {"stages": [], "val": {}}
    index, start = 0, time.perf_counter()
    bar = tqdm(total=total, desc="train needle-longva", unit="step", disable=not progress)
    for stage in stages:
        hits = []
        for _ in range(stage.steps):
            vision = stage.kind == "vision"
            batch, index = _samples("train", index, batch_size, stage.frames, stage.distractors, seed, with_masks=vision)
            if vision:
                loss, hit = trainer.vision_loss(batch)
            else:
                logits, targets = trainer.logits(batch)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
                hit = float((logits[:, 0].argmax(-1) == targets[:, 0]).float().mean())
            _step(opt, sched, loss, params)
            hits.append(hit)
            bar.update(1)
            bar.set_postfix(stage=f"{stage.kind}/{stage.frames}", acc=f"{np.mean(hits[-50:]):.2f}")
        log["stages"].append({**asdict(stage), "train_accuracy_last_100": float(np.mean(hits[-100:]))})
    bar.close()
    log["train_seconds"] = time.perf_counter() - start
    for frames, d in ((EVAL_FRAMES, (0, 0)), (EVAL_FRAMES, (2, 2)), (EVAL_FRAMES, (4, 4))):
        val, _ = _samples("val", 0, val_size, frames, d, seed)
        log["val"][f"frames={frames},distractors={d[0]}-{d[1]}"] = trainer.accuracy(val)
    model.eval()
    model.save_pretrained(out_dir)
    trainer.processor.save_pretrained(out_dir)
    return log


# ----------------------------------------------------------------------------------------------- scorer
def build_scorer(seed: int = 0):
    """The untrained scorer: LLaVA-1.5's classes and wiring (:func:`cos_runtime.tiny_llava.llava_config`), CLIP
    112 px / patch 14 (64 image tokens), a 4-layer Llama, and a tokenizer that knows the task's words."""
    from transformers import LlavaForConditionalGeneration

    from cos_runtime.tiny_llava import build_processor, llava_config

    processor = build_processor(corpus=tuple(task_corpus().splitlines()), vocab_size=768)
    tok = processor.tokenizer
    config = llava_config(
        tok, 112,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, projection_dim=64),
        text=dict(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048),
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    gen.do_sample = False
    return model, processor


def scorer_samples(split: str, start: int, count: int, seed: int = 0, distractors: tuple[int, int] = (1, 4)):
    """``count`` (mosaic, task prompt, relevant) triples: per video, the mosaics of :data:`EVAL_FRAMES` uniformly
    sampled frames in shots of :data:`SHOT_SIZE` (as CoS builds them), one showing the needle and one not."""
    out, index = [], start
    lo, hi = distractors
    while len(out) < count:
        s = sample_video(index, split, EVAL_FRAMES, lo + index % (hi - lo + 1), seed)
        index += 1
        if s is None:
            continue
        frames, rec, idx = s
        mosaics, groups = make_mosaics(frames, SHOT_SIZE, "pad")
        inside = (idx >= rec["needle_start"]) & (idx < rec["needle_end"])
        relevant = [bool(inside[g].any()) for g in groups]
        rng = np.random.default_rng(rec["seed"])
        prompt = task_prompt(rec)
        # negatives drawn from all irrelevant mosaics (tried: half of them "hard", showing a distractor — the scorer then
        # marked more, not less: grounding precision 0.13 instead of 0.25 on the demo's test split at the same recall)
        for want in (True, False):
            choices = [j for j, r in enumerate(relevant) if r == want]
            if choices:
                out.append((mosaics[int(rng.choice(choices))], prompt, want))
    return out[:count], index


class _ScorerTrainer:
    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        tok = processor.tokenizer
        self.yes, self.no = tok.convert_tokens_to_ids("▁yes"), tok.convert_tokens_to_ids("▁no")
        self.eos = tok.eos_token_id

        config = model.config
        self.grid = config.vision_config.image_size // config.vision_config.patch_size  # patches per mosaic side
        self.fill_head = torch.nn.Linear(config.text_config.hidden_size, len(synthetic.COLOURS) + 1)

    def vision_loss(self, videos) -> tuple[torch.Tensor, float]:
        """Per mosaic patch, the shape colour covering >= 1/4 of it (the mosaic's frames are labelled on a grid of half
        the side each, then tiled as :func:`cos.shots.make_mosaic` tiles them); cross-entropy and the accuracy on the
        coloured patches."""
        images, labels = [], []
        half = self.grid // 2
        for frames, _, idx, masks in videos:
            mosaics, groups = make_mosaics(frames, SHOT_SIZE, "pad")
            per_frame = cover_labels(idx, masks, half, frames.shape[1], synthetic.COLOURS, 0.25).reshape(-1, half, half)
            for mosaic, group in zip(mosaics, groups):
                tiles = [per_frame[j] for j in group]
                tiles += [np.zeros((half, half), np.int64)] * (SHOT_SIZE - len(tiles))  # a partial shot: black cells
                labels.append(np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]]).reshape(-1))
                images.append(mosaic.convert("RGB"))
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        vision = self.model.model.vision_tower(pixels, output_hidden_states=True)
        feats = self.model.model.multi_modal_projector(vision.hidden_states[self.model.config.vision_feature_layer][:, 1:])
        target = torch.from_numpy(np.stack(labels))
        out = self.fill_head(feats)
        shown = target > 0
        return _weighted_ce(out, target), float((out.argmax(-1)[shown] == target[shown]).float().mean()) if shown.any() else 0.0

    def logits(self, batch):
        """Logits ``(B, 2, V)`` where the answer word and the end of sequence are predicted, and those targets."""
        words = [self.yes if relevant else self.no for _, _, relevant in batch]
        inputs = self.processor(images=[m.convert("RGB") for m, _, _ in batch], text=[llava_prompt(p) for _, p, _ in batch],
                                return_tensors="pt", padding=True)
        ids = torch.cat([inputs["input_ids"], torch.tensor(words)[:, None]], dim=1)
        mask = torch.cat([inputs["attention_mask"], torch.ones(len(batch), 1, dtype=inputs["attention_mask"].dtype)], dim=1)
        out = self.model(input_ids=ids, attention_mask=mask, pixel_values=inputs["pixel_values"], logits_to_keep=2)
        return out.logits, torch.tensor([[w, self.eos] for w in words])

    @torch.no_grad()
    def accuracy(self, samples, batch_size: int = 32) -> float:
        self.model.eval()
        right = 0
        for i in range(0, len(samples), batch_size):
            logits, targets = self.logits(samples[i:i + batch_size])
            right += int((logits[:, 0, [self.no, self.yes]].argmax(-1) == (targets[:, 0] == self.yes).long()).sum())
        self.model.train()
        return right / len(samples)


def train_llava(out_dir: str | Path, seed: int = 0, steps: int = LLAVA_STEPS, vision_steps: int = LLAVA_VISION_STEPS,
                batch_size: int = 16, lr: float = 2e-3, val_size: int = 200, progress: bool = True) -> dict:
    """Train the scorer (see the module docstring); writes ``out_dir`` and returns the training log."""
    from tqdm import tqdm

    model, processor = build_scorer(seed)
    trainer = _ScorerTrainer(model, processor)
    model.train()
    params = [*model.parameters(), *trainer.fill_head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(vision_steps + steps))
    index, hits, start = 0, [], time.perf_counter()
    bar = tqdm(total=vision_steps + steps, desc="train needle-llava", unit="step", disable=not progress)
    for _ in range(vision_steps):  # 4 videos x 8 mosaics per step
        videos, index = _samples("train", index, 4, EVAL_FRAMES, (1, 4), seed, with_masks=True)
        loss, hit = trainer.vision_loss(videos)
        _step(opt, sched, loss, params)
        hits.append(hit)
        bar.update(1)
        bar.set_postfix(stage="vision", acc=f"{np.mean(hits[-50:]):.2f}")
    vision_accuracy = float(np.mean(hits[-100:])) if hits else None
    hits, pending = [], []
    for _ in range(steps):
        while len(pending) < batch_size:
            more, index = scorer_samples("train", index, batch_size, seed)
            pending += more
        batch, pending = pending[:batch_size], pending[batch_size:]
        logits, targets = trainer.logits(batch)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        _step(opt, sched, loss, params)
        hits.append(float((logits[:, 0].argmax(-1) == targets[:, 0]).float().mean()))
        bar.update(1)
        bar.set_postfix(stage="yes/no", acc=f"{np.mean(hits[-50:]):.2f}")
    bar.close()
    log = {"vision_steps": vision_steps, "vision_accuracy_last_100": vision_accuracy, "steps": steps,
           "train_accuracy_last_100": float(np.mean(hits[-100:])), "train_seconds": time.perf_counter() - start}
    val, _ = scorer_samples("val", 0, val_size, seed)
    log["val_accuracy"] = trainer.accuracy(val)
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return log


# ----------------------------------------------------------------------------------------------- CLIP (frame selectors)
#: the selectors' text–image model: CLIP towers at the task's 64 px (patch 8) and a small text transformer
CLIP_VISION = dict(image_size=64, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)
CLIP_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
CLIP_STEPS = 600
#: frames per training video (the needle, each distractor as far as they fit, the rest anywhere: see sample_video)
CLIP_FRAMES = 4


def build_clip(seed: int = 0):
    """The untrained selector model: ``CLIPModel`` (the released class) with :data:`CLIP_VISION` / :data:`CLIP_TEXT`
    towers, and the processor (``CLIPTokenizer``, PIL image processor at 64 px) of ``cos make-tiny-text-image --kind clip``."""
    import tempfile

    from transformers import AutoProcessor, CLIPConfig, CLIPModel

    from cos_runtime.tiny_text_image import build_tiny_text_image

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_text_image(tmp, "clip", seed=seed)
        processor = AutoProcessor.from_pretrained(tmp)
        base = CLIPConfig.from_pretrained(tmp)
    config = CLIPConfig(text_config={**base.text_config.to_dict(), **CLIP_TEXT}, vision_config={**base.vision_config.to_dict(), **CLIP_VISION},
                        projection_dim=32)
    side = CLIP_VISION["image_size"]
    processor.image_processor.size = {"shortest_edge": side}
    processor.image_processor.crop_size = {"height": side, "width": side}
    torch.manual_seed(seed)
    return CLIPModel(config).to(torch.float32), processor


def clip_samples(split: str, start: int, count: int, seed: int = 0, distractors: tuple[int, int] = (0, 4)):
    """``count`` videos' worth of (frames (F, 64, 64, 3), colours shown per frame): :data:`CLIP_FRAMES` frames per
    video (:func:`sample_video`: the needle, the distractors, the rest anywhere) and, per frame, the set of colours of
    the events on screen. Returns the list and the next unused video index."""
    videos, index = _samples(split, start, count, CLIP_FRAMES, distractors, seed)
    out = []
    for frames, rec, idx in videos:
        shown = [{e["colour"] for e in rec["events"] if e["start"] <= t < e["end"]} for t in idx]
        out.append((frames, shown))
    return out, index


def needle_ranking(scorer, split: str = "val", count: int = 100, seed: int = 0, distractors: int = 4) -> dict:
    """How well a text–image model (a :class:`cos.text_image.TextImageModel`: the selectors' own scoring path) ranks a
    video's frames for its question: per video of ``split`` (``distractors`` each), every frame scored against the
    question, then the mean R-precision (share of the top-``L`` frames that show the needle, ``L`` its length) and the
    mean AUC of needle frames against the others."""
    precision, auc = [], []
    for index in range(count):
        plan = synthetic._plan_video(index, seed, TASK["min_frames"], TASK["max_frames"], TASK["size"], TASK["fps"], distractors, split,
                                     TASK["question"])
        rec = plan["record"]
        scores = scorer.score(list(synthetic._frames(rec, plan["render"])), rec["question"])
        inside = np.zeros(len(scores), dtype=bool)
        inside[rec["needle_start"]:rec["needle_end"]] = True
        top = np.argsort(-scores, kind="stable")[: int(inside.sum())]
        precision.append(float(inside[top].mean()))
        pos, neg = scores[inside][:, None], scores[~inside][None, :]  # AUC: P(a needle frame outscores another), ties half
        auc.append(float(((pos > neg) + 0.5 * (pos == neg)).mean()))
    return {"videos": count, "distractors": distractors, "r_precision": float(np.mean(precision)), "auc": float(np.mean(auc))}


def train_clip(out_dir: str | Path, seed: int = 0, steps: int = CLIP_STEPS, batch_videos: int = 16, lr: float = 2e-3,
               val_size: int = 100, progress: bool = True) -> dict:
    """Train the selectors' CLIP: per step :data:`CLIP_FRAMES` frames of ``batch_videos`` training videos against the
    needle question of every colour (:data:`cos.synthetic.MARK_QUESTION`), a sigmoid loss per (frame, question) pair
    (1 when a shape of that colour is on the frame) on ``logits_per_image`` plus a throw-away bias. Writes ``out_dir``."""
    from tqdm import tqdm

    model, processor = build_clip(seed)
    colours = list(synthetic.COLOURS)
    texts = processor(text=[synthetic.MARK_QUESTION.format(colour=c) for c in colours], return_tensors="pt", padding=True)
    bias = torch.nn.Parameter(torch.tensor(-4.0))
    params = [*model.parameters(), bias]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(steps))
    model.train()
    index, hits, start = 0, [], time.perf_counter()
    bar = tqdm(total=steps, desc="train needle-clip", unit="step", disable=not progress)
    for _ in range(steps):
        videos, index = clip_samples("train", index, batch_videos, seed)
        frames = np.concatenate([v[0] for v in videos])
        labels = torch.tensor([[float(c in shown) for c in colours] for v in videos for shown in v[1]])
        pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pixels, **texts).logits_per_image + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        _step(opt, sched, loss, params)
        hits.append(float(((logits > 0).float() == labels).all(dim=1).float().mean()))
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", exact=f"{np.mean(hits[-50:]):.2f}")
    bar.close()
    model.eval()
    log = {"steps": steps, "batch_videos": batch_videos, "frames_per_video": CLIP_FRAMES, "train_exact_last_100": float(np.mean(hits[-100:])),
           "train_seconds": time.perf_counter() - start}
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    from cos.text_image import TextImageModel  # validated as the selectors load and score it

    log["val"] = needle_ranking(TextImageModel(str(out_dir), device="cpu", dtype="float32"), "val", val_size, seed)
    return log


# ----------------------------------------------------------------------------------------------- command
def train_tiny(out: str | Path, seed: int = 0, threads: int = 2, longva_stages=LONGVA_STAGES, llava_steps: int = LLAVA_STEPS,
               which: tuple[str, ...] = MODELS, progress: bool = True, llava_vision_steps: int = LLAVA_VISION_STEPS,
               val_size: int | None = None, clip_steps: int = CLIP_STEPS) -> dict:
    """Train the models named in ``which`` into ``out/needle-longva``, ``out/needle-llava`` and ``out/needle-clip``; writes
    ``out/train_log.json`` (settings, per-stage training accuracy, validation accuracy, seconds) and returns it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    log_path = out / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    log["task"] = TASK
    settings = {"seed": seed, "threads": threads, "torch": torch.__version__}  # per model: --only may train one later
    val = {} if val_size is None else {"val_size": val_size}  # else each trainer's own default
    try:
        if "longva" in which:
            log["needle-longva"] = {**settings, **train_longva(out / LONGVA_DIR, seed=seed, stages=longva_stages, progress=progress,
                                                               **val)}
        if "llava" in which:
            log["needle-llava"] = {**settings, **train_llava(out / LLAVA_DIR, seed=seed, steps=llava_steps, progress=progress,
                                                             vision_steps=llava_vision_steps, **val)}
        if "clip" in which:
            log["needle-clip"] = {**settings, **train_clip(out / CLIP_DIR, seed=seed, steps=clip_steps, progress=progress, **val)}
    finally:
        torch.set_num_threads(previous)
    log_path.write_text(json.dumps(log, indent=2) + "\n")
    return log


def _run(args: argparse.Namespace) -> int:
    which = MODELS if args.only is None else (args.only,)
    log = train_tiny(args.out, seed=args.seed, threads=args.threads, which=which)
    for name in (LONGVA_DIR, LLAVA_DIR, CLIP_DIR):
        if name in log:
            print(f"{name}: {json.dumps(log[name])}")
    print(f"checkpoints and train_log.json in {args.out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train-tiny",
        help="train the demo's small LongVA, LLaVA scorer and selectors' CLIP on the needle task (CPU)",
        description="Train, on a CPU and deterministically, the small LongVA-format model, the LLaVA-format scorer and the "
                    "selectors' CLIP that scripts/demo.sh uses (assets/needle-longva, assets/needle-llava, assets/needle-clip).",
        allow_abbrev=False,
    )
    p.add_argument("out", metavar="OUT", help="output folder (gets needle-longva/, needle-llava/, needle-clip/ and train_log.json)")
    p.add_argument("--seed", type=int, default=0, help="weights and sample order (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2; results are exact for a fixed count)")
    p.add_argument("--only", choices=MODELS, default=None, help="train one of the models")
    p.set_defaults(func=_run)
    return p


__all__ = ["CLIP_STEPS", "LLAVA_STEPS", "LONGVA_STAGES", "MODELS", "POST_PROMPT", "PRE_PROMPT", "Stage", "TASK", "add_parser", "build_clip",
           "build_scorer", "clip_samples", "needle_ranking", "sample_video", "scorer_samples", "task_corpus", "task_prompt", "train_clip",
           "train_llava", "train_longva", "train_tiny"]
