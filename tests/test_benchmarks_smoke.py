"""The benchmark scripts keep working: `python -m benchmarks.bench --quick` runs end to end.

Timing claims live in docs/benchmarks.md (made by `make bench`), never in tests: this only
checks that the quick mode runs and writes its report and plot, not what they say.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_benchmark_writes_a_table(real_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=os.environ | {"MNIST_DATA_DIR": str(real_mnist)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    assert "| loop | images per epoch |" in text
    for loop in ("(a) tutorial", "(b) plain PyTorch", "(c) mnist-train"):
        assert loop in text
    assert (tmp_path / "bench_scaling.png").stat().st_size > 0
