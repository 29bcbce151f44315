"""The benchmarks keep working: `python -m benchmarks tutorial --quick` runs end to end, and
every subcommand of `python -m benchmarks` loads and says what it takes.

Timing claims live in docs/benchmarks.md (made by `make bench`), never in tests: this only
checks that the quick mode runs and writes its report and plot, not what they say.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import SUBCOMMANDS, main
from benchmarks.common import scalars

ROOT = Path(__file__).resolve().parents[1]


def benchmarks(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m benchmarks <args>` from the project root."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_benchmark_writes_a_table(real_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    result = benchmarks(
        "tutorial", "--quick", "--out", str(out), env={"MNIST_DATA_DIR": str(real_mnist)}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    assert "| loop | images per epoch |" in text
    for loop in ("(a) tutorial", "(b) plain PyTorch", "(c) mnist-train"):
        assert loop in text
    assert f"Made by `python -m benchmarks tutorial --quick --out {out}`" in text
    assert (tmp_path / "bench_scaling.png").stat().st_size > 0


def test_every_subcommand_is_listed_and_loads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="0"):
        main(["--help"])
    listing = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert re.search(rf"^    {name}\s", listing, re.MULTILINE)  # a long name wraps
        with pytest.raises(SystemExit, match="0"):
            main([name, "--help"])
        assert capsys.readouterr().out.startswith(f"usage: python -m benchmarks {name}")


def test_the_docs_scripts_read_a_real_run(trained_run: Path) -> None:
    """accuracy, studies and tutorial read curves from a run's event files."""
    curves = scalars(trained_run / "tensorboard")
    assert {"train/loss", "val/acc", "val/acc_best", "test/acc"} <= set(curves)
    val = curves["val/acc"]
    assert len(val) == 2  # one validation per epoch, 2 epochs
    assert val[0][1] < val[1][1] and all(0 <= acc <= 1 for _, _, acc in val)
