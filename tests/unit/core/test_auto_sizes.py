"""Circuit sizes found from the data: a generous block learns while the circuit tracks its
own activity's energy, then keeps the fewest orthonormal directions of its span that reach
the threshold."""

import copy
import io
import json

import pytest
import torch
from torch import nn

import hlop
from hlop.core.circuit import LateralCircuit


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def spectrum_batches(variances, n=12, batches=300, batch=32, seed=0, basis=None):
    """Batches of rows in a subspace of ``len(variances)`` dimensions of R^n, with those
    variances along its (orthonormal) axes; returns the batches and the axes."""
    g = torch.Generator().manual_seed(seed)
    if basis is None:
        basis = torch.linalg.qr(torch.randn(n, len(variances), generator=g)).Q.t()
    scale = torch.tensor(variances).sqrt()
    out = [
        (torch.randn(batch, len(variances), generator=g) * scale) @ basis for _ in range(batches)
    ]
    return out, basis


def learnt_circuit(batches, block, track=True, circuit=None):
    torch.manual_seed(0)
    c = circuit or LateralCircuit(12, lr=0.02, iterations=2)
    c.track_energy(track)
    c.add_subspace(block)
    for x in batches:
        c.hebbian_update(x)
    return c


@pytest.mark.parametrize(("threshold", "kept"), [(0.6, 1), (0.9, 2), (0.99, 3)])
def test_fit_block_keeps_the_fewest_principal_directions(threshold, kept):
    # energies 10, 3, 1 of 14: the top direction holds 0.71, two 0.93, three 1.0
    batches, basis = spectrum_batches([10.0, 3.0, 1.0])
    c = learnt_circuit(batches, block=6)
    assert c.fit_block(threshold) == kept
    assert c.rows == kept and c.blocks == [kept] and c.velocity.shape == c.weight.shape
    # the kept rows span the top principal directions of the activity
    top = basis[:kept]
    assert torch.linalg.matrix_norm(top - top @ c.weight.t() @ c.weight) < 0.05


def test_old_rows_count_towards_the_threshold():
    batches, basis = spectrum_batches([10.0, 3.0, 1.0])
    c = learnt_circuit(batches, block=6)
    c.fit_block(0.99)
    c.merge()
    # a later task in the same subspace needs nothing new; one with a new direction, one row
    c.add_subspace(5)
    for x in spectrum_batches([10.0, 3.0, 1.0], seed=1, basis=basis)[0]:
        c.hebbian_update(x)
    assert c.fit_block(0.99) == 0 and c.rows == 3 and c.blocks == [3]
    c.merge()
    c.add_subspace(5)
    new_axis = torch.linalg.qr(torch.cat([basis, torch.randn(1, 12)]).t()).Q.t()[3:4]
    both = torch.cat([basis, new_axis])
    for x in spectrum_batches([10.0, 3.0, 1.0, 8.0], seed=2, basis=both)[0]:
        c.hebbian_update(x)
    assert c.fit_block(0.99) == 1 and c.rows == 4


def test_fitted_block_is_orthonormal_and_orthogonal_to_old_rows():
    """A block that has not converged (rows of any length, with components along the old
    rows) comes out as orthonormal rows outside the old span: the frozen circuit stays a
    projection, and the kept direction is the residual's principal one."""
    batches, basis = spectrum_batches([10.0, 3.0, 1.0])
    c = learnt_circuit(batches, block=6)
    c.fit_block(0.9)
    c.merge()  # two rows: basis[0], basis[1]
    c.add_subspace(3)
    # the new block: the residual's axis basis[2], mixed with the old rows and rescaled
    mix = torch.tensor([[2.0, 0.5, -1.0], [0.3, -1.5, 0.7], [-0.4, 0.9, 2.5]])
    rows = torch.cat([basis[2:3], c.weight[:1], c.weight[1:2]])
    c.weight = torch.cat([c.weight[:2], mix @ rows])
    c.block_energy = c.weight[2:] @ torch.outer(basis[2], basis[2]) @ c.weight[2:].t()
    c.energy = torch.tensor([14.0, 13.0])  # the old rows hold 13 of 14
    assert c.fit_block(0.99) == 1
    h = c.weight
    assert torch.allclose(h @ h.t(), torch.eye(3), atol=1e-4)
    assert (h[2] @ basis[2]).abs() > 0.99  # the old rows are learnt, so not exactly basis[:2]


def test_tracking_changes_nothing_the_circuit_learns():
    batches, _ = spectrum_batches([5.0, 2.0], batches=20)
    tracked = learnt_circuit(batches, block=4, track=True)
    plain = learnt_circuit(batches, block=4, track=False)
    assert torch.equal(tracked.weight, plain.weight)
    assert plain.fit_block(0.9) == 4  # nothing tracked: the block stays as it is


def test_energy_averages_are_saved_and_restored():
    batches, _ = spectrum_batches([5.0, 2.0], batches=20)
    c = learnt_circuit(batches, block=4)
    fresh = LateralCircuit(12, lr=0.02, iterations=2)
    fresh.load_state_dict(c.state_dict())
    assert torch.equal(fresh.block_energy, c.block_energy)
    fresh.track_energy()
    assert fresh.fit_block(0.9) == c.fit_block(0.9)


def test_hlop_auto_sizes_by_default():
    """hlop.HLOP with no sizes: each task's blocks are fitted to its activity; explicit
    sizes are kept as given."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6, bias=False))
    hl = hlop.HLOP(model, lrs=0.02, iterations=2, threshold=0.9)
    assert hl.max_rows == [12]  # a small circuit: all of it (a quarter would be 3)
    batches, _ = spectrum_batches([10.0, 3.0, 1.0])
    hl.begin_task()
    assert hl.circuits["0"].rows == 12  # the generous block
    for x in batches:
        model(x)
    hl.end_task()
    assert hl.chosen_sizes == [[2]] and hl.circuits["0"].old_rows == 2
    hl.begin_task([1])  # explicit: not fitted
    hl.end_task()
    assert hl.chosen_sizes == [[2], [1]]
    state = copy.deepcopy(hl.state_dict())
    fresh = hlop.HLOP(nn.Sequential(nn.Linear(12, 6, bias=False)), threshold=0.9)
    fresh.load_state_dict(state)
    assert fresh.circuits["0"].old_rows == 3
    with pytest.raises(ValueError, match="threshold must be in"):
        hlop.HLOP(model, threshold=1.5)


def test_cli_finds_sizes_and_records_them(tmp_path, capsys):
    """--set hlop.sizes=auto on the built-in MLP: every task's blocks within their bounds,
    in results.json and the report."""
    from hlop.tools.cli import main

    argv = ["train", "--tasks", "2", "--timesteps", "2", "--batch-size", "20"]
    argv += ["--set", "hidden=32", "--set", "train_limit=200", "--set", "test_limit=50"]
    argv += ["--set", "hlop.sizes=auto", "--set", "hlop.threshold=0.5"]
    argv += ["--set", "hlop.max_rows=[20,6,6]", "--out-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    blocks = res["circuit_blocks"]
    assert len(blocks) == 2 and all(len(b) == 3 for b in blocks)
    assert all(0 <= n <= bound for b in blocks for n, bound in zip(b, [20, 6, 6], strict=True))
    assert res["circuit_sizes"] == [sum(col) for col in zip(*blocks, strict=True)]
    assert 0 < blocks[0][0] < 20  # fitted: fewer rows than the generous block
    capsys.readouterr()
    assert main(["train", *argv[1:-2], "--set", "hlop.max_rows=[1,2]", "--out-dir",
                 str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "hlop.max_rows needs 1 value or 3" in capsys.readouterr().err


def test_one_threshold_per_circuit(monkeypatch, tmp_path):
    """A threshold per layer reaches each circuit's fit_block (the API and the CLI's plugin),
    and a list of the wrong length is refused with the circuits named."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6, bias=False), nn.Linear(6, 4, bias=False))
    seen = []
    fit = LateralCircuit.fit_block
    monkeypatch.setattr(
        LateralCircuit, "fit_block", lambda self, t: seen.append((self.name, t)) or fit(self, t)
    )
    hl = hlop.HLOP(model, lrs=0.02, threshold=[0.5, 0.8])
    hl.begin_task()
    model(torch.randn(8, 12))
    hl.end_task()
    assert seen == [("0", 0.5), ("1", 0.8)]
    with pytest.raises(ValueError, match="threshold needs 1 value or 2"):
        hlop.HLOP(model, threshold=[0.5, 0.8, 0.9])

    from hlop.errors import ConfigError
    from hlop.run.experiment import train
    from hlop.run.presets import preset

    cfg = preset("pmnist-subset")
    cfg.tasks, cfg.timesteps, cfg.hidden, cfg.train_limit, cfg.test_limit = 1, 2, 16, 40, 20
    cfg.hlop.sizes, cfg.hlop.threshold = "auto", [0.6, 0.7, 0.8]
    seen.clear()
    train(cfg, tmp_path / "run", stream=io.StringIO())
    assert [t for _, t in seen] == [0.6, 0.7, 0.8]
    cfg.hlop.threshold = [0.6, 0.7]
    with pytest.raises(ConfigError, match="hlop.threshold needs 1 value or 3"):
        train(cfg, tmp_path / "run", stream=io.StringIO())


def test_generous_block_bound_gives_small_circuits_their_dimension():
    """A quarter of N for wide circuits, at least 128 rows, all of a smaller circuit: the
    first convolution of a 1-channel image (9 inputs and a bias) may keep 10 rows, where a
    quarter would give it 2."""
    bound = {n: LateralCircuit(n, lr=0.01).block_bound for n in (1, 10, 145, 300, 784, 2048)}
    assert bound == {1: 1, 10: 10, 145: 128, 300: 128, 784: 196, 2048: 512}
    c = LateralCircuit(10, lr=0.01)
    c.add_subspace(4)
    c.merge()
    assert c.generous_block() == 6  # no more than fit
