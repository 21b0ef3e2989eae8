"""``hlop compare``: one study of several methods over several seeds on one benchmark.

``--out-dir DIR`` holds::

    DIR/METHOD-sSEED/   one ordinary ``hlop train`` run per (method, seed)
    DIR/summary.csv     per method: ACC and BWT (mean, sample std, 95% t-interval), wall
                        time per run, seeds completed / failed, the paper's values
    DIR/summary.md      the same as a markdown table, then one line per run

Rerunning the same command keeps each completed run (results.json status "complete" and
the same resolved config as requested now, but :data:`hlop.config.RESULT_NEUTRAL_KEYS`) and
continues the unfinished ones from their last saved state (:func:`continue_run`).  A run
whose saved config differs from the requested one is an error naming the differing keys,
before anything trains; ``overwrite`` retrains those.
A method that is not registered, or a run that raises, is reported as failed with its
reason; the other runs still run.
"""

from __future__ import annotations

import csv
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .config import differences as config_differences
from .continual import TrainingDiverged
from .errors import ConfigError
from .files import read_json_dict
from .methods import METHODS
from .paper import PaperValue, paper_result

Log = Callable[[str], None]


# ---------------------------------------------------------------------- statistics
def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def sample_std(values: Sequence[float]) -> float | None:
    """Standard deviation with n - 1 in the denominator; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


# Student t quantiles t_{0.975, df} for df = 1..30
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95%):
    tabulated up to 30, then the Cornish-Fisher expansion around the normal quantile
    (error below 1e-5 there)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963985
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def confidence_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% interval of the mean, ``mean +- t975(n - 1) s / sqrt(n)``; None below 3 values."""
    n = len(values)
    if n < 3:
        return None
    half = t975(n - 1) * sample_std(values) / math.sqrt(n)  # type: ignore[operator]
    m = mean(values)
    return m - half, m + half


@dataclass(frozen=True)
class Stats:
    """Mean, sample std and 95% interval of ``n`` values (std None below 2, ci below 3)."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats | None:
        if not values:
            return None
        return cls(len(values), mean(values), sample_std(values), confidence_interval(values))


# ---------------------------------------------------------------------- runs
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


def run_dir(out_dir: str | Path, method: str, seed: int) -> Path:
    return Path(out_dir) / f"{method}-s{seed}"


def run_config(base: Config, method: str, seed: int) -> Config:
    """``base`` with the run's method and seed (a copy)."""
    cfg = Config.from_dict(base.to_dict())
    cfg.method, cfg.seed = method, seed
    return cfg


def run_state(directory: Path, cfg: Config, overwrite: bool = False) -> str:
    """What to do with a run: "complete" (keep it), "unfinished" (run it again) or "new".

    Raises :class:`ConfigError` naming the differing keys when the run's saved config is
    not ``cfg`` (unless ``overwrite``: then it is "unfinished")."""
    saved = read_json_dict(directory / "config.json")
    if saved is None:
        started = directory.is_dir() and any(directory.iterdir())
        return "unfinished" if started else "new"
    differing = config_differences(saved, cfg)
    if differing:
        if overwrite:
            return "unfinished"
        shown = ", ".join(differing[:8]) + (", ..." if len(differing) > 8 else "")
        raise ConfigError(f"{directory} was run with a different config ({shown})")
    results = read_json_dict(directory / "results.json")
    return "complete" if results and results.get("status") == "complete" else "unfinished"


def start_run(cfg: Config, directory: Path, log_stream=None) -> dict:
    """A new run: exactly ``hlop train`` with the resolved config."""
    from . import experiment

    return experiment.train(cfg, directory, stream=log_stream)


def continue_run(cfg: Config, directory: Path, log_stream=None) -> dict:
    """Finish an unfinished run: from its last saved state (``hlop train --resume``) when
    it was started with ``cfg``; again from scratch when its config differs (``overwrite``)
    or it has none."""
    from . import experiment

    saved = read_json_dict(directory / "config.json")
    if saved is None or config_differences(saved, cfg):
        return experiment.train(cfg, directory, overwrite=True, stream=log_stream)
    return experiment.train(cfg, directory, resume=True, stream=log_stream)


def failure_reason(error: BaseException) -> str:
    if isinstance(error, TrainingDiverged):
        return f"diverged: {error}"
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, ValueError):  # ConfigError, DataError, CircuitError: clear messages
        return text
    return f"{type(error).__name__}: {text}"


def _from_results(method: str, seed: int, res: dict, kept: bool = False) -> RunResult:
    seconds = res.get("seconds_per_task") or []
    return RunResult(
        method,
        seed,
        "complete",
        acc=res.get("acc"),
        bwt=res.get("bwt"),
        seconds=sum(seconds) if seconds else None,
        kept=kept,
    )


def run_study(
    base: Config,
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    log: Log = print,
    log_stream=None,
) -> list[RunResult]:
    """Every (method, seed) run of the study in ``out_dir`` (seed by seed, methods in the
    order given), keeping completed runs; see the module's docstring."""
    out_dir = Path(out_dir)
    plan: list[tuple[str, int, Config | None, str]] = []
    conflicts = []
    for seed in seeds:
        for method in methods:
            if method not in METHODS:
                plan.append((method, seed, None, "unknown"))
                continue
            cfg = run_config(base, method, seed)
            try:
                plan.append(
                    (method, seed, cfg, run_state(run_dir(out_dir, method, seed), cfg, overwrite))
                )
            except ConfigError as e:
                conflicts.append(str(e))
    if conflicts:
        raise ConfigError(
            "\n".join(conflicts)
            + "\npass --overwrite to retrain those runs, or choose another --out-dir"
        )
    results = []
    for i, (method, seed, cfg, state) in enumerate(plan, 1):
        directory = run_dir(out_dir, method, seed)
        head = f"[{i}/{len(plan)}] {method}, seed {seed}"
        if cfg is None:
            log(f"{head}: failed: unknown method (registered: {', '.join(METHODS)})")
            results.append(RunResult(method, seed, "failed", "unknown method"))
            continue
        if state == "complete":
            log(f"{head}: complete in {directory}, kept")
            saved = read_json_dict(directory / "results.json") or {}
            results.append(_from_results(method, seed, saved, kept=True))
            continue
        again = " (unfinished: continued)" if state == "unfinished" else ""
        log(f"{head} -> {directory}{again}")
        go = continue_run if state == "unfinished" else start_run
        try:
            res = go(cfg, directory, log_stream)
        except Exception as e:  # one failed run does not stop the study
            reason = failure_reason(e)
            log(f"{head}: failed: {reason}")
            if directory.is_dir():
                (directory / "error.txt").write_text(traceback.format_exc())
            results.append(RunResult(method, seed, "failed", reason))
        else:
            results.append(_from_results(method, seed, res))
    return results


# ---------------------------------------------------------------------- summary
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


def summarise_study(benchmark: str, results: Sequence[RunResult]) -> list[MethodSummary]:
    """One summary per method, in the order the methods first appear."""
    methods = list(dict.fromkeys(r.method for r in results))
    rows = []
    for m in methods:
        runs = [r for r in results if r.method == m]
        done = [r for r in runs if r.status == "complete"]
        seconds = [r.seconds for r in done if r.seconds is not None]
        paper_acc, paper_bwt = paper_result(benchmark, m)
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
    head = (
        "| method | seeds ok/failed | ACC (%) | ACC 95% CI | BWT (%) | BWT 95% CI "
        "| wall s/run | paper ACC | paper BWT | notes |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        cells = [
            r.method,
            f"{r.completed}/{r.failed}",
            _mean_std(r.acc),
            _ci(r.acc),
            _mean_std(r.bwt),
            _ci(r.bwt),
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
        "wall_s_mean": _num(r.seconds, 1),
        **paper(r.paper_acc, "paper_acc"),
        **paper(r.paper_bwt, "paper_bwt"),
        "failures": "; ".join(r.failures),
    }


def write_summary(out_dir: str | Path, benchmark: str, results: Sequence[RunResult]) -> str:
    """Write summary.csv and summary.md in ``out_dir``; returns the markdown table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarise_study(benchmark, results)
    with (out_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in rows)
    table = markdown_table(benchmark, rows)
    runs = [
        f"- {r.method}, seed {r.seed}: "
        + (
            f"ACC {_num(r.acc)}, BWT {_num(r.bwt) or 'n.a.'}, {_num(r.seconds, 1)} s"
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
            "Paper values: ~ marks an approximate value; n.a.: the paper gives none.",
            "",
            "## Runs",
            "",
            *runs,
            "",
        ]
    )
    (out_dir / "summary.md").write_text(text)
    return table
