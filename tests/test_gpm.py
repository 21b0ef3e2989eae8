"""GPM: bases against an SVD done here, stored as circuits' old rows, projected updates."""

import io

import pytest
import torch
import torch.nn.functional as F

from hlop import NetworkOptions
from hlop.config import Config, ConfigError, apply_overrides, validate
from hlop.continual import RunState
from hlop.data.tasks import Benchmark, Split, Task
from hlop.experiment import train
from hlop.methods.gpm import GPM, new_bases, representation_covariances
from hlop.networks import SpikingMLP
from hlop.presets import preset


def svd_criterion_bases(r: torch.Tensor, memory: torch.Tensor, eps: float) -> torch.Tensor:
    """GPM as written in its paper, on an explicit R (N x rows)."""
    total = (r**2).sum()
    r_hat = r - memory @ (memory.t() @ r)
    explained = ((memory.t() @ r) ** 2).sum()
    u, s, _ = torch.linalg.svd(r_hat, full_matrices=False)
    k = 0
    while explained < eps * total:
        explained = explained + s[k] ** 2
        k += 1
    return u[:, :k]


def projector(u: torch.Tensor) -> torch.Tensor:
    return u @ u.t()


def decaying(n: int, rows: int, seed: int) -> torch.Tensor:
    """A random N x rows matrix with singular values 1, 0.7, 0.49, ..."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(rows, n, generator=g, dtype=torch.float64)).Q
    return u @ torch.diag(0.7 ** torch.arange(n, dtype=torch.float64)) @ v.t()


@pytest.mark.parametrize("eps", [0.5, 0.9, 0.97, 0.999])
def test_bases_of_the_first_task_match_the_svd(eps):
    r = decaying(12, 40, 0)
    empty = torch.zeros(12, 0, dtype=torch.float64)
    expected = svd_criterion_bases(r, empty, eps)
    got = new_bases(r @ r.t(), empty, eps)
    assert got.shape == expected.shape and got.shape[1] >= 1
    torch.testing.assert_close(projector(got), projector(expected), atol=1e-8, rtol=0)
    # the smallest k: one basis fewer does not reach eps
    s = torch.linalg.svdvals(r)
    k = got.shape[1]
    assert (s[: k - 1] ** 2).sum() < eps * (s**2).sum() <= (s[:k] ** 2).sum()


@pytest.mark.parametrize("eps", [0.9, 0.99])
def test_bases_of_a_later_task_count_what_the_memory_explains(eps):
    first = decaying(12, 40, 1)
    empty = torch.zeros(12, 0, dtype=torch.float64)
    memory = new_bases(first @ first.t(), empty, 0.8)
    r = decaying(12, 40, 2) + first[:, :40] * 0.5  # overlaps the memory
    expected = svd_criterion_bases(r, memory, eps)
    got = new_bases(r @ r.t(), memory, eps)
    assert got.shape == expected.shape and got.shape[1] >= 1
    torch.testing.assert_close(projector(got), projector(expected), atol=1e-8, rtol=0)
    both = torch.cat([memory, got], 1)
    torch.testing.assert_close(both.t() @ both, torch.eye(both.shape[1], dtype=both.dtype))
    # fewer bases than without the memory's credit
    assert got.shape[1] < svd_criterion_bases(r, empty, eps).shape[1] + memory.shape[1]


def test_no_bases_when_the_memory_explains_enough_and_never_beyond_n():
    r = decaying(6, 20, 3)
    full = new_bases(r @ r.t(), torch.zeros(6, 0, dtype=torch.float64), 1.0)
    assert full.shape[1] <= 6
    memory = new_bases(r @ r.t(), torch.zeros(6, 0, dtype=torch.float64), 0.99)
    assert new_bases(r @ r.t(), memory, 0.95).shape[1] == 0
    assert new_bases(r @ r.t(), torch.eye(6, dtype=torch.float64), 0.99).shape[1] == 0


def tiny_run(n: int = 30, seed: int = 0) -> RunState:
    """A SpikingMLP 6-10-10-3 (T=2) and two tasks of ``n`` float samples: the second
    task's inputs live in other input dimensions than the first's."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = SpikingMLP(6, 10, 3, NetworkOptions(timesteps=2))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4)
    tasks = []
    for k in range(2):
        x = torch.zeros(n, 6)
        x[:, 3 * k : 3 * k + 3] = torch.rand(n, 3) * 2  # rank 3 per task
        y = torch.arange(n) % 3
        split = Split(x, y, lambda b: b)
        tasks.append(Task(f"t{k}", 3, split, split))
    cfg = Config(tasks=2, timesteps=2, lr=0.5, batch_size=n)
    cfg.gpm.samples, cfg.gpm.thresholds = n, [0.99]
    model.begin_task(0, 3)
    return RunState(cfg, model, Benchmark("tiny", tasks, True, (6,)), torch.device("cpu"))


def test_bases_are_stored_as_orthonormal_old_rows():
    run, gpm = tiny_run(), GPM()
    gpm.before_task(run)
    assert not any(c.projecting or c.learning for c in run.model.circuits())
    added = gpm.add_bases(run)
    x = run.benchmark.tasks[0].train.images
    # fc1 sees the image itself: its bases are those of the SVD of X^T
    expected = svd_criterion_bases(x.t().double(), torch.zeros(6, 0, dtype=torch.float64), 0.99)
    fc1 = run.model.fc1.circuit
    assert added[0] == expected.shape[1] == fc1.old_rows == fc1.rows
    torch.testing.assert_close(
        projector(fc1.weight.t().double()), projector(expected), atol=1e-5, rtol=0
    )
    for c, n in zip(run.model.circuits(), added, strict=True):
        assert n >= 1 and c.old_rows == c.rows == n and c.blocks == [n]
        torch.testing.assert_close(c.weight @ c.weight.t(), torch.eye(n), atol=1e-5, rtol=0)
    # a second task's bases are appended, orthogonal to the first's
    run.task = 1
    again = gpm.add_bases(run)
    for c, n, m in zip(run.model.circuits(), added, again, strict=True):
        assert c.old_rows == c.rows == n + m <= c.in_features
        torch.testing.assert_close(c.weight @ c.weight.t(), torch.eye(n + m), atol=1e-5, rtol=0)
    assert again[0] == 3  # fc1: the second task's three input dimensions


def test_representation_is_what_the_circuits_see():
    run = tiny_run()
    covs = representation_covariances(run, run.cfg.gpm.samples)
    assert run.model.training  # mode restored
    rows = {}

    def keep(name):
        def hook(layer, inputs, _output):
            rows[name] = layer.presynaptic(inputs[0])

        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in run.model.projected_layers()]
    run.model.eval()
    with torch.no_grad():
        run.model(run.benchmark.tasks[0].train.images)
    for h in hooks:
        h.remove()
    for cov, (name, _) in zip(covs, run.model.projected_layers(), strict=True):
        r = rows[name].double()
        assert r.shape[0] == 30  # DSR: one rate row per sample
        torch.testing.assert_close(cov, r.t() @ r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("proj_type", ["input", "weight"])
def test_projected_step_keeps_the_responses_to_the_old_span(proj_type):
    run, gpm = tiny_run(), GPM()
    for _, m in run.model.projected_layers():
        m.proj_type = proj_type
    gpm.before_task(run)
    gpm.add_bases(run)
    run.task = 1
    run.model.begin_task(1, 3)
    gpm.before_task(run)
    assert all(c.projecting for c in run.model.circuits())
    layers = [m for _, m in run.model.projected_layers()]
    before = [m.weight.detach().clone() for m in layers]
    probes = [torch.randn(5, m.circuit.old_rows) @ m.circuit.weight for m in layers]  # in span M
    opt = torch.optim.SGD(run.model.trainable_parameters(), lr=0.5)
    x, y = run.benchmark.tasks[1].train.batch(torch.arange(30))
    opt.zero_grad()
    run.model.train()
    run.model.rule.train_batch(run.model, x, y, 1, lambda loss: None)
    opt.step()
    moved = 0.0
    for m, w0, p in zip(layers, before, probes, strict=True):
        moved = max(moved, float((m.weight.detach() - w0).abs().max()))
        torch.testing.assert_close(F.linear(p, m.weight), F.linear(p, w0), atol=1e-5, rtol=0)
    assert moved > 1e-3  # the step did change the weights
    gpm.after_training(run)
    assert not any(c.projecting for c in run.model.circuits())


def test_unprojected_step_changes_the_responses_to_the_old_span():
    """The control of the test above: without projection the old span is not kept."""
    run, gpm = tiny_run(), GPM()
    gpm.before_task(run)
    gpm.add_bases(run)
    run.model.begin_task(1, 3)
    layer = run.model.fc2
    w0 = layer.weight.detach().clone()
    probe = torch.randn(5, layer.circuit.old_rows) @ layer.circuit.weight
    x, y = run.benchmark.tasks[1].train.batch(torch.arange(30))
    run.model.rule.train_batch(run.model, x, y, 1, lambda loss: None)
    with torch.no_grad():
        layer.weight -= 0.5 * layer.weight.grad
    assert (F.linear(probe, layer.weight) - F.linear(probe, w0)).abs().max() > 1e-3


def test_thresholds_broadcast_and_grow_per_task():
    run = tiny_run()
    run.task = 2
    gpm = GPM(thresholds=[0.97], threshold_step=0.003)
    assert gpm.thresholds(run) == pytest.approx([0.976] * 3)
    run.task = 1
    gpm = GPM(thresholds=[0.95, 0.99, 0.999], threshold_step=0.01)
    assert gpm.thresholds(run) == pytest.approx([0.96, 1.0, 1.0])  # capped at 1
    with pytest.raises(ConfigError, match="gpm.thresholds needs 1 value or 3"):
        GPM(thresholds=[0.9, 0.9]).check(run)


def test_config_keys_and_presets():
    cfg = apply_overrides(Config(), ["gpm.thresholds=[0.9,0.95,0.99]", "gpm.samples=50"])
    assert cfg.gpm.thresholds == [0.9, 0.95, 0.99] and cfg.gpm.samples == 50
    validate(cfg)
    for bad in (["gpm.thresholds=[1.5]"], ["gpm.samples=0"], ["gpm.threshold_step=-0.1"]):
        with pytest.raises(ConfigError, match="gpm"):
            validate(apply_overrides(Config(), bad))
    p = preset("pmnist")
    assert p.gpm.thresholds == [0.95, 0.99, 0.99] and p.gpm.samples == 300
    c = preset("cifar100")
    assert c.gpm.thresholds == [0.97] and c.gpm.threshold_step == 0.003 and c.gpm.samples == 125


@pytest.mark.slow
def test_gpm_run_on_pmnist_subset(tmp_path):
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("pmnist-subset"),
        ["method=gpm", "tasks=2", "timesteps=2", "hidden=32", "train_limit=200",
         "test_limit=100", "hlop.sizes=[[8,8,8],[8,8,8]]", "gpm.samples=100"],
    )  # fmt: skip
    res = train(cfg, tmp_path / "run", stream=io.StringIO())
    assert res["status"] == "complete" and len(res["acc_matrix"][1]) == 2
    ck = [
        torch.load(tmp_path / "run" / f"checkpoint_task{k}.pt", weights_only=True)["model"]
        for k in (0, 1)
    ]
    for name, n in (("fc1", 784), ("fc2", 32), ("heads.0", 32)):
        h0, h1 = ck[0][f"{name}.circuit.weight"], ck[1][f"{name}.circuit.weight"]
        assert 1 <= h0.shape[0] <= h1.shape[0] <= n
        assert int(ck[1][f"{name}.circuit.frozen_rows"]) == h1.shape[0]
        assert torch.equal(h1[: h0.shape[0]], h0)  # the memory only grows
        torch.testing.assert_close(h1 @ h1.t(), torch.eye(h1.shape[0]), atol=1e-4, rtol=0)
        # task 1's update of the layer is orthogonal to task 0's bases
        dw = ck[1][f"{name}.weight"] - ck[0][f"{name}.weight"]
        assert dw.abs().max() > 1e-4
        assert (dw @ h0.t()).abs().max() < 1e-4 * max(1.0, float(dw.abs().max()))
    assert res["circuit_sizes"] == [
        ck[1][f"{n}.circuit.weight"].shape[0] for n in ("fc1", "fc2", "heads.0")
    ]


@pytest.mark.slow
def test_gpm_run_on_a_conv_benchmark(tmp_path):
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("split-mnist-subset"),
        ["method=gpm", "tasks=2", "timesteps=2", "epochs=1", "train_limit=20",
         "test_limit=20", "batch_size=10", "gpm.samples=4", "lr=0.1", "warmup=0"],
    )  # fmt: skip
    res = train(cfg, tmp_path / "run", stream=io.StringIO())
    assert res["status"] == "complete" and len(res["acc_matrix"]) == 2
    ck = [
        torch.load(tmp_path / "run" / f"checkpoint_task{k}.pt", weights_only=True)["model"]
        for k in (0, 1)
    ]
    for i, dim in enumerate((9, 64 * 9, 128 * 9)):
        h0 = ck[0][f"convs.{i}.circuit.weight"]
        assert 1 <= h0.shape[0] <= dim
        dw = (ck[1][f"convs.{i}.weight"] - ck[0][f"convs.{i}.weight"]).flatten(1)
        assert dw.abs().max() > 1e-5  # task 1 trains the layer
        assert (dw @ h0.t()).abs().max() < 1e-4 * max(1.0, float(dw.abs().max()))
