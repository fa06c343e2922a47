"""bench/gpu_check.sh and the benchmarks' --device, as far as a machine without a GPU can
check them: the script parses, stops at once with a reason when torch sees no CUDA device,
and the classify benchmarks take --device and refuse cuda here in one line."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
BENCHES = [ROOT / "bench" / name for name in ("classify_speed.py", "classify_sweep_speed.py")]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, **kwargs)


def test_script_parses():
    assert run("bash", "-n", str(SCRIPT)).returncode == 0


@no_cuda
def test_script_stops_without_cuda_and_says_why(tmp_path):
    result = run("bash", str(SCRIPT), str(tmp_path), env={"PYTHON": sys.executable,
                                                          "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "sees no CUDA device here: nothing was run" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_bench_takes_device(bench):
    result = run(sys.executable, str(bench), "--help")
    assert result.returncode == 0 and "--device" in result.stdout


@no_cuda
@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_bench_refuses_cuda_in_one_line(bench):
    result = run(sys.executable, str(bench), "--device", "cuda")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "--device cuda: no CUDA device is available here; use --device cpu or auto")
    assert "Traceback" not in result.stderr
