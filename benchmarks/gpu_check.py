"""One check of hlop on a machine with a CUDA GPU: correctness on the device, then speed.

Checks (each prints PASS or FAIL with the measured difference):

1. the DSR fast path equals the per-step path on the device (the PMNIST network during
   task 2, both projection modes: scores, gradients and circuits), and the fast layout in
   two parts (``hlop.spiking.fast_parts``, the default) equals it joined; with ``--compile`` (the
   default on CUDA) the spike loops fused by ``torch.compile`` equal the eager ones;
2. projected layers (linear and convolution, input and weight modes) and lateral circuits
   (the Hebbian update, the projection) give their CPU results on the device;
3. bf16 runs on the device: ``precision="bf16"`` (hlop's explicit casts) and a forward
   under ``torch.autocast("cuda", torch.bfloat16)``, finite scores and gradients, projected
   gradients orthogonal to the old subspace.

Timings (median of ``--repeats`` steps, the device synchronised around each):

4. one training step of the PMNIST MLP and of the CIFAR-100 CNN at paper size (B=64,
   T=20; HLOP as during a later task), fp32 and bf16, and the CNN in fp32 with
   ``compile=True`` (``--compile``); evaluation of the MLP by test batch
   size (the best ``test_batch_size`` for the device);
5. a full permuted-MNIST run (``hlop train pmnist``, paper preset, seed 2022) in fp32 and
   bf16 if ``--data-dir`` holds MNIST (else the embedded subset, ``pmnist-subset``; say so).

The summary at the end is what goes into the documentation (docs/performance.md).  The same
script runs on CPU with ``--device cpu --quick`` (a smoke test of the script itself, used by the
test suite).

    python benchmarks/gpu_check.py [--device cuda] [--data-dir DIR] [--repeats 20]
        [--skip-full-run] [--quick]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from hlop import NetworkSettings, SpikingMLP
from hlop.core.circuit import LateralCircuit
from hlop.data import DataError, locate_files
from hlop.layers.projected import ProjectedConv2d, ProjectedLinear
from hlop.models.cnn import SpikingCNN
from hlop.models.testing import as_during_task
from hlop.run.config import apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import pmnist_sizes, preset

MLP_SIZES = pmnist_sizes(10)[:3]  # task 2 of the paper's schedule
CNN_SIZES = [[6, 100, 200], [2, 20, 40]]  # task 1


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.failed += not ok
        line = f"{'PASS' if ok else 'FAIL'}  {name}: {detail}"
        self.lines.append(line)
        print(line, flush=True)

    def note(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest value of ``b`` (both on the CPU)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _mlp(device, precision="fp32", fast=True, proj_type="input", hidden=800, compile=False):
    torch.manual_seed(0)
    opts = NetworkSettings(precision=precision, fast=fast, proj_type=proj_type, compile=compile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = as_during_task(SpikingMLP(784, hidden, 10, settings=opts), MLP_SIZES)
    return m.to(device).train()


def _grads(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads, [c.weight.clone() for c in model.circuits()]


def check_fast_path(report: Report, device, hidden: int) -> None:
    x = torch.randn(32, 784, generator=torch.Generator().manual_seed(1)).to(device) * 3
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2)).to(device)
    for proj in ("input", "weight"):
        fast = _mlp(device, proj_type=proj, hidden=hidden)
        steps = _mlp(device, fast=False, proj_type=proj, hidden=hidden)
        o_f, g_f, c_f = _grads(fast, x, y)
        o_s, g_s, c_s = _grads(steps, x, y)
        worst = max(
            [_rel(o_f, o_s)]
            + [_rel(g_f[n], g_s[n]) for n in g_s]
            + [_rel(a, b) for a, b in zip(c_f, c_s, strict=True)]
        )
        report.check(f"fast path = per-step path ({proj} mode)", worst < 1e-4, f"{worst:.1e}")
        joined = _mlp(device, proj_type=proj, hidden=hidden)
        joined.split_fast = False
        o_j, g_j, c_j = _grads(joined, x, y)
        worst = max(
            [_rel(o_f, o_j)]
            + [_rel(g_f[n], g_j[n]) for n in g_j]
            + [_rel(a, b) for a, b in zip(c_f, c_j, strict=True)]
        )
        report.check(f"fast layout in two parts = joined ({proj} mode)", worst < 1e-6,
                     f"{worst:.1e}")  # fmt: skip


def check_compiled(report: Report, device, hidden: int) -> None:
    x = torch.randn(32, 784, generator=torch.Generator().manual_seed(1)).to(device) * 3
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2)).to(device)
    o_e, g_e, c_e = _grads(_mlp(device, hidden=hidden), x, y)
    o_c, g_c, c_c = _grads(_mlp(device, hidden=hidden, compile=True), x, y)
    worst = max(
        [_rel(o_c, o_e)]
        + [_rel(g_c[n], g_e[n]) for n in g_e]
        + [_rel(a, b) for a, b in zip(c_c, c_e, strict=True)]
    )
    report.check("compile=True (fused spike loops) = eager", worst < 1e-4, f"{worst:.1e}")


def check_layers_against_cpu(report: Report, device) -> None:
    torch.manual_seed(3)
    cases = {
        "linear": (lambda: ProjectedLinear(96, 40, circuit=LateralCircuit(96)), (64, 96)),
        "conv": (
            lambda: ProjectedConv2d(8, 16, 3, 1, 1, circuit=LateralCircuit(72)),
            (8, 8, 12, 12),
        ),
    }
    for kind, (make, shape) in cases.items():
        for proj in ("input", "weight"):
            cpu = make()
            cpu.proj_type = proj
            cpu.circuit.add_subspace(20)
            cpu.circuit.merge()
            cpu.circuit.add_subspace(8)
            cpu.circuit.projecting = cpu.circuit.learning = True
            dev = make()
            dev.proj_type = proj
            dev.load_state_dict(cpu.state_dict())  # the circuit's rows and blocks too
            dev.circuit.projecting = dev.circuit.learning = True
            dev = dev.to(device)
            x = (torch.rand(shape) < 0.3).float()
            results = []
            for layer, xi in ((cpu, x.clone()), (dev, x.clone().to(device))):
                xi.requires_grad_()
                out = layer(xi)
                out.pow(2).sum().backward()
                results.append((out, xi.grad, layer.weight.grad, layer.circuit.weight))
            worst = max(_rel(b, a) for a, b in zip(results[0], results[1], strict=True))
            report.check(f"{kind} layer + circuit on device = CPU ({proj})", worst < 1e-4,
                         f"{worst:.1e}")  # fmt: skip


def check_bf16(report: Report, device, hidden: int) -> None:
    x = torch.rand(32, 784).to(device)
    y = torch.randint(0, 10, (32,)).to(device)
    for proj in ("input", "weight"):
        for circuits, bound in (("fp32", 1e-4), ("bf16", 1e-2)):
            m = _mlp(device, precision="bf16", proj_type=proj, hidden=hidden)
            with torch.no_grad():  # blocks are learnt orthogonal to earlier ones: make them so
                for c in m.circuits():
                    c.precision = circuits
                    q = torch.linalg.qr(c.weight[: c.old_rows].t())[0]
                    c.weight[: c.old_rows] = q.t()
            out, grads, _ = _grads(m, x, y)
            finite = bool(torch.isfinite(out).all()) and all(
                bool(torch.isfinite(g).all()) for g in grads.values()
            )
            leak = 0.0
            for layer in (m.fc1, m.fc2, m.heads[0]):
                h = layer.circuit.weight[: layer.circuit.old_rows]
                g = layer.weight.grad
                leak = max(leak, float((g @ h.t()).abs().max() / g.abs().max()))
            report.check(
                f"precision=bf16 step ({proj}, {circuits} circuits)",
                finite and leak < bound,
                f"finite={finite}, projected-gradient leak {leak:.1e} (bound {bound:.0e})",
            )
    m = _mlp(device, hidden=hidden)
    kind = "cuda" if device.type == "cuda" else "cpu"
    with torch.autocast(kind, dtype=torch.bfloat16):
        out = m(x)
        loss = F.cross_entropy(out.float(), y)
    loss.backward()
    ok = bool(torch.isfinite(out).all()) and bool(torch.isfinite(m.fc1.weight.grad).all())
    report.check("torch.autocast(bf16) forward/backward", ok, f"scores dtype {out.dtype}")


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    report: Report, device, repeats: int, batch: int, timesteps: int, quick: bool, compile: bool
):
    x_mlp = torch.rand(batch, 784, device=device)
    x_cnn = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    results = {}
    variants = [(net, p) for net in ("mlp", "cnn") for p in ("fp32", "bf16")]
    for net, precision in variants + ([("cnn", "fp32 compiled")] if compile else []):
        torch.manual_seed(0)
        opts = NetworkSettings(timesteps=timesteps, precision=precision.split()[0],
                              proj_type="input" if net == "mlp" else "weight",
                              compile=precision.endswith("compiled"))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if net == "mlp":
                m = as_during_task(SpikingMLP(settings=opts), MLP_SIZES)
            else:
                channels = (8, 16, 32) if quick else (64, 128, 256)
                m = SpikingCNN(settings=opts, channels=channels)
                as_during_task(m, [[2, 10, 20], [1, 4, 8]] if quick else CNN_SIZES)
                m.begin_task(1, 10)
        m = m.to(device).train()
        x = x_mlp if net == "mlp" else x_cnn
        opt = torch.optim.SGD(m.trainable_parameters(), lr=0.01, momentum=0.9)
        times = []
        for i in range(repeats + 2):
            _sync(device)
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()
            _sync(device)
            if i >= 2:  # two warm-up steps
                times.append(time.perf_counter() - t)
        results[net, precision] = statistics.median(times)
        report.note(
            f"step  {net} {precision}: {results[net, precision] * 1e3:8.2f} ms "
            f"(B={batch}, T={timesteps}, median of {repeats})"
        )
    for net in ("mlp", "cnn"):
        r = results[net, "fp32"] / results[net, "bf16"]
        report.note(f"step  {net}: bf16 {r:.2f}x faster than fp32")
    if compile:
        r = results["cnn", "fp32"] / results["cnn", "fp32 compiled"]
        report.note(f"step  cnn: compile=True {r:.2f}x faster than eager (fp32)")


def time_evaluation(report: Report, device, quick: bool) -> None:
    n, batches = (64, (16, 64)) if quick else (8192, (64, 256, 1024, 4096))
    x = torch.rand(n, 784, device=device)
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        m = SpikingMLP(settings=NetworkSettings(precision=precision)).to(device).eval()
        rates = []
        for batch in batches:
            with torch.no_grad():
                for _ in range(2):  # the second pass is timed
                    _sync(device)
                    t = time.perf_counter()
                    for i in range(0, n, batch):
                        m(x[i : i + batch])
                    _sync(device)
            rates.append(f"B={batch}: {n / (time.perf_counter() - t):.0f}/s")
        report.note(f"eval  mlp {precision}: " + ", ".join(rates))


def full_run(report: Report, device, data_dir: str | None, quick: bool) -> None:
    benchmark = "pmnist"
    try:  # the files only: the run itself loads them
        if data_dir is None:
            raise DataError("no --data-dir")
        locate_files("mnist", data_dir)
    except DataError as e:
        report.note(f"full run: MNIST not available ({e}); timing pmnist-subset instead")
        benchmark = "pmnist-subset"
    for precision in ("fp32", "bf16"):
        cfg = preset(benchmark)
        extra = [f"precision={precision}", f"device={device}", "checkpoint_every=0"]
        if data_dir is not None and benchmark == "pmnist":
            extra.append(f"data_dir={data_dir}")
        if quick:
            extra += ["tasks=2", "train_limit=200", "test_limit=100", "timesteps=4"]
        cfg = apply_overrides(cfg, extra)
        with tempfile.TemporaryDirectory() as out:
            _sync(device)
            t = time.perf_counter()
            r = train(cfg, Path(out) / "run", stream=io.StringIO())
            _sync(device)
            seconds = time.perf_counter() - t
        report.note(
            f"run   {benchmark} {precision}: {seconds:7.1f} s, ACC {r['acc']:.2f}, "
            f"BWT {r['bwt']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", default=None, help="data root with mnist/ (full PMNIST run)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--skip-full-run", action="store_true")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="check and time compile=True (default: on CUDA only)",
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; run on a GPU machine or pass --device cpu")
        return 2
    report = Report()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report.note(f"device {device} ({name}), torch {torch.__version__}")
    hidden = 800
    check_fast_path(report, device, hidden)
    check_layers_against_cpu(report, device)
    check_bf16(report, device, hidden)
    compile = device.type == "cuda" if args.compile is None else args.compile
    if compile:
        check_compiled(report, device, hidden)
    repeats = 2 if args.quick else args.repeats
    batch, timesteps = (8, 4) if args.quick else (64, 20)
    time_steps(report, device, repeats, batch, timesteps, args.quick, compile)
    time_evaluation(report, device, args.quick)
    if not args.skip_full_run:
        full_run(report, device, args.data_dir, args.quick)
    print("\n==== summary ====")
    print("\n".join(report.lines))
    print(f"{report.failed} check(s) failed" if report.failed else "all checks passed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
