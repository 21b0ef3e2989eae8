"""What keeps a run's memory down: no torch._dynamo import, bounded oneDNN kernel caches,
the C heap's free pages returned at task boundaries (benchmarks/run_memory.py measures
each)."""

import io
import os
import subprocess
import sys

import pytest
from helpers import REPO

from hlop.loop import memory
from hlop.run.config import apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import preset
from hlop.tools import cli

TINY = ["tasks=2", "hidden=20", "timesteps=2", "train_limit=64", "test_limit=32",
        "hlop.sizes=[[5,5,5],[3,3,3]]"]  # fmt: skip


def test_training_run_does_not_import_torch_compile(tmp_path):
    """A whole run (optimiser, scheduler, checkpoints, resume state) leaves torch._dynamo
    and sympy unimported: 71 MiB of memory it would otherwise hold."""
    code = (
        "import sys, io\n"
        "from hlop.run.presets import preset\n"
        "from hlop.run.config import apply_overrides\n"
        "from hlop.run.experiment import train\n"
        f"cfg = apply_overrides(preset('pmnist-subset'), {[*TINY, 'optimizer=adam']!r})\n"
        f"train(cfg, {str(tmp_path / 'run')!r}, stream=io.StringIO())\n"
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cli_sets_the_process_memory_policy(monkeypatch, capsys):
    """The entry point bounds the kernel caches and tunes the allocator (the loop of a
    library call does not: tested by the control below)."""
    calls = []
    monkeypatch.setattr(memory, "bound_kernel_caches", lambda: calls.append("caches"))
    monkeypatch.setattr(memory, "tune_allocator", lambda: calls.append("allocator"))
    assert cli.main(["train", "--show-config"]) == 0
    assert calls == ["caches", "allocator"]


def test_kernel_caches_bounded_unless_the_environment_sets_them(monkeypatch):
    names = list(memory.KERNEL_CACHES)
    monkeypatch.delenv(names[0], raising=False)
    monkeypatch.setenv(names[1], "7")
    memory.bound_kernel_caches()
    assert os.environ[names[0]] == memory.KERNEL_CACHES[names[0]] == "32"
    assert os.environ[names[1]] == "7"  # the user's value wins


def test_heap_released_at_each_step_start_and_after_its_evaluation(tmp_path, monkeypatch):
    calls, tuned = [], []
    real = memory.release_freed_memory
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(1) or real())
    monkeypatch.setattr(memory, "tune_allocator", lambda: tuned.append(1))
    train(apply_overrides(preset("pmnist-subset"), TINY), tmp_path / "run", stream=io.StringIO())
    assert len(calls) == 2 * 2
    assert tuned == []  # a library call leaves the process's allocator as it is


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_allocator_tuned_on_linux():
    assert memory._libc() is not None and memory.tune_allocator()


# glibc's initial thresholds (128 KiB), fixed: its dynamic thresholds would otherwise depend
# on what the process freed before (importing torch), and so would the faults of an untuned run
FIXED_THRESHOLDS = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072"
FAULTS = (
    "import ctypes, resource\n"
    # PR_SET_THP_DISABLE: 4 KiB pages whatever the kernel's transparent huge page setting
    "thp_off = ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0\n"
    "import torch\n"
    "from hlop.loop import memory\n"
    "torch.empty(1)\n"
    "def steady_faults():\n"
    "    faults = []\n"
    "    for _ in range(100):  # three 4 MiB tensors, freed together, as a step's\n"
    "        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "        a, b, c = (torch.ones(1024, 1024) for _ in range(3))\n"
    "        del a, b, c\n"
    "        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    "    return sum(faults[50:])\n"
    "untuned = steady_faults()\n"
    "memory.tune_allocator()\n"
    "print(thp_off, untuned, steady_faults(), resource.getpagesize())\n"
)


def transparent_huge_pages() -> str:
    """The kernel's THP mode ("always", "madvise", "never"; "" where unknown)."""
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return ""
    return text.split("[")[1].split("]")[0] if "[" in text else ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_allocator_tuning_keeps_steps_free_of_page_faults():
    """Freeing tensors at the top of the heap (or unmapping them) hands their pages back,
    and the next step faults them in again.  Untuned, from glibc's initial thresholds, every
    step of the loop below does (a step's tensors are mapped and unmapped); tuned, after the
    first steps, never.  Faults of the last 50 of 100 steps, in units of a step's pages, in
    one process: untuned first, then tuned."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(GLIBC_TUNABLES=FIXED_THRESHOLDS, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    thp_off, untuned, tuned, page = out.stdout.split()[-4:]
    if thp_off != "True" and transparent_huge_pages() == "always":
        pytest.skip("transparent huge pages are always on and cannot be turned off for a "
                    "process here: the fault counts would not count 4 KiB pages")  # fmt: skip
    step = 3 * (4 << 20) // int(page)  # a step: 3 x 4 MiB
    steady = {"untuned": int(untuned) / step, "tuned": int(tuned) / step}
    # untuned: about one step's pages at every step (50); tuned: none
    assert steady["tuned"] < 0.5 < 25 < steady["untuned"], steady


@pytest.mark.slow
def test_memory_benchmark_takes_each_measure_away(tmp_path):
    """benchmarks/run_memory.py: torch.optim's optimiser brings torch._dynamo back, ours
    does not (tiny run of the shipped subset)."""
    script = str(REPO / "benchmarks" / "run_memory.py")
    argv = [sys.executable, script, "--benchmark", "pmnist-subset", "--tasks", "2",
            "--train-limit", "64", "--configs", "hlop,torch-optim", "--precision", "fp32",
            "--out-dir", str(tmp_path)]  # fmt: skip
    out = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if "peak" in line}
    assert lines["hlop"].endswith("imported: False")
    assert lines["torch-optim"].endswith("imported: True")
    assert "relative to hlop's" in out.stdout
