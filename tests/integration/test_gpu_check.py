"""benchmarks/gpu_check.py runs its checks on the CPU too."""

import pytest
from helpers import REPO


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu(capsys):
    """benchmarks/gpu_check.py is run once per device session: keep it working (its checks
    pass on the CPU too; --quick shrinks the timings)."""
    import importlib.util

    path = REPO / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cpu", "--quick", "--skip-full-run"]) == 0
    out = capsys.readouterr().out
    summary = out.split("==== summary ====")[1]
    assert "all checks passed" in summary and summary.count("PASS") == 13
