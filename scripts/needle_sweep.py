"""Baseline vs CoS accuracy of the trained demo models over distractor count x frames sampled, as a PNG.

usage: python scripts/needle_sweep.py [--distractors 0,1,2,4,6] [--frames 16,32,64] [--n 100]
                                      [--scorers llava,oracle] [--out assets/needle_sweep.png] [--replot]
(the README's figure: --distractors 0,2,4,6 --frames 16,32,64 --n 100, about 6 minutes on 2 cores)

Per distractor count D, ``--n`` test-split mark-question videos (as ``scripts/demo.sh`` makes them, with D
distractors) are written once under ``--work``; per frame count F each is answered by the same runtime engines the
lmms-eval adapters use (``cos_runtime.engine.build_engine``: ``longva`` uniform and ``cos_longva`` with each scorer),
with the task's own prompt and letter extraction. The JSON beside the PNG holds every cell (accuracy, the paired
difference with its 95 % bootstrap interval, McNemar p, grounding recall/precision, seconds per answer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def make_videos(work: Path, distractors: int, n: int) -> tuple[Path, list[dict]]:
    from cos.synthetic import make_needle_videos

    data = work / f"d{distractors}"
    if not (data / "questions.json").exists():
        make_needle_videos(data, n, seed=0, min_frames=48, max_frames=160, size=64, distractors=distractors, split="test",
                           question="mark", progress=False)
    docs = json.loads((data / "questions.json").read_text())
    if len(docs) != n:
        raise SystemExit(f"{data} holds {len(docs)} videos, not {n}: remove it or pass --n {len(docs)}")
    return data, docs


def answer_all(engine, data: Path, docs: list[dict]) -> list[dict]:
    from cos.grounding import window_grounding
    from cos.pipeline import GenerationOptions
    from cos_lmms_eval.tasks.cos_needle.utils import extract_letter
    from cos_runtime.train_tiny import task_prompt

    gen = GenerationOptions(max_new_tokens=16)
    out = []
    for doc in docs:
        start = time.perf_counter()
        result = engine.answer(str(data / doc["video"]), task_prompt(doc), gen)
        seconds = time.perf_counter() - start
        trace = result.trace
        g = (window_grounding(trace.frame_indices, trace.binary_code, doc["needle_start"], doc["needle_end"])
             if trace.binary_code is not None else None)
        out.append({"right": float(extract_letter(result.text) == doc["answer"]), "seconds": seconds, "grounding": g})
    return out


def summarise(base: list[dict], cos: list[dict]) -> dict:
    from cos_runtime.report import paired_difference

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    stats = paired_difference([r["right"] for r in base], [r["right"] for r in cos])
    return {**stats, "recall": mean([r["grounding"]["recall"] for r in cos if r["grounding"]]),
            "precision": mean([r["grounding"]["precision"] for r in cos if r["grounding"]]),
            "seconds_baseline": mean([r["seconds"] for r in base]), "seconds_cos": mean([r["seconds"] for r in cos])}


def plot(cells: list[dict], frames: list[int], scorers: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(4.2 * len(frames), 3.4), sharey=True, squeeze=False)
    styles = {"llava": ("#2a9a44", "CoS, trained scorer"), "oracle": ("#3a78b5", "CoS, oracle scorer")}
    for ax, f in zip(axes[0], frames):
        rows = [c for c in cells if c["frames"] == f]
        ds = sorted({c["distractors"] for c in rows})
        first = [next(c for c in rows if c["distractors"] == d and c["scorer"] == scorers[0]) for d in ds]
        ax.plot(ds, [c["acc_a"] for c in first], "o--", color="#777777", label="baseline (uniform frames)")
        for s in scorers:
            pick = [next(c for c in rows if c["distractors"] == d and c["scorer"] == s) for d in ds]
            color, label = styles.get(s, ("#cc3333", f"CoS, {s} scorer"))
            acc = [c["acc_b"] for c in pick]
            ax.plot(ds, acc, "o-", color=color, label=label)
            ax.fill_between(ds, [a - c["difference"] + c["low"] for a, c in zip(acc, pick)],
                            [a - c["difference"] + c["high"] for a, c in zip(acc, pick)], color=color, alpha=0.12, lw=0)
        ax.axhline(0.25, color="#bbbbbb", lw=0.8, ls=":")
        ax.set_title(f"{f} frames sampled")
        ax.set_xlabel("distractors per video")
        ax.set_xticks(ds)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(f"accuracy (n = {cells[0]['n']} per point)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Trained demo models on the needle task (test split): shaded = baseline + 95% paired interval of the CoS gain",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--distractors", type=ints, default=[0, 1, 2, 4, 6])
    p.add_argument("--frames", type=ints, default=[16, 32, 64])
    p.add_argument("--n", type=int, default=100, help="videos per distractor count")
    p.add_argument("--scorers", default="llava,oracle", help="CoS scorers to compare (llava: the trained one; oracle)")
    p.add_argument("--longva", default=str(REPO / "assets/needle-longva"))
    p.add_argument("--llava", default=str(REPO / "assets/needle-llava"))
    p.add_argument("--work", default=str(REPO / ".cache/needle-sweep"), help="where the test videos are written")
    p.add_argument("--out", default=str(REPO / "assets/needle_sweep.png"))
    p.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON beside it (no evaluation)")
    args = p.parse_args(argv)
    scorers = [s for s in args.scorers.split(",") if s]
    if args.replot:
        cells = json.loads(Path(args.out).with_suffix(".json").read_text())
        plot(cells, sorted({c["frames"] for c in cells}), sorted({c["scorer"] for c in cells}, key=scorers.index), Path(args.out))
        return 0
    from tqdm import tqdm

    from cos_runtime.engine import build_engine

    work = Path(args.work)
    cells = []
    sets = {d: make_videos(work, d, args.n) for d in args.distractors}
    todo = [(f, d) for f in args.frames for d in args.distractors]
    for f, d in tqdm(todo, desc="sweep", unit="cell"):
        data, docs = sets[d]
        common = {"pretrained": args.longva, "max_frames_num": f, "video_decode_backend": "decord", "prefetch": 0,
                  "result_cache_dir": "none", "score_cache_dir": "none"}
        base = answer_all(build_engine("longva", "uniform", common), data, docs)
        for s in scorers:
            extra = {"scorer": s, "shot_size": 4, "alpha": "auto"}
            if s == "llava":
                extra.update(scorer_pretrained=args.llava, score_mode="logits", score_threshold=0.5)
            if s == "oracle":
                extra.update(scorer_truth=str(data / "questions.json"))
            cos = answer_all(build_engine("longva", "cos", {**common, **extra}), data, docs)
            cells.append({"frames": f, "distractors": d, "scorer": s, **summarise(base, cos)})
            c = cells[-1]
            tqdm.write(f"F={f:3d} D={d} {s:7s} baseline {c['acc_a']:.3f} CoS {c['acc_b']:.3f} "
                       f"diff {c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] recall {c['recall']} precision {c['precision']}")
    out = Path(args.out)
    plot(cells, args.frames, scorers, out)
    out.with_suffix(".json").write_text(json.dumps(cells, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
