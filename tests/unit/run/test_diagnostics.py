"""Circuit diagnostics: against subspaces known by construction; a run is unchanged by them."""

import json

import pytest
import torch

from hlop.core.subspace import captured_energy, optimal_energy, orthonormality_error
from hlop.run.config import apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import preset

N, K = 12, 3


def orthonormal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q


def activity_in(basis: torch.Tensor, rows: int = 50, seed: int = 1) -> torch.Tensor:
    """``rows`` activity rows that lie exactly in the span of ``basis`` (k x N)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, basis.shape[0], generator=g, dtype=torch.float64) @ basis


def test_circuit_spanning_the_activity_captures_all_of_it():
    q = orthonormal(N, 0)
    r = activity_in(q[:K])
    cov = r.t() @ r
    assert captured_energy(cov, q[:K]) == pytest.approx(1.0, abs=1e-12)
    assert optimal_energy(cov, K) == pytest.approx(1.0, abs=1e-12)
    # another basis of the same span (not orthonormal) captures the same: it is the span
    mixed = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]]).double() @ q[:K]
    assert captured_energy(cov, mixed) == pytest.approx(1.0, abs=1e-12)


def test_circuit_orthogonal_to_the_activity_captures_nothing():
    q = orthonormal(N, 0)
    r = activity_in(q[:K])
    cov = r.t() @ r
    assert captured_energy(cov, q[K : 2 * K]) == pytest.approx(0.0, abs=1e-12)
    assert optimal_energy(cov, K) == pytest.approx(1.0, abs=1e-12)
    assert captured_energy(cov, q[:0]) == 0.0  # no rows, no energy


def test_captured_reaches_the_svd_optimum_only_on_the_principal_subspace():
    q = orthonormal(N, 2)
    scales = 0.6 ** torch.arange(N, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    r = torch.randn(400, N, generator=g, dtype=torch.float64) * scales @ q
    cov = r.t() @ r
    _, s, vh = torch.linalg.svd(r, full_matrices=False)
    expected = float((s[:K] ** 2).sum() / (s**2).sum())
    assert optimal_energy(cov, K) == pytest.approx(expected, rel=1e-10)
    assert captured_energy(cov, vh[:K]) == pytest.approx(expected, rel=1e-10)
    other = orthonormal(N, 4)[:K]
    assert captured_energy(cov, other) < expected - 0.05
    assert captured_energy(cov, other) >= 0


def test_orthonormality_error_of_a_perturbed_circuit():
    q = orthonormal(N, 5)[:4]
    assert orthonormality_error(q) < 1e-12
    h = q.clone()
    h[1] *= 1.1  # |h_1|^2 = 1.21: the largest entry of H H^T - I is 0.21
    assert orthonormality_error(h) == pytest.approx(0.21, abs=1e-12)
    h = q.clone()
    h[2] = (q[2] + 0.2 * q[0]) / torch.linalg.norm(q[2] + 0.2 * q[0])  # unit, not orthogonal
    assert orthonormality_error(h) == pytest.approx(0.2 / (1 + 0.04) ** 0.5, abs=1e-12)
    assert orthonormality_error(q[:0]) == 0.0


TINY = ["tasks=2", "timesteps=2", "train_limit=200", "test_limit=100", "hidden=50"]
TINY += ["hlop.sizes=[[20,10,5],[20,10,5]]"]


def tiny_run(path, method: str, samples: int) -> dict:
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("pmnist-subset"), [*TINY, f"method={method}", f"diagnostics_samples={samples}"]
    )
    train(cfg, path, stream=open(path.parent / f"{path.name}.log", "w"))  # noqa: SIM115
    return json.loads((path / "results.json").read_text())


@pytest.mark.parametrize("method", ["hlop", "gpm"])
def test_diagnostics_recorded_and_run_unchanged(tmp_path, method):
    plain = tiny_run(tmp_path / "plain", method, 0)
    # gpm: the very samples of its bases (gpm.samples=300 of the task's 200: all of them)
    samples = 300 if method == "gpm" else 64
    measured = tiny_run(tmp_path / "measured", method, samples)
    assert plain["circuit_diagnostics"] == []
    assert measured["acc_matrix"] == plain["acc_matrix"]  # bit-identical accuracies
    for k in range(2):  # and bit-identical weights and circuits
        a = torch.load(tmp_path / "plain" / f"checkpoint_task{k}.pt", weights_only=True)
        b = torch.load(tmp_path / "measured" / f"checkpoint_task{k}.pt", weights_only=True)
        for name, value in a["model"].items():
            assert torch.equal(value, b["model"][name]), name
    entries = measured["circuit_diagnostics"]
    assert [e["task"] for e in entries] == [0, 1]
    # at least 4 samples per row of the largest circuit (20, then 40 rows), at most 200
    wanted = [min(max(samples, 4 * 20), 200), min(max(samples, 4 * 40), 200)]
    assert [e["samples"] for e in entries] == wanted and all(e["seconds"] >= 0 for e in entries)
    assert list(entries[0]["layers"]) == ["fc1", "fc2", "heads.0"]
    last = list(entries[-1]["layers"].values())
    assert [d["rows"] for d in last] == measured["circuit_sizes"]
    for e in entries:
        for d in e["layers"].values():
            assert d["old_rows"] == d["rows"]  # measured after the merge
            assert d["activity_rows"] == e["samples"]  # one rate row per sample (DSR)
            enough = d["activity_rows"] >= 4 * d["rows"]
            assert (d["optimal"] is not None) == enough  # reported only where it means something
            if enough:
                assert 0 <= d["captured"] <= d["optimal"] + 1e-9 <= 1 + 2e-9
            assert d["orthonormality_error"] >= 0
    if method == "gpm":  # SVD bases of task 0: orthonormal, the top principal directions
        layers = entries[0]["layers"].values()
        thresholds = preset("pmnist-subset").gpm.thresholds  # the preset's
        for d, eps in zip(layers, thresholds, strict=True):
            assert d["orthonormality_error"] < 1e-5
            # the reference code's task-0 count: the bases whose cumulative share is below eps
            assert d["captured"] < eps + 1e-6
            if d["optimal"] is not None:  # the top principal directions: all one can hold
                assert d["captured"] == pytest.approx(d["optimal"], abs=1e-6)


def test_no_diagnostics_without_circuits(tmp_path):
    res = tiny_run(tmp_path / "base", "baseline", 64)
    assert res["circuit_diagnostics"] == []
