"""mnist-train on a real SLURM cluster (tests/slurm_cluster.sh's two nodes, started here; never
skipped). Jobs are stopped as SLURM stops them: `scancel --signal=USR2` as before a time limit,
`scontrol requeue` (SIGTERM, requeued) as a preemption."""

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from benchmarks.common import scalars
from tests.helpers.commands import ROOT, cli_env, train_command
from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import SMALL, merged

pytestmark = pytest.mark.slurm

ON_SLURM = ("-m", "hydra/launcher=slurm_local")
# Long enough to be stopped mid-training (60 epochs of 20 steps take ~6 s), bit-exact on resume.
LONG = ("trainer.max_epochs=60", "trainer.deterministic=true")


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    started = subprocess.run(
        ["bash", str(ROOT / "tests" / "slurm_cluster.sh"), "start"], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stdout + started.stderr


class Command:
    """mnist-train in the background, its output in a file (read while it runs)."""

    def __init__(self, cwd: Path, data: Path, *overrides: str, env: dict | None = None) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.log = cwd / f"command-{time.monotonic_ns()}.log"
        command = train_command(*(o for o in overrides if o != "-m"))
        command[3:3] = ["-m"] * ("-m" in overrides)  # before the overrides, for Hydra
        with open(self.log, "w") as log:
            # SIGINT as a terminal leaves it (a shell's background job would ignore it).
            terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
            out = {"stdout": log, "stderr": subprocess.STDOUT, "preexec_fn": terminal}
            self.process = subprocess.Popen(command, cwd=cwd, env=cli_env(data, env), **out)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_until(self, what: str, condition: Callable[[], object]) -> None:
        wait_until(what, lambda: condition() or self.process.poll() is not None)
        assert self.process.poll() is None, f"mnist-train ended before {what}:\n{self.output}"

    def finish(self) -> tuple[int, str]:
        return self.process.wait(timeout=300), self.output


def job_ids(output: str) -> list[str]:
    """The SLURM jobs a sweep submitted, as its terminal said."""
    return [line.rsplit(" ", 1)[1] for line in output.splitlines() if "Submitted SLURM" in line]


def wait_until(what: str, condition: Callable[[], object], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)


def summary(sweep: Path) -> dict[str, dict[str, str]]:
    return {r["job"]: r for r in csv.DictReader((sweep / "summary.csv").read_text().splitlines())}


def sacct(job: str, fields: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job, "-o", fields], capture_output=True, text=True
    ).stdout
    return [line.split("|") for line in out.splitlines()]


def side_by_side(array: str) -> bool:  # as SLURM recorded them (a 2-s poll may miss it)
    (start0, end0), (start1, end1) = sacct(array, "Start,End")
    return max(start0, start1) < min(end0, end1)


def test_a_sweep_runs_side_by_side_records_a_cancelled_job_and_resumes_it(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    sweep_args = (*ON_SLURM, *LONG, "model.dropout=0.0,0.2")
    command = Command(tmp_path, synthetic_mnist, *sweep_args)
    command.wait_until("the submission", lambda: job_ids(command.output))
    (array,) = job_ids(command.output)
    ckpt = tmp_path / "outputs/multiruns"
    command.wait_until("job 1's checkpoint", lambda: list(ckpt.glob("*/1/checkpoints/last.ckpt")))
    subprocess.run(["scancel", f"{array}_1"], check=True)
    code, output = command.finish()

    assert code == 1, output
    assert "Traceback" not in output and "Bypassing sacct" not in output
    (sweep,) = ckpt.iterdir()
    rows = summary(sweep)
    assert rows["0"]["status"] == "completed"
    assert rows["1"]["status"].startswith(f"failed: SLURM job {array}_1 ended CANCELLED")
    assert " running" in output  # the progress line (how many, at 2-s polls: not pinned)
    assert side_by_side(array)

    code, output = Command(tmp_path, synthetic_mnist, *sweep_args, f"resume={sweep}").finish()
    assert code == 0, output
    assert output.count("finished before; skipped") == 1
    (again,) = job_ids(output)
    assert len(sacct(again, "JobID")) == 1  # only the cancelled job ran again
    assert {row["status"] for row in summary(sweep).values()} == {"completed"}
    assert "Resuming" in (sweep / "1" / "train.log").read_text()


def test_a_job_stopped_by_its_time_limit_and_preempted_ends_as_if_never_stopped(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Stopped twice after a step, continued twice: the weights and curves, point for point, of
    the run uninterrupted here (in the job's one thread: two threads' sums round differently)."""
    longer = ("trainer.max_epochs=100", "trainer.deterministic=true")  # a resumed job stops too
    command = Command(tmp_path / "cluster", synthetic_mnist, *ON_SLURM, *longer)
    command.wait_until("the submission", lambda: job_ids(command.output))
    (job,) = job_ids(command.output)
    run_dir = tmp_path / "cluster/outputs/multiruns"
    command.wait_until("a checkpoint", lambda: list(run_dir.glob("*/0/checkpoints/last.ckpt")))
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # the time-limit warning
    (run_dir,) = run_dir.glob("*/0")
    log = run_dir / "train.log"
    resumed = lambda: ", step " in log.read_text().partition("Resuming")[2]  # noqa: E731
    command.wait_until("the requeued job's first epoch", resumed)  # (not a fixed wait: it ended)
    subprocess.run(["scontrol", "requeue", job], check=True)  # a preemption: SIGTERM, requeue
    code, output = command.finish()
    assert code == 0, output

    text = log.read_text()
    assert text.count("Resuming") == 2 and "Requeued job" in text
    assert "SIGUSR2: stopped after step" in text and "SIGTERM: stopped after step" in text
    Command(tmp_path / "local", synthetic_mnist, *longer, env={"OMP_NUM_THREADS": "1"}).finish()
    (local,) = (tmp_path / "local/outputs/runs").iterdir()
    ours, theirs = scalars(run_dir / "tensorboard"), scalars(local / "tensorboard")
    for tag in ("train/loss", "val/acc"):  # (step, value) of every point, in file order
        assert [(s, v) for s, _, v in ours[tag]] == [(s, v) for s, _, v in theirs[tag]] != []
    weights = [torch.load(r / "checkpoints/last.ckpt")["state_dict"] for r in (run_dir, local)]
    torch.testing.assert_close(*weights, rtol=0, atol=0)  # the same keys, bit for bit


def test_ddp_on_one_node_and_over_two_nodes_gives_what_local_ddp_gives(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    ddp = ("trainer=ddp_cpu", "trainer.deterministic=true", "trainer.max_epochs=1")
    two_nodes = ("trainer.devices=1", "trainer.num_nodes=2")
    sweeps = {
        "1": Command(tmp_path / "one_node", synthetic_mnist, *ON_SLURM, *ddp),
        "2": Command(tmp_path / "two_nodes", synthetic_mnist, *ON_SLURM, *ddp, *two_nodes),
    }
    code, output = Command(tmp_path / "local", synthetic_mnist, *ddp).finish()
    assert code == 0, output
    (local,) = (tmp_path / "local/outputs/runs").iterdir()
    expected = json.loads((local / "metrics.json").read_text())
    for nodes, sweep in sweeps.items():
        code, output = sweep.finish()
        assert code == 0, output
        (job,) = job_ids(sweep.output)
        assert sacct(job, "NNodes,AllocCPUS") == [[nodes, "2"]]  # 2 processes, 1 CPU each
        (metrics,) = sweep.log.parent.glob("outputs/multiruns/*/0/metrics.json")
        got = json.loads(metrics.read_text())
        assert abs(got["test/acc"] - expected["test/acc"]) <= 0.001
        assert got["test/loss"] == pytest.approx(expected["test/loss"], abs=1e-4)
        assert got["global_step"] == expected["global_step"]


# What the cluster cannot run, and what the one line says ("": no sbatch on the PATH).
CANNOT = {
    "hydra.launcher.partition=nope": "SLURM refused the sweep's jobs: invalid partition specified",
    "trainer=ddp_cpu trainer.devices=3": "Requested node configuration is not",
    "trainer.num_nodes=3": "Node count specification invalid",
    "trainer=ddp": "trainer.devices=-1 cannot be asked of SLURM",
    "trainer.devices=auto": "trainer.devices=auto cannot be asked of SLURM",
    "trainer.devices=1,2": "trainer.devices and trainer.accelerator cannot vary",
    "": "sbatch, which is not on the PATH",
}


@pytest.mark.parametrize(("overrides", "says"), CANNOT.items())
def test_a_setup_the_cluster_cannot_run_is_one_line(
    tmp_path: Path, synthetic_mnist: Path, overrides: str, says: str
) -> None:
    """In this process: a refusal's contract (exit 2, one line) is pinned on real processes."""
    env = {"MNIST_DATA_DIR": str(synthetic_mnist)}
    env |= {} if overrides else {"PATH": str(Path(sys.executable).parent)}
    done = run_console("train", [*ON_SLURM, *merged(SMALL, overrides.split())], tmp_path, env)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    (line,) = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert says in line and "Traceback" not in output
    assert not list(tmp_path.glob("outputs/multiruns/*"))  # nothing submitted, nothing kept


def test_an_optuna_search_runs_its_trials_as_slurm_jobs_several_at_once(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    import optuna

    search = ("hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2")
    search += ("trainer.max_epochs=1",)
    code, output = Command(tmp_path, synthetic_mnist, *ON_SLURM, *search).finish()
    assert code == 0, output
    (array,) = job_ids(output)
    assert side_by_side(array)  # two trials at once
    (sweep,) = (tmp_path / "outputs/multiruns").iterdir()
    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2


def test_ctrl_c_cancels_the_sweeps_jobs_and_says_how_to_continue(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    command = Command(tmp_path, synthetic_mnist, *ON_SLURM, *LONG)
    sweeps = tmp_path / "outputs/multiruns"
    command.wait_until("a checkpoint", lambda: list(sweeps.glob("*/0/checkpoints/last.ckpt")))
    (job,) = job_ids(command.output)
    command.process.send_signal(signal.SIGINT)
    code, output = command.finish()
    (sweep,) = sweeps.iterdir()
    assert code == 130 and f"resume={sweep.relative_to(tmp_path)}" in output, output
    assert "Traceback" not in output
    assert "failed: cancelled (Ctrl-C)" in (sweep / "summary.md").read_text()
    wait_until("the job to end", lambda: sacct(job, "State")[0][0].startswith("CANCELLED"), 60)
    assert "SIGTERM: stopped after step" in (sweep / "0" / "train.log").read_text()
