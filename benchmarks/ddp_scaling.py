"""One process against DDP with several, for the same global batch, on the CPU (a table for
docs/sweeps.md).

Each row is a real `mnist-train` run of the default model: one process with the whole batch,
then `trainer=ddp_cpu` with the batch split between the processes. Seconds per epoch come from
the run's metrics.json (fit_seconds / epochs: training plus validation).
"""

import argparse
import os

from benchmarks.common import QUIET_CPU, mnist_train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=256)


def main(args: argparse.Namespace) -> None:
    per_process = args.global_batch // args.processes
    setups = {
        f"1 process, batch {args.global_batch}": [
            "trainer=cpu",
            f"data.batch_size={args.global_batch}",
        ],
        f"{args.processes} processes (ddp_cpu), batch {per_process} each": [
            "trainer=ddp_cpu",
            f"trainer.devices={args.processes}",
            f"data.batch_size={per_process}",
        ],
    }
    print(f"| setup ({os.cpu_count()} cores) | s per epoch | optimizer steps | test accuracy |")
    print("| --- | --- | --- | --- |")
    for name, overrides in setups.items():
        m = mnist_train([*overrides, f"trainer.max_epochs={args.epochs}", *QUIET_CPU]).metrics
        per_epoch = m["fit_seconds"] / args.epochs
        print(f"| {name} | {per_epoch:.2f} | {m['global_step']} | {100 * m['test/acc']:.2f} % |")
