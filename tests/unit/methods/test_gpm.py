"""GPM: bases against an SVD done here, stored as circuits' old rows, projected updates."""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import run_state

from hlop import NetworkSettings
from hlop.data.containers import Benchmark, DataSplit, Task
from hlop.loop.state import RunState
from hlop.methods.gpm import (
    GPM,
    new_bases,
    representation_covariances,
    representation_statistics,
)
from hlop.models.cnn import SpikingCNN
from hlop.models.mlp import SpikingMLP
from hlop.models.resnet import SpikingResNet18
from hlop.run.config import Config, ConfigError, apply_overrides, read_config_file, validate
from hlop.run.experiment import train
from hlop.run.presets import GPM_CNN_SAMPLES, GPM_RESNET_SAMPLES, preset


def svd_criterion_bases(
    r: torch.Tensor, memory: torch.Tensor, eps: float, first_task: bool = False
) -> torch.Tensor:
    """GPM on an explicit R (N x rows), written out from the paper and the reference code:
    task 0 keeps #{i : s_1^2 + ... + s_i^2 < eps ||R||^2} (the reference code); later
    tasks the smallest k with ||M^T R||^2 + s_1^2 + ... + s_k^2 >= eps ||R||^2."""
    total = (r**2).sum()
    r_hat = r - memory @ (memory.t() @ r)
    explained = ((memory.t() @ r) ** 2).sum()
    u, s, _ = torch.linalg.svd(r_hat, full_matrices=False)
    if first_task:
        ratio = s**2 / total
        return u[:, : int((ratio.cumsum(0) < eps).sum())]
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


@pytest.mark.parametrize("eps", [0.5, 0.6, 0.9, 0.97, 0.999])
def test_bases_of_the_first_task_match_the_svd(eps):
    r = decaying(12, 40, 0)  # s_1^2 is 51% of ||R||^2: eps 0.5 keeps no basis at all
    empty = torch.zeros(12, 0, dtype=torch.float64)
    expected = svd_criterion_bases(r, empty, eps, first_task=True)
    got = new_bases(r @ r.t(), empty, eps)
    assert got.shape == expected.shape and got.shape[1] == (0 if eps == 0.5 else got.shape[1])
    torch.testing.assert_close(projector(got), projector(expected), atol=1e-8, rtol=0)
    # the reference's count: the first k keep less than eps, k + 1 reach it
    s = torch.linalg.svdvals(r)
    k = got.shape[1]
    assert (s[:k] ** 2).sum() < eps * (s**2).sum() <= (s[: k + 1] ** 2).sum()


def diagonal_spectrum(energies: list[float]) -> torch.Tensor:
    """``R R^T`` of an R whose squared singular values are ``energies``, along e_1, e_2..."""
    return torch.diag(torch.tensor(energies, dtype=torch.float64))


def test_task_zero_keeps_the_reference_codes_count_later_tasks_the_smallest_k():
    """s^2 = 5, 3, 1.5, 0.5 (cumulative 50%, 80%, 95%, 100%) at eps 0.9: the reference code
    keeps 2 bases after task 0 (#{cumsum < 0.9}; the paper's Eq. 5 would keep 3), and the
    smallest k reaching eps after later tasks."""
    cov = diagonal_spectrum([5.0, 3.0, 1.5, 0.5])
    e = torch.eye(4, dtype=torch.float64)
    empty = torch.zeros(4, 0, dtype=torch.float64)
    first = new_bases(cov, empty, 0.9)
    assert first.shape == (4, 2)
    torch.testing.assert_close(projector(first), projector(e[:, :2]))
    assert new_bases(cov, empty, 0.9, first_task=True).shape[1] == 2
    # exactly at a cumulative share nothing changes: 80% < 0.8 is false
    assert new_bases(cov, empty, 0.8).shape[1] == 1
    # a first direction that alone reaches eps: no basis at all after task 0
    assert new_bases(diagonal_spectrum([9.5, 0.5]), torch.zeros(2, 0).double(), 0.9).shape[1] == 0
    # a later task with an empty memory (task 0 kept nothing): the smallest k
    later = new_bases(cov, empty, 0.9, first_task=False)
    torch.testing.assert_close(projector(later), projector(e[:, :3]))
    # a later task: e_4 (5%) already in the memory; 5% + 50% + 30% < 90% <= 5% + 95%
    again = new_bases(cov, e[:, 3:], 0.9)
    torch.testing.assert_close(projector(again), projector(e[:, :3]))
    assert new_bases(cov, e[:, 3:], 0.85).shape[1] == 2  # 5% + 80% reach 85%
    assert new_bases(cov, e[:, :3], 0.9).shape[1] == 0  # the memory explains 95%


@pytest.mark.parametrize("eps", [0.9, 0.99])
def test_bases_of_a_later_task_count_what_the_memory_explains(eps):
    first = decaying(12, 40, 1)
    empty = torch.zeros(12, 0, dtype=torch.float64)
    memory = new_bases(first @ first.t(), empty, 0.8)
    r = decaying(12, 40, 2) + first[:, :40] * 0.5  # overlaps the memory
    expected = svd_criterion_bases(r, memory, eps)
    got = new_bases(r @ r.t(), memory, eps)
    assert memory.shape[1] >= 1 and got.shape == expected.shape and got.shape[1] >= 1
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
    model = SpikingMLP(6, 10, 3, NetworkSettings(timesteps=2))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4)
    tasks = []
    for k in range(2):
        x = torch.zeros(n, 6)
        x[:, 3 * k : 3 * k + 3] = torch.rand(n, 3) * 2  # rank 3 per task
        y = torch.arange(n) % 3
        split = DataSplit(x, y, lambda b: b)
        tasks.append(Task(f"t{k}", 3, split, split))
    cfg = Config(tasks=2, timesteps=2, lr=0.5, batch_size=n)
    cfg.gpm.samples, cfg.gpm.thresholds = [n], [0.99]
    model.begin_task(0, 3)
    return run_state(cfg, model, Benchmark("tiny", tasks, True, (6,)), torch.device("cpu"))


def test_bases_are_stored_as_orthonormal_old_rows():
    run, gpm = tiny_run(), GPM(samples=[30])
    gpm.before_task(run)
    assert not any(c.projecting or c.learning for c in run.model.circuits())
    added = gpm.add_bases(run)
    x = run.benchmark.tasks[0].train.images
    # fc1 sees the image itself: its bases are those of the SVD of X^T (task 0's rule)
    empty = torch.zeros(6, 0, dtype=torch.float64)
    expected = svd_criterion_bases(x.t().double(), empty, 0.99, first_task=True)
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
    covs = representation_covariances(run, [len(run.benchmark.tasks[0].train)] * 3)
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
    cfg = apply_overrides(Config(), ["gpm.thresholds=[0.9,0.95,0.99]", "gpm.samples=[24,100,125]"])
    assert cfg.gpm.thresholds == [0.9, 0.95, 0.99] and cfg.gpm.samples == [24, 100, 125]
    validate(cfg)
    assert Config().gpm.samples == [125]
    for bad in (
        ["gpm.thresholds=[1.5]"],
        ["gpm.samples=[0]"],
        ["gpm.samples=[10,0]"],
        ["gpm.samples=[]"],
        ["gpm.threshold_step=-0.1"],
    ):
        with pytest.raises(ConfigError, match="gpm"):
            validate(apply_overrides(Config(), bad))
    p = preset("pmnist")
    assert p.gpm.thresholds == [0.95, 0.99, 0.99] and p.gpm.samples == [300]
    assert preset("pmnist-subset").gpm.samples == [300]
    for name in ("cifar100", "split-mnist", "split-fashion-mnist", "split-mnist-subset"):
        c = preset(name)
        assert c.gpm.thresholds == [0.97] and c.gpm.threshold_step == 0.003
        assert c.gpm.samples == [24, 100, 100]
    f = preset("five-datasets")
    assert f.gpm.thresholds == [0.965] and f.gpm.threshold_step == 0
    assert f.gpm.samples == [10] * 9 + [50] * 4 + [100] * 7
    assert preset("five-datasets-domain").gpm.samples == f.gpm.samples + [100]
    m = preset("miniimagenet")
    assert m.gpm.thresholds == [0.985] and m.gpm.threshold_step == 0.0003
    assert m.gpm.samples == f.gpm.samples


def test_preset_samples_follow_the_reference_layer_by_layer():
    """One count per circuit, in the networks' circuit order: the reference's convolutions
    (stem, each block's conv1, conv2) in order, and each 1x1 shortcut with its conv1."""
    torch.set_num_threads(1)
    reference = [10, 10, 10, 10, 10, 10, 10, 10, 50, 50, 50, 100, 100, 100, 100, 100, 100]
    resnet = SpikingResNet18(10, width=2)
    names = [n for n, _ in resnet.projected_layers()]
    assert len(names) == len(GPM_RESNET_SAMPLES) == 20
    by_name = dict(zip(names, GPM_RESNET_SAMPLES, strict=True))
    convs = [n for n in names if not n.endswith("shortcut")]
    assert [by_name[n] for n in convs] == reference
    for n in names:
        if n.endswith("shortcut"):
            assert by_name[n] == by_name[n.replace("shortcut", "conv1")]
    cnn = SpikingCNN(3, 32, 10, channels=(2, 2, 2))
    assert [n for n, _ in cnn.projected_layers()] == ["convs.0", "convs.1", "convs.2"]
    assert GPM_CNN_SAMPLES == (24, 100, 100)  # main_cifar100.py's conv1-3 (batch_list)
    shared = SpikingResNet18(10, width=2, shared_head=True)
    assert len(shared.projected_layers()) == len(preset("five-datasets-domain").gpm.samples)


def test_a_config_file_with_one_sample_count_still_loads(tmp_path):
    saved = Config().to_dict()
    # a config.json written before gpm.samples was a list (hlop.run.config reads one value as
    # the one-element list)
    saved["gpm"]["samples"] = 125
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    assert read_config_file(path).gpm.samples == [125]
    assert apply_overrides(Config(), ["gpm.samples=50"]).gpm.samples == [50]


def test_sample_counts_broadcast_per_circuit():
    run = tiny_run()
    assert GPM(samples=[7]).samples(run) == [7, 7, 7]
    assert GPM(samples=7).samples(run) == [7, 7, 7]
    assert GPM(samples=[3, 5, 9]).samples(run) == [3, 5, 9]
    assert GPM().samples(run) == [125] * 3
    with pytest.raises(ConfigError, match="gpm.samples needs 1 value or 3"):
        GPM(samples=[3, 5]).check(run)


def test_each_layer_sums_the_rows_of_its_own_first_samples():
    """Counts 5, 13, 30 with batches of 4: each layer's R R^T is the one of the first n_l
    samples of the same permutation (as if measured alone), in one pass over 30 samples."""
    run = tiny_run()
    run.settings.test_batch_size = 4
    seen = []
    handle = run.model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    covs, counts = representation_statistics(run, [5, 13, 30])
    handle.remove()
    assert sum(seen) == 30  # every sample once, whatever its layers
    assert counts == [5, 13, 30]  # DSR: one rate row per sample
    for i, n in enumerate((5, 13, 30)):
        alone, rows = representation_statistics(run, n)
        assert rows[i] == n
        torch.testing.assert_close(covs[i], alone[i], rtol=1e-9, atol=1e-12)
    # more samples than the task has: all of them
    assert representation_statistics(run, [100, 2, 2])[1] == [30, 2, 2]
    with pytest.raises(ValueError, match="2 sample counts for 3"):
        representation_statistics(run, [5, 5])
    # the first n samples of the permutation: a prefix of a longer count's samples
    g = torch.Generator().manual_seed(run.seed * 1019 + run.task)
    first = torch.randperm(30, generator=g)[:5]
    x = run.benchmark.tasks[0].train.images[first].double()
    torch.testing.assert_close(covs[0], x.t() @ x, rtol=1e-6, atol=1e-6)  # fc1: the image


def test_bases_come_from_each_circuits_own_samples():
    """fc1 on its first 2 samples (rank 2: the task-0 rule keeps 1 basis), the other
    circuits on all 30."""
    run = tiny_run()
    gpm = GPM(samples=[2, 30, 30], thresholds=[0.99])
    covs = representation_covariances(run, [2, 30, 30])
    added = gpm.add_bases(run)
    assert added[0] == 1
    for c, cov, n in zip(run.model.circuits(), covs, added, strict=True):
        u = new_bases(cov, torch.zeros(c.in_features, 0, dtype=torch.float64), 0.99)
        assert n == u.shape[1]
        torch.testing.assert_close(
            projector(c.weight.t().double()), projector(u), atol=1e-5, rtol=0
        )


@pytest.mark.slow
def test_gpm_run_on_pmnist_subset(tmp_path):
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("pmnist-subset"),
        ["method=gpm", "tasks=2", "timesteps=2", "hidden=32", "train_limit=200",
         "test_limit=100", "hlop.sizes=[[8,8,8],[8,8,8]]", "gpm.samples=[100]"],
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
         "test_limit=20", "batch_size=10", "gpm.samples=[2,4,4]", "lr=0.1", "warmup=0"],
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


def test_a_circuit_left_empty_by_task_zero_takes_the_later_rule_after_task_one():
    """One sample for fc1: a rank-1 representation, whose one direction holds 100% >= eps.
    Task 0's rule keeps no basis; after task 1 (the reference's later-task rule, even with
    an empty memory) the smallest k reaching eps: that direction."""
    run = tiny_run()
    gpm = GPM(samples=[1, 30, 30], thresholds=[0.99])
    assert gpm.add_bases(run)[0] == 0 and run.model.fc1.circuit.rows == 0
    run.task = 1
    assert gpm.add_bases(run)[0] == 1
    x = run.benchmark.tasks[1].train.images
    g = torch.Generator().manual_seed(run.seed * 1019 + 1)
    first = x[torch.randperm(30, generator=g)[0]]
    row = run.model.fc1.circuit.weight[0]
    torch.testing.assert_close(abs(float(row @ first / first.norm())), 1.0, atol=1e-5, rtol=0)


def test_a_worker_without_samples_of_a_segment_skips_it(monkeypatch):
    """Several workers share each segment; one may get none of a short one (here: the
    segments [0, 5) and [5, 13) give this worker nothing) and must not run an empty batch."""
    from hlop.loop import distributed

    run = tiny_run()
    monkeypatch.setattr(distributed, "shard", lambda items: items[:0] if len(items) < 10 else items)
    seen = []
    run.model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    covs, counts = representation_statistics(run, [5, 13, 30])
    assert counts == [0, 0, 17] and float(covs[0].abs().sum()) == 0.0
    assert seen == [17]  # no empty batch
