"""The four studies as the sweeps a user runs, `mnist-train -m experiment=study_<name>
[data=fashion_mnist]`, read back into docs/studies.json and docs/images/study_<name>[_fashion].png.
A job that learns nothing fails the chance-level check and the sweep exits 1; in study_activation
that is the lesson (sigmoid): a sweep that wrote its summary is read, a failed job's row says so.
"""

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

from benchmarks.common import DOCS, QUIET_CPU, mnist_train, save, scalars


def sweep(study: str, data: str, workdir: Path) -> list[dict]:
    """Run the study's sweep; summary.csv's rows in job order, each with its overrides,
    TensorBoard curves, metrics.json ({} if it failed) and directory."""
    overrides = ["-m", f"experiment=study_{study}", f"data={data}", *QUIET_CPU]
    try:
        mnist_train(overrides, workdir)
    except RuntimeError as e:  # a job failed: read what the sweep wrote, if it got that far
        print(str(e).splitlines()[0], flush=True)
    sweep_dir = sorted((workdir / "outputs" / "multiruns").iterdir())[-1]
    with (sweep_dir / "summary.csv").open() as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["job"]))
    for row in rows:
        job = sweep_dir / row["job"]
        status = json.loads((job / "job_status.json").read_text())
        row["params"] = dict(o.split("=", 1) for o in status["overrides"] if "=" in o)
        row["curves"] = scalars(job / "tensorboard")
        metrics = job / "metrics.json"
        row["metrics"] = json.loads(metrics.read_text()) if metrics.is_file() else {}
        row["val"] = 100 * max(v for _, _, v in row["curves"]["val/acc"])
        row["test"] = round(100 * float(row["test/acc"]), 2) if row["test/acc"] else None
        row["dir"] = job
    return rows


def last(row: dict, tag: str) -> float:
    return row["curves"][tag][-1][2]


def regularization(rows: list[dict], fig: Figure) -> list[dict]:
    left, right = fig.subplots(1, 2)
    for r in rows:
        label = f"dropout {r['params']['model.dropout']}, wd {r['params']['model.weight_decay']}"
        for tag, style in (("train/acc", "--"), ("val/acc", "-")):
            steps, _, values = zip(*r["curves"][tag], strict=True)
            axis = right if r in (rows[0], max(rows, key=lambda r: r["val"])) else left
            axis.plot(steps, [100 * v for v in values], style, label=f"{tag}, {label}")
    for axis in (left, right):
        axis.set(xlabel="optimizer step", ylabel="accuracy (%)", ylim=(60, 100.5))
    left.set_title("every setting")
    right.set_title("no regularisation against the best")
    right.legend(fontsize=6, loc="lower right")
    return [
        {
            "dropout": r["params"]["model.dropout"],
            "weight decay": r["params"]["model.weight_decay"],
            "train acc, last window (%)": round(100 * last(r, "train/acc"), 1),
            "val/acc_best (%)": round(r["val"], 2),
            "test/acc (%)": r["test"],
        }
        for r in rows
    ]


def activation(rows: list[dict], fig: Figure) -> list[dict]:
    left, right = fig.subplots(1, 2)
    records = []
    for r in rows:
        name = r["params"]["model.activation"]
        tags = sorted(
            (t for t in r["curves"] if t.startswith("grad_norm/")), key=lambda t: int(t[15:])
        )
        first = [sum(v for _, _, v in r["curves"][t][:5]) / 5 for t in tags]  # the first windows
        left.semilogy(range(1, len(tags) + 1), first, "o-", label=name)
        steps, _, values = zip(*r["curves"]["val/acc"], strict=True)
        right.plot(steps, [100 * v for v in values], "o-", label=name)
        ratio = last(r, tags[0]) / max(last(r, tags[-1]), 1e-30)
        records.append(
            {
                "activation": name,
                "gradient norm, first / last layer": float(f"{ratio:.2g}"),
                "val/acc_best (%)": round(r["val"], 2),
                "status": r["status"].split(":")[0],
            }
        )
    left.set(xlabel="layer (1 = input side)", ylabel="gradient norm (first 5 windows)")
    right.set(xlabel="optimizer step", ylabel="val/acc (%)", title="8 x 64 hidden, SGD")
    left.legend(fontsize=7)
    return records


def batch_size(rows: list[dict], fig: Figure) -> list[dict]:
    left, right = fig.subplots(1, 2)
    for r in rows:
        _, seconds, values = zip(*r["curves"]["val/acc"], strict=True)
        label = f"batch {r['params']['data.batch_size']}"
        left.plot(range(1, len(values) + 1), [100 * v for v in values], "o-", label=label)
        right.plot(seconds, [100 * v for v in values], "o-", label=label)
    left.set(xlabel="epoch", ylabel="val/acc (%)", title="equal epochs")
    right.set(xlabel="seconds", ylabel="val/acc (%)", title="the same runs against time")
    left.legend()
    return [
        {
            "batch": int(r["params"]["data.batch_size"]),
            "optimizer steps": r["metrics"].get("global_step"),
            "training time (s)": round(r["metrics"].get("fit_seconds", float("nan"))),
            "val/acc_best (%)": round(r["val"], 2),
            "test/acc (%)": r["test"],
        }
        for r in rows
    ]


def l1_vs_l2(rows: list[dict], fig: Figure) -> list[dict]:
    ax = fig.subplots()
    for r in rows:
        ckpt = torch.load(r["dir"] / "checkpoints" / "last.ckpt", weights_only=True)
        weights = ckpt["state_dict"]["net.layers.0.weight"].flatten().numpy()
        label = f"L1 {r['params']['model.l1']}, L2 {r['params']['model.weight_decay']}"
        ax.hist(weights, bins=200, range=(-0.15, 0.15), histtype="step", label=label, log=True)
    ax.set(xlabel="first-layer weight", ylabel="count (log)", title="first-layer weights")
    ax.legend(fontsize=8)
    return [
        {
            "L1 (model.l1)": r["params"]["model.l1"],
            "L2 (model.weight_decay)": r["params"]["model.weight_decay"],
            "weights/sparsity (%)": round(100 * last(r, "weights/sparsity"), 1),
            "val/acc_best (%)": round(r["val"], 2),
        }
        for r in rows
    ]


def main(args: argparse.Namespace) -> None:
    suffix = "" if args.data == "mnist" else "_fashion"
    for study in filter(None, args.studies.split(",")):
        started = time.perf_counter()
        fig = Figure(figsize=(9, 3.6), dpi=100, layout="tight")
        with tempfile.TemporaryDirectory() as tmp:
            rows = globals()[study](sweep(study, args.data, Path(tmp)), fig)
        fig.savefig(DOCS / "images" / f"study_{study}{suffix}.png")
        result = {"sweep": f"mnist-train -m experiment=study_{study} data={args.data}"}
        result |= {"minutes": round((time.perf_counter() - started) / 60, 1), "rows": rows}
        save(DOCS / "studies.json", (args.data, study), result, args.command_line)
        print(study, json.dumps(rows, indent=1), flush=True)
