"""`model.compile=true` against the eager network, on the CPU, as a markdown table.

    .venv/bin/python -m benchmarks.compile_ab [--epochs 6] [--repeats 2]

Each row is real `mnist-train` runs with the passive epoch timer (benchmarks/epoch_timer.py),
alternating eager and compiled so the machine's drift hits both alike. Each compiled run gets
an empty inductor cache, so its first epoch pays the whole compilation, as a user's first run
does.
"""

import argparse
import os
import statistics
import tempfile

from benchmarks.mnist_train import RECIPE, run_mnist_train

MODELS = {
    "784-128-64-10, batch 64 (the side-by-side recipe)": RECIPE,
    "784-512-256-10, batch 128 (the default experiment)": ["trainer.accelerator=cpu"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("| model | network | first epoch (s) | s per epoch after it | launch to exit (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, recipe in MODELS.items():
        runs: dict[bool, list] = {False: [], True: []}
        for _ in range(args.repeats):
            for compiled in (False, True):
                with tempfile.TemporaryDirectory() as cache:
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                    overrides = [f"trainer.max_epochs={args.epochs}", f"model.compile={compiled}"]
                    runs[compiled].append(run_mnist_train([*recipe, *overrides]))
        for compiled, done in runs.items():
            firsts = [run.epochs[0]["train_seconds"] for run in done]
            rests = [epoch["train_seconds"] for run in done for epoch in run.epochs[1:]]
            print(
                f"| {name} | {'compiled' if compiled else 'eager'} | "
                f"{statistics.median(firsts):.1f} | {statistics.median(rests):.2f} | "
                f"{statistics.median(run.process_seconds for run in done):.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
