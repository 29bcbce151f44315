"""One process against DDP with several, for the same global batch, as a markdown table.

    .venv/bin/python -m benchmarks.ddp_scaling [--epochs 4] [--processes 2] [--global-batch 256]

Each row is a real `mnist-train` run of the default model on the CPU: one process with the
whole batch, then `trainer=ddp_cpu` with the batch split between the processes. Seconds per
epoch come from the run's metrics.json (fit_seconds / epochs: training plus validation).
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from benchmarks.common import mnist_train


def run(overrides: list[str], epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = mnist_train([*overrides, f"trainer.max_epochs={epochs}"], Path(tmp))
        return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=256)
    args = parser.parse_args()
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
        m = run(overrides, args.epochs)
        per_epoch = m["fit_seconds"] / args.epochs
        print(f"| {name} | {per_epoch:.2f} | {m['global_step']} | {100 * m['test/acc']:.2f} % |")


if __name__ == "__main__":
    main()
