"""A 4-job sweep one job at a time, then with hydra/launcher=joblib two at a time.

    .venv/bin/python -m benchmarks.parallel_sweep [--epochs 3]

Each is a real `mnist-train -m` of the default model over four dropouts on the CPU; the time
is the whole command's wall clock (start-up, training, testing, summaries). Prints a markdown
table.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(launcher: list[str], epochs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mnist_lightning.train", "-m", *launcher]
        cmd += ["model.dropout=0.0,0.1,0.2,0.3", f"trainer.max_epochs={epochs}"]
        cmd += ["trainer=cpu", "callbacks.progress_bar.refresh_rate=0"]
        env = os.environ | {"MNIST_DATA_DIR": str(ROOT / "data")}
        started = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"| 4 jobs, default model, {args.epochs} epochs each ({cores} cores) | wall time |")
    print("| --- | --- |")
    one = sweep([], args.epochs)
    print(f"| one job at a time (basic launcher, {cores} torch threads) | {one:.0f} s |")
    two = sweep(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], args.epochs)
    share = max(1, (cores or 1) // 2)
    print(f"| two at a time (joblib, {share} torch thread(s) each) | {two:.0f} s |")


if __name__ == "__main__":
    main()
