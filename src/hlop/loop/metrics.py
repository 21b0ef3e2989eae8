"""Continual-learning metrics from the accuracy matrix.

``A[i, j]`` is the accuracy on task ``j`` after training step ``i``.  In continual
learning step ``i`` learns task ``i`` (``j <= i``); with ``n`` tasks trained so far
(rows ``0..n-1``)::

    ACC          = mean_j A[n-1, j]
    BWT          = mean_{j < n-1} (A[n-1, j] - A[j, j])
    forgetting_j = max_{j <= i < n-1} A[i, j] - A[n-1, j]        for j < n-1

Joint training (Multitask) learns all ``m`` tasks in one step: one row of ``m`` values
(``learnt=m``).  ACC is the mean of that row; BWT and forgetting are undefined (None, [])
since no task was learnt before another.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _check(a: Matrix, learnt: int | None = None) -> tuple[int, int]:
    """(rows, tasks learnt by the last row), checking that the rows hold those accuracies."""
    n = len(a)
    if n == 0:
        raise ValueError("the accuracy matrix has no rows")
    for i, row in enumerate(a):
        if len(row) < i + 1:
            raise ValueError(f"row {i} needs accuracies of tasks 0..{i}, got {len(row)} values")
    k = n if learnt is None else learnt
    if not n <= k <= len(a[-1]):
        raise ValueError(f"{n} rows cannot have learnt {k} tasks ({len(a[-1])} in the last row)")
    return n, k


def average_accuracy(a: Matrix, learnt: int | None = None) -> float:
    """ACC: mean accuracy over all tasks learnt (default: one per row) after the last step."""
    n, k = _check(a, learnt)
    return sum(a[n - 1][:k]) / k


def backward_transfer(a: Matrix, learnt: int | None = None) -> float | None:
    """BWT: mean change of each earlier task's accuracy from just after it was learnt;
    None when the rows learnt several tasks at once (joint training)."""
    n, k = _check(a, learnt)
    if k != n:
        return None
    if n == 1:
        return 0.0
    return sum(a[n - 1][j] - a[j][j] for j in range(n - 1)) / (n - 1)


def forgetting(a: Matrix, learnt: int | None = None) -> list[float]:
    """Per-task forgetting: best earlier accuracy minus final accuracy (tasks 0..n-2);
    empty for joint training."""
    n, k = _check(a, learnt)
    if k != n:
        return []
    return [max(a[i][j] for i in range(j, n - 1)) - a[n - 1][j] for j in range(n - 1)]


def format_matrix(a: Matrix) -> str:
    """The accuracy matrix as text, one row per training step (percent), each row's values."""
    width = max((len(row) for row in a), default=0)
    header = "after \\ on " + " ".join(f"{f'T{j}':>6}" for j in range(width))
    rows = [f"{f'T{i}':>10} " + " ".join(f"{v:6.2f}" for v in row) for i, row in enumerate(a)]
    return "\n".join([header, *rows])
