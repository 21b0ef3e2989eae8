"""EWC: the empirical Fisher, the penalty's gradient and its accumulation over tasks, by hand."""

import io
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import run_state

import hlop.methods as methods
from hlop import NetworkSettings
from hlop.data.containers import Benchmark, DataSplit, Task
from hlop.loop.state import RunState
from hlop.methods.ewc import EWC, empirical_fisher
from hlop.models.mlp import SpikingMLP
from hlop.run.config import Config, ConfigError, apply_overrides, validate
from hlop.run.experiment import train
from hlop.run.presets import preset
from hlop.spiking.training import OTTT


def tiny_run(n: int = 6, seed: int = 0, training: str = "dsr") -> RunState:
    """A SpikingMLP 5-8-8-3 (T=2) and one task of ``n`` float samples (identity transform)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = SpikingMLP(5, 8, 3, NetworkSettings(timesteps=2, training=training))
    with torch.no_grad():  # large enough weights that the neurons spike
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4)
    x, y = torch.rand(n, 5) * 2, torch.arange(n) % 3
    split = DataSplit(x, y, lambda b: b)
    bench = Benchmark("tiny", [Task("t0", 3, split, split)], True, (5,))
    cfg = Config(tasks=1, timesteps=2, training=training)
    cfg.ewc.samples = n
    model.begin_task(0, 3)
    return run_state(cfg, model, bench, torch.device("cpu"))


def per_sample_fisher(run: RunState) -> dict[str, torch.Tensor]:
    """Mean over the samples of the squared gradient of -log p(y|x), one sample at a time."""
    model, split = run.model, run.benchmark.tasks[0].train
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for i in range(len(split)):
        model.zero_grad()
        x, y = split.batch(torch.tensor([i]))
        F.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                sums[n] = sums.get(n, 0) + p.grad**2
    model.zero_grad()
    return {n: s / len(split) for n, s in sums.items()}


def test_fisher_is_the_mean_of_squared_per_sample_gradients():
    run = tiny_run()
    fisher = empirical_fisher(run, len(run.benchmark.tasks[0].train))
    assert all(p.grad is None for p in run.model.parameters())  # gradients left cleared
    expected = per_sample_fisher(run)
    assert set(expected) <= set(fisher)
    for n, f in expected.items():
        torch.testing.assert_close(fisher[n], f, rtol=1e-5, atol=1e-9)
    assert fisher["fc1.weight"].abs().sum() > 0 and fisher["heads.0.weight"].abs().sum() > 0
    # not the squared mean gradient of the batch (a different, biased estimator)
    run.model.zero_grad()
    x, y = run.benchmark.tasks[0].train.batch(torch.arange(6))
    F.cross_entropy(run.model(x), y).backward()
    batch = run.model.heads[0].weight.grad ** 2
    assert not torch.allclose(batch, fisher["heads.0.weight"], rtol=1e-2)


def test_head_fisher_by_hand():
    """The shared head reads the rate h of its input: grad_W -log p = (softmax(W h) - e_y) h^T."""
    run = tiny_run()
    model, split = run.model, run.benchmark.tasks[0].train
    rates = []
    hook = model.heads[0].register_forward_hook(
        lambda m, inp, out: rates.append(m.presynaptic(inp[0]))
    )
    model.eval()
    with torch.no_grad():
        scores = model(split.images)
    hook.remove()
    h = rates[0]
    err = torch.softmax(scores, 1) - F.one_hot(split.labels, 3).float()
    by_hand = (err[:, :, None] * h[:, None, :]).pow(2).mean(0)
    fisher = empirical_fisher(run, 6)
    torch.testing.assert_close(fisher["heads.0.weight"], by_hand, rtol=1e-4, atol=1e-7)


def test_fisher_of_the_sample_budget_and_frozen_parameters():
    run = tiny_run(n=12)
    run.model.begin_task(1, 3)  # only weight matrices train from task 1 on
    run.task = 0
    fisher = empirical_fisher(run, 4)
    assert set(fisher) == {"fc1.weight", "fc2.weight", "heads.0.weight"}
    assert not torch.allclose(fisher["fc1.weight"], empirical_fisher(run, 12)["fc1.weight"])


def penalty(ewc: EWC, model: torch.nn.Module, lam: float) -> torch.Tensor:
    """``(lam / 2) sum F (theta - theta_bar)^2``, differentiable: the penalty of the sum over
    tasks up to a constant (the same gradient)."""
    terms = [
        (ewc.fisher[n] * (p - ewc.anchor[n]) ** 2).sum()
        for n, p in model.named_parameters()
        if n in ewc.fisher
    ]
    return 0.5 * lam * torch.stack(terms).sum()


def test_after_backward_adds_lam_f_times_the_distance_to_the_anchor():
    run = tiny_run()
    model, ewc = run.model, EWC(lam=7.0)
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters() if p.dim() > 1}
    ewc.consolidate(model, fisher)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.begin_task(1, 3)  # thresholds stop training: their grads stay None
    grads = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.grad = grads[n] = torch.randn_like(p)
    before = {n: g.clone() for n, g in grads.items()}
    ewc.after_backward(run)
    for n, p in model.named_parameters():
        if n in fisher:
            expected = before[n] + 7.0 * fisher[n] * (p.detach() - anchor[n])
            torch.testing.assert_close(p.grad, expected, rtol=1e-6, atol=1e-6)
        else:
            assert p.grad is None
    # the same as the gradient of the penalty (lam / 2) sum F (theta - theta*)^2
    model.zero_grad()
    penalty(ewc, model, 7.0).backward()
    for n in fisher:
        p = dict(model.named_parameters())[n]
        torch.testing.assert_close(p.grad, 7.0 * fisher[n] * (p.detach() - anchor[n]))


def test_two_tasks_accumulate_one_anchor_each():
    run = tiny_run()
    model, ewc = run.model, EWC(lam=3.0)
    params = dict(model.named_parameters())
    names = ["fc1.weight", "heads.0.weight"]
    f1 = {n: torch.rand_like(params[n]) for n in names}
    f1["fc1.weight"][0] = 0  # a parameter unimportant to the first task
    theta1 = {n: params[n].detach().clone() for n in names}
    ewc.consolidate(model, f1)
    with torch.no_grad():
        for n in names:
            params[n].add_(torch.randn_like(params[n]))
    f2 = {n: torch.rand_like(params[n]) for n in names}
    f2["fc1.weight"][0] = 0  # unimportant to both: anchored at the latest values
    theta2 = {n: params[n].detach().clone() for n in names}
    ewc.consolidate(model, f2)
    for n in names:
        torch.testing.assert_close(ewc.fisher[n], f1[n] + f2[n])
    torch.testing.assert_close(ewc.anchor["fc1.weight"][0], theta2["fc1.weight"][0])
    with torch.no_grad():
        for n in names:
            params[n].add_(torch.randn_like(params[n]))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    ewc.after_backward(run)
    for n in names:
        theta = params[n].detach()
        expected = 3.0 * (f1[n] * (theta - theta1[n]) + f2[n] * (theta - theta2[n]))
        torch.testing.assert_close(params[n].grad, expected, rtol=1e-5, atol=1e-6)


def test_config_keys_and_refusals():
    cfg = apply_overrides(Config(), ["ewc.lam=250", "ewc.samples=64", "method=ewc"])
    assert (cfg.ewc.lam, cfg.ewc.samples) == (250.0, 64)
    validate(cfg)
    for bad in (["ewc.lam=-1"], ["ewc.samples=0"]):
        with pytest.raises(ConfigError, match="ewc"):
            validate(apply_overrides(Config(method="ewc"), bad))
    with pytest.raises(ConfigError, match="ewc.lam"):
        EWC(lam=-1)  # the plugin checks the settings it is given
    # what spans parts: the plugin refuses the network's training rule
    online = SimpleNamespace(model=SimpleNamespace(rule=OTTT(online_update=True)))
    with pytest.raises(ConfigError, match="online update"):
        EWC().check(online)
    EWC().check(tiny_run(training="ottt"))


def test_unstable_lambda_warns():
    run = tiny_run()
    run.optimisation.lr = 1e6
    with pytest.warns(UserWarning, match="lower ewc.lam"):
        EWC(lam=1e6).after_training(run)


@pytest.mark.slow
def test_ewc_run_on_pmnist_subset(tmp_path, monkeypatch):
    torch.set_num_threads(1)

    class Recording(EWC):
        made = []  # the plugins the run built from its ewc section

        def __init__(self, **settings):
            super().__init__(**settings)
            Recording.made.append(self)

        def after_training(self, run):
            super().after_training(run)
            self.snapshots = getattr(self, "snapshots", [])
            self.snapshots.append({n: f.clone() for n, f in self.fisher.items()})

    monkeypatch.setitem(methods.METHODS, "ewc", methods.Method(Recording, methods.EWCSettings))
    cfg = apply_overrides(
        preset("pmnist-subset"),
        ["method=ewc", "tasks=2", "timesteps=2", "hidden=32", "train_limit=200",
         "test_limit=100", "hlop.sizes=[[8,8,8],[8,8,8]]", "ewc.samples=50", "ewc.lam=5"],
    )  # fmt: skip
    res = train(cfg, tmp_path / "run", stream=io.StringIO())
    assert res["status"] == "complete" and len(res["acc_matrix"][1]) == 2
    assert res["circuit_sizes"] == [0, 0, 0]  # circuits unused
    (plugin,) = Recording.made
    assert plugin.settings == methods.EWCSettings(lam=5.0, samples=50)  # the section's values
    first, second = plugin.snapshots
    assert {"fc1.weight", "fc2.weight", "heads.0.weight"} <= set(first)
    assert set(second) == set(first)  # thresholds: task 0's Fisher only
    for n in ("fc1.weight", "fc2.weight", "heads.0.weight"):
        assert torch.all(second[n] >= first[n]) and torch.any(second[n] > first[n])
    ckpt0 = torch.load(tmp_path / "run" / "checkpoint_task0.pt", weights_only=True)["model"]
    ckpt1 = torch.load(tmp_path / "run" / "checkpoint_task1.pt", weights_only=True)["model"]
    assert not torch.equal(ckpt0["fc2.weight"], ckpt1["fc2.weight"])  # task 1 trains
    # the combined anchor lies between the two tasks' parameters where both Fishers count
    w = plugin.fisher["fc2.weight"]
    lo = torch.minimum(ckpt0["fc2.weight"], ckpt1["fc2.weight"]) - 1e-6
    hi = torch.maximum(ckpt0["fc2.weight"], ckpt1["fc2.weight"]) + 1e-6
    a = plugin.anchor["fc2.weight"]
    assert torch.all((a >= lo) & (a <= hi) | (w == 0))


@pytest.mark.slow
def test_ewc_run_on_a_conv_benchmark(tmp_path):
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("split-mnist-subset"),
        ["method=ewc", "tasks=2", "timesteps=2", "epochs=1", "train_limit=20",
         "test_limit=20", "batch_size=10", "ewc.samples=4", "ewc.lam=1"],
    )  # fmt: skip
    res = train(cfg, tmp_path / "run", stream=io.StringIO())
    assert res["status"] == "complete" and len(res["acc_matrix"]) == 2


def test_proximal_penalty_is_the_implicit_step_and_stays_stable():
    """penalty="proximal": after each SGD step theta = theta_bar + (theta - theta_bar) /
    (1 + lr lam F), the minimiser of |u - theta_sgd|^2 / (2 lr) + (lam / 2) F (u - bar)^2;
    at lr lam F = 30 the gradient penalty blows up while the proximal one converges."""
    run = tiny_run()
    model = run.model
    lam, lr = 7.0, 0.5
    ewc = EWC(lam=lam, penalty="proximal")
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters() if p.dim() > 1}
    ewc.consolidate(model, fisher)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.begin_task(1, 3)
    run.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    ewc.after_backward(run)  # proximal: the gradient is left alone
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    sgd = {n: p.detach() - lr * grads[n] for n, p in model.named_parameters() if n in grads}
    run.optimizer.step()
    ewc.after_batch(run, 1, 1, 0.0, 0.0)
    for n, p in model.named_parameters():
        if n in fisher:
            u = p.detach().clone().requires_grad_()
            objective = ((u - sgd[n]) ** 2).sum() / (2 * lr)
            objective = objective + 0.5 * lam * (fisher[n] * (u - anchor[n]) ** 2).sum()
            objective.backward()  # the minimiser: zero gradient
            assert u.grad.abs().max() < 1e-5
        elif n in grads:
            torch.testing.assert_close(p.detach(), sgd[n])

    # one parameter, F = 1, lr lam = 30: 20 steps without data gradient
    def drift(penalty: str) -> float:
        e = EWC(lam=60.0, penalty=penalty)
        w = torch.nn.Parameter(torch.tensor([1.0]))
        e.fisher, e.anchor = {"w": torch.ones(1)}, {"w": torch.zeros(1)}
        holder = torch.nn.Module()
        holder.w = w
        state = RunState(run.settings, holder, run.benchmark, "cpu", run.optimisation)
        state.optimizer = torch.optim.SGD([w], lr=0.5)
        for _ in range(20):
            w.grad = torch.zeros(1)
            e.after_backward(state)
            state.optimizer.step()
            e.after_batch(state, 1, 1, 0.0, 0.0)
        return abs(float(w.detach()))

    assert drift("gradient") > 1e20 and drift("proximal") < 1e-20


def test_penalty_setting_is_checked():
    with pytest.raises(ConfigError, match="ewc.penalty"):
        validate(apply_overrides(Config(method="ewc"), ["ewc.penalty=implicit"]))
    cfg = apply_overrides(Config(method="ewc"), ["ewc.penalty=proximal"])
    assert cfg.ewc.penalty == "proximal"
