"""DDP on the CPU (`trainer=ddp_cpu`, 2 processes, gloo), as real `mnist-train` runs. One sweep
of two DDP jobs serves both tests: the second is the twin of the killed and resumed run."""

import csv
import json
import signal
from pathlib import Path

import pytest
import torch
from probes import fingerprints

from mnist_lightning.data.datamodule import MNISTDataModule
from tests.helpers.commands import run_cli, run_dirs
from tests.helpers.synthetic import SMALL

# 2 processes of 25 images a batch: 20 steps an epoch, 40 in all; a checkpoint every 7 steps.
DDP = [*SMALL, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=25"]
DDP += ["trainer.deterministic=true", "callbacks.periodic_checkpoint.train_time_interval=null"]
DDP += ["+callbacks.periodic_checkpoint.every_n_train_steps=7"]
KILL = "+callbacks.kill._target_=probes.KillAt"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path) -> Path:
    """`mnist-train -m ... model.dropout=0.0,0.3`, every process probed (tests/probes.py)."""
    cwd = tmp_path_factory.mktemp("ddp")
    args = ["-m", *DDP, "+callbacks.probe._target_=probes.DDPProbe", "model.dropout=0.0,0.3"]
    args += ["+callbacks.probe.out=${paths.output_dir}"]
    done = run_cli("train", args, cwd, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (cwd / "outputs" / "runs").exists()  # no stray run directories
    (sweep,) = (cwd / "outputs" / "multiruns").iterdir()
    return sweep


def test_ddp_jobs_run_one_after_another_and_their_processes_share_every_epoch_and_agree(
    sweep: Path, synthetic_mnist: Path
) -> None:
    with (sweep / "summary.csv").open() as summary:
        assert [row["status"] for row in csv.DictReader(summary)] == ["completed"] * 2
    run = sweep / "0"
    ranks = [json.loads((run / f"probe-rank{r}.json").read_text()) for r in range(2)]
    dm = MNISTDataModule(str(synthetic_mnist), source="files", val_size=200)
    dm.setup()
    training_set = sorted(fingerprints(dm.splits["train"][0].float() / 255))
    assert len(set(training_set)) == len(training_set) == 1000
    for epoch in ("0", "1"):
        first, second = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(first) == len(second) == 500
        assert sorted(first + second) == training_set  # every image once per epoch: 2 processes
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # a new shuffle each epoch
    assert ranks[0]["weights"] == ranks[1]["weights"]
    # One run directory for both processes, and the steps of 1 000 images / (25 x 2) an epoch.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 40 and list((run / "tensorboard").rglob("events.out.*"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40


def test_a_killed_ddp_run_resumes_bit_for_bit(
    sweep: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    kill = {"KILL_AT_STEP": "26", "KILL_GROUP": "1"}  # in epoch 2, after the checkpoint at 21
    args = [*DDP, "model.dropout=0.3", KILL]
    # its own process group, so that the kill spares pytest
    killed = run_cli("train", args, tmp_path, synthetic_mnist, kill, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 21
    # the kill callback: code of one's own, given again
    resumed = run_cli("train", [f"resume={run}", KILL], tmp_path, synthetic_mnist)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    alone = sweep / "1"
    expected = torch.load(alone / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the same keys, bit for bit
    keep = ("test/acc", "val/acc_best", "global_step")
    first, second = (json.loads((r / "metrics.json").read_text()) for r in (alone, run))
    assert {k: first[k] for k in keep} == {k: second[k] for k in keep}
