"""Small speed measurements, rows saved into docs/benchmarks.json under the subcommand's name.
Real `mnist-train` runs on the CPU, but `augment` (`Augment` alone over 55 000 images, median of
3 passes after a warm-up). `compile` alternates compiled and eager runs (the machine's drift hits
both), each compiled one with an empty inductor cache; `ddp`'s seconds per epoch are
fit_seconds / epochs; `parallel` times the whole sweep, one job and two (joblib) at a time."""

import argparse
import os
import statistics
import tempfile
import time

from benchmarks.common import QUIET_CPU, RECIPE, TRAIN_IMAGES, data_dir, mnist_train


def augment(args: argparse.Namespace) -> list[dict]:
    import torch

    from mnist_lightning.data.augment import AUGMENTS, Augment
    from mnist_lightning.data.datamodule import load_pair
    from mnist_lightning.data.datasets import ensure_mnist

    def epoch_seconds(augment: Augment, images: torch.Tensor) -> float:
        generator = torch.Generator()
        start = time.perf_counter()
        for step, batch in enumerate(images.split(128)):
            augment(batch, generator.manual_seed(step))
        return time.perf_counter() - start

    images, _ = load_pair(ensure_mnist(data_dir()), "train")
    images = images[:TRAIN_IMAGES].float().div_(255)
    rows = []
    for kind in AUGMENTS[1:]:
        epoch_seconds(Augment(kind), images[: 20 * 128])  # warm-up
        seconds = statistics.median(epoch_seconds(Augment(kind), images) for _ in range(3))
        rows.append({"data.augment": kind, "s per 55 000-image epoch": round(seconds, 2)})
    return rows


def compile(args: argparse.Namespace) -> list[dict]:
    models = {
        "784-128-64-10, batch 64 (the side-by-side recipe)": RECIPE,
        "784-512-256-10, batch 128 (the default experiment)": ["trainer.accelerator=cpu"],
    }
    rows = []
    for name, recipe in models.items():
        runs: dict[bool, list] = {False: [], True: []}
        for compiled in [False, True] * 2:  # alternating
            with tempfile.TemporaryDirectory() as cache:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                overrides = ["trainer.max_epochs=6", f"model.compile={compiled}"]
                runs[compiled].append(mnist_train([*recipe, *overrides], timer={}, tries=4))
        for compiled, done in runs.items():
            rests = [epoch["train_seconds"] for run in done for epoch in run.epochs[1:]]
            row = {"model": name, "network": "compiled" if compiled else "eager"}
            row["first epoch (s)"] = statistics.median(
                run.epochs[0]["train_seconds"] for run in done
            )
            row["s per epoch after it"] = statistics.median(rests)
            rows.append(
                row | {"launch to exit (s)": statistics.median(run.seconds for run in done)}
            )
    return rows


def ddp(args: argparse.Namespace) -> list[dict]:
    n, batch, epochs = 2, 256, 4  # processes, global batch
    split = ["trainer=ddp_cpu", f"trainer.devices={n}", f"data.batch_size={batch // n}"]
    setups = {
        f"1 process, batch {batch}": ["trainer=cpu", f"data.batch_size={batch}"],
        f"{n} processes (ddp_cpu), batch {batch // n} each": split,
    }
    rows = []
    for name, overrides in setups.items():
        m = mnist_train([*overrides, f"trainer.max_epochs={epochs}", *QUIET_CPU]).metrics
        row = {f"setup ({os.cpu_count()} cores)": name, "s per epoch": m["fit_seconds"] / epochs}
        rows.append(row | {"optimizer steps": m["global_step"], "test accuracy": m["test/acc"]})
    return rows


def parallel(args: argparse.Namespace) -> list[dict]:
    cores, epochs = os.cpu_count() or 1, 3
    sweep = ["-m", "model.dropout=0.0,0.1,0.2,0.3", f"trainer.max_epochs={epochs}"]
    sweep += ["trainer=cpu", *QUIET_CPU]
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    setups = {
        f"one job at a time (basic launcher, {cores} torch threads)": sweep,
        f"two at a time (joblib, {max(1, cores // 2)} torch thread(s) each)": [*sweep, *joblib],
    }
    key = f"4 jobs, default model, {epochs} epochs each ({cores} cores)"
    return [{key: name, "wall time (s)": mnist_train(cmd).seconds} for name, cmd in setups.items()]
