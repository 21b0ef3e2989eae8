"""hlop.core.optim: torch.optim's SGD and Adam, bit for bit, without importing torch._dynamo."""

import copy
import functools

import pytest
import torch

from hlop.core import optim

SGD_SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-3, dampening=0.1),
    dict(lr=0.05, momentum=0.9, nesterov=True),
]
ADAM_SETTINGS = [dict(lr=1e-3), dict(lr=3e-3, weight_decay=1e-2, betas=(0.8, 0.99), eps=1e-6)]


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in ((7, 5), (5,), (3, 2, 2))]


def _train(make, steps=6, grads_seed=1, params=None, start=None, scheduler=True):
    """Parameters (and the optimiser) after ``steps`` steps on fixed pseudo-random gradients,
    the second parameter in a group of its own with half the learning rate; a StepLR
    halves the rates every 2 steps."""
    params = _params() if params is None else params
    groups = [
        {"params": [params[0], params[2]]},
        {"params": [params[1]], "lr": make.keywords["lr"] / 2},
    ]
    opt = make(groups)
    if start is not None:
        opt.load_state_dict(copy.deepcopy(start))  # loading shares the saved tensors
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5) if scheduler else None
    g = torch.Generator().manual_seed(grads_seed)
    for i in range(steps):
        opt.zero_grad()
        for j, p in enumerate(params):
            if i % 3 == 2 and j == 1:
                continue  # a parameter without a gradient this step is left alone
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        if sched is not None:
            sched.step()
    return [p.detach().clone() for p in params], opt


def _partial(cls, kw):
    return functools.partial(cls, **kw)


@pytest.mark.parametrize(
    "ours, theirs, kw",
    [(optim.SGD, torch.optim.SGD, kw) for kw in SGD_SETTINGS]
    + [(optim.Adam, torch.optim.Adam, kw) for kw in ADAM_SETTINGS],
)
def test_same_parameters_bit_for_bit_as_torch_optim(ours, theirs, kw):
    mine, opt = _train(_partial(ours, kw))
    ref, ref_opt = _train(_partial(theirs, kw))
    for a, b in zip(mine, ref, strict=True):
        assert torch.equal(a, b)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
    assert isinstance(opt, torch.optim.Optimizer)


@pytest.mark.parametrize(
    "ours, theirs, kw",
    [
        (optim.SGD, torch.optim.SGD, SGD_SETTINGS[2]),
        (optim.Adam, torch.optim.Adam, ADAM_SETTINGS[1]),
    ],
)
def test_state_dicts_load_into_each_other(ours, theirs, kw):
    """A checkpoint written with torch's optimiser continues with ours and vice versa."""
    params = _params()
    _, ref_opt = _train(_partial(theirs, kw), steps=3, params=params, scheduler=False)
    saved, start = ref_opt.state_dict(), [p.detach().clone() for p in params]

    def resumed(cls, state):
        ps = [torch.nn.Parameter(p.clone()) for p in start]
        return _train(
            _partial(cls, kw), steps=3, grads_seed=2, params=ps, start=state, scheduler=False
        )[0]

    ref = resumed(theirs, saved)
    for a, b in zip(resumed(ours, saved), ref, strict=True):
        assert torch.equal(a, b)
    ours_saved = _train(_partial(ours, kw), steps=3, params=_params(), scheduler=False)[
        1
    ].state_dict()
    for a, b in zip(resumed(theirs, ours_saved), ref, strict=True):
        assert torch.equal(a, b)


def test_step_hooks_and_closure():
    p = torch.nn.Parameter(torch.ones(3))
    opt = optim.SGD([p], lr=0.5)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert seen == ["pre"] and loss.item() == 3.0
    assert torch.equal(p.detach(), torch.zeros(3))  # 1 - 0.5 * 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ps: optim.SGD(ps, lr=-1), "lr"),
        (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "Nesterov"),
        (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "betas"),
        (lambda ps: optim.SGD([], lr=0.1), "empty"),
    ],
)
def test_bad_settings_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make([torch.nn.Parameter(torch.zeros(2))])
