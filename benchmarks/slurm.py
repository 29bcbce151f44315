"""The same runs on this machine and on the SLURM cluster of `make slurm` (docs/cluster.json,
quoted by docs/sweeps.md): the test accuracy of each world size both ways, and a job stopped
by its time limit again and again: how often it was requeued, how long each requeue took and
how many steps it lost.
"""

import argparse
import json
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import DOCS, QUIET_CPU, mnist_train, save

ON_SLURM = ["-m", "hydra/launcher=slurm_local"]
EPOCHS, LIMITED_EPOCHS = 2, 8  # of each run; of the time-limited job
DDP = ["trainer=ddp_cpu"]
SETUPS = [  # (name, overrides on the cluster, overrides of the same world size here)
    ("1 process", ["trainer=cpu"], ["trainer=cpu"]),
    ("DDP, 1 node x 2 processes", DDP, DDP),
    ("DDP, 2 nodes x 1 process", [*DDP, "trainer.devices=1", "trainer.num_nodes=2"], DDP),
]
STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]"


def on_slurm(overrides: list[str], work: Path) -> Path:
    """The job directory of a one-job sweep on the cluster (kept in `work`)."""
    work.mkdir(parents=True)
    return mnist_train([*ON_SLURM, *overrides], work).dir / "0"


def test_acc(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test/acc"]


def stops(log: str) -> list[dict]:
    """Each stop of the job (its signal, the step it saved) and the resume after it."""
    stopped, found = [], None
    for line in log.splitlines():
        stamp = re.match(STAMP, line)
        when = stamp and datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m := re.search(r"(SIG\w+): stopped after step (\d+)", line):
            found = {"signal": m[1], "saved_step": int(m[2]), "stopped_at": when}
        elif "Resuming" in line and found:
            stopped.append(found | {"seconds_to_resume": round(when - found.pop("stopped_at"), 1)})
            found = None
    return stopped


def main(args: argparse.Namespace) -> None:
    epochs = [f"trainer.max_epochs={EPOCHS}", "trainer.deterministic=true", *QUIET_CPU]
    work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))  # kept: the jobs' logs are worth a look
    rows = []
    for i, (name, cluster, here) in enumerate(SETUPS):
        local = mnist_train([*here, *epochs]).metrics["test/acc"]
        slurm = test_acc(on_slurm([*cluster, *epochs], work / str(i)))
        rows.append({"setup": name, "local": local, "slurm": slurm})
        print(rows[-1], flush=True)
    # A job with a 1-minute time limit: SIGUSR2 20 s before it (SLURM may send it up to 60 s
    # early), requeued until it finishes; against the same job without a time limit.
    limited = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20"]
    epochs[0] = f"trainer.max_epochs={LIMITED_EPOCHS}"
    limited += ["hydra.launcher.max_num_timeout=20", *epochs]
    started = time.monotonic()
    job = on_slurm(limited, work / "time_limited")
    wall = time.monotonic() - started
    log = (job / "train.log").read_text()
    uninterrupted = test_acc(on_slurm(epochs, work / "uninterrupted"))  # the same threads
    result = {"epochs": EPOCHS, "limited_epochs": LIMITED_EPOCHS, "test_acc": rows}
    result["time_limited"] = {
        "requeued": log.count("Requeued job"),
        "stops": stops(log),
        "wall_seconds": round(wall, 1),
        "test/acc": test_acc(job),
        "uninterrupted test/acc": uninterrupted,
    }
    save(DOCS / "cluster.json", (), result, args.command_line)
    print(json.dumps(result, indent=2))
