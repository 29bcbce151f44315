"""The benchmarks that print a Markdown table for a page instead of writing JSON; each time is a
real `mnist-train` run on the CPU (`augment` times `Augment` alone).

- augment: what `data.augment=...` costs per epoch: `Augment` over 55 000 real training
  images in mini-batches as mnist-train draws them, each kind at its default strength; the
  median of `--repeats` passes after a warm-up pass.
- compile: `model.compile=true` against eager, alternating the two so the machine's drift hits
  both alike; each compiled run gets an empty inductor cache, so its first epoch pays the whole
  compilation, as a user's first run does.
- ddp: one process with the whole batch against `trainer=ddp_cpu` with the batch split between
  the processes; seconds per epoch are metrics.json's fit_seconds / epochs (training plus
  validation).
- parallel: a 4-job sweep over dropouts one job at a time, then two at a time with
  hydra/launcher=joblib; the whole command's wall clock (start-up, training, tests, summaries).
"""

import argparse
import os
import statistics
import tempfile
import time

from benchmarks.common import QUIET_CPU, RECIPE, TRAIN_IMAGES, data_dir, mnist_train


def augment(args: argparse.Namespace) -> None:
    import torch

    from mnist_lightning.data.augment import AUGMENTS, Augment
    from mnist_lightning.data.datamodule import load_pair
    from mnist_lightning.data.datasets import ensure_mnist

    def epoch_seconds(augment: Augment, images: torch.Tensor) -> float:
        generator = torch.Generator()
        start = time.perf_counter()
        for step, batch in enumerate(images.split(args.batch_size)):
            augment(batch, generator.manual_seed(step))
        return time.perf_counter() - start

    images, _ = load_pair(ensure_mnist(data_dir()), "train")
    images = images[:TRAIN_IMAGES].float().div_(255)
    print(f"| data.augment | s per {TRAIN_IMAGES:,}-image epoch | ms per 1 000 images |")
    print("| --- | ---: | ---: |")
    for kind in AUGMENTS[1:]:
        augment = Augment(kind)
        epoch_seconds(augment, images[: 20 * args.batch_size])  # warm-up
        seconds = statistics.median(epoch_seconds(augment, images) for _ in range(args.repeats))
        print(f"| {kind} | {seconds:.2f} | {1000 * seconds / TRAIN_IMAGES * 1000:.1f} |")


def compile(args: argparse.Namespace) -> None:
    models = {
        "784-128-64-10, batch 64 (the side-by-side recipe)": RECIPE,
        "784-512-256-10, batch 128 (the default experiment)": ["trainer.accelerator=cpu"],
    }
    print("| model | network | first epoch (s) | s per epoch after it | launch to exit (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, recipe in models.items():
        runs: dict[bool, list] = {False: [], True: []}
        for _ in range(args.repeats):
            for compiled in (False, True):
                with tempfile.TemporaryDirectory() as cache:
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                    overrides = [f"trainer.max_epochs={args.epochs}", f"model.compile={compiled}"]
                    runs[compiled].append(mnist_train([*recipe, *overrides], timer=True, tries=4))
        for compiled, done in runs.items():
            firsts = [run.epochs[0]["train_seconds"] for run in done]
            rests = [epoch["train_seconds"] for run in done for epoch in run.epochs[1:]]
            print(
                f"| {name} | {'compiled' if compiled else 'eager'} | "
                f"{statistics.median(firsts):.1f} | {statistics.median(rests):.2f} | "
                f"{statistics.median(run.seconds for run in done):.1f} |",
                flush=True,
            )


def ddp(args: argparse.Namespace) -> None:
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


def parallel(args: argparse.Namespace) -> None:
    cores = os.cpu_count()
    sweep = ["-m", "model.dropout=0.0,0.1,0.2,0.3", f"trainer.max_epochs={args.epochs}"]
    sweep += ["trainer=cpu", *QUIET_CPU]
    print(f"| 4 jobs, default model, {args.epochs} epochs each ({cores} cores) | wall time |")
    print("| --- | --- |")
    one = mnist_train(sweep).seconds
    print(f"| one job at a time (basic launcher, {cores} torch threads) | {one:.0f} s |")
    two = mnist_train([*sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]).seconds
    share = max(1, (cores or 1) // 2)
    print(f"| two at a time (joblib, {share} torch thread(s) each) | {two:.0f} s |")
