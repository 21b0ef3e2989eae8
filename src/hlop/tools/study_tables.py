"""The summary of an ``hlop compare`` study, written in its ``--out-dir``::

    summary.csv   per method: ACC and BWT (mean, sample std, 95% t-interval), wall
                  time per run, seeds completed / failed, the paper's values
    summary.md    the same as a markdown table, then one line per run

Where the runs record the task-agnostic (class-incremental) matrix (a head per task:
results.json's ``acc_agnostic``, ``bwt_agnostic``), both files have the same statistics of
its ACC and BWT too: columns ``acc_agnostic_*``, ``bwt_agnostic_*`` in the CSV, "agnostic ACC"
and "agnostic BWT" in the table; a study whose runs share one head (PMNIST) has none.

Each run of the study is a :class:`RunResult`; :func:`summarise_study` gathers them per
method (statistics from :mod:`hlop.tools.stats`, the paper's values from
:mod:`hlop.tools.paper`: its memory-replay row for the baseline when the runs replay
memory).  An approximate paper value is marked: ``~`` in the markdown,
``paper_*_approximate`` True in the CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hlop.run.files import read_json_dict
from hlop.tools.paper import PaperValue, paper_result
from hlop.tools.stats import Stats, mean


@dataclass
class RunResult:
    """One (method, seed) of a study: "complete" or "failed" (with its reason)."""

    method: str
    seed: int
    status: str
    reason: str = ""
    acc: float | None = None
    bwt: float | None = None
    seconds: float | None = None
    kept: bool = False  # completed by an earlier invocation, not retrained
    #: the task-agnostic ACC and BWT (None where the run records no task-agnostic matrix)
    acc_agnostic: float | None = None
    bwt_agnostic: float | None = None


@dataclass
class MethodSummary:
    method: str
    completed: int
    failed: int
    acc: Stats | None
    bwt: Stats | None
    seconds: float | None  # mean wall time per completed run
    paper_acc: PaperValue | None
    paper_bwt: PaperValue | None
    failures: list[str] = field(default_factory=list)  # "seed 2023: reason"
    acc_agnostic: Stats | None = None  # task-agnostic ACC and BWT, where the runs have them
    bwt_agnostic: Stats | None = None

    @property
    def agnostic(self) -> bool:
        """Whether the method's runs recorded the task-agnostic matrix."""
        return self.acc_agnostic is not None


def summarise_study(
    benchmark: str, results: Sequence[RunResult], replaying: Collection[str] = ()
) -> list[MethodSummary]:
    """One summary per method, in the order the methods first appear; ``replaying``: the
    methods whose runs replay memory (``--replay``)."""
    methods = list(dict.fromkeys(r.method for r in results))
    rows = []
    for m in methods:
        runs = [r for r in results if r.method == m]
        done = [r for r in runs if r.status == "complete"]
        seconds = [r.seconds for r in done if r.seconds is not None]
        paper_acc, paper_bwt = paper_result(benchmark, m, replay=m in replaying)
        rows.append(
            MethodSummary(
                method=m,
                completed=len(done),
                failed=len(runs) - len(done),
                acc=Stats.of([r.acc for r in done if r.acc is not None]),
                bwt=Stats.of([r.bwt for r in done if r.bwt is not None]),
                seconds=mean(seconds) if seconds else None,
                paper_acc=paper_acc,
                paper_bwt=paper_bwt,
                failures=[f"seed {r.seed}: {r.reason}" for r in runs if r.status != "complete"],
                acc_agnostic=Stats.of([r.acc_agnostic for r in done if r.acc_agnostic is not None]),
                bwt_agnostic=Stats.of([r.bwt_agnostic for r in done if r.bwt_agnostic is not None]),
            )
        )
    return rows


def _num(v: float | None, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _mean_std(s: Stats | None) -> str:
    if s is None:
        return "n.a."
    return _num(s.mean) + ("" if s.std is None else f" ± {s.std:.2f}")


def _ci(s: Stats | None) -> str:
    return "n.a." if s is None or s.ci is None else f"[{s.ci[0]:.2f}, {s.ci[1]:.2f}]"


def _notes(row: MethodSummary) -> str:
    if row.completed == 0:
        reasons = list(dict.fromkeys(f.split(": ", 1)[1] for f in row.failures))
        return "failed: " + "; ".join(reasons)
    return "; ".join(f"failed {f}" for f in row.failures)


def markdown_table(benchmark: str, rows: Sequence[MethodSummary]) -> str:
    """The summary table; task-agnostic columns where a method's runs have them."""
    agnostic = any(r.agnostic for r in rows)
    columns = ["method", "seeds ok/failed", "ACC (%)", "ACC 95% CI", "BWT (%)", "BWT 95% CI"]
    if agnostic:
        columns += ["agnostic ACC (%)", "agnostic ACC 95% CI"]
        columns += ["agnostic BWT (%)", "agnostic BWT 95% CI"]
    columns += ["wall s/run", "paper ACC", "paper BWT", "notes"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [
            r.method,
            f"{r.completed}/{r.failed}",
            _mean_std(r.acc),
            _ci(r.acc),
            _mean_std(r.bwt),
            _ci(r.bwt),
        ]
        if agnostic:
            cells += [_mean_std(r.acc_agnostic), _ci(r.acc_agnostic)]
            cells += [_mean_std(r.bwt_agnostic), _ci(r.bwt_agnostic)]
        cells += [
            _num(r.seconds, 1) or "n.a.",
            str(r.paper_acc) if r.paper_acc else "n.a.",
            str(r.paper_bwt) if r.paper_bwt else "n.a.",
            _notes(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


CSV_FIELDS = (
    "method", "seeds_completed", "seeds_failed",
    "acc_mean", "acc_std", "acc_ci95_low", "acc_ci95_high",
    "bwt_mean", "bwt_std", "bwt_ci95_low", "bwt_ci95_high",
    "wall_s_mean", "paper_acc", "paper_acc_approximate", "paper_bwt", "paper_bwt_approximate",
    "failures",
)  # fmt: skip
#: the task-agnostic columns, after ``bwt_ci95_high`` where a method's runs have them
AGNOSTIC_FIELDS = tuple(
    f"{metric}_agnostic_{stat}"
    for metric in ("acc", "bwt")
    for stat in ("mean", "std", "ci95_low", "ci95_high")
)


def csv_fields(rows: Sequence[MethodSummary]) -> tuple[str, ...]:
    """summary.csv's columns: :data:`CSV_FIELDS`, with :data:`AGNOSTIC_FIELDS` where a
    method's runs recorded the task-agnostic matrix."""
    if not any(r.agnostic for r in rows):
        return CSV_FIELDS
    at = CSV_FIELDS.index("bwt_ci95_high") + 1
    return CSV_FIELDS[:at] + AGNOSTIC_FIELDS + CSV_FIELDS[at:]


def _csv_row(r: MethodSummary) -> dict:
    def stats(s: Stats | None, name: str) -> dict:
        ci = s.ci if s and s.ci else (None, None)
        return {
            f"{name}_mean": _num(s.mean, 4) if s else "",
            f"{name}_std": _num(s.std, 4) if s else "",
            f"{name}_ci95_low": _num(ci[0], 4),
            f"{name}_ci95_high": _num(ci[1], 4),
        }

    def paper(v: PaperValue | None, name: str) -> dict:
        return {
            name: "" if v is None else v.value,
            f"{name}_approximate": bool(v and v.approximate),
        }

    return {
        "method": r.method,
        "seeds_completed": r.completed,
        "seeds_failed": r.failed,
        **stats(r.acc, "acc"),
        **stats(r.bwt, "bwt"),
        **stats(r.acc_agnostic, "acc_agnostic"),
        **stats(r.bwt_agnostic, "bwt_agnostic"),
        "wall_s_mean": _num(r.seconds, 1),
        **paper(r.paper_acc, "paper_acc"),
        **paper(r.paper_bwt, "paper_bwt"),
        "failures": "; ".join(r.failures),
    }


def replaying_methods(out_dir: str | Path, results: Sequence[RunResult]) -> set[str]:
    """The methods with a run in ``out_dir`` that replays memory (its config.json)."""
    methods = set()
    for r in results:
        saved = read_json_dict(Path(out_dir) / f"{r.method}-s{r.seed}" / "config.json")  # run_dir
        if saved and (saved.get("replay") or {}).get("enabled"):
            methods.add(r.method)
    return methods


def write_summary(out_dir: str | Path, benchmark: str, results: Sequence[RunResult]) -> str:
    """Write summary.csv and summary.md in ``out_dir``; returns the markdown table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    replaying = replaying_methods(out_dir, results)
    rows = summarise_study(benchmark, results, replaying)
    fields = csv_fields(rows)
    with (out_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in rows)
    table = markdown_table(benchmark, rows)
    runs = [
        f"- {r.method}, seed {r.seed}: "
        + (
            f"ACC {_num(r.acc)}, BWT {_num(r.bwt) or 'n.a.'}, "
            + (
                f"task-agnostic ACC {_num(r.acc_agnostic)}, BWT {_num(r.bwt_agnostic) or 'n.a.'}, "
                if r.acc_agnostic is not None
                else ""
            )
            + f"{_num(r.seconds, 1)} s"
            + (" (kept from an earlier invocation)" if r.kept else "")
            if r.status == "complete"
            else f"failed: {r.reason}"
        )
        for r in results
    ]
    text = "\n".join(
        [
            f"# {benchmark}: methods compared",
            "",
            table,
            "",
            "ACC and BWT: mean ± sample standard deviation over the completed seeds; 95% CI: "
            "Student t interval of the mean (n - 1 degrees of freedom, 3 or more seeds). "
            + (
                "Agnostic ACC and BWT: task-agnostic (class-incremental), the argmax over "
                "the scores of every seen task's head; ACC and BWT: task-aware, each task "
                "through its own head. "
                if any(r.agnostic for r in rows)
                else ""
            )
            + "Paper values: ~ marks an approximate value (not read from the paper's table); "
            "n.a.: the paper gives none."
            + (
                f" Runs of {', '.join(sorted(replaying))} replay memory (--replay): the "
                "paper's values of memory replay are the baseline's; it has none for another "
                "method with replay."
                if replaying
                else ""
            ),
            "",
            "## Runs",
            "",
            *runs,
            "",
        ]
    )
    (out_dir / "summary.md").write_text(text)
    return table
