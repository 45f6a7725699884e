"""Hooks of the ``vnbench`` task: VNBench (VideoNIAH, arXiv 2406.09367) with its official protocol.

**Data.** The official annotation ``VNBench-main-4try.json`` (a JSON list of 5400 entries: 1350 questions x 4
tries, keys ``video, question, options, needle_time, gt, gt_option, length, type, try``) and the 1350 videos,
found by the basename of each entry's ``video`` (``./VNBench/<id>_<type>.mp4``). Both live in one folder,
``$VNBENCH_DIR`` (default ``$HF_HOME/vnbench``, ``HF_HOME`` defaulting to ``~/.cache/huggingface``)::

    $VNBENCH_DIR/VNBench-main-4try.json    the annotation (also accepted in VNBench/)
    $VNBENCH_DIR/videos/*.mp4              the videos, flat (also accepted: VNBench/ as in the annotation's
                                           paths, VNBench_new/ and video/ as other loaders name it, or $VNBENCH_DIR)

When the annotation is not there, it is taken from the hub dataset ``videoniah/VNBench`` (``hf_hub_download``:
a cached copy also works offline). The videos are not on the hub: they come from the Google Drive link in the
VideoNIAH README (:data:`VIDEOS_URL`). Missing data raises :class:`VNBenchDataError`, which says what is missing
and where it was looked for; videos missing from a folder that holds the others are a warning (their samples
become error records in the models and their questions count as wrong).

The hub file mixes types (``gt`` is text, or a number for counting questions), which breaks ``datasets``' Arrow
conversion (the hub's viewer fails on it), so :func:`process_docs` reads it with :mod:`json`, normalises every
entry (:func:`normalise_entry`) and returns the documents as a ``datasets.Dataset`` of fixed types; the task's YAML
loads a placeholder (the YAML file itself, as text) only because lmms-eval needs a dataset to hand to
``process_docs``.

**Prompt** (the official one; ``pre_prompt``/``post_prompt`` in the YAML's ``lmms_eval_specific_kwargs``)::

    {question}\\nA. {o0}\\nB. {o1}\\nC. {o2}\\nD. {o3}\\nAnswer with the option's letter from the given choices directly.

**Scoring** (:func:`score`), as the official code:

* the ground-truth letter of an entry is that of its ``gt`` among its ``options``
  (``chr(options.index(gt) + ord('A'))``, VideoNIAH ``llava_examples/model_video_niah.py``); ``gt`` is the
  option's value, a number for counting questions, compared with the options by value or by text;
* a response is parsed as ``evaluation/eval.py`` does (:func:`parse_prediction`): the script the VideoNIAH
  README has users run on their results;
* circular evaluation: the 4 tries of a question (the same video, options permuted) must all be right for the
  question to count; a question without exactly one answer for each try 0-3 (a ``--limit`` run, lost samples)
  counts as wrong, with a warning giving the count;
* per type: the share of right questions, reported under the official names, i.e. with the values of
  ``ret_insert1`` and ``ret_insert2`` swapped (``llava_examples/evaluation_utils.py``: in the annotation the two
  type names are exchanged relative to the video files); per category (``ret``, ``ord``, ``cnt``): the mean of
  its 3 types; ``overall``: the mean of the 3 categories (equal to the mean of the 9 types, which ``eval.py``
  prints, when every type has as many questions, as in VNBench); ``try_acc``: the plain share of right answers
  over all tries (a diagnostic, not a VNBench score). A type without questions scores NaN, and so do its
  category and ``overall``.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

ANNOTATION_FILE = "VNBench-main-4try.json"
HUB_REPO = "videoniah/VNBench"
VIDEOS_URL = "https://drive.google.com/file/d/1KOUzy07viQzpmpcBqydUA043VQZ4nmRv/view?usp=sharing"
README_URL = "https://github.com/joez17/VideoNIAH"
DATA_ENV = "VNBENCH_DIR"
#: folders of $VNBENCH_DIR searched for the annotation, in order ("" is $VNBENCH_DIR itself)
ANNOTATION_SUBDIRS = ("", "VNBench")
#: folders of $VNBENCH_DIR searched for the videos, in order
VIDEO_SUBDIRS = ("videos", "VNBench", "VNBench_new", "video", "")

LETTERS = "ABCD"
TRIES = (0, 1, 2, 3)
#: the 9 sub-tasks by category, with the reported (official) type names
CATEGORIES: dict[str, tuple[str, ...]] = {
    "ret": ("ret_edit1", "ret_insert1", "ret_insert2"),
    "ord": ("ord_edit1", "ord_insert1", "ord_insert2"),
    "cnt": ("cnt_edit1", "cnt_edit2", "cnt_insert1"),
}
TYPES: tuple[str, ...] = tuple(t for types in CATEGORIES.values() for t in types)
#: annotation ``type`` -> the name its score is reported under (the official swap; others keep their name)
REPORTED_NAME: dict[str, str] = {**{t: t for t in TYPES}, "ret_insert1": "ret_insert2", "ret_insert2": "ret_insert1"}
#: the task's metrics, in the order of the YAML's metric_list
METRICS: tuple[str, ...] = ("overall", *CATEGORIES, *TYPES, "try_acc")


class VNBenchDataError(FileNotFoundError):
    """VNBench's annotation or videos are missing or unreadable; the message says what and where it looked."""


# --------------------------------------------------------------------------------------------------- data


def data_dir() -> Path:
    """``$VNBENCH_DIR``, else ``$HF_HOME/vnbench`` (``HF_HOME`` defaulting to ``~/.cache/huggingface``)."""
    value = os.environ.get(DATA_ENV)
    if value:
        return Path(value).expanduser().absolute()
    return Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser().absolute() / "vnbench"


def local_annotation(root: Path | None = None) -> Path | None:
    """The annotation file in ``root`` (default :func:`data_dir`) or its ``VNBench/`` folder, else None."""
    root = data_dir() if root is None else root
    for sub in ANNOTATION_SUBDIRS:
        path = root / sub / ANNOTATION_FILE
        if path.is_file():
            return path
    return None


def video_dirs(root: Path | None = None) -> list[Path]:
    """The folders of ``root`` (default :func:`data_dir`) where videos are looked for, those that exist."""
    root = data_dir() if root is None else root
    return [root / sub if sub else root for sub in VIDEO_SUBDIRS if (root / sub).is_dir()]


def find_video(name: str, dirs: list[Path]) -> Path | None:
    """The first ``dir/name`` that is a file, else None."""
    for folder in dirs:
        path = folder / name
        if path.is_file():
            return path
    return None


def annotation_path() -> Path:
    """The annotation file: local (:func:`local_annotation`), else downloaded from the hub (cached by huggingface_hub).

    Raises :class:`VNBenchDataError` naming the places looked at and why the hub failed."""
    root = data_dir()
    path = local_annotation(root)
    if path is not None:
        return path
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_REPO, ANNOTATION_FILE, repo_type="dataset"))
    except Exception as err:  # noqa: BLE001 - any hub failure (offline, no network, gated) ends in the same advice
        hub_error = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    looked = ", ".join(str(root / sub / ANNOTATION_FILE) for sub in ANNOTATION_SUBDIRS)
    where = f"${DATA_ENV}={os.environ[DATA_ENV]}" if os.environ.get(DATA_ENV) else f"${DATA_ENV} is not set, default $HF_HOME/vnbench"
    raise VNBenchDataError(
        f"VNBench annotation not found: looked for {looked} ({where}), and the download of {ANNOTATION_FILE} from the hub "
        f"dataset {HUB_REPO} failed ({hub_error}). Put {ANNOTATION_FILE} (https://huggingface.co/datasets/{HUB_REPO}) in "
        f"{root}, or set {DATA_ENV} to the folder holding it; the videos go to {root / 'videos'} ({VIDEOS_URL})."
    )


def _numbers(value) -> list[float]:
    """Every number in ``value`` (a number, numeric text, or nested lists of them), in order."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str):
        try:
            return [float(value)]
        except ValueError:
            return []
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _numbers(item)]
    return []


def gt_letter(options: list, gt, gt_option=None) -> str | None:
    """The letter of ``gt`` among ``options`` (the official ``chr(options.index(gt) + ord('A'))``).

    ``gt`` is the right option's value: text, or a number for counting questions, which the options may hold as
    numbers or as text; a value equal to an option, else one whose text equals an option's text, is found. When
    ``gt`` is in no option, ``gt_option`` (the annotation's letter for this try) is used if it is a letter A-D;
    else None."""
    for i, option in enumerate(options):
        if option == gt and type(option) is not bool:
            return LETTERS[i]
    texts = [str(o).strip() for o in options]
    if str(gt).strip() in texts:
        return LETTERS[texts.index(str(gt).strip())]
    if isinstance(gt_option, str) and len(gt_option.strip()) == 1 and gt_option.strip() in LETTERS:
        return gt_option.strip()
    return None


def normalise_entry(entry: dict, index: int) -> dict:
    """One annotation entry as a document with fixed types (so ``datasets`` can hold them all).

    Keeps ``video``, ``question``, ``type``, ``try`` (int); ``options`` as 4 texts; ``gt`` as text; adds
    ``gt_letter`` (:func:`gt_letter`), ``gt_option`` (text, "" when absent), ``video_name`` (the basename of
    ``video``), ``needle_time`` (its numbers, as floats) and ``length`` (as text). Other keys are dropped.
    Raises :class:`VNBenchDataError` for an entry that lacks a key, has no 4 options or no findable answer."""
    where = f"entry {index} of {ANNOTATION_FILE}"
    if not isinstance(entry, dict):
        raise VNBenchDataError(f"{where} is not an object: {entry!r:.200}")
    missing = [k for k in ("video", "question", "options", "gt", "type", "try") if k not in entry]
    if missing:
        raise VNBenchDataError(f"{where} (video {entry.get('video')!r}) lacks {missing}")
    options = entry["options"]
    if not isinstance(options, list) or len(options) != len(LETTERS):
        raise VNBenchDataError(f"{where} (video {entry['video']!r}) has no list of {len(LETTERS)} options: {options!r:.200}")
    letter = gt_letter(options, entry["gt"], entry.get("gt_option"))
    if letter is None:
        raise VNBenchDataError(f"{where} (video {entry['video']!r}): gt {entry['gt']!r} is none of the options {options!r}")
    gt_option = entry.get("gt_option")
    return {
        "video": str(entry["video"]),
        "video_name": str(entry["video"]).replace("\\", "/").rsplit("/", 1)[-1],
        "question": str(entry["question"]),
        "options": [str(o) for o in options],
        "gt": str(entry["gt"]),
        "gt_letter": letter,
        "gt_option": "" if gt_option is None else str(gt_option),
        "type": str(entry["type"]),
        "try": int(entry["try"]),
        "needle_time": _numbers(entry.get("needle_time")),
        "length": "" if entry.get("length") is None else str(entry["length"]),
    }


def read_annotation(path: Path) -> list[dict]:
    """The normalised documents of an annotation file (:func:`normalise_entry`), in file order."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as err:
        raise VNBenchDataError(f"cannot read the VNBench annotation {path}: {type(err).__name__}: {err}") from err
    if not isinstance(entries, list) or not entries:
        raise VNBenchDataError(f"the VNBench annotation {path} is not a non-empty JSON list")
    return [normalise_entry(entry, i) for i, entry in enumerate(entries)]


def check_videos(docs: list[dict], root: Path | None = None, source: Path | None = None) -> list[str]:
    """The names of the documents' videos that are in no video folder of ``root`` (default :func:`data_dir`).

    Raises :class:`VNBenchDataError` when none is found (no data: the message says where to get the videos)."""
    root = data_dir() if root is None else root
    dirs = video_dirs(root)
    names = sorted({d["video_name"] for d in docs})
    missing = [n for n in names if find_video(n, dirs) is None]
    if len(missing) == len(names):
        looked = ", ".join(str(root / sub if sub else root) for sub in VIDEO_SUBDIRS)
        raise VNBenchDataError(
            f"VNBench videos not found: none of the {len(names)} videos named in {source or 'the annotation'} "
            f"(e.g. {names[0]}) is in any of {looked}. The videos are not on the hub: download the zip from the Google "
            f"Drive link in the VideoNIAH README ({README_URL}): {VIDEOS_URL}, and put its .mp4 files in {root / 'videos'} "
            f"(or set {DATA_ENV} to the folder that holds them)."
        )
    return missing


def load_docs() -> list[dict]:
    """The normalised documents of :func:`annotation_path`, after checking that their videos are there
    (:func:`check_videos`; a partial set is warned about, with the count)."""
    from loguru import logger

    root = data_dir()
    path = annotation_path()
    docs = read_annotation(path)
    missing = check_videos(docs, root, path)
    if missing:
        logger.warning(f"VNBench: {len(missing)} of {len({d['video_name'] for d in docs})} videos are missing from "
                       f"{', '.join(map(str, video_dirs(root)))} (e.g. {missing[0]}); their samples fail and their questions count as wrong")
    disagree = sum(d["gt_option"] not in ("", d["gt_letter"]) for d in docs)
    if disagree:
        logger.warning(f"VNBench: in {disagree} entries of {path} gt_option differs from the letter of gt among the options; "
                       "the letter of gt is used (as the official code does)")
    return docs


def process_docs(dataset):
    """lmms-eval's ``process_docs``: ignores the placeholder rows and returns VNBench's documents (:func:`load_docs`)."""
    import datasets

    features = datasets.Features({
        "video": datasets.Value("string"), "video_name": datasets.Value("string"), "question": datasets.Value("string"),
        "options": datasets.Sequence(datasets.Value("string")), "gt": datasets.Value("string"), "gt_letter": datasets.Value("string"),
        "gt_option": datasets.Value("string"), "type": datasets.Value("string"), "try": datasets.Value("int64"),
        "needle_time": datasets.Sequence(datasets.Value("float64")), "length": datasets.Value("string"),
    })
    return datasets.Dataset.from_list(load_docs(), features=features)


def data_status() -> tuple[bool, str]:
    """For ``cos_lmms_eval.check``: whether the run can find its videos (the annotation may still come from the hub;
    the videos cannot), and one line on where the annotation and the videos are expected and whether they are there."""
    root = data_dir()
    where = f"${DATA_ENV}" if os.environ.get(DATA_ENV) else f"${DATA_ENV} unset: $HF_HOME/vnbench"
    path = local_annotation(root)
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(HUB_REPO, ANNOTATION_FILE, repo_type="dataset")
            path = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - only a hint
            path = None
    annotation = str(path) if path else f"{root / ANNOTATION_FILE} not found (downloaded from the hub dataset {HUB_REPO} on the first run when reachable)"
    dirs = [d for d in video_dirs(root) if any(p.suffix.lower() == ".mp4" for p in d.iterdir())]
    subdirs = ", ".join(f"{s}/" for s in VIDEO_SUBDIRS if s)
    videos = ", ".join(map(str, dirs)) if dirs else f"NOT FOUND (no .mp4 in {root} or its {subdirs}; get them from {VIDEOS_URL})"
    return bool(dirs), f"data ({where}): annotation {annotation}; videos {videos}"


# ------------------------------------------------------------------------------------------------ prompt


def doc_to_visual(doc):
    """The video's path: the first video folder holding it, else where it is expected (the model reports it missing)."""
    root = data_dir()
    path = find_video(doc["video_name"], video_dirs(root))
    return [str(path if path is not None else root / "videos" / doc["video_name"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """``{pre_prompt}{question}\\nA. {o0}\\nB. {o1}\\nC. {o2}\\nD. {o3}{post_prompt}`` (VNBench's prompt with the defaults)."""
    kw = lmms_eval_specific_kwargs or {}
    options = "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, doc["options"]))
    return f"{kw.get('pre_prompt', '')}{doc['question']}{options}{kw.get('post_prompt', '')}"


# ---------------------------------------------------------------------------------------------- scoring


def parse_prediction(response) -> str | None:
    """The answer letter of a response, as VideoNIAH's ``evaluation/eval.py``: the text before the first ``.``, then
    the first of ``A``, ``B``, ``C``, ``D`` (in that order, upper case) that it *contains*; None when it has none.

    So ``"B"``, ``"B."`` and ``"(B) cat"`` give B, ``"Answer: C"`` gives A (it contains an A) and ``"b"`` gives None.
    (The README's evaluation script; the LLaVA example's ``pred[0] == gt`` agrees on responses that start with
    the letter, which is what the prompt asks for.)"""
    if not isinstance(response, str):
        return None
    head = response.split(".")[0]
    for letter in LETTERS:
        if letter in head:
            return letter
    return None


def process_results(doc, results):
    """One record per sample, the same under every metric (each metric's aggregation computes all scores)."""
    response = results[0] if results else ""
    pred = parse_prediction(response)
    record = {"question": doc["video"], "type": doc["type"], "try": doc["try"], "gt": doc["gt_letter"], "pred": pred,
              "correct": pred == doc["gt_letter"]}
    return {metric: record for metric in METRICS}


class Scores:
    """What :func:`score` found: the metrics (:data:`METRICS`) and what made some of them partial.

    (A plain class: lmms-eval imports this file without registering it in ``sys.modules``, where ``dataclass``
    looks.)"""

    def __init__(self, metrics: dict[str, float], questions: int, incomplete: list[str], absent_types: list[str], unknown_types: list[str]):
        self.metrics = metrics
        self.questions = questions
        #: "<question> (<type>): tries [...]" for questions without exactly one answer for each try 0-3
        self.incomplete = incomplete
        #: reported type names without any question (their type, category and overall scores are NaN)
        self.absent_types = absent_types
        #: annotation types that are none of the 9 (counted in try_acc only)
        self.unknown_types = unknown_types


def score(records: list[dict]) -> Scores:
    """VNBench's scores of per-sample records (``question``, ``type``, ``try``, ``correct``); see the module docstring.

    A question is right when it has exactly one record for each try 0-3 and all are correct; one with missing or
    repeated tries is wrong. A type without any question scores NaN, and so do its category and ``overall``
    (as the official code, which fails on a partial run, these are defined on all 9 types only)."""
    tries: dict[tuple[str, str], list[tuple[int, bool]]] = defaultdict(list)
    for r in records:
        tries[(r["type"], r["question"])].append((int(r["try"]), bool(r["correct"])))
    right: dict[str, list[bool]] = defaultdict(list)
    incomplete = []
    for (kind, question), answers in tries.items():
        complete = sorted(t for t, _ in answers) == list(TRIES)
        if not complete:
            incomplete.append(f"{question} ({kind}): tries {sorted(t for t, _ in answers)}")
        right[kind].append(complete and all(ok for _, ok in answers))
    metrics: dict[str, float] = {}
    for kind in TYPES:
        values = right.get(kind, [])
        metrics[REPORTED_NAME[kind]] = sum(values) / len(values) if values else math.nan
    for category, kinds in CATEGORIES.items():
        metrics[category] = sum(metrics[k] for k in kinds) / len(kinds)  # NaN when a type is absent
    metrics["overall"] = sum(metrics[c] for c in CATEGORIES) / len(CATEGORIES)
    metrics["try_acc"] = sum(bool(r["correct"]) for r in records) / len(records) if records else math.nan
    return Scores(metrics={m: metrics[m] for m in METRICS}, questions=len(tries), incomplete=sorted(incomplete),
                  absent_types=[REPORTED_NAME[k] for k in TYPES if k not in right],
                  unknown_types=sorted(set(right) - set(TYPES)))


def _warn(scores: Scores) -> None:
    from loguru import logger

    if scores.incomplete:
        logger.warning(f"VNBench: {len(scores.incomplete)} of {scores.questions} questions lack an answer for some of the 4 tries "
                       f"(or have one twice) and count as wrong, e.g. {scores.incomplete[0]} (a --limit run or lost samples)")
    if scores.absent_types:
        logger.warning(f"VNBench: no question of type {scores.absent_types}: their scores, their category's and overall are NaN")
    if scores.unknown_types:
        logger.warning(f"VNBench: unknown question types {scores.unknown_types} are counted in try_acc only")


def _aggregate(metric: str, items: list[dict]) -> float:
    scores = score(items)
    if metric == "overall":  # warn once per run, not once per metric
        _warn(scores)
    return scores.metrics[metric]


def _aggregator(metric: str):
    def aggregate(items):
        return _aggregate(metric, items)

    aggregate.__name__ = aggregate.__qualname__ = f"aggregate_{metric}"
    aggregate.__doc__ = f"lmms-eval aggregation of the ``{metric}`` metric (the YAML's ``!function utils.aggregate_{metric}``)."
    return aggregate


# aggregate_overall, aggregate_ret, ..., aggregate_try_acc: one per metric of the YAML's metric_list
globals().update({f"aggregate_{m}": _aggregator(m) for m in METRICS})
