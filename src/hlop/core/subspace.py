"""How well a subspace holds activity: the measures of the circuit diagnostics.

For lateral weights ``H`` (M x N) and ``C = R^T R`` (N x N) from activity rows ``R``::

    orthonormality_error = max |H H^T - I|                  (over all M rows)
    captured             = tr(Q C Q^T) / tr(C)              Q: orthonormal basis of span(H)
    optimal              = (s_1^2 + ... + s_M^2) / tr(C)    s_i: singular values of R

``captured`` is the fraction of the activity's energy that the subspace holds (what
projection protects); ``optimal`` is the most any subspace of M dimensions can hold (the
top-M principal subspace), so ``captured <= optimal``.  ``optimal`` says something only when
R has many more rows than M: with M rows or fewer any M-dimensional subspace that contains
them holds everything (optimal = 1).  :func:`measure` reports it only from
:data:`ROWS_PER_DIMENSION` rows per lateral neuron on.  This module imports nothing of hlop.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: activity rows per lateral neuron from which ``optimal`` is reported
ROWS_PER_DIMENSION = 4


def orthonormality_error(h: Tensor) -> float:
    """``max |H H^T - I|`` of the rows of ``h`` (0 for no rows)."""
    if h.shape[0] == 0:
        return 0.0
    h = h.double()
    gram = h @ h.t()
    gram.diagonal().sub_(1)  # in place: the analysis runs beside the training's memory
    return float(gram.abs_().max())


def row_space(h: Tensor) -> Tensor:
    """An orthonormal basis (rank x N) of the span of ``h``'s rows."""
    if h.shape[0] == 0:
        return h.new_zeros(0, h.shape[1], dtype=torch.float64)
    _, s, vh = torch.linalg.svd(h.double(), full_matrices=False)
    tol = s.max() * max(h.shape) * torch.finfo(torch.float64).eps
    return vh[: int((s > tol).sum())]


def captured_energy(cov: Tensor, h: Tensor) -> float | None:
    """``tr(Q C Q^T) / tr(C)``: the fraction of the activity energy (``cov = R^T R``) in
    the span of ``h``'s rows; None when the activity is all zero."""
    cov = cov.double()
    total = float(torch.trace(cov))
    if total <= 0:
        return None
    q = row_space(h).to(cov.device)
    return float((q @ cov).mul_(q).sum()) / total


def optimal_energy(cov: Tensor, k: int) -> float | None:
    """The largest fraction of the energy any ``k``-dimensional subspace holds: the top ``k``
    eigenvalues of ``cov = R^T R`` (squared singular values of R) over their sum."""
    cov = cov.double()
    total = float(torch.trace(cov))
    if total <= 0:
        return None
    values = torch.linalg.eigvalsh((cov + cov.t()).div_(2)).clamp_min(0)
    return float(values.flip(0)[:k].sum()) / total


def measure(h: Tensor, old_rows: int, cov: Tensor, activity_rows: int) -> dict:
    """The diagnostics of a circuit with lateral weights ``h`` (``old_rows`` of them frozen)
    on activity with ``cov = R^T R`` from ``activity_rows`` rows: ``rows``, ``old_rows``,
    ``orthonormality_error``, ``captured``, ``optimal`` (None below
    :data:`ROWS_PER_DIMENSION` rows per lateral neuron) and ``activity_rows``."""
    rows = h.shape[0]
    enough = activity_rows >= ROWS_PER_DIMENSION * rows
    return {
        "rows": rows,
        "old_rows": old_rows,
        "orthonormality_error": orthonormality_error(h),
        "captured": captured_energy(cov, h),
        "optimal": optimal_energy(cov, rows) if enough else None,
        "activity_rows": activity_rows,
    }
