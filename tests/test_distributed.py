"""DDP on the CPU (`trainer=ddp_cpu`, 2 processes, gloo), as real `mnist-train` runs: the
processes share each epoch's images without overlap, end with the same weights, write one run
directory, and a sweep of DDP jobs runs job after job."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_probe import fingerprints

from mnist_lightning.data.datamodule import MNISTDataModule
from tests.helpers.commands import run_cli, run_dirs
from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import SMALL

TESTS = Path(__file__).resolve().parent
DDP = ["trainer=ddp_cpu", "trainer.devices=2"]
pytestmark = pytest.mark.slow


def probe_env(probe_dir: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(TESTS), "DDP_PROBE_DIR": str(probe_dir)}


def test_two_processes_share_every_epoch_and_agree(tmp_path: Path, synthetic_mnist: Path) -> None:
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    args = [*SMALL, *DDP, "data.batch_size=25", "+callbacks.probe._target_=ddp_probe.DDPProbe"]
    done = run_cli("train", args, tmp_path / "ddp", synthetic_mnist, env=probe_env(probe_dir))
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    dm = MNISTDataModule(str(synthetic_mnist), source="files", val_size=200)
    dm.setup()
    training_set = sorted(fingerprints(dm.splits["train"][0].float() / 255))
    assert len(set(training_set)) == len(training_set) == 1000
    for epoch in ("0", "1"):
        first, second = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(first) == len(second) == 500
        assert not set(first) & set(second)
        assert sorted(first + second) == training_set  # every image once per epoch
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # a new shuffle each epoch
    assert ranks[0]["weights"] == ranks[1]["weights"]

    (run,) = run_dirs(tmp_path / "ddp")  # one run directory for both processes
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * 20  # 1 000 images / (25 x 2) per epoch
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "tensorboard").rglob("events.out.tfevents.*"))) >= 1
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 40

    # The same global batch in one process lands close to the same test accuracy.
    env = {"MNIST_DATA_DIR": str(synthetic_mnist)}
    single = run_console("train", [*SMALL, "data.batch_size=50"], tmp_path / "one", env, 600)
    assert single.returncode == 0, single.stderr[-3000:]
    (one,) = run_dirs(tmp_path / "one")
    alone = json.loads((one / "metrics.json").read_text())
    assert alone["global_step"] == metrics["global_step"]
    assert abs(alone["test/acc"] - metrics["test/acc"]) < 0.05


def test_a_sweep_of_ddp_jobs_runs_job_after_job(tmp_path: Path, synthetic_mnist: Path) -> None:
    args = ["-m", *SMALL, *DDP, "trainer.max_epochs=1", "model.dropout=0.0,0.1"]
    done = run_cli("train", args, tmp_path, synthetic_mnist, env={"PYTHONPATH": str(TESTS)})
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["global_step"] == 10
    with (sweep / "summary.csv").open() as summary:
        assert [row["status"] for row in csv.DictReader(summary)] == ["completed"] * 2
    assert not (tmp_path / "outputs" / "runs").exists()  # no stray run directories
    assert "LOCAL_RANK" not in os.environ


def test_a_killed_ddp_run_resumes_bit_for_bit(tmp_path: Path, synthetic_mnist: Path) -> None:
    """Both processes SIGKILLed mid-epoch (5 steps after a checkpoint), then `resume=`: the
    run ends with exactly the weights of the same run left alone."""
    args = [
        *SMALL,
        *DDP,
        "data.batch_size=25",
        "model.dropout=0.3",
        "trainer.deterministic=true",
        "callbacks.periodic_checkpoint.train_time_interval=null",
        "+callbacks.periodic_checkpoint.every_n_train_steps=7",
    ]
    plain = run_cli("train", args, tmp_path / "plain", synthetic_mnist)
    assert plain.returncode == 0, plain.stderr[-3000:]

    cwd = tmp_path / "killed"
    cwd.mkdir()
    env = os.environ | {
        "MNIST_DATA_DIR": str(synthetic_mnist),
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "KILL_AT_STEP": "26",  # 20 steps per epoch: in the second, after the checkpoint at 21
        "KILL_GROUP": "1",
    }
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_lightning.cli.train",
            *args,
            "+callbacks.kill._target_=kill_at.KillAt",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # its own process group, so the kill spares pytest
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = run_dirs(cwd)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 21
    resumed = run_cli(
        "train",
        [f"resume={run}", "+callbacks.kill._target_=kill_at.KillAt"],  # code of one's own
        cwd,
        synthetic_mnist,
        env={"PYTHONPATH": str(TESTS)},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    (alone,) = run_dirs(tmp_path / "plain")
    expected = torch.load(alone / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    keep = ("test/acc", "val/acc_best", "global_step")
    first, second = (json.loads((r / "metrics.json").read_text()) for r in (alone, run))
    assert {k: first[k] for k in keep} == {k: second[k] for k in keep}
