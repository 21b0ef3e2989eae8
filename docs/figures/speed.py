"""Draw speed.png, wall time and peak memory of full permuted-MNIST runs, from speed.json.

speed.json holds what the runs measured (their commands, the machine and the date), so the
figure is redrawn from the record, never by hand::

    python docs/figures/speed.py            # needs pip install -e ".[plot]"
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent


def main() -> None:
    record = json.loads((HERE / "speed.json").read_text())
    runs = record["runs"]
    labels = [run["label"] for run in runs]
    colours = ["#9e9e9e"] + ["#1f77b4"] * (len(runs) - 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, key, unit, scale in (
        (left, "seconds", "wall time (min)", 1 / 60),
        (right, "peak_gb", "peak memory (GB)", 1.0),
    ):
        values = [run[key] * scale for run in runs]
        bars = axis.barh(labels, values, color=colours)
        axis.invert_yaxis()
        axis.set_xlabel(unit)
        axis.bar_label(bars, [f"{v:.1f}" if v >= 10 else f"{v:.2f}" for v in values], padding=3)
        axis.set_xlim(0, max(values) * 1.25)
        axis.spines[["top", "right"]].set_visible(False)
    right.set_yticklabels([])
    accuracy = ", ".join(f"{r['label']} {r['acc']:.2f} / {r['bwt']:.2f}" for r in runs)
    fig.suptitle(f"{record['title']}\nACC / BWT: {accuracy}", fontsize=9)
    fig.text(0.01, 0.01, f"{record['machine']}; {record['date']}", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(HERE / "speed.png", dpi=120)


if __name__ == "__main__":
    main()
