"""Hooks of the ``cos_needle`` task: prompt as videomme's, accuracy, and grounding from CoS traces.

The data folder is ``data/`` beside this file (or ``$COS_NEEDLE_DATA``), as written by
``cos make-needle-videos``. Grounding is read from the per-sample trace that ``cos_longva`` writes
when it runs with ``trace_dir`` (it exports ``COS_TRACE_DIR``): the fraction of sampled frames that
fall inside the needle and were marked relevant. Without a trace the sample has no grounding value
and the aggregate is NaN ("not available"), never a made-up number.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

DATA_ENV = "COS_NEEDLE_DATA"
TRACE_DIR_ENV = "COS_TRACE_DIR"


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


def _trace_for(doc, question: str):
    root = os.environ.get(TRACE_DIR_ENV)
    if not root:
        return None
    from cos.trace import trace_key  # the same key the model adapter used to name the file

    key = trace_key(doc_to_visual(doc)[0], question)
    for path in Path(root).glob(f"*/{key}.json"):
        return json.loads(path.read_text())
    return None


def grounding(doc, trace) -> float | None:
    """Fraction of the sampled frames inside the needle [start, end) that the binary code marks relevant."""
    if not trace or trace.get("binary_code") is None or not trace.get("frame_indices"):
        return None
    inside = [i for i, f in enumerate(trace["frame_indices"]) if doc["needle_start"] <= f < doc["needle_end"]]
    if not inside:
        return None
    return sum(trace["binary_code"][i] for i in inside) / len(inside)


def process_results(doc, results):
    response = results[0] if results else ""
    letter = extract_letter(response)
    question = doc_to_text(doc, _PROMPT_KWARGS)
    record = {"id": doc["id"], "answer": doc["answer"], "pred": letter, "response": response,
              "needle_start": doc.get("needle_start"), "needle_end": doc.get("needle_end")}
    return {
        "needle_acc": {**record, "correct": float(letter == doc["answer"])},
        "needle_grounding": {**record, "grounding": grounding(doc, _trace_for(doc, question))},
    }


def aggregate_mean(items):
    return sum(item["correct"] for item in items) / len(items) if items else float("nan")


def aggregate_grounding(items):
    values = [item["grounding"] for item in items if item["grounding"] is not None]
    return sum(values) / len(values) if values else math.nan


def _load_prompt_kwargs():
    """The prompt kwargs from the YAML beside this file (process_results must rebuild the exact ctx)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("!function", lambda loader, node: None)
    config = yaml.load((Path(__file__).parent / "cos_needle.yaml").read_text(), Loader=_Loader)
    return config["lmms_eval_specific_kwargs"]["default"]


_PROMPT_KWARGS = _load_prompt_kwargs()
