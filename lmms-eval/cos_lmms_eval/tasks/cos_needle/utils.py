"""Hooks of the ``cos_needle`` task: prompt as videomme's, and accuracy.

The data folder is ``data/`` beside this file (or ``$COS_NEEDLE_DATA``), as written by
``cos make-needle-videos``. Each document keeps where its needle is (``needle_start``/``needle_end``,
source frames); the per-sample record carries them, so ``cos report`` (and ``cos report --text``) can
compute the grounding of a CoS run from its traces with :func:`cos.grounding.window_grounding` — the
task itself never reads traces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DATA_ENV = "COS_NEEDLE_DATA"


def data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path(__file__).parent / "data")


def doc_to_visual(doc):
    path = data_dir() / doc["video"]
    return [str(path)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    options = "\n".join(doc["options"])
    return f"{kw.get('pre_prompt', '')}{doc['question']}\n{options}{kw.get('post_prompt', '')}"


def extract_letter(response: str) -> str | None:
    """The chosen option letter: a leading letter ("B", "B.", "(B) ..."), else the first standalone A-D."""
    text = response.strip()
    match = re.match(r"^\(?([A-D])(?:[).:\s]|$)", text)
    if match:
        return match.group(1)
    match = re.search(r"\b([A-D])\b", text)
    return match.group(1) if match else None


def process_results(doc, results):
    response = results[0] if results else ""
    letter = extract_letter(response)
    record = {"id": doc["id"], "answer": doc["answer"], "pred": letter, "response": response,
              "needle_start": doc.get("needle_start"), "needle_end": doc.get("needle_end")}
    return {"needle_acc": {**record, "correct": float(letter == doc["answer"])}}


def aggregate_mean(items):
    return sum(item["correct"] for item in items) / len(items) if items else float("nan")
