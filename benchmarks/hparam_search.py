"""Small hyperparameter search of the comparison methods on a validation split.

Every setting is a `hlop compare` study of one method over the seeds, with
``validation=F``: a held-out, class-stratified part of each task's training data replaces
the test set, so the search never sees test data.  The setting with the best mean
validation ACC is reported (BWT shown beside it); the chosen values go into the presets
(hlop.run.presets) by hand, with this script's output in docs/comparing.md.

    python benchmarks/hparam_search.py pmnist-subset --out-dir runs/search \\
        [--seeds 2022,2023] [--validation 0.1] [--set key=value ...]
        [--try ewc.lam=30 --try ewc.lam=100 ...]

``--try KEY=VALUE`` (repeatable) replaces the built-in grid: each is one setting of the
method named by the key's first part (``ewc.lam=30`` -> method ``ewc``).
"""

from __future__ import annotations

import argparse
import io

from hlop.run.config import apply_overrides
from hlop.run.presets import preset
from hlop.tools.compare import run_study
from hlop.tools.stats import Stats

# method -> settings tried (each a list of --set overrides)
GRID: dict[str, list[list[str]]] = {
    "ewc": [[f"ewc.lam={lam}"] for lam in (3, 10, 30)],
    "gpm": [
        ["gpm.thresholds=[0.9,0.97,0.97]"],
        ["gpm.thresholds=[0.95,0.99,0.99]"],
        ["gpm.thresholds=[0.97,0.995,0.995]"],
    ],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("benchmark")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--seeds", default="2022,2023")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--methods", default=",".join(GRID))  # ignored with --try
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--try", dest="tries", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    grid = GRID
    if args.tries:
        grid = {}
        for setting in args.tries:
            grid.setdefault(setting.split(".", 1)[0], []).append([setting])
        args.methods = ",".join(grid)
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["| method | setting | val ACC (mean ± std) | val BWT (mean ± std) | runs |"]
    lines.append("|---|---|---|---|---|")
    for method in args.methods.split(","):
        best = None
        for setting in grid[method]:
            cfg = apply_overrides(
                preset(args.benchmark), [f"validation={args.validation}", *args.set, *setting]
            )
            name = "-".join(s.replace("=", "").replace(",", "_") for s in setting)
            out = f"{args.out_dir}/{method}-{name}"
            results = run_study(cfg, [method], seeds, out, log_stream=io.StringIO())
            done = [r for r in results if r.status == "complete"]
            acc = Stats.of([r.acc for r in done])
            bwt = Stats.of([r.bwt for r in done])

            def show(s: Stats | None) -> str:
                if s is None:
                    return "failed"
                return f"{s.mean:.2f} ± {s.std:.2f}" if s.std is not None else f"{s.mean:.2f}"

            lines.append(
                f"| {method} | `{' '.join(setting)}` | {show(acc)} | {show(bwt)} | "
                f"{len(done)}/{len(results)} |"
            )
            print(lines[-1], flush=True)
            if acc is not None and (best is None or acc.mean > best[0]):
                best = (acc.mean, setting)
        if best is not None:
            print(f"chosen for {method}: {' '.join(best[1])} (val ACC {best[0]:.2f})", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
