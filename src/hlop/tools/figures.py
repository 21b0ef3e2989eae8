"""The figures of ``hlop report`` (:mod:`hlop.tools.report`): a run's accuracy matrices,
curves and forgetting, its circuit diagnostics, and a study's metrics per method.

Each ``plot_*`` function draws with matplotlib on the Agg canvas (no pyplot, no global
backend state), writes a PNG and returns its figure.  The matrix's colours and the curves'
axis span the accuracies (:func:`accuracy_range`), so that a run whose accuracies all lie
within a few points is not one flat band.  A run's matrix is its task-aware one
(:data:`AWARE`) or, where it has one, its task-agnostic one (:data:`AGNOSTIC`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from hlop.errors import ReportError
from hlop.loop.metrics import forgetting

DPI = 100
INSTALL = "pip install 'hlop[plot]' (or pip install matplotlib)"
#: results.json's matrices: task-aware (always), task-agnostic (a head per task)
AWARE, AGNOSTIC = "acc_matrix", "acc_matrix_agnostic"


def figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas (no pyplot, no global backend state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(f"hlop report draws its figures with matplotlib: {INSTALL}") from None
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path):
    """Write ``fig`` to ``path`` (PNG); returns ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return fig


def matrix_of(res: dict, key: str = AWARE) -> list[list[float | None]]:
    """The run's task-aware matrix (``key`` :data:`AWARE`) or task-agnostic one
    (:data:`AGNOSTIC`; empty where the run has none)."""
    return [list(row) for row in res.get(key) or []]


def _kind(key: str) -> str:
    return "task-agnostic " if key == AGNOSTIC else ""


def step_labels(res: dict, rows: int) -> list[str]:
    if rows == 1 and res.get("bwt") is None and res.get("tasks_completed", 1) > 1:
        return ["joint"]
    return [f"T{i}" for i in range(rows)]


def accuracy_range(values: Iterable[float | None]) -> tuple[float, float]:
    """The colour and axis range of accuracies (percent): the values' own, widened by a tenth
    of their spread (at least half a point) each side and rounded out to whole points,
    within 0-100; 0-100 when they spread over half of it or more (or there are none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or max(finite) - min(finite) >= 50:
        return 0.0, 100.0
    lo, hi = min(finite), max(finite)
    margin = max(0.1 * (hi - lo), 0.5)
    return max(0.0, float(math.floor(lo - margin))), min(100.0, float(math.ceil(hi + margin)))


def run_forgetting(res: dict, key: str = AWARE) -> list[float]:
    """Each task's forgetting (:func:`hlop.loop.metrics.forgetting`) of the run's matrix
    ``key``: tasks 0..n-2; empty for joint training, one task, or a matrix that is not one
    task a step."""
    a = matrix_of(res, key)
    try:
        return forgetting(a, res.get("tasks_completed", len(a))) if a else []
    except (ValueError, TypeError):  # rows missing values
        return []


def plot_matrix(res: dict, path: Path, key: str = AWARE):
    """The accuracy matrix ``key`` as an image (row i: after step i, column j: task j),
    annotated, colours over :func:`accuracy_range`."""
    a = matrix_of(res, key)
    rows, cols = len(a), max(len(r) for r in a)
    values = [[math.nan if v is None else v for v in r + [None] * (cols - len(r))] for r in a]
    lo, hi = accuracy_range(v for r in a for v in r)
    fig = figure(min(3.6 + 0.55 * cols, 10), min(1.6 + 0.45 * rows, 8))
    ax = fig.add_subplot()
    im = ax.imshow(values, vmin=lo, vmax=hi, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    if cols <= 20:
        size = 8 if cols <= 10 else 6
        for i, r in enumerate(values):
            for j, v in enumerate(r):
                if not math.isnan(v):
                    color = "black" if v > lo + 0.6 * (hi - lo) else "white"  # on viridis
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=size, color=color)
    ax.set_xticks(range(cols), [f"T{j}" for j in range(cols)], fontsize=8)
    ax.set_yticks(range(rows), step_labels(res, rows), fontsize=8)
    ax.set_xlabel("accuracy on task")
    ax.set_ylabel("after training step")
    title = f"{res.get('benchmark', '')}, {res.get('method', '')}"
    ax.set_title(title + (", task-agnostic" if key == AGNOSTIC else ""), fontsize=9)
    return save(fig, path)


def plot_curves(res: dict, path: Path, key: str = AWARE):
    """A line per task: its accuracy (of the matrix ``key``) after each step from the one that
    learnt it; y axis over :func:`accuracy_range`."""
    a = matrix_of(res, key)
    cols = max(len(r) for r in a)
    fig = figure(6, 3.6)
    ax = fig.add_subplot()
    for j in range(cols):
        steps = [i for i, r in enumerate(a) if j < len(r) and r[j] is not None]
        ax.plot(steps, [a[i][j] for i in steps], marker="o", markersize=3, label=f"T{j}")
    ax.set_xticks(range(len(a)), step_labels(res, len(a)), fontsize=8)
    ax.set_xlabel("after training step")
    ax.set_ylabel(f"{_kind(key)}accuracy (%)")
    ax.set_ylim(*accuracy_range(v for r in a for v in r))
    ax.grid(alpha=0.3)
    ax.set_title(f"each task's {_kind(key)}accuracy after every later step")
    if cols <= 10:
        ax.legend(fontsize=7, ncol=2, loc="best")
    return save(fig, path)


def plot_forgetting(res: dict, path: Path):
    """A bar per task but the last: its forgetting (:func:`run_forgetting`), in points."""
    values = run_forgetting(res)
    fig = figure(min(4.0 + 0.4 * len(values), 10), 3.2)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(values)), values, color="tab:red", alpha=0.8)
    if len(values) <= 20:
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(values)), [f"T{j}" for j in range(len(values))], fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.margins(y=0.15)  # room for the labels
    ax.set_xlabel("task")
    ax.set_ylabel("forgetting (points)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("forgetting: best earlier accuracy - last accuracy", fontsize=9)
    return save(fig, path)


def _layers(diagnostics: list[dict]) -> list[str]:
    return list(dict.fromkeys(name for e in diagnostics for name in e.get("layers", {})))


def plot_circuits(res: dict, path: Path):
    diag = res["circuit_diagnostics"]
    layers = _layers(diag)
    fig = figure(min(3.2 * len(layers), 12), 5)
    for c, name in enumerate(layers):
        points = [(e["task"], e["layers"][name]) for e in diag if name in e["layers"]]
        tasks = [t for t, _ in points]
        top = fig.add_subplot(2, len(layers), c + 1)
        for key, style in (("captured", "o-"), ("optimal", "s--")):
            ys = [math.nan if d[key] is None else d[key] for _, d in points]
            top.plot(tasks, ys, style, markersize=3, label=key)
        top.set_ylim(0, 1.02)
        top.set_title(f"{name} ({points[-1][1]['rows']} rows)", fontsize=9)
        top.set_ylabel("energy fraction" if c == 0 else "")
        top.grid(alpha=0.3)
        if c == 0:
            top.legend(fontsize=7, loc="lower right")
        bottom = fig.add_subplot(2, len(layers), len(layers) + c + 1)
        errors = [max(d["orthonormality_error"], 1e-16) for _, d in points]
        bottom.semilogy(tasks, errors, "o-", markersize=3, color="tab:red")
        bottom.set_xlabel("after task")
        bottom.set_ylabel("max |HH^T - I|" if c == 0 else "")
        bottom.grid(alpha=0.3)
        for ax in (top, bottom):
            ax.set_xticks(tasks)
    fig.suptitle("circuits: old subspace's share of the finished task's activity", fontsize=10)
    return save(fig, path)


def has_agnostic(rows: list[dict]) -> bool:
    """Whether a method of the study has task-agnostic figures."""
    return any(r.get("acc_agnostic_mean") is not None for r in rows)


def plot_methods(rows: list[dict], path: Path, title: str):
    """ACC and BWT per method (bars: mean, error bars: sample std), and the task-agnostic ACC
    and BWT beside them where a method has them."""
    panels = [("acc", "ACC (%)"), ("bwt", "BWT (%)")]
    if has_agnostic(rows):
        panels += [
            ("acc_agnostic", "task-agnostic ACC (%)"),
            ("bwt_agnostic", "task-agnostic BWT (%)"),
        ]
    fig = figure(min(2.5 + 1.1 * len(rows), 12) * len(panels) / 2, 3.4)
    names = [r["method"] for r in rows]
    for c, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), c + 1)
        means = [r.get(f"{key}_mean") for r in rows]
        errors = [r.get(f"{key}_std") or 0.0 for r in rows]
        heights = [0.0 if m is None else m for m in means]
        ax.bar(range(len(rows)), heights, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        for i, m in enumerate(means):
            if m is None:
                ax.text(i, 0, "n.a.", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: mean ± sample std over seeds", fontsize=10)
    return save(fig, path)
