"""Data-parallel training across processes, GPUs and machines (``torchrun``).

``torchrun --nproc_per_node=N -m hlop train ...`` starts N workers; each one reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from its environment and joins the others
through :mod:`torch.distributed` (gloo on the CPU, NCCL on CUDA devices, one device per
worker: ``cuda:LOCAL_RANK``).  Started any other way, hlop runs in one process and every
function here is the identity: no collective, no extra operation.

How a run is split (``share`` = this worker's rows / the global batch's rows)::

    training batch      every worker draws the same global order from the run's seed and
                        takes a contiguous part of every batch (:func:`shard`); a worker
                        whose part is empty (a last batch with fewer rows than workers)
                        runs the batch's first row as a stand-in of share 0
    gradients           sum_r share_r grad_r on every worker (:func:`average_gradients`),
                        before the methods see them and before the optimiser step
    Hebbian updates     dH = sum_r share_r dH_r before the clip and the momentum
                        (:func:`reduce_hebbian`): the update on the global batch, so every
                        worker's circuits stay bit-identical
    batch norm          statistics of the global batch while it trains
                        (:class:`SynchronisedBatchNorm2d`)
    evaluation          each worker evaluates a part of the test batches; the correct
                        counts are summed (:func:`sum_over_workers`)

Weighting by share (not 1 / N) makes unequal parts exact: each worker's update is a mean
over its rows, and the shares weight those means into the mean over the global batch.
Anything a worker learns from data is reduced the same way, so that workers never drift
apart.  Worker 0 alone writes outputs.  A collective that fails because another worker
stopped raises :class:`WorkerLost`; a worker that stops answering makes the others fail
after ``HLOP_DIST_TIMEOUT`` seconds (default 1800).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hlop.errors import ConfigError

T = TypeVar("T")

#: seconds a worker waits for the others in a collective before it gives up
TIMEOUT_VARIABLE = "HLOP_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 1800

# this worker's share of the current training batch (None: 1 / world, equal parts)
_share: float | None = None


class WorkerLost(RuntimeError):
    """Another worker stopped (it failed, or it was stopped): this one cannot go on."""


# ---------------------------------------------------------------------- who we are
def launched() -> bool:
    """True in a worker that torchrun started together with others (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int | None:
    """This worker's index on its machine (``LOCAL_RANK``), None in one process."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else None


def is_distributed() -> bool:
    """True while this process trains together with others (a process group of 2 or more)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This worker's index (0 in one process); read from ``RANK`` before the group exists."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    """The number of workers (1 in one process)."""
    if is_distributed():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1


def is_lead() -> bool:
    """True in the worker that writes outputs (worker 0, or the only process)."""
    return rank() == 0


def label() -> str:
    """``"[worker R/N] "`` for messages of a worker, ``""`` in one process."""
    return f"[worker {rank()}/{world_size()}] " if launched() else ""


def timeout() -> datetime.timedelta:
    """How long a collective waits for the other workers (``HLOP_DIST_TIMEOUT`` seconds)."""

    value = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_VARIABLE} must be a number of seconds > 0, got {value!r}")
    return datetime.timedelta(seconds=seconds)


# ---------------------------------------------------------------------- the group
def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device of ``name`` (auto, cpu, cuda, cuda:N); a worker of several on a machine
    (``local_rank``) takes GPU ``cuda:local_rank`` for auto and cuda."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available; use --device cpu")
    if local_rank is not None and name.startswith("cuda"):
        if name != "cuda":
            raise ConfigError(
                f"--device {name}: each worker of torchrun takes its own GPU (cuda:LOCAL_RANK); "
                "use --device cuda or auto, and CUDA_VISIBLE_DEVICES to choose the GPUs"
            )
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"worker {local_rank} of this machine has no GPU: {torch.cuda.device_count()} "
                "visible; start at most that many workers per machine (--nproc_per_node)"
            )
        return torch.device("cuda", local_rank)
    return torch.device(name)


@contextlib.contextmanager
def joined(device: torch.device) -> Iterator[None]:
    """Within the block this worker trains together with the others that torchrun started
    (gloo for a CPU ``device``, NCCL for CUDA); nothing happens in one process or when a
    process group exists already (it is then the caller's to end)."""
    if not launched() or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout())
    yield
    # only a clean end tears the group down: after a failure the others may be gone, and
    # ending the group could wait on them (the process exits anyway)
    dist.destroy_process_group()


def _collective(what: str, op: Callable[[], T]) -> T:
    """Run a collective; a failure (another worker stopped) becomes :class:`WorkerLost`."""
    try:
        return op()
    except RuntimeError as e:  # gloo and NCCL errors (DistBackendError among them)
        raise WorkerLost(
            f"worker {rank()} of {world_size()} lost the others while {what}: another worker "
            f"has stopped (its message says why; {dist.get_backend()}: {_gist(e)})"
        ) from e


def _gist(error: Exception) -> str:
    """The first sentence of a backend's error, without its source location."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".")


@contextlib.contextmanager
def together(what: str) -> Iterator[None]:
    """Run the block on every worker; if it raises on any of them, it raises on all: the
    worker's own error where it failed, :class:`WorkerLost` naming the failed workers
    elsewhere (a setup error on one worker must not leave the others waiting)."""
    error: Exception | None = None
    try:
        yield
    except Exception as e:
        if not is_distributed():
            raise
        error = e
    if not is_distributed():
        return
    flags = torch.zeros(world_size(), dtype=torch.int32, device=_device())
    flags[rank()] = int(error is not None)
    _collective(what, lambda: dist.all_reduce(flags))
    if error is not None:
        raise error
    failed = [str(r) for r in flags.nonzero().flatten().tolist()]
    if failed:
        raise WorkerLost(
            f"worker {', '.join(failed)} failed while {what} (its message says why); "
            f"worker {rank()} stops too"
        )


def broadcast_object(obj: T) -> T:
    """Worker 0's ``obj`` on every worker (pickled; tensors come back on the CPU)."""
    if not is_distributed():
        return obj
    box = [obj]
    _collective("receiving the run's state", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def _device() -> torch.device:
    """The device of this worker's collectives (NCCL needs CUDA tensors)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------- sharding
def shard(items: Sequence[T] | Tensor) -> Sequence[T] | Tensor:
    """This worker's contiguous part of ``items`` (worker r of N gets ``items[r n / N :
    (r + 1) n / N]``, parts differ by at most one); all of them in one process."""
    if not is_distributed():
        return items
    n, r, w = len(items), rank(), world_size()
    return items[r * n // w : (r + 1) * n // w]


def shard_batch(index: Tensor) -> tuple[Tensor, float]:
    """This worker's rows of a global training batch ``index`` and its share of it (rows /
    global rows).  An empty part becomes the batch's first row with share 0 (a stand-in
    that runs every collective of the batch and counts for nothing)."""
    if not is_distributed():
        return index, 1.0
    local = shard(index)
    if len(local) == 0:
        return index[:1], 0.0
    return local, len(local) / len(index)


@contextlib.contextmanager
def sharing(share: float) -> Iterator[None]:
    """Within the block, this worker's rows weigh ``share`` in every reduction."""
    global _share
    previous, _share = _share, share
    try:
        yield
    finally:
        _share = previous


def current_share() -> float:
    """This worker's share of the current training batch (1 / N outside a batch)."""
    return 1.0 / world_size() if _share is None else _share


# ---------------------------------------------------------------------- reductions
def reduce_hebbian(dh: Tensor) -> Tensor:
    """The Hebbian update of the global batch, ``sum_r share_r dH_r``, from this worker's
    ``dh`` (a mean over its rows); ``dh`` itself in one process.  Every worker gets the
    same tensor, so the circuits stay bit-identical."""
    if not is_distributed():
        return dh
    share = current_share()
    weighted = dh * share if share > 0 else torch.zeros_like(dh)
    _collective("averaging a Hebbian update", lambda: dist.all_reduce(weighted))
    return weighted


def average_gradients(params: Iterable[Tensor], share: float | None = None) -> None:
    """Replace each parameter's ``.grad`` with ``sum_r share_r grad_r`` over the workers, in
    one collective.  A gradient missing on a worker counts as zero there; missing on every
    worker it stays None (the optimiser then skips the parameter, as in one process)."""
    if not is_distributed():
        return
    share = current_share() if share is None else share
    params = [p for p in params if p.requires_grad]
    groups: dict[tuple, list[Tensor]] = {}
    for p in params:
        groups.setdefault((p.dtype, p.device), []).append(p)
    for group in groups.values():
        grads = [
            p.grad.detach() * share if p.grad is not None and share > 0 else torch.zeros_like(p)
            for p in group
        ]
        has_grad = grads[0].new_tensor([float(p.grad is not None) for p in group])
        flat = torch.cat([g.reshape(-1) for g in grads] + [has_grad])
        _collective("averaging gradients", lambda flat=flat: dist.all_reduce(flat))
        offset = 0
        for p, seen in zip(group, flat[-len(group) :].tolist(), strict=True):
            n = p.numel()
            if seen:
                p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n


def average_before_steps(optimizer: torch.optim.Optimizer) -> Any:
    """Average the gradients (:func:`average_gradients`, this batch's share) before every
    ``optimizer.step()``: for a training rule that steps inside a batch (OTTT's online
    update).  Returns the hook's handle, or None in one process."""
    if not is_distributed():
        return None

    def hook(opt, args, kwargs) -> None:
        average_gradients(p for g in opt.param_groups for p in g["params"])

    return optimizer.register_step_pre_hook(hook)


def sum_over_workers(*values: float) -> Any:
    """The sums over the workers of ``values`` (numbers); ``values`` itself in one process
    (one value: the value, not a tuple)."""
    if not is_distributed():
        return values[0] if len(values) == 1 else values
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    _collective("summing counts", lambda: dist.all_reduce(t))
    out = tuple(type(v)(s) for v, s in zip(values, t.tolist(), strict=True))
    return out[0] if len(out) == 1 else out


def sum_tensors(tensors: Iterable[Tensor]) -> None:
    """Sum ``tensors`` over the workers in place (one collective per dtype and device)."""
    if not is_distributed():
        return
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        _collective("summing statistics", lambda flat=flat: dist.all_reduce(flat))
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


# ---------------------------------------------------------------------- batch norm
class _GlobalBatchNorm(torch.autograd.Function):
    """Batch norm over the rows of every worker (channels in dimension 1).

    Forward: each worker's count, mean and sum of squared deviations per channel are
    gathered and combined (Chan et al.'s parallel variance).  Backward, with ``g = dL/dy``
    of the global loss ``L = sum_r share_r loss_r`` and ``n_r`` this worker's rows::

        dloss_r/dx = w / sigma (dy - (A + xhat B) / n_r),
        A = sum_s share_s sum dy_s,  B = sum_s share_s sum dy_s xhat_s

    (in this worker's units, as its other gradients, so that :func:`average_gradients`
    weights them all by its share); one process: the ordinary batch-norm backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum):  # type: ignore[override]
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        stand_in = current_share() == 0
        rows = 0 if stand_in else x.numel() // x.shape[1]
        if rows:
            var, mean = torch.var_mean(x.detach(), dims, correction=0)
            mean, m2 = mean.double(), var.double() * rows
        else:
            mean = m2 = x.new_zeros(x.shape[1], dtype=torch.float64)
        mine = torch.cat([mean.new_tensor([rows]), mean, m2])
        stats = [torch.empty_like(mine) for _ in range(world_size())]
        _collective("synchronising batch norm", lambda: dist.all_gather(stats, mine))
        stats = torch.stack(stats)
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + x.shape[1]], stats[:, 1 + x.shape[1] :]
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total
        g_m2 = (m2s + counts * (means - g_mean) ** 2).sum(0)
        var = g_m2 / total
        invstd = (var + eps).rsqrt()
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(g_mean.to(running_mean), alpha=momentum)
                unbiased = g_m2 / (total - 1).clamp_min(1)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var), alpha=momentum)
        xhat = (x - g_mean.to(x).view(shape)) * invstd.to(x).view(shape)
        ctx.save_for_backward(xhat, weight, invstd.to(x))
        ctx.rows, ctx.dims, ctx.shape = rows, dims, shape
        out = xhat * weight.view(shape) if weight is not None else xhat
        return out + bias.view(shape) if bias is not None else out

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        xhat, weight, invstd = ctx.saved_tensors
        dims, shape, rows = ctx.dims, ctx.shape, ctx.rows
        a, b = dy.sum(dims), (dy * xhat).sum(dims)
        share = current_share() if rows else 0.0
        both = torch.cat([a, b]) * share
        _collective("synchronising batch norm", lambda: dist.all_reduce(both))
        big_a, big_b = both.split(a.shape[0])
        if rows:
            scale = invstd if weight is None else invstd * weight
            grad_x = scale.view(shape) * (
                dy - (big_a.view(shape) + xhat * big_b.view(shape)) / rows
            )
        else:
            grad_x = torch.zeros_like(dy)
        grad_w = b if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = a if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None


class SynchronisedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are those of the global batch across
    workers (torch's ``SyncBatchNorm`` runs on CUDA only); in evaluation mode, or in one
    process, exactly ``nn.BatchNorm2d``."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        return _GlobalBatchNorm.apply(
            x,
            self.weight,
            self.bias,
            self.running_mean if self.track_running_stats else None,
            self.running_var if self.track_running_stats else None,
            self.eps,
            momentum,
        )


def synchronise_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``model`` by a :class:`SynchronisedBatchNorm2d`
    holding the same parameters and buffers (the state dict keeps its keys); ``model``
    unchanged in one process.  Returns ``model``."""
    if not is_distributed():
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                sync = SynchronisedBatchNorm2d(
                    child.num_features,
                    child.eps,
                    child.momentum,
                    child.affine,
                    child.track_running_stats,
                )
                sync.weight, sync.bias = child.weight, child.bias
                for key in ("running_mean", "running_var", "num_batches_tracked"):
                    setattr(sync, key, getattr(child, key))
                sync.train(child.training)
                setattr(parent, name, sync)
    return model
