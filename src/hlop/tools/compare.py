"""``hlop compare``: one study of several methods over several seeds on one benchmark.

``--out-dir DIR`` holds::

    DIR/METHOD-sSEED/   one ordinary ``hlop train`` run per (method, seed)
    DIR/summary.csv     the study's summary per method (:mod:`hlop.tools.study_tables`;
                        task-agnostic ACC and BWT too where the runs have a head per task)
    DIR/summary.md      the same as a markdown table, then one line per run

Rerunning the same command keeps each completed run (results.json status "complete" and
the same resolved config as requested now, but :data:`hlop.run.config.RESULT_NEUTRAL_KEYS`) and
continues the unfinished ones from their last saved state (:func:`continue_run`).  A run
whose saved config differs from the requested one is an error naming the differing keys,
before anything trains; ``overwrite`` retrains those.
A method that is not registered, or a run that raises, is reported as failed with its
reason; the other runs still run.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from hlop.errors import ConfigError
from hlop.loop.continual import TrainingDiverged
from hlop.methods import METHODS
from hlop.run.config import Config, apply_overrides
from hlop.run.config import differences as config_differences
from hlop.run.files import read_json_dict
from hlop.tools.study_tables import RunResult

Log = Callable[[str], None]


def run_dir(out_dir: str | Path, method: str, seed: int) -> Path:
    return Path(out_dir) / f"{method}-s{seed}"


#: names a study takes beside the registered methods: an add-on on the baseline
STUDY_METHODS = {"replay": ("baseline", "replay.enabled")}


def known(method: str) -> bool:
    return method in METHODS or method in STUDY_METHODS


def run_config(base: Config, method: str, seed: int) -> Config:
    """``base`` with the run's method and seed (a copy); ``replay``: the baseline with
    memory replay (``--replay``)."""
    cfg = Config.from_dict(base.to_dict())
    method, switch = STUDY_METHODS.get(method, (method, None))
    cfg.method, cfg.seed = method, seed
    if switch is not None:
        apply_overrides(cfg, [f"{switch}=true"])
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
    from hlop.run import experiment

    return experiment.train(cfg, directory, stream=log_stream)


def continue_run(cfg: Config, directory: Path, log_stream=None) -> dict:
    """Finish an unfinished run: from its last saved state (``hlop train --resume``) when
    it was started with ``cfg``; again from scratch when its config differs (``overwrite``)
    or it has none."""
    from hlop.run import experiment

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
        acc_agnostic=res.get("acc_agnostic"),
        bwt_agnostic=res.get("bwt_agnostic"),
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
            if not known(method):
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
            names = ", ".join([*METHODS, *STUDY_METHODS])
            log(f"{head}: failed: unknown method (registered: {names})")
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
