"""The benchmark scripts keep working: `python -m benchmarks.bench --quick` runs end to end.

Timing claims live in docs/benchmarks.md (made by `make bench`), never in tests: this only
checks that the quick mode runs and writes its report and plot, not what they say.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.accuracy import val_curve
from benchmarks.events import scalars

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


def test_the_docs_scripts_read_a_real_run(trained_run: Path) -> None:
    """benchmarks/accuracy.py and studies.py read curves from a run's event files."""
    curve = val_curve(trained_run / "tensorboard")
    assert len(curve) == 2  # one validation per epoch, 2 epochs
    assert curve[0][0] < curve[1][0] and all(0 <= acc <= 1 for _, acc in curve)
    curves = scalars(trained_run / "tensorboard")
    assert {"train/loss", "val/acc", "val/acc_best", "test/acc"} <= set(curves)
    assert [value for _, _, value in curves["val/acc"]] == [acc for _, acc in curve]
