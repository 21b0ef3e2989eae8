"""Checks of :mod:`hlop.loop.distributed` in real worker processes (two, started by torchrun from
test_distributed.py).  Every check compares the workers' reduction with the computation on
the global batch in float64, with unequal parts, stand-ins and missing gradients; EWC's
Fisher and GPM's covariances with the values one process computes; the task-aware and
task-agnostic accuracy matrices with hand-computed ones."""

from __future__ import annotations

import torch
import torch.distributed as dist
from helpers import FIXED_AGNOSTIC, FIXED_AWARE, fixed_scores_run, run_state
from torch import nn

from hlop import LateralCircuit, NetworkSettings, SpikingMLP
from hlop.data.containers import Benchmark, DataSplit, Task
from hlop.loop import distributed
from hlop.loop.continual import evaluate_seen
from hlop.loop.state import RunState
from hlop.methods.ewc import empirical_fisher
from hlop.methods.gpm import representation_covariances
from hlop.run.config import Config

TOL = 1e-12  # float64: only the order of the sums differs


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.allclose(a, b, rtol=0, atol=TOL), (a - b).abs().max().item()


def check_batch_norm(rows: int) -> None:
    """Forward, running statistics and backward of the global batch of ``rows`` rows (one
    row: worker 0 is a stand-in)."""
    torch.manual_seed(0)
    x, dy = torch.randn(rows, 3, 4, 4), torch.randn(rows, 3, 4, 4)
    ref = nn.BatchNorm2d(3)
    nn.init.uniform_(ref.weight, 0.5, 1.5)
    nn.init.uniform_(ref.bias, -1, 1)
    sync = distributed.synchronise_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    assert isinstance(sync, distributed.SynchronisedBatchNorm2d)
    sync.load_state_dict(ref.state_dict())
    xr = x.clone().requires_grad_()
    expected = ref(xr)
    (expected * dy).sum().div(rows).backward()  # the mean loss of the global batch
    index, share = distributed.shard_batch(torch.arange(rows))
    xl = x[index].clone().requires_grad_()
    with distributed.sharing(share):
        out = sync(xl)
        (out * dy[index]).sum().div(len(index)).backward()  # this worker's mean loss
    distributed.average_gradients(sync.parameters(), share)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        close(getattr(sync, name).double(), getattr(ref, name).double())
    close(sync.weight.grad, ref.weight.grad)
    close(sync.bias.grad, ref.bias.grad)
    if share:
        close(out, expected[index])
        close(xl.grad * share, xr.grad[index])  # this worker's part of dL/dx


def check_hebbian(rows: int, n: int, spiking: bool) -> None:
    """A circuit with old rows learning from parts of a batch equals one learning from the
    whole batch (both branches of the update; spiking lateral neurons)."""
    torch.manual_seed(1)
    x = torch.rand(rows, n)
    circuits = []
    for _ in range(2):
        torch.manual_seed(2)
        c = LateralCircuit(n, lr=0.05, spiking=spiking, spike_steps=40)
        c.add_subspace(3)
        c.merge()
        c.add_subspace(2)
        c.reducer = distributed.reduce_hebbian  # what the loop sets under torchrun
        circuits.append(c)
    whole, parts = circuits
    # the same whole batch on every worker, each weighing 1/2: the one-process update
    with distributed.sharing(0.5):
        whole.hebbian_update(x)
    index, share = distributed.shard_batch(torch.arange(rows))
    with distributed.sharing(share):
        parts.hebbian_update(x[index])
    close(parts.weight, whole.weight)
    close(parts.velocity, whole.velocity)


def check_gradients() -> None:
    """Shares weigh the gradients; missing on one worker is zero there, on all stays None."""
    r = distributed.rank()
    a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad = torch.full((2,), float(r + 1))
    if r == 0:
        b.grad = torch.full((2,), 4.0)
    share = 0.25 if r == 0 else 0.75
    distributed.average_gradients([a, b, c], share)
    close(a.grad, torch.full((2,), 0.25 * 1 + 0.75 * 2))
    close(b.grad, torch.full((2,), 0.25 * 4))
    assert c.grad is None


def tiny_run() -> RunState:
    """A spiking MLP 5-8-8-3 (T=2, weights large enough to spike) and one task of 9 samples,
    alike in every worker; test batches of 2, so that each worker's part is several chunks."""
    torch.manual_seed(3)
    model = SpikingMLP(5, 8, 3, NetworkSettings(timesteps=2))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4)
    x, y = torch.rand(9, 5) * 2, torch.arange(9) % 3
    split = DataSplit(x, y, lambda b: b)
    model.begin_task(0, 3)
    cfg = Config(tasks=1, timesteps=2, test_batch_size=2)
    return run_state(
        cfg, model, Benchmark("tiny", [Task("t0", 3, split, split)], True, (5,)), "cpu"
    )


def statistics(samples: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """EWC's Fisher and GPM's covariances of ``samples`` samples of :func:`tiny_run`'s task
    (under torchrun: each worker computes its part of the samples, then they are summed)."""
    return empirical_fisher(tiny_run(), samples), representation_covariances(tiny_run(), samples)


def check_statistics(expected: dict[int, tuple]) -> None:
    """The Fisher and the covariances over two workers equal ``expected``, the values of
    one process (computed before the process group existed)."""
    for samples, (fisher, covs) in expected.items():
        got_fisher, got_covs = statistics(samples)
        assert set(got_fisher) == set(fisher) and len(got_covs) == len(covs) == 3
        for name, value in fisher.items():
            assert "weight" not in name or value.abs().sum() > 0, name  # gradients to sum
            close(got_fisher[name], value)
        for got, value in zip(got_covs, covs, strict=True):
            assert value.abs().sum() > 0
            close(got, value)


def check_task_agnostic(batch_size: int) -> None:
    """Both accuracy matrices of hand-computed scores (tests/support/helpers.py) when each
    worker evaluates its part of the test batches (a worker may have none of a task's)."""
    run = fixed_scores_run(batch_size)
    for k in range(3):
        run.task = k
        run.record_row(evaluate_seen(run))
    assert run.acc_matrix == FIXED_AWARE, run.acc_matrix
    assert run.acc_matrix_agnostic == FIXED_AGNOSTIC, run.acc_matrix_agnostic


def check_setup_failure() -> None:
    """An error on one worker stops every worker: its own error there, WorkerLost elsewhere."""
    try:
        with distributed.together("testing"):
            if distributed.rank() == 1:
                raise ValueError("worker 1 cannot read its data")
    except ValueError as e:
        assert distributed.rank() == 1 and "cannot read" in str(e)
    except distributed.WorkerLost as e:
        assert distributed.rank() == 0 and "worker 1 failed while testing" in str(e), e
    else:
        raise AssertionError("together() let a failure pass")


def main() -> None:
    torch.set_default_dtype(torch.float64)
    expected = {samples: statistics(samples) for samples in (7, 1)}  # one process: no group yet
    dist.init_process_group("gloo")
    assert distributed.is_distributed() and distributed.world_size() == 2
    for rows in (7, 1):
        check_batch_norm(rows)
    for rows, n, spiking in ((5, 8, False), (13, 6, False), (5, 8, True)):
        check_hebbian(rows, n, spiking)
    check_gradients()
    check_statistics(expected)
    for batch_size in (1, 3):
        check_task_agnostic(batch_size)
    check_setup_failure()
    state = distributed.broadcast_object({"rank": distributed.rank()})
    assert state == {"rank": 0}
    assert distributed.sum_over_workers(distributed.rank() + 1) == 3
    assert list(distributed.shard(range(5))) == ([0, 1] if distributed.rank() == 0 else [2, 3, 4])
    dist.destroy_process_group()
    print(f"worker {distributed.rank()}: checks passed", flush=True)


if __name__ == "__main__":
    main()
