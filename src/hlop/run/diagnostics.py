"""Circuit diagnostics: how well each lateral circuit's subspace holds a finished task.

After each task (once the circuits have merged: HLOP and GPM at the end of the task's
training), every projected layer's circuit is measured (:func:`hlop.core.subspace.measure`:
orthonormality error, the captured share of the activity energy, and the most any subspace
of as many dimensions could hold) on the activity rows ``R`` it sees
(``model.circuit_inputs()``: a built-in layer's ``presynaptic``, :meth:`hlop.HLOP.rows` on a
network of the user's own) for a sample of the finished task's training data.  The sample has
at least :data:`~hlop.core.subspace.ROWS_PER_DIMENSION` samples per lateral neuron of the largest
circuit (each sample gives at least one row), so that ``optimal`` means something; at most
:data:`MAX_SAMPLES`.

The sample is drawn with its own generator and run in evaluation mode without gradients:
neither the run's RNG nor any state of the model changes, and the accuracy matrix is the
same with or without diagnostics.
"""

from __future__ import annotations

import time

from hlop.core.subspace import ROWS_PER_DIMENSION, measure
from hlop.loop.state import Plugin, RunState
from hlop.methods.gpm import representation_statistics

#: the most samples measured per task (forward passes in evaluation mode)
MAX_SAMPLES = 4096


def diagnostics_samples(run: RunState, samples: int) -> int:
    """How many of the current task's training samples to measure: ``samples``, at least
    :data:`ROWS_PER_DIMENSION` per lateral neuron of the largest circuit, at most
    :data:`MAX_SAMPLES` and the task's size."""
    largest = max((c.rows for c in run.model.circuits()), default=0)
    wanted = min(max(samples, ROWS_PER_DIMENSION * largest), MAX_SAMPLES)
    return min(wanted, len(run.benchmark.tasks[run.task].train))


def circuit_diagnostics(run: RunState, samples: int) -> dict[str, dict]:
    """Per projected layer (by name): :func:`hlop.core.subspace.measure` of its circuit on
    ``samples`` training samples of the task."""
    covs, counts = representation_statistics(run, samples)
    out = {}
    for (name, _), c in zip(run.model.projected_layers(), run.model.circuits(), strict=True):
        cov = covs.pop(0)  # in network order; each is freed once its layer is measured
        out[name] = measure(c.weight, c.old_rows, cov, counts.pop(0))
    return out


class CircuitDiagnostics(Plugin):
    """Measures every circuit after each task's evaluation (after the method's merge, so
    it goes after the method in the plugin list) into ``run.circuit_diagnostics``: one
    entry per task with ``task``, ``samples``, ``seconds`` and ``layers``."""

    name = "diagnostics"

    def __init__(self, samples: int = 256) -> None:
        self.samples = samples  # at least: see diagnostics_samples

    def after_evaluation(self, run: RunState) -> None:
        start = time.perf_counter()
        samples = diagnostics_samples(run, self.samples)
        layers = circuit_diagnostics(run, samples)
        run.circuit_diagnostics.append(
            {
                "task": run.task,
                "samples": samples,
                "seconds": round(time.perf_counter() - start, 3),
                "layers": layers,
            }
        )
