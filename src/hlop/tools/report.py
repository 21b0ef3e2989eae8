"""``hlop report PATH...``: figures (PNG) and a markdown summary of runs and studies.

A run directory (``hlop train``: results.json) gets::

    accuracy_matrix.png    the accuracy matrix, annotated (a row per training step)
    accuracy_curves.png    each task's accuracy after every later step
    forgetting.png         each task's forgetting (from two learnt tasks on; not joint training)
    circuits.png           circuit diagnostics per layer over tasks (HLOP, GPM)
    accuracy_matrix_agnostic.png, accuracy_curves_agnostic.png
                           the same of the task-agnostic matrix, where the run has one (a
                           head per task: results.json's ``acc_matrix_agnostic``)
    report.md              status, ACC, BWT, the matrix and diagnostics as tables, the figures
                           (task-agnostic ACC, BWT, forgetting and matrix too, where present)

The figures are drawn by :mod:`hlop.tools.figures`.

A study directory (``hlop compare``: METHOD-sSEED/ runs, summary.csv) gets ``methods.png``
(ACC and BWT per method: mean and sample standard deviation over the completed seeds, from
summary.csv or else from the runs' results.json; the task-agnostic ACC and BWT beside them
where the runs have them) and ``report.md`` (the same with the paper's values, ``~`` marking
approximate ones); each of its runs gets its own report.  Figures need matplotlib
(``pip install 'hlop[plot]'``).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

from hlop.errors import ReportError
from hlop.run.files import read_json_dict
from hlop.tools.figures import (
    AGNOSTIC,
    AWARE,
    figure,
    has_agnostic,
    matrix_of,
    plot_circuits,
    plot_curves,
    plot_forgetting,
    plot_matrix,
    plot_methods,
    run_forgetting,
    step_labels,
)
from hlop.tools.paper import PaperValue, paper_result
from hlop.tools.stats import Stats

RUN_DIR = re.compile(r"^(?P<method>.+)-s(?P<seed>-?\d+)$")


def read_results(run: Path) -> dict | None:
    """A run's results.json; None while the run has written none.  A file that is not a
    results file (not JSON, not an object, an accuracy matrix that is not rows of numbers)
    raises :class:`ReportError` naming it."""
    path = run / "results.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ReportError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise ReportError(
            f"{path} is corrupt: not JSON ({e}); restore it or run the run again "
            "(nothing was written)"
        ) from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} is not a results file: expected a JSON object of keys")

    def accuracy(v) -> bool:
        return v is None or (isinstance(v, int | float) and not isinstance(v, bool))

    for key in (AWARE, AGNOSTIC):
        matrix = data.get(key) or []
        if not (
            isinstance(matrix, list)
            and all(isinstance(row, list) and all(map(accuracy, row)) for row in matrix)
        ):
            shown = repr(matrix)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ReportError(
                f"{path}: {key} must be a list of rows of accuracies (numbers or null), got "
                f"{shown}; nothing was written"
            )
    rows = [len(data.get(key) or []) for key in (AWARE, AGNOSTIC)]
    if data.get(AGNOSTIC) and rows[0] != rows[1]:
        raise ReportError(
            f"{path}: {AGNOSTIC} has {rows[1]} rows but {AWARE} {rows[0]} (a row per training "
            "step in both); nothing was written"
        )
    return data


def is_run(path: Path) -> bool:
    return (path / "results.json").is_file() or (path / "config.json").is_file()


def study_runs(path: Path) -> list[Path]:
    """The run directories of a study (METHOD-sSEED holding a run), sorted."""
    return sorted(p for p in path.iterdir() if p.is_dir() and RUN_DIR.match(p.name) and is_run(p))


# ---------------------------------------------------------------------- one run
def _fmt(v: float | None, digits: int = 2, unit: str = "") -> str:
    return "n.a." if v is None else f"{v:.{digits}f}{unit}"


def _markdown_matrix(res: dict, key: str = AWARE) -> list[str]:
    a = matrix_of(res, key)
    cols = max(len(r) for r in a)
    lines = ["| after \\ on | " + " | ".join(f"T{j}" for j in range(cols)) + " |"]
    lines.append("|---" * (cols + 1) + "|")
    for label, r in zip(step_labels(res, len(a)), a, strict=True):
        cells = ["" if v is None else f"{v:.2f}" for v in r + [None] * (cols - len(r))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _markdown_diagnostics(diag: list[dict]) -> list[str]:
    lines = [
        "| after task | layer | rows | old rows | max abs(HH^T - I) | captured | optimal |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in diag:
        for name, d in e["layers"].items():
            lines.append(
                f"| {e['task']} | {name} | {d['rows']} | {d['old_rows']} | "
                f"{d['orthonormality_error']:.2e} | {_fmt(d['captured'], 4)} | "
                f"{_fmt(d['optimal'], 4)} |"
            )
    seconds = sum(e.get("seconds", 0) for e in diag)
    lines += [
        "",
        f"Measured on {diag[-1].get('samples', '?')} training samples of each finished task "
        f"({seconds:.1f} s in all). captured: the share of the task's activity energy in the "
        "circuit's subspace; optimal: the most any subspace of as many dimensions holds (SVD).",
    ]
    return lines


def report_run(path: Path) -> Path:
    """Figures and report.md of one run directory; returns report.md's path."""
    res = read_results(path)
    saved = read_json_dict(path / "config.json") or {}
    title = f"{saved.get('benchmark', '?')}, {saved.get('method', '?')}"
    if res is None:
        lines = [f"# {title}", "", "No results yet: the run has not finished a task."]
        (path / "report.md").write_text("\n".join(lines) + "\n")
        return path / "report.md"
    status = res.get("status", "?")
    title = f"{res.get('benchmark', '?')}, {res.get('method', '?')}"
    n_tasks = len(res.get("task_names") or []) or "?"
    lines = [
        f"# {title} ({status})",
        "",
        f"Tasks learnt: {res.get('tasks_completed', 0)} of {n_tasks}; accuracies on the "
        f"{res.get('evaluated_on', 'test')} data.",
    ]
    if status != "complete":
        lines.append(f"The run is {status if status != 'running' else 'unfinished'}: "
                     "what follows covers the tasks it finished.")  # fmt: skip
    if not matrix_of(res):
        lines += ["", "No task finished: nothing to plot."]
        (path / "report.md").write_text("\n".join(lines) + "\n")
        return path / "report.md"
    bwt = res.get("bwt")
    bwt_text = "n.a. (joint training)" if bwt is None else _fmt(bwt, unit="%")
    lines += ["", f"ACC {_fmt(res.get('acc'), unit='%')}, BWT {bwt_text}."]
    forgotten = run_forgetting(res)
    if forgotten:
        lines.append("Forgetting per task (%): " + ", ".join(f"{f:.2f}" for f in forgotten))
    agnostic = bool(matrix_of(res, AGNOSTIC))
    if agnostic:
        bwt = res.get("bwt_agnostic")
        lines.append(
            f"Task-agnostic (class-incremental: the argmax over every seen task's head; the "
            f"figures above: each task's own head) ACC {_fmt(res.get('acc_agnostic'), unit='%')}"
            f", BWT {'n.a. (joint training)' if bwt is None else _fmt(bwt, unit='%')}."
        )
        forgotten_agnostic = run_forgetting(res, AGNOSTIC)
        if forgotten_agnostic:
            lines.append(
                "Task-agnostic forgetting per task (%): "
                + ", ".join(f"{f:.2f}" for f in forgotten_agnostic)
            )
    blocks = res.get("circuit_blocks") or []
    if blocks:
        rows = "; ".join(f"task {k}: {', '.join(map(str, b))}" for k, b in enumerate(blocks))
        total = [sum(col) for col in zip(*blocks, strict=True)]
        lines.append(f"Lateral neurons added per circuit: {rows} (in all: {total}).")
    plot_matrix(res, path / "accuracy_matrix.png")
    plot_curves(res, path / "accuracy_curves.png")
    lines += [
        "",
        "![accuracy matrix](accuracy_matrix.png)",
        "",
        "![accuracy of each task over training](accuracy_curves.png)",
        "",
    ]
    if forgotten:
        plot_forgetting(res, path / "forgetting.png")
        lines += ["![forgetting per task](forgetting.png)", ""]
    if agnostic:
        plot_matrix(res, path / "accuracy_matrix_agnostic.png", AGNOSTIC)
        plot_curves(res, path / "accuracy_curves_agnostic.png", AGNOSTIC)
        lines += [
            "![task-agnostic accuracy matrix](accuracy_matrix_agnostic.png)",
            "",
            "![task-agnostic accuracy of each task over training](accuracy_curves_agnostic.png)",
            "",
        ]
    lines += [
        "## Accuracy matrix (%)",
        "",
        *_markdown_matrix(res),
    ]
    if agnostic:
        lines += ["", "## Task-agnostic accuracy matrix (%)", "", *_markdown_matrix(res, AGNOSTIC)]
    diag = res.get("circuit_diagnostics") or []
    if diag:
        plot_circuits(res, path / "circuits.png")
        lines += ["", "## Circuits", "", "![circuit diagnostics](circuits.png)", ""]
        lines += _markdown_diagnostics(diag)
    (path / "report.md").write_text("\n".join(lines) + "\n")
    return path / "report.md"


# ---------------------------------------------------------------------- a study
def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


#: the metrics of a study's rows: ACC and BWT, task-aware and task-agnostic
METRICS = ("acc", "bwt", "acc_agnostic", "bwt_agnostic")


def method_rows(path: Path, runs: list[Path]) -> list[dict]:
    """Per method: completed, failed, the mean and std of each of :data:`METRICS` (None
    where not defined, or the runs have no task-agnostic matrix), from summary.csv when the
    study has one, else from its runs' results.json."""
    summary = path / "summary.csv"
    stats = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    if summary.is_file():
        with summary.open(newline="") as f:
            return [
                {
                    "method": r["method"],
                    "completed": int(r.get("seeds_completed") or 0),
                    "failed": int(r.get("seeds_failed") or 0),
                    **{k: _float(r.get(k)) for k in stats},
                }
                for r in csv.DictReader(f)
            ]
    by_method: dict[str, list[dict | None]] = {}
    for run in runs:
        res = read_results(run)
        done = res if res and res.get("status") == "complete" else None
        by_method.setdefault(RUN_DIR.match(run.name)["method"], []).append(done)
    rows = []
    for method, results in by_method.items():
        done = [r for r in results if r is not None]
        row = {"method": method, "completed": len(done), "failed": len(results) - len(done)}
        for m in METRICS:
            values = Stats.of([r[m] for r in done if r.get(m) is not None])
            row[f"{m}_mean"] = values.mean if values else None
            row[f"{m}_std"] = values.std if values else None
        rows.append(row)
    return rows


def _mean_std(mean: float | None, std: float | None) -> str:
    return _fmt(mean) + ("" if mean is None or std is None else f" ± {std:.2f}")


def _paper(v: PaperValue | None) -> str:
    return "n.a." if v is None else str(v)  # "~" marks an approximate value


def report_study(path: Path, log: Callable[[str], None] = print) -> Path:
    """methods.png and report.md of a study; a report in each of its runs."""
    runs = study_runs(path)
    rows = method_rows(path, runs)
    benchmark, replaying = "?", set()
    for run in runs:
        saved = read_json_dict(run / "config.json") or {}
        if benchmark == "?":
            benchmark = saved.get("benchmark", "?")
        if (saved.get("replay") or {}).get("enabled"):
            replaying.add(RUN_DIR.match(run.name)["method"])
    paper = {r["method"]: paper_result(benchmark, r["method"], r["method"] in replaying)
             for r in rows}  # fmt: skip
    lines = [f"# {benchmark}: study of {len(rows)} methods", ""]
    if any(r["acc_mean"] is not None for r in rows):
        plot_methods(rows, path / "methods.png", benchmark)
        lines += ["![ACC and BWT per method](methods.png)", ""]
    agnostic = has_agnostic(rows)
    shown = METRICS if agnostic else METRICS[:2]
    columns = ["method", "seeds ok/failed", "ACC (%)", "BWT (%)"]
    columns += ["agnostic ACC (%)", "agnostic BWT (%)"] if agnostic else []
    lines += [
        "| " + " | ".join([*columns, "paper ACC", "paper BWT"]) + " |",
        "|" + "---|" * (len(columns) + 2),
        *(
            f"| {r['method']} | {r['completed']}/{r['failed']} | "
            + "".join(f"{_mean_std(r.get(f'{m}_mean'), r.get(f'{m}_std'))} | " for m in shown)
            + f"{_paper(paper[r['method']][0])} | {_paper(paper[r['method']][1])} |"
            for r in rows
        ),
        "",
        (
            "Agnostic ACC and BWT: task-agnostic (class-incremental), the argmax over the "
            "scores of every seen task's head; ACC and BWT: each task through its own head. "
            if agnostic
            else ""
        )
        + "Mean ± sample standard deviation over the completed seeds (n.a.: undefined, e.g. "
        "BWT of joint training, or the std of one seed)"
        + (", from summary.csv." if (path / "summary.csv").is_file() else ".")
        + " Paper values: ~ marks an approximate value (not read from the paper's table); "
        "n.a.: the paper gives none"
        + (
            f"; runs of {', '.join(sorted(replaying))} replay memory: the paper's memory "
            "replay is the baseline's row."
            if replaying
            else "."
        ),
        "",
        "## Runs",
        "",
    ]
    for run in runs:
        report_run(run)
        res = read_results(run) or {}
        status = res.get("status", "not started")
        lines.append(f"- [{run.name}]({run.name}/report.md): {status}")
    (path / "report.md").write_text("\n".join(lines) + "\n")
    return path / "report.md"


def report(paths: list[str | Path], log: Callable[[str], None] = print) -> list[Path]:
    """Report every path (a run or a study directory); returns the report.md files."""
    targets = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ReportError(f"{p}: no such directory (pass a run or a study directory)")
        if is_run(p):
            targets.append((p, "run"))
            read_results(p)  # a corrupt file is refused before anything is written
        elif (p / "summary.csv").is_file() or study_runs(p):
            targets.append((p, "study"))
            for run in study_runs(p):
                read_results(run)
        else:
            raise ReportError(
                f"{p} holds neither a run (results.json, config.json) nor a study "
                "(summary.csv, METHOD-sSEED/ runs)"
            )
    figure(1, 1)  # matplotlib is there, before anything is written
    written = []
    for p, kind in targets:
        out = report_run(p) if kind == "run" else report_study(p, log)
        log(f"{kind} {p}: {out}")
        written.append(out)
    return written
