"""An offline VNBench in the official layout: ``VNBench-main-4try.json`` and a flat folder of real H.264 videos.

Every one of the 9 question types, ``per_type`` questions each, 4 tries per question with the options permuted as
in VideoNIAH's released results (relative to try 0's ``[o0, o1, o2, o3]``: try 1 ``[o0, o3, o1, o2]``, try 2
``[o1, o3, o2, o0]``, try 3 ``[o3, o2, o0, o1]``; the same for all 1350 questions), tries of a question
consecutive. As in the official file, ``video`` is ``./VNBench/<id>_<file type>.mp4`` where the file type is the
question type except that ``ret_insert1`` and ``ret_insert2`` are exchanged, ``gt`` is the right option's value
(an int for counting questions, whose options are ints: the hub file's mixed types) and ``gt_option`` is this
try's letter. The videos are small (``size`` px, ``frames`` frames), one per question."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ANNOTATION_FILE = "VNBench-main-4try.json"
#: each try's options as indices into try 0's options
PERMUTATIONS = ((0, 1, 2, 3), (0, 3, 1, 2), (1, 3, 2, 0), (3, 2, 0, 1))
#: question type -> the type in its video's file name
FILE_TYPE = {"ret_insert1": "ret_insert2", "ret_insert2": "ret_insert1"}
#: question type -> (question, option pool); counting pools are ints
QUESTIONS = {
    "ret_edit1": ("What is the secret word?", ["Carol", "Grace", "Mary", "Frank", "Paul", "Sam"]),
    "ret_insert1": ("What is the name of the landmark in the picture?", ["Pretoria Bridge", "Lake Kardyvatch", "Hôpital Notre-Dame", "Big Ben", "Tower Bridge"]),
    "ret_insert2": ("What kind of fruit appears in this video?", ["blueberry", "coconut", "orange", "apple", "kiwifruit"]),
    "ord_edit1": ("What is the order of the secret words that appeared in the video?",
                  ["Sam, Grace, Paul, Bob", "Paul, Bob, Sam, Grace", "Grace, Sam, Paul, Bob", "Sam, Paul, Grace, Bob"]),
    "ord_insert1": ("What is the order of fruits appearing in the video?",
                    ["apple, grapes, kiwifruit", "grapes, apple, kiwifruit", "kiwifruit, apple, grapes", "apple, kiwifruit, grapes"]),
    "ord_insert2": ("What is the order of images appearing in the video?", ["train, cow, sheep", "cow, train, sheep", "sheep, cow, train", "cow, sheep, train"]),
    "cnt_edit1": ("How many secret words appeared in the video?", [1, 2, 3, 4, 5]),
    "cnt_edit2": ("Some sofas were inserted into 4 small sections of the video. How many sofas appeared in the video in total?", [9, 11, 12, 13]),
    "cnt_insert1": ("How many cars appeared in the video?", [1, 2, 4, 5]),
}
TYPES = tuple(QUESTIONS)


def annotation(per_type: int = 2, seed: int = 0) -> list[dict]:
    """The annotation's entries: ``per_type`` questions of each type, 4 tries each (see the module docstring)."""
    rng = np.random.default_rng(seed)
    entries = []
    for t, kind in enumerate(TYPES):
        question, pool = QUESTIONS[kind]
        for q in range(per_type):
            stem = f"video{9000 + 10 * t + q}" if q % 2 == 0 else f"v_Fixture{t}x{q}"
            video = f"./VNBench/{stem}_{FILE_TYPE.get(kind, kind)}.mp4"
            base = [pool[i] for i in rng.permutation(len(pool))[:4]]
            gt = base[int(rng.integers(4))]
            times = sorted(float(x) for x in rng.uniform(0, 10, size=3 if kind.startswith(("ord", "cnt")) else 1).round(2))
            for attempt, perm in enumerate(PERMUTATIONS):
                options = [base[i] for i in perm]
                entries.append({"video": video, "question": question, "options": options, "needle_time": times, "gt": gt,
                                "gt_option": "ABCD"[options.index(gt)], "length": 12, "type": kind, "try": attempt})
    return entries


def build_vnbench(root: str | Path, per_type: int = 2, seed: int = 0, frames: int = 24, size: int = 64, videos: str = "videos") -> list[dict]:
    """Write ``root/VNBench-main-4try.json`` (:func:`annotation`) and one video per question in ``root/<videos>/``
    (a random colour with a noisy half); return the entries."""
    from cos.synthetic import write_mp4

    root = Path(root)
    (root / videos).mkdir(parents=True, exist_ok=True)
    entries = annotation(per_type, seed)
    rng = np.random.default_rng(seed + 1)
    for name in sorted({e["video"].rsplit("/", 1)[-1] for e in entries}):
        clip = np.zeros((frames, size, size, 3), np.uint8) + rng.integers(0, 256, size=3).astype(np.uint8)
        clip[:, : size // 2] = rng.integers(0, 256, size=(frames, size // 2, size, 3), dtype=np.uint8)
        write_mp4(root / videos / name, clip, size, size, 8.0)
    (root / ANNOTATION_FILE).write_text(json.dumps(entries, ensure_ascii=False, indent=1), encoding="utf-8")
    return entries
