"""`model.compile=true` against the eager network, on the CPU (a table for README.md).

Each row is real `mnist-train` runs with the passive epoch timer, alternating eager and
compiled so the machine's drift hits both alike. Each compiled run gets an empty inductor
cache, so its first epoch pays the whole compilation, as a user's first run does.
"""

import argparse
import os
import statistics
import tempfile

from benchmarks.common import RECIPE, mnist_train

MODELS = {
    "784-128-64-10, batch 64 (the side-by-side recipe)": RECIPE,
    "784-512-256-10, batch 128 (the default experiment)": ["trainer.accelerator=cpu"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)


def main(args: argparse.Namespace) -> None:
    print("| model | network | first epoch (s) | s per epoch after it | launch to exit (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, recipe in MODELS.items():
        runs: dict[bool, list] = {False: [], True: []}
        for _ in range(args.repeats):
            for compiled in (False, True):
                with tempfile.TemporaryDirectory() as cache:
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                    overrides = [f"trainer.max_epochs={args.epochs}", f"model.compile={compiled}"]
                    run = mnist_train([*recipe, *overrides], timer=True, tries=4)
                    runs[compiled].append(run)
        for compiled, done in runs.items():
            firsts = [run.epochs[0]["train_seconds"] for run in done]
            rests = [epoch["train_seconds"] for run in done for epoch in run.epochs[1:]]
            print(
                f"| {name} | {'compiled' if compiled else 'eager'} | "
                f"{statistics.median(firsts):.1f} | {statistics.median(rests):.2f} | "
                f"{statistics.median(run.seconds for run in done):.1f} |",
                flush=True,
            )
