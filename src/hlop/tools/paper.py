"""The paper's results (ICLR 2024, main table): ACC and BWT (percent) per benchmark and method.

Written as in the project's spec (``methods-compared.md``, ``targets.md``): a leading ``~``
marks an approximate value (a recollection, not read from the paper); only HLOP's ACC values
are confirmed.  No entry: the paper gives none (HAT on PMNIST, BWT of Multitask).  The row
``replay`` is the paper's memory replay: hlop's baseline with ``--replay``; the paper has no
row for another method with replay.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperValue:
    value: float
    approximate: bool

    @classmethod
    def parse(cls, text: str) -> PaperValue:
        """``"95.15"`` or ``"~-1.3"`` (approximate)."""
        approx = text.startswith("~")
        return cls(float(text.lstrip("~")), approx)

    def __str__(self) -> str:
        return f"{'~' if self.approximate else ''}{self.value:g}"


#: benchmark -> method -> (ACC, BWT); None where the paper gives no value
_TABLE: dict[str, dict[str, tuple[str | None, str | None]]] = {
    "pmnist": {
        "multitask": ("~96.2", None),
        "baseline": ("~70.6", "~-28.9"),
        "replay": ("~92.5", "~-4.7"),
        "ewc": ("~91.5", "~-3.2"),
        "gpm": ("~94.8", "~-1.6"),
        "hlop": ("95.15", "~-1.3"),
    },
    "cifar100": {
        "multitask": ("~79.7", None),
        "baseline": ("~75.1", "~-4.3"),
        "replay": ("~77.7", "~-1.0"),
        "ewc": ("~73.8", "~-4.9"),
        "hat": ("~73.7", "~-0.1"),
        "gpm": ("~77.5", "~-1.4"),
        "hlop": ("78.58", "~-0.3"),
    },
    "miniimagenet": {
        "multitask": ("~79.1", None),
        "baseline": ("~40.6", "~-32.4"),
        "replay": ("~58.2", "~-8.7"),
        "ewc": ("~47.3", "~-26.8"),
        "hat": ("~50.1", "~-7.6"),
        "gpm": ("~63.1", "~-2.6"),
        "hlop": ("63.40", "~-0.5"),
    },
    "five-datasets": {
        "multitask": ("~89.7", None),
        "baseline": ("~45.1", "~-60.1"),
        "replay": ("~79.7", "~-14.6"),
        "ewc": ("~57.1", "~-44.6"),
        "hat": ("~72.7", "~-22.9"),
        "gpm": ("~79.7", "~-15.5"),
        "hlop": ("88.65", "~-3.7"),
    },
}

#: the paper's methods, in its table's order
PAPER_METHODS: tuple[str, ...] = ("baseline", "ewc", "hat", "gpm", "hlop", "multitask")


#: the paper's memory-replay row: hlop's baseline with ``--replay``
REPLAY = "replay"


def paper_result(
    benchmark: str, method: str, replay: bool = False
) -> tuple[PaperValue | None, PaperValue | None]:
    """(ACC, BWT) the paper reports for ``method`` on ``benchmark``; None where it has none.

    ``replay``: the run replays memory (``--replay``): the paper's memory-replay row for the
    baseline (replay alone), none for any other method."""
    if replay:
        method = REPLAY if method == "baseline" else ""
    acc, bwt = _TABLE.get(benchmark, {}).get(method, (None, None))
    return (
        PaperValue.parse(acc) if acc is not None else None,
        PaperValue.parse(bwt) if bwt is not None else None,
    )
