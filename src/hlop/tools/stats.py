"""Statistics of a study's per-seed values: mean, sample standard deviation and the 95%
Student t interval of the mean.

For ``n`` values ``v_i`` with mean ``m``::

    s  = sqrt(sum((v_i - m)^2) / (n - 1))          (sample std, n >= 2)
    CI = m +- t_{0.975, n-1} * s / sqrt(n)         (95% interval of the mean, n >= 3)

``t_{0.975, df}`` is tabulated for df <= 30 and given by the Cornish-Fisher expansion beyond.
Pure functions: nothing of hlop is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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
