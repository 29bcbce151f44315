"""A 4-job sweep one job at a time, then with hydra/launcher=joblib two at a time (a table for
README.md).

Each is a real `mnist-train -m` of the default model over four dropouts on the CPU; the time
is the whole command's wall clock (start-up, training, testing, summaries).
"""

import argparse
import os

from benchmarks.common import QUIET_CPU, mnist_train


def sweep(launcher: list[str], epochs: int) -> float:
    args = ["-m", *launcher, "model.dropout=0.0,0.1,0.2,0.3", f"trainer.max_epochs={epochs}"]
    return mnist_train([*args, "trainer=cpu", *QUIET_CPU]).seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=3)


def main(args: argparse.Namespace) -> None:
    cores = os.cpu_count()
    print(f"| 4 jobs, default model, {args.epochs} epochs each ({cores} cores) | wall time |")
    print("| --- | --- |")
    one = sweep([], args.epochs)
    print(f"| one job at a time (basic launcher, {cores} torch threads) | {one:.0f} s |")
    two = sweep(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], args.epochs)
    share = max(1, (cores or 1) // 2)
    print(f"| two at a time (joblib, {share} torch thread(s) each) | {two:.0f} s |")
