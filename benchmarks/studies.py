"""The four tutorial studies as sweeps: docs/studies.md and its pictures.

Each study is the command a user runs (`mnist-train -m experiment=study_<name>`), on the CPU;
everything on the page is read back from the sweeps' summary.csv, TensorBoard event files and
checkpoints. A study's figures are kept in docs/studies.json, so studies can be re-run one at a
time; the page is redrawn from all of them.
"""

import argparse
import csv
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from benchmarks.common import QUIET_CPU, ROOT, machine, machine_line, mnist_train, scalars

DOCS = ROOT / "docs"
IMAGES = DOCS / "images"
RESULTS = DOCS / "studies.json"
FASHION_RESULTS = DOCS / "studies_fashion.json"  # `--data fashion_mnist`: docs/fashion.md's
# Where the studies (docs/studies.md; docs/fashion.md's section, before sweeps recorded it)
# were measured.
MACHINE = "a 2-core AMD EPYC VM without GPU"
STUDIES = ("regularization", "activation", "batch_size", "l1_vs_l2")
# How a data set's pictures differ from MNIST's (keyword arguments of the study's function)
DRAWING = {"fashion_mnist": {"regularization": {"floor": 65}}}
TITLES = {
    "regularization": "Overfitting and its cure: dropout × weight decay on 1 000 images",
    "activation": "Vanishing gradients: five activations in a deep, narrow MLP",
    "batch_size": "Stochastic, mini-batch and full-batch gradient descent",
    "l1_vs_l2": "L1 against L2: sparse weights or small weights",
}
# What each study shows, written from the measured tables (docs/studies.json) below them.
LESSONS = {
    "regularization": (
        "Every network learns its 1 000 training images perfectly (100 % training accuracy) "
        "and gets only about 89-90 % of the validation images right: the gap is overfitting. "
        "Dropout is the cure that works here: 0.6 lifts validation accuracy by about 1.4 "
        "points and test accuracy by 1.4 (90.2 → 91.6 %) over no regularisation, and it is "
        "the only setting that keeps the training accuracy below 100 %. Decoupled weight "
        "decay (AdamW's, applied to the weights, scaled by the learning rate) moves the "
        "result by at most half a point, in no consistent direction, even at 1.0: with a "
        "one-cycle schedule and 60 short epochs it barely shrinks the weights. The curves in "
        "TensorBoard (`train/acc` against `val/acc`) show the gap opening within the first "
        "100 steps (about 12 epochs)."
    ),
    "activation": (
        "Eight layers of 64 units, plain SGD, PyTorch's default initialisation, 3 epochs. "
        "With sigmoid the gradient reaching the first layer is about a millionth of the one "
        "at the last layer, and the network never gets past guessing (10 %): the vanishing "
        "gradient. GELU fails the same way here (11 %, first-layer gradient 2 % of the "
        "last's), most likely because its slope near zero is about 1/2 (ReLU's is 0 or 1, "
        "tanh's 1): with PyTorch's small default initial weights the pre-activations stay "
        "near zero, and the signal shrinks at every layer. Tanh, ReLU and leaky "
        "ReLU keep the gradients of the first and last layers within a factor of 10 and "
        "reach 94-95 % in the same 3 epochs. TensorBoard's `grad_norm/layer<i>` curves show "
        "the per-layer picture for every activation. The sweep ends with `2 of 5 jobs "
        "failed` and exit status 1: mnist-train fails a run whose training accuracy ends at "
        "chance, and the sigmoid and GELU jobs are this study's lesson, not a fault; their "
        "TensorBoard curves are kept."
    ),
    "batch_size": (
        "Equal epochs, not equal time: every batch size sees the 10 000 training images 5 "
        "times. One image per step (stochastic gradient descent) takes 50 000 steps and "
        "57 s, 64 per step (mini-batch) takes 785 steps and about a second, and they end "
        "within half a point of each other. The full batch takes one step per epoch, 5 in "
        "all, in about a second too, and is far behind (69 % validation accuracy): per epoch, "
        "small batches make many more updates, and per second mini-batches do the most work. "
        "That is why mini-batches are the default."
    ),
    "l1_vs_l2": (
        "Sparsity is the share of weights below 1 % of the largest in their layer, averaged "
        "over the two layers. Without a penalty 7 % of the weights are there; with L2 (weight "
        "decay 1e-3) 16 %; with a small L1 penalty (2e-5 per weight) 34 %, twice as many as "
        "L2, at the same validation accuracy (within 0.4 points). The first-layer histogram "
        "shows the other half of the story: both penalties narrow the distribution, and the "
        "spike at exactly zero comes with weight decay, which shrinks every weight in "
        "proportion and so drives the ones no data gradient holds up (the border pixels, "
        "which never carry ink) all the way to zero."
    ),
}


def sweep(study: str, workdir: Path, data: str = "mnist") -> Path:
    """`mnist-train -m experiment=study_<study>` (with `data=<data>` unless MNIST, the
    default); its sweep directory."""
    chosen = [] if data == "mnist" else [f"data={data}"]
    try:
        return mnist_train(["-m", f"experiment=study_{study}", *chosen, *QUIET_CPU], workdir).dir
    except RuntimeError as e:
        # A job that learns nothing fails (mnist-train's chance-level check) and the sweep
        # exits 1; in study_activation that is the lesson (sigmoid), and the summary stands.
        # Any other failure (a crash, a kill, a sweep that stopped early) stops the benchmark.
        made = workdir / "outputs" / "multiruns"
        sweeps = sorted(made.iterdir()) if made.is_dir() else []
        if not sweeps:
            raise
        failed = only_learned_nothing(sweeps[-1], study)
        print(
            str(e).splitlines()[0],
            f"(jobs {', '.join(failed)} learned nothing; the summary is read)",
            flush=True,
        )
        return sweeps[-1]


# What a job's status says in summary.csv when mnist-train's chance-level check failed it
# (LearnedNothingError in mnist_lightning/cli/train.py, recorded by run/sweep.py).
LEARNED_NOTHING = "learned nothing"


def planned_jobs(study: str) -> int:
    """How many jobs conf/experiment/study_<study>.yaml's sweep has (its comma lists)."""
    conf = OmegaConf.load(ROOT / "conf" / "experiment" / f"study_{study}.yaml")
    return math.prod(len(str(v).split(",")) for v in conf.hydra.sweeper.params.values())


def only_learned_nothing(sweep_dir: Path, study: str) -> list[str]:
    """The jobs of a sweep that exited 1, when every job ended and each failed one failed
    mnist-train's chance-level check; otherwise a RuntimeError that says which job failed
    and why (a partial or crashed sweep is not published)."""
    summary = sweep_dir / "summary.csv"
    if not summary.is_file():
        raise RuntimeError(f"{sweep_dir}: the sweep failed before any job ended (no summary.csv)")
    with summary.open() as f:
        rows = list(csv.DictReader(f))
    planned = planned_jobs(study)
    if len(rows) != planned:
        raise RuntimeError(
            f"{sweep_dir}: {len(rows)} of study_{study}'s {planned} jobs ended; the sweep "
            "stopped early, and its table would be partial."
        )
    failed = [r for r in rows if r["status"] != "completed"]
    other = [r for r in failed if LEARNED_NOTHING not in r["status"]]
    if other:
        raise RuntimeError(
            f"{sweep_dir}: job {other[0]['job']} ({other[0]['overrides']}) failed for another "
            f"reason than learning nothing: {other[0]['status']}. The benchmark stops rather "
            "than publish a table without it."
        )
    return sorted((r["job"] for r in failed), key=int)


def jobs(sweep_dir: Path, data: str = "mnist") -> list[dict]:
    """summary.csv's rows in job order, each with its job's config overrides and curves; every
    job must have trained on `data` (its .hydra/config.yaml's data.dataset)."""
    with (sweep_dir / "summary.csv").open() as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["job"]))
    for row in rows:
        job = sweep_dir / row["job"]
        trained_on = OmegaConf.load(job / ".hydra" / "config.yaml").data.dataset
        if trained_on != data:
            raise RuntimeError(f"{job} trained on {trained_on}, not {data}")
        status = json.loads((job / "job_status.json").read_text())
        row["params"] = dict(o.split("=", 1) for o in status["overrides"] if "=" in o)
        row["curves"] = scalars(job / "tensorboard")
        metrics = job / "metrics.json"  # none for a job that failed
        row["metrics"] = json.loads(metrics.read_text()) if metrics.is_file() else {}
        if not row["val/acc_best"]:  # a failed job: the best of its validations
            row["val/acc_best"] = str(max(v for _, _, v in row["curves"]["val/acc"]))
        row["dir"] = str(job)
    return rows


def percent(value: str) -> str:
    """A summary.csv accuracy as the tables show it; a job that learned nothing has none."""
    return f"{100 * float(value):.2f} %" if value else "– (learned nothing)"


def last(row: dict, tag: str) -> float:
    return row["curves"][tag][-1][2]


def regularization(rows: list[dict], floor: float = 80) -> tuple[list[str], Figure]:
    """`floor`: the bottom of the accuracy axis of the curves (Fashion-MNIST's are lower)."""
    lines = [
        "| dropout | weight decay | train acc (last window) | val/acc_best | test/acc |",
        "| --- | --- | --- | --- | --- |",
    ]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    left, right = fig.subplots(1, 2)
    dropouts = sorted({r["params"]["model.dropout"] for r in rows}, key=float)
    decays = sorted({r["params"]["model.weight_decay"] for r in rows}, key=float)
    grid = torch.zeros(len(dropouts), len(decays))
    for r in rows:
        d, w = r["params"]["model.dropout"], r["params"]["model.weight_decay"]
        grid[dropouts.index(d), decays.index(w)] = 100 * float(r["val/acc_best"])
        lines.append(
            f"| {d} | {w} | {100 * last(r, 'train/acc'):.1f} % | "
            f"{100 * float(r['val/acc_best']):.2f} % | {percent(r['test/acc'])} |"
        )
    image = left.imshow(grid, cmap="viridis")
    for i in range(len(dropouts)):
        for j in range(len(decays)):
            left.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", color="white")
    left.set(
        xticks=range(len(decays)),
        xticklabels=decays,
        yticks=range(len(dropouts)),
        yticklabels=dropouts,
        xlabel="model.weight_decay",
        ylabel="model.dropout",
        title="val/acc_best (%), 1 000 training images",
    )
    fig.colorbar(image, ax=left, shrink=0.8)
    plain = next(
        r
        for r in rows
        if float(r["params"]["model.dropout"]) == 0
        and float(r["params"]["model.weight_decay"]) == 0
    )
    best = max(rows, key=lambda r: float(r["val/acc_best"]))
    for r, colour in ((plain, "tab:red"), (best, "tab:green")):
        label = f"dropout {r['params']['model.dropout']}, wd {r['params']['model.weight_decay']}"
        for tag, style in (("train/acc", "--"), ("val/acc", "-")):
            steps, _, values = zip(*r["curves"][tag], strict=True)
            right.plot(
                steps, [100 * v for v in values], style, color=colour, label=f"{tag}, {label}"
            )
    right.set(
        xlabel="optimizer step",
        ylabel="accuracy (%)",
        ylim=(floor, 100.5),
        title="memorising vs generalising",
    )
    right.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return lines, fig


def activation(rows: list[dict]) -> tuple[list[str], Figure]:
    lines = [
        "| activation | gradient norm, first layer / last layer (last window) | val/acc_best |",
        "| --- | --- | --- |",
    ]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    left, right = fig.subplots(1, 2)
    colours = colormaps["tab10"].colors
    for r, colour in zip(rows, colours, strict=False):
        name = r["params"]["model.activation"]
        layers = sorted(
            (int(tag.removeprefix("grad_norm/layer")), tag)
            for tag in r["curves"]
            if tag.startswith("grad_norm/")
        )
        # the mean over the first epoch's windows: before training has settled anything
        norms = [
            sum(v for _, _, v in r["curves"][tag][:5]) / len(r["curves"][tag][:5])
            for _, tag in layers
        ]
        left.semilogy([i for i, _ in layers], norms, "o-", color=colour, label=name)
        steps, _, values = zip(*r["curves"]["val/acc"], strict=True)
        right.plot(steps, [100 * v for v in values], "o-", color=colour, label=name)
        ratio = last(r, layers[0][1]) / max(last(r, layers[-1][1]), 1e-30)
        lines.append(f"| {name} | {ratio:.2g} | {100 * float(r['val/acc_best']):.2f} % |")
    left.set(
        xlabel="layer (1 = input side)",
        ylabel="gradient norm (first 5 windows)",
        title="gradient reaching each layer",
    )
    right.set(xlabel="optimizer step", ylabel="val/acc (%)", title="8 x 64 hidden, SGD")
    left.legend(fontsize=7)
    fig.tight_layout()
    return lines, fig


def batch_size(rows: list[dict]) -> tuple[list[str], Figure]:
    lines = [
        "| batch | optimizer steps | training time | val/acc_best | test/acc |",
        "| --- | --- | --- | --- | --- |",
    ]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    left, right = fig.subplots(1, 2)
    for r in rows:
        batch = r["params"]["data.batch_size"]
        _, seconds, values = zip(*r["curves"]["val/acc"], strict=True)
        epochs = range(1, len(values) + 1)
        left.plot(epochs, [100 * v for v in values], "o-", label=f"batch {batch}")
        right.plot(seconds, [100 * v for v in values], "o-", label=f"batch {batch}")
        m = r["metrics"]  # {} for a job that learned nothing
        fit_time = f"{m['fit_seconds']:.0f} s" if "fit_seconds" in m else "–"
        lines.append(
            f"| {batch} | {m.get('global_step', '–')} | {fit_time} | "
            f"{100 * float(r['val/acc_best']):.2f} % | {percent(r['test/acc'])} |"
        )
    left.set(xlabel="epoch", ylabel="val/acc (%)", title="equal epochs")
    right.set(xlabel="seconds", ylabel="val/acc (%)", title="the same runs against time")
    left.legend()
    fig.tight_layout()
    return lines, fig


def l1_vs_l2(rows: list[dict]) -> tuple[list[str], Figure]:
    lines = [
        "| L1 (model.l1) | L2 (model.weight_decay) | weights/sparsity | val/acc_best |",
        "| --- | --- | --- | --- |",
    ]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax = fig.subplots()
    for r in rows:
        l1, l2 = r["params"]["model.l1"], r["params"]["model.weight_decay"]
        ckpt = torch.load(Path(r["dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
        weights = ckpt["state_dict"]["net.layers.0.weight"].flatten()
        ax.hist(
            weights.numpy(),
            bins=200,
            range=(-0.15, 0.15),
            histtype="step",
            label=f"L1 {l1}, L2 {l2}",
            log=True,
        )
        lines.append(
            f"| {l1} | {l2} | {100 * last(r, 'weights/sparsity'):.1f} % | "
            f"{100 * float(r['val/acc_best']):.2f} % |"
        )
    ax.set(
        xlabel="first-layer weight",
        ylabel="count (log)",
        title="first-layer weights after training, 784-256-10",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return lines, fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--studies", default=",".join(STUDIES), help="the ones to (re)run")
    parser.add_argument(
        "--data",
        choices=("mnist", "fashion_mnist"),
        default="mnist",
        help="the data set: mnist (docs/studies.md) or fashion_mnist (docs/fashion.md's "
        "section, figures in docs/studies_fashion.json, pictures study_<name>_fashion.png)",
    )


def main(args: argparse.Namespace) -> None:
    fashion = args.data == "fashion_mnist"
    store = FASHION_RESULTS if fashion else RESULTS
    suffix = "_fashion" if fashion else ""
    results = json.loads(store.read_text()) if store.is_file() else {}
    IMAGES.mkdir(parents=True, exist_ok=True)
    for study in [s for s in args.studies.split(",") if s]:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            rows = jobs(sweep(study, Path(tmp), args.data), args.data)
            lines, fig = globals()[study](rows, **DRAWING.get(args.data, {}).get(study, {}))
            fig.savefig(IMAGES / f"study_{study}{suffix}.png")
        results[study] = {
            "table": lines,
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "measured": time.strftime("%Y-%m-%d"),
            "machine": machine_line(machine()),
        }
        print(study, *lines, sep="\n", flush=True)
        store.write_text(json.dumps(results, indent=1) + "\n")
    if fashion:
        from benchmarks import fashion as fashion_page  # it imports this module

        fashion_page.write_page()
    else:
        (DOCS / "studies.md").write_text(page(results))


def page(results: dict) -> str:
    lines = [
        "# Studies: four lessons from the tutorials, one command each",
        "",
        "Each study is a Hydra sweep, `mnist-train -m experiment=study_<name>`: its summary "
        "table, TensorBoard curves and checkpoints teach the lesson. The tables and pictures "
        "here are read back from those sweeps by `.venv/bin/python -m benchmarks studies` on "
        f"{MACHINE} (`--studies NAME` re-runs one).",
        "",
    ]
    for study in STUDIES:
        if study not in results:
            continue
        entry = results[study]
        lines += [
            f"## {TITLES[study]}",
            "",
            f"`mnist-train -m experiment=study_{study}` (conf/experiment/study_{study}.yaml; "
            f"{entry['minutes']} minutes for the whole sweep, measured {entry['measured']}).",
            "",
            *entry["table"],
            "",
            f"![{study}](images/study_{study}.png)",
            "",
            LESSONS[study],
            "",
        ]
    return "\n".join(lines)
