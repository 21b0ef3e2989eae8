"""The fast layout carried in two parts (FastParts) gives what the joined layout gives: the
same scores, gradients and circuit updates; hooks get the joined layout.

The MLP's are bit for bit the same.  The convolutional networks' products round in another
order (channels-last convolutions, batch norm folded into the convolution, the first layer's
input rate taken once), so theirs agree to float32 rounding."""

import pytest
import torch
import torch.nn.functional as F
from helpers import net_settings, network, step_gradients

from hlop.models.mlp import SpikingMLP
from hlop.spiking.fast_parts import FastParts


@pytest.mark.parametrize("proj_type", ["input", "weight"])
@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_two_parts_equal_the_joined_fast_layout(arch, proj_type):
    torch.set_num_threads(1)
    model, x, y = network(arch, proj_type=proj_type)
    before = [c.weight.clone() for c in model.circuits()]
    model.fast_in_parts = False
    out_j, g_j, c_j = step_gradients(model, x, y, fast=True)
    model.fast_in_parts = True
    out_s, g_s, c_s = step_gradients(model, x, y, fast=True)
    if arch == "mlp":
        same = torch.equal
    else:

        def same(a, b):
            return (a - b).abs().max() <= 1e-5 * b.abs().max()

    assert same(out_s, out_j)
    assert set(g_s) == set(g_j) and len(g_s) >= 3
    for name, g in g_j.items():
        assert g.abs().max() > 0, name
        assert same(g_s[name], g), name
    assert any(not torch.equal(a, b) for a, b in zip(c_j, before, strict=True))  # they learnt
    for a, b in zip(c_s, c_j, strict=True):
        assert same(a, b)


def test_two_parts_in_evaluation_and_with_one_task_per_sample():
    model, x, _ = network("cnn")
    model.add_head(10)  # two task heads
    task = torch.tensor([0, 1, 1, 0, 1, 0])
    scores = {}
    for split in (False, True):
        model.fast_in_parts = split
        with torch.no_grad():
            model.eval()
            scores[split, "eval"] = model(x)
        model.train()
        scores[split, "joint"] = model(x, task)
    for kind in ("eval", "joint"):
        a, b = scores[True, kind], scores[False, kind]
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert torch.isfinite(scores[True, "joint"]).all()


def test_hooks_get_the_joined_layout():
    model, x, y = network("cnn")
    seen = []
    handle = model.sns[1].register_forward_hook(lambda m, i, out: seen.append(out.shape))
    model.fast = True
    F.cross_entropy(model(x), y).backward()
    handle.remove()
    assert model.layout == "fast"
    assert seen and seen[0][0] == 6 * (5 + 1)  # T + 1 slices of B rows, one tensor


def test_split_parts():
    x = torch.randn(3, 4, requires_grad=True)
    h = FastParts.repeated(x, 5)
    assert h.constant and h.steps.shape == (5, 3, 4) and h.steps.stride(0) == 0
    doubled = h.map(lambda t: 2 * t)
    assert doubled.constant and torch.equal(doubled.steps[4], 2 * x.detach())
    assert not doubled.steps.requires_grad and doubled.rate.requires_grad
    varying = FastParts(torch.randn(5, 3, 4), torch.randn(3, 4))
    total = doubled + varying
    assert not total.constant and torch.equal(total.steps, doubled.steps + varying.steps)
    assert total.joined().shape == (6 * 3, 4)
    assert torch.equal(total.joined()[-3:], total.rate)
    fresh = FastParts(varying.steps.clone(), varying.rate)
    summed = fresh.add_(doubled)
    assert summed.steps.data_ptr() == fresh.steps.data_ptr()  # in place: no third map
    assert torch.equal(summed.steps, total.steps) and torch.equal(summed.rate, total.rate)
    assert doubled.add_(doubled).constant  # a constant part is shared: never summed into
    picked = total.select(torch.tensor([True, False, True]))
    assert picked.steps.shape == (5, 2, 4) and picked.rate.shape == (2, 4)


def _has_compiler() -> bool:
    import os
    import shutil

    return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not _has_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_spike_loops_give_the_same_step():
    """compile=True (the fused path meant for GPUs) on Inductor's CPU backend: the same
    scores, gradients and circuits as the eager loops, on the joined and the split layout
    and the per-step one (bit for bit here; the compiled loop may contract a multiply-add
    that the eager one rounds twice: on a 20 x 64 x 64 x 32 x 32 input 2 of 84 million
    spikes differed)."""
    torch.set_num_threads(1)
    model, x, y = network("mlp")
    results = {}
    paths = ((True, True), (False, True), (False, False))  # (split, fast)
    for compiled in (False, True):
        for n in model.neurons():
            n.compiled = compiled
        for split, fast in paths:
            model.fast_in_parts = split
            results[compiled, split, fast] = step_gradients(model, x, y, fast=fast)
    for key in paths:
        (out_e, g_e, c_e), (out_c, g_c, c_c) = results[(False, *key)], results[(True, *key)]
        assert torch.equal(out_c, out_e), key
        assert all(torch.equal(g_c[k], g) for k, g in g_e.items()), key
        assert all(torch.equal(a, b) for a, b in zip(c_c, c_e, strict=True)), key


def test_compile_is_for_dsr_neurons_only():
    from hlop.errors import ConfigError

    with pytest.raises(ConfigError, match="leave compile off"):
        SpikingMLP(20, 10, settings=net_settings(timesteps=2, training="bptt", compile=True))
    model = SpikingMLP(20, 10, settings=net_settings(timesteps=2, compile=True))
    assert all(n.compiled for n in model.neurons())


def test_channels_last_convolution_gradient_in_weight_mode():
    """A ResNet (strided and 1x1 convolutions) in weight mode with channels-last maps: the
    step runs (torch 2.13's CPU weight gradient crashed with mixed memory formats) and equals
    the step in the default format to float32 rounding."""
    model, x, y = network("resnet", proj_type="weight")
    steps = {}
    for last in (True, False):
        model.channels_last = last
        steps[last] = step_gradients(model, x, y, fast=True)
    (out_c, g_c, _), (out_n, g_n, _) = steps[True], steps[False]
    assert (out_c - out_n).abs().max() <= 1e-5 * out_n.abs().max()
    for name, g in g_n.items():
        assert (g_c[name] - g).abs().max() <= 1e-5 * g.abs().max(), name
