"""Circuit diagnostics: how well each lateral circuit's subspace holds a finished task.

After each task (once the circuits have merged: HLOP after its evaluation, GPM after its
training), for every projected layer with the circuit's lateral weights ``H`` (M x N) and
``C = R^T R`` (N x N) from the activity rows ``R`` the circuit sees (``layer.presynaptic``)
on a sample of the finished task's training data::

    orthonormality_error = max |H H^T - I|                  (over all M rows)
    captured             = tr(Q C Q^T) / tr(C)              Q: orthonormal basis of span(H)
    optimal              = (s_1^2 + ... + s_M^2) / tr(C)    s_i: singular values of R

``captured`` is the fraction of the task's activity energy that the circuit's subspace
holds (what projection protects); ``optimal`` is the most any subspace of M dimensions can
hold (the top-M principal subspace, as an SVD gives it), so ``captured <= optimal``.

The sample is drawn with its own generator and run in evaluation mode without gradients:
neither the run's RNG nor any state of the model changes, and the accuracy matrix is the
same with or without diagnostics.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from .continual import Plugin, RunState
from .methods.gpm import representation_covariances


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


def circuit_diagnostics(run: RunState, samples: int) -> dict[str, dict]:
    """Per projected layer (by name): rows, old_rows, orthonormality_error, captured and
    optimal (see the module's docstring) on ``samples`` training samples of the task."""
    covs = representation_covariances(run, samples)
    out = {}
    for name, layer in run.model.projected_layers():
        cov = covs.pop(0)  # in network order; each is freed once its layer is measured
        c = layer.circuit
        out[name] = {
            "rows": c.rows,
            "old_rows": c.old_rows,
            "orthonormality_error": orthonormality_error(c.weight),
            "captured": captured_energy(cov, c.weight),
            "optimal": optimal_energy(cov, c.rows),
        }
    return out


class CircuitDiagnostics(Plugin):
    """Measures every circuit after each task's evaluation (after the method's merge, so
    it goes after the method in the plugin list) into ``run.circuit_diagnostics``: one
    entry per task with ``task``, ``samples``, ``seconds`` and ``layers``."""

    name = "diagnostics"

    def __init__(self, samples: int = 256) -> None:
        self.samples = samples

    def after_evaluation(self, run: RunState) -> None:
        start = time.perf_counter()
        layers = circuit_diagnostics(run, self.samples)
        run.circuit_diagnostics.append(
            {
                "task": run.task,
                "samples": min(self.samples, len(run.benchmark.tasks[run.task].train)),
                "seconds": round(time.perf_counter() - start, 3),
                "layers": layers,
            }
        )
