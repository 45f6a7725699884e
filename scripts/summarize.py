"""Print one table for an lmms-eval output folder: per model, accuracy, grounding, time per sample.

usage: python scripts/summarize.py LOG_DIR
Reads ``*_results.json`` (lmms-eval) and the per-sample traces under ``LOG_DIR/traces/<run>/``.
Exits 1 when the folder has no results (so scripts never report success on an empty run).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(log_dir: str) -> int:
    root = Path(log_dir)
    results = sorted(root.rglob("*_results.json"))
    if not results:
        print(f"no results under {root}", file=sys.stderr)
        return 1
    rows = []
    for path in results:
        data = json.loads(path.read_text())
        model = data["config"]["model"]
        args = data["config"].get("model_args", "")
        trace_dir = dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv).get("trace_dir")
        times, errors = [], 0
        if trace_dir and Path(trace_dir).is_dir():
            for trace in Path(trace_dir).glob("*/*.json"):
                times.append(json.loads(trace.read_text())["timings"].get("total", float("nan")))
            err_file = Path(trace_dir) / "errors.jsonl"
            errors = len(err_file.read_text().splitlines()) if err_file.exists() else 0
        for task, metrics in data["results"].items():
            acc = metrics.get("needle_acc,none", metrics.get("acc,none"))
            grounding = metrics.get("needle_grounding,none")
            n = data.get("n-samples", {}).get(task, {}).get("effective", "?")
            rows.append((model, task, n, acc, grounding, statistics.median(times) if times else None, errors, trace_dir))

    def fmt(x, spec=".3f"):
        return "n/a" if x is None or (isinstance(x, float) and x != x) else format(x, spec)

    print(f"\n{'model':12s} {'task':12s} {'n':>3s} {'accuracy':>9s} {'grounding':>10s} {'s/sample':>9s} {'failed':>6s}")
    for model, task, n, acc, grounding, t, errors, _ in rows:
        print(f"{model:12s} {task:12s} {n!s:>3s} {fmt(acc):>9s} {fmt(grounding):>10s} {fmt(t, '.2f'):>9s} {errors:>6d}")
    print(f"\nresults files: {', '.join(str(p) for p in results)}")
    for model, *_, trace_dir in rows:
        print(f"traces ({model}): {trace_dir}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
