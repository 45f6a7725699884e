"""Draw the CoS pipeline as a small PNG: sample → shots → score → ground → compose → co-reason.

usage: python scripts/make_pipeline_figure.py [OUT]   (default: assets/pipeline.png)

A toy example with 16 sampled frames, shots of k = 4 frames (2×2 mosaics), two of four shots scored
"yes"; the picture is drawn with matplotlib (Agg) and saved as a palette PNG (small, < 150 KB).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N, K = 16, 4
DECISIONS = [0, 1, 1, 0]  # per shot
CODE = [d for d in DECISIONS for _ in range(K)]
GREEN, RED, GREY, ORANGE, BLUE = "#2a9a44", "#cc3333", "#9a9a9a", "#f0a040", "#3a78b5"
FRAME_COLOURS = plt.get_cmap("viridis")([i / (N - 1) for i in range(N)])
FIG_W, FIG_H = 12.0, 2.9
ASPECT = FIG_W / FIG_H  # one axes unit of width is this many units of height, in inches


def _nearest(targets, i):
    after = [t for t in targets if t > i]
    before = [t for t in targets if t < i]
    return after[0] if after else before[-1] if before else -1


def _maps():
    rel = [i for i in range(N) if CODE[i]]
    irr = [i for i in range(N) if not CODE[i]]
    pos = [i if CODE[i] or not rel else _nearest(rel, i) for i in range(N)]
    neg = [i if not CODE[i] else _nearest(irr, i) for i in range(N)]
    return pos, neg


def _frames_row(ax, x0, y0, width, order, marks=None, h=0.09):
    """One frame per cell (black for -1); ``marks``: a colour per cell for a small bar under it (or None)."""
    w = width / N
    for col, j in enumerate(order):
        face = "black" if j < 0 else FRAME_COLOURS[j]
        ax.add_patch(Rectangle((x0 + col * w, y0), w * 0.82, h, facecolor=face, edgecolor="none"))
        if marks and marks[col]:
            ax.add_patch(Rectangle((x0 + col * w, y0 - 0.022), w * 0.82, 0.014, facecolor=marks[col], edgecolor="none"))


def _mosaic(ax, x, y, side, first):
    """A 2×2 mosaic of frames first..first+3, ``side`` wide (axes x units), bottom-left at (x, y)."""
    half = side / 2
    for q in range(K):
        ax.add_patch(Rectangle((x + (q % 2) * half, y + (1 - q // 2) * half * ASPECT), half * 0.93, half * ASPECT * 0.93,
                               facecolor=FRAME_COLOURS[first + q], edgecolor="none"))


def _panel(ax, x, title, subtitle, width=0.145):
    ax.add_patch(FancyBboxPatch((x, 0.03), width, 0.9, boxstyle="round,pad=0.004,rounding_size=0.015",
                                facecolor="#f6f6f6", edgecolor="#bbbbbb", linewidth=1))
    ax.text(x + width / 2, 0.86, title, ha="center", va="center", fontsize=11, weight="bold")
    ax.text(x + width / 2, 0.06, subtitle, ha="center", va="bottom", fontsize=7.2, color="#444444", linespacing=1.25)


def draw(out: Path) -> Path:
    fig = plt.figure(figsize=(FIG_W, FIG_H), dpi=90)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    width, gap = 0.142, 0.0244
    xs = [0.012 + i * (width + gap) for i in range(6)]
    pad = 0.01
    inner = width - 2 * pad

    # 1 sample: n frames uniformly
    _panel(ax, xs[0], "1 · sample", "n frames, uniformly\n(np.linspace over the video)")
    ax.add_patch(Rectangle((xs[0] + pad, 0.58), inner, 0.05, facecolor="#dddddd", edgecolor="none"))
    for i in range(N):
        ax.plot([xs[0] + pad + inner * i / (N - 1)] * 2, [0.56, 0.65], color=FRAME_COLOURS[i], linewidth=1.5)
    _frames_row(ax, xs[0] + pad, 0.42, inner, list(range(N)))
    ax.text(xs[0] + width / 2, 0.35, "X (n frames)", ha="center", va="center", fontsize=8.5, weight="bold")

    # 2 shots: k consecutive frames -> one 2x2 mosaic
    _panel(ax, xs[1], "2 · shots", f"k = {K} frames per shot,\none 2×2 mosaic each")
    s = inner / 2 * 0.8
    for g in range(N // K):
        _mosaic(ax, xs[1] + pad + (g % 2) * inner / 2 + inner * 0.05, 0.55 - (g // 2) * 0.27, s, g * K)

    # 3 score: the scorer MLLM answers yes/no per mosaic
    _panel(ax, xs[2], "3 · score", "scorer MLLM per mosaic:\n\"is anything in the question\nin the image?\" yes / no")
    s = inner / 4 * 0.8
    for g, d in enumerate(DECISIONS):
        gx = xs[2] + pad + g * inner / 4 + inner / 8
        _mosaic(ax, gx - s / 2, 0.56, s, g * K)
        ax.text(gx, 0.47, "yes" if d else "no", ha="center", va="center", fontsize=8.5, color="white", weight="bold",
                bbox=dict(boxstyle="round,pad=0.2", facecolor=GREEN if d else RED, edgecolor="none"))

    # 4 ground: binary code over the n frames, alpha
    _panel(ax, xs[3], "4 · ground", "binary code c ∈ {0,1}ⁿ\n(pseudo temporal grounding)\nα = 1 − |relevant| / n")
    _frames_row(ax, xs[3] + pad, 0.62, inner, list(range(N)), marks=[GREEN if c else RED for c in CODE])
    cw = inner / N
    for i, c in enumerate(CODE):
        ax.text(xs[3] + pad + i * cw + cw * 0.41, 0.53, str(c), ha="center", va="center", fontsize=7,
                color=GREEN if c else RED, weight="bold")
    ax.text(xs[3] + width / 2, 0.42, f"α = {1 - sum(CODE) / N:.2f}", ha="center", va="center", fontsize=9)

    # 5 compose: positive and negative videos (index maps over X)
    pos, neg = _maps()
    _panel(ax, xs[4], "5 · compose", "Sp: irrelevant → nearest relevant\nSn: relevant → nearest irrelevant\n(black frame if none)")
    for y, name, order in ((0.66, "X", list(range(N))), (0.52, "Sp", pos), (0.38, "Sn", neg)):
        ax.text(xs[4] + pad + 0.008, y + 0.045, name, ha="center", va="center", fontsize=8, weight="bold")
        _frames_row(ax, xs[4] + pad + 0.02, y, inner - 0.02, order,
                    marks=[(None if o == i else ORANGE) for i, o in enumerate(order)])

    # 6 co-reason: three streams, one token at a time
    _panel(ax, xs[5], "6 · co-reason", "three streams (own KV caches),\ngreedy decoding per token")
    for y, name, colour in ((0.70, "l(y | X, Q)", "#555555"), (0.60, "l(y | Sp, Q)", GREEN), (0.50, "l(y | Sn, Q)", RED)):
        ax.text(xs[5] + width / 2, y, name, ha="center", va="center", fontsize=8.5, color=colour)
    ax.text(xs[5] + width / 2, 0.37, "l(X) + α·(l(Sp) − l(Sn))", ha="center", va="center", fontsize=8.3, weight="bold",
            color=BLUE)

    for a, b in zip(xs, xs[1:]):
        ax.add_patch(FancyArrowPatch((a + width + 0.002, 0.5), (b - 0.002, 0.5), arrowstyle="-|>", mutation_scale=11,
                                     color="#666666", linewidth=1.2))

    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    plt.close(fig)
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    buf.seek(0)
    with Image.open(buf) as im:  # a palette PNG: a flat diagram needs no more than 256 colours
        im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else REPO / "assets" / "pipeline.png"
    path = draw(out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
