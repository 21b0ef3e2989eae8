"""Continual-learning metrics from the accuracy matrix.

``A[i, j]`` is the accuracy on task ``j`` after training task ``i`` (``j <= i``).
With ``n`` tasks trained so far (rows ``0..n-1``)::

    ACC          = mean_j A[n-1, j]
    BWT          = mean_{j < n-1} (A[n-1, j] - A[j, j])
    forgetting_j = max_{j <= i < n-1} A[i, j] - A[n-1, j]        for j < n-1
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _check(a: Matrix) -> int:
    n = len(a)
    if n == 0:
        raise ValueError("the accuracy matrix has no rows")
    for i, row in enumerate(a):
        if len(row) < i + 1:
            raise ValueError(f"row {i} needs accuracies of tasks 0..{i}, got {len(row)} values")
    return n


def average_accuracy(a: Matrix) -> float:
    """ACC: mean accuracy over all tasks after the last one trained."""
    n = _check(a)
    return sum(a[n - 1][:n]) / n


def backward_transfer(a: Matrix) -> float:
    """BWT: mean change of each earlier task's accuracy from just after it was learnt."""
    n = _check(a)
    if n == 1:
        return 0.0
    return sum(a[n - 1][j] - a[j][j] for j in range(n - 1)) / (n - 1)


def forgetting(a: Matrix) -> list[float]:
    """Per-task forgetting: best earlier accuracy minus final accuracy (tasks 0..n-2)."""
    n = _check(a)
    return [max(a[i][j] for i in range(j, n - 1)) - a[n - 1][j] for j in range(n - 1)]


def format_matrix(a: Matrix) -> str:
    """The accuracy matrix as text, one row per trained task (percent)."""
    n = len(a)
    header = "after \\ on " + " ".join(f"{f'T{j}':>6}" for j in range(n))
    rows = [f"{f'T{i}':>10} " + " ".join(f"{a[i][j]:6.2f}" for j in range(i + 1)) for i in range(n)]
    return "\n".join([header, *rows])
