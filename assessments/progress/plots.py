"""The cohort page's plots: matplotlib (Agg) drawn server-side to inline SVG, no JavaScript.

Each plot is drawn from a few aggregated numbers (queries.cohort_plot_data: SQL over per-learner
and per-assignment counters, never one row per learner), and the SVG is kept per input in a
small LRU: the page reads fresh numbers on every request, and draws only when they changed.
Text stays text in the SVG (svg.fonttype none): small, sharp, searchable, and what the browser
tests read. matplotlib is imported once, when this module is (at service start).
"""

from __future__ import annotations

import functools
import io
import threading

import matplotlib

matplotlib.use("Agg")       # no display on the hub host; must come before anything draws

from matplotlib.figure import Figure  # noqa: E402 - after the backend is chosen
from matplotlib.ticker import MaxNLocator  # noqa: E402

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "academy", "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False, "font.family": "sans-serif"}
BLUE, GREEN, GREY = "#1f6feb", "#1a7f37", "#8c959f"
_draw_lock = threading.Lock()       # rcParams are global: draw one figure at a time


def _svg(fig: Figure, title: str) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Title": title, "Date": None, "Creator": None})
    text = out.getvalue()
    # Inline in the page: drop the XML prologue and DOCTYPE, keep the <svg> element.
    return text[text.index("<svg"):]


@functools.lru_cache(maxsize=256)
def funnel(steps: tuple[tuple[str, int], ...]) -> str:
    """Horizontal bars, one per step of the course (enrolled -> passed), with counts and shares."""
    with _draw_lock, matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 0.42 * len(steps) + 0.8))
        fig.subplots_adjust(left=0.3, right=0.86, top=0.86, bottom=0.08)
        ax = fig.add_subplot()
        labels = [s for s, _ in steps][::-1]
        values = [n for _, n in steps][::-1]
        top = max(values[-1], 1)
        ax.barh(labels, values, color=[GREEN] + [BLUE] * (len(values) - 1), height=0.6)
        for y, n in enumerate(values):
            ax.text(n + top * 0.01, y, f"{n:,} ({100 * n / top:.0f}%)", va="center")
        ax.set_xlim(0, top * 1.02)
        ax.set_xticks([])
        ax.spines["bottom"].set_visible(False)
        ax.set_title("Completion funnel (learners)", loc="left")
        return _svg(fig, "Completion funnel")


@functools.lru_cache(maxsize=256)
def score_histogram(counts: tuple[int, ...]) -> str:
    """Learners by course score so far (share of the points of their graded assignments), 10% bins."""
    with _draw_lock, matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 2.8))
        fig.subplots_adjust(left=0.1, right=0.98, top=0.86, bottom=0.2)
        ax = fig.add_subplot()
        bins = len(counts)
        ax.bar([i * 100 / bins for i in range(bins)], counts, width=100 / bins, align="edge", color=BLUE,
               edgecolor="white")
        ax.axvline(50, color=GREY, linestyle="--", linewidth=1)
        ax.set_xlim(0, 100)
        ax.set_xlabel("score so far, % of the points of graded assignments (dashed: the pass mark)")
        ax.set_ylabel("learners")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"Score distribution ({sum(counts):,} learners with a grade)", loc="left")
        return _svg(fig, "Score distribution")


@functools.lru_cache(maxsize=256)
def assignment_scores(rows: tuple[tuple[str, float | None, float], ...]) -> str:
    """Per assignment: mean score (% of points) of the graded, and the share of the cohort that submitted."""
    with _draw_lock, matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(max(6.4, 0.3 * len(rows) + 1.5), 3.4))
        fig.subplots_adjust(left=0.1, right=0.98, top=0.84, bottom=0.32)
        ax = fig.add_subplot()
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [m if m is not None else 0 for _, m, _ in rows], width=0.4, color=BLUE,
               label="mean score of the graded, %")
        ax.bar([i + 0.2 for i in x], [s for _, _, s in rows], width=0.4, color=GREY, label="submitted, % of cohort")
        ax.set_xticks(list(x), [a for a, _, _ in rows], rotation=60, ha="right")
        ax.set_ylim(0, 100)
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, ncols=2)
        ax.set_title("Assignments", loc="right")
        return _svg(fig, "Assignments")
