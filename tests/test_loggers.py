"""logger=many for real: MLflow's store and W&B's offline log read back against TensorBoard's
curves; resume continues the same MLflow run and W&B id; a sweep's jobs are named by the sweep."""

import json
import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from benchmarks.common import scalars
from mnist_lightning.cli.train import train as mnist_train
from mnist_lightning.errors import CheckpointError
from mnist_lightning.files import unlock_run
from mnist_lightning.run.resume import check_run_files, claim_run_directory, trackers_as_configured
from mnist_lightning.run.trainer import run_identity
from tests.helpers.hydra_jobs import run_command
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, merged

pytestmark = pytest.mark.usefixtures("hydra_on_conf")


def mlflow_runs(project: Path) -> tuple[list, Callable[[str, str], list[tuple[int, float]]]]:
    """The runs in the project's outputs/mlflow.db, and (step, value) of a run's metric."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/outputs/mlflow.db")
    experiment = client.get_experiment_by_name("mnist-lightning")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    return runs, lambda run_id, name: [
        (m.step, m.value) for m in client.get_metric_history(run_id, name)
    ]


def wandb_records(path: Path) -> Iterator:
    """The records of a W&B transaction log: a 7-byte header (':W&B', magic 0xBEE1, version),
    then 32 KiB blocks of chunks (crc32, length, type: 1 whole, 2 first, 3 middle, 4 last)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        room = 32768 - offset % 32768
        if room < 7:  # the rest of a block too small for a chunk header is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if length == 0 and kind == 0:  # zero padding at the end
            break
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            yield Record.FromString(pending)
            pending = b""


def wandb_run(offline_dir: Path) -> dict:
    """What an offline W&B run holds: its id, name, group, config and logged rows."""
    (log,) = offline_dir.glob("run-*.wandb")
    found: dict = {"config": {}, "history": []}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            found |= {"id": run.run_id, "name": run.display_name, "group": run.run_group}
        if kind in ("run", "config"):
            update = (record.run if kind == "run" else record).config.update
            found["config"] |= {i.key: json.loads(i.value_json) for i in update}
        elif kind == "history":
            found["history"].append(dict(map(history_item, record.history.item)))
    return found


def history_item(item: object) -> tuple[str, object]:
    """A logged value by its name (`val/acc`), in whichever of its fields W&B filled in."""
    name = item.key or "/".join(item.nested_key)
    kind = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if kind and kind != "value_json":
        return name, getattr(item, kind)
    return name, json.loads(item.value_json)


def wandb_steps(history: list[dict], name: str) -> list[tuple[int, float]]:
    return [(row["trainer/global_step"], row[name]) for row in history if name in row]


def as_in_tensorboard(ours: list[tuple[int, float]], run: Path, name: str) -> bool:
    """The run's TensorBoard curve `name`: the same steps and values (to TensorBoard's float32)."""
    theirs = [(step, value) for step, _, value in scalars(run / "tensorboard")[name]]
    return [s for s, _ in ours] == [s for s, _ in theirs] and all(
        v == pytest.approx(w, rel=1e-6) for (_, v), (_, w) in zip(ours, theirs, strict=True)
    )


@pytest.mark.slow
def test_logger_many_gives_mlflow_and_wandb_tensorboards_metrics_and_resume_continues_them(
    tmp_path: Path,
    synthetic_mnist: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for extra in ("mlflow", "wandb"):  # optional extras
        pytest.importorskip(extra, reason=f'logger={extra}: pip install -e ".[{extra}]"')
    monkeypatch.chdir(tmp_path)  # where outputs/mlflow.db lands
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # unset, and after: MLFlowLogger sets it
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # W&B's, offline
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name))
    monkeypatch.setenv("WANDB_MODE", "offline")  # WandbLogger sets it anyway; restored after
    run = tmp_path / "outputs" / "runs" / "tiny"
    line = [*SMALL, f"paths.data_dir={synthetic_mnist}", f"hydra.run.dir={run}", "logger=many"]
    caplog.set_level(logging.WARNING)  # Lightning's warnings; W&B and MLflow write to stderr
    caplog.set_level(logging.INFO, "mnist_lightning.run.report")
    run_command(mnist_train, "train", merged(line, ["trainer.max_epochs=1"]))
    said = "".join(capfd.readouterr()) + caplog.text
    assert f"W&B run: {run.resolve()}/wandb/offline-run-" in said  # the one line that says where
    chatter = ("Run data is", "wandb leet", "wandb online", "Run history:", "Creating it")
    assert not [c for c in (*chatter, "anonymous setting") if c in said], said
    (first,), metric_steps = mlflow_runs(tmp_path)
    assert first.info.run_name == "tiny" and first.info.status == "FINISHED"
    assert first.data.tags["run_dir"] == str(run.resolve())
    params = first.data.params
    assert params["model.hidden_dims"] == "[32]" and params["trainer.max_epochs"] == "1"
    assert params["data.batch_size"] == "50" and "model.lr" in params and "seed" in params
    assert not (tmp_path / "outputs" / "mlflow-artifacts").exists()  # no checkpoint uploaded
    assert metric_steps(first.info.run_id, "test/acc")
    (offline,) = (run / "wandb").glob("offline-run-*")
    logged = wandb_run(offline)
    assert (logged["id"], logged["name"], logged["group"]) == ("tiny", "tiny", "")
    assert logged["config"]["model.hidden_dims"] == "[32]"
    assert logged["config"]["trainer.max_epochs"] == 1
    for name in ("train/loss", "val/acc"):
        assert as_in_tensorboard(wandb_steps(logged["history"], name), run, name)
    unlock_run(run)
    assert check_run_files(run) == run  # W&B left no link a resume would refuse

    line = [f"resume={run}", f"paths.data_dir={synthetic_mnist}", "trainer.max_epochs=2"]
    run_command(mnist_train, "train", claim_run_directory(line))  # as mnist-train's main does
    (tracked,), metric_steps = mlflow_runs(tmp_path)  # no second MLflow run
    assert tracked.info.run_id == first.info.run_id and tracked.info.status == "FINISHED"
    for name in ("train/loss", "train/acc", "val/acc", "val/loss"):  # as TensorBoard's curves
        ours = metric_steps(tracked.info.run_id, name)
        assert ours and as_in_tensorboard(ours, run, name), name
    # MLflow keeps a param's first value; the new limit is a tag.
    assert tracked.data.params["trainer.max_epochs"] == "1"
    assert tracked.data.tags["resumed.trainer.max_epochs"] == "2"
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2  # one folder per process, one W&B run: `wandb sync` joins them
    before, after = (wandb_run(folder) for folder in offline)
    assert before["id"] == after["id"] == "tiny"
    assert [s for s, _ in wandb_steps(after["history"], "val/acc")] == [2 * STEPS_PER_EPOCH - 1]


def test_a_resumed_run_takes_its_trackers_from_conf_not_from_its_run_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crafted .hydra/config.yaml may not choose where a tracker writes, which run it continues
    or where W&B sends the API key: a resumed run's trackers are conf/logger/'s, resolved now."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    crafted = {  # what a run directory handed over might set
        "tracking_uri": "sqlite:////somewhere/else.db",
        "artifact_location": "/somewhere/else",
        "run_id": "another-runs-id",
        "log_model": True,
        "offline": False,
        "entity": "attacker",
        "id": "victim",
        "settings": {"base_url": "http://127.0.0.1:8765", "x_files_dir": "/tmp/x"},
    }
    paths = {"root_dir": "/project", "output_dir": "/project/outputs/runs/r"}
    tensorboard = {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"}
    saved = OmegaConf.create({"logger": {"tensorboard": tensorboard}, "paths": paths})
    for name, cls in (("mlflow", "MLFlowLogger"), ("wandb", "WandbLogger")):
        saved.logger[name] = {"_target_": f"lightning.pytorch.loggers.{cls}", **crafted}
    trackers_as_configured(saved)
    conf = compose("train", ["logger=many", *(f"paths.{k}={v}" for k, v in paths.items())])
    for name in ("mlflow", "wandb"):
        assert OmegaConf.to_container(saved.logger[name], resolve=True) == (
            OmegaConf.to_container(conf.logger[name], resolve=True)
        )
    assert saved.logger.tensorboard == tensorboard  # not a tracker: left as saved
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    trackers_as_configured(saved)
    assert saved.logger.mlflow.tracking_uri == "http://tracking.example:5000"


def test_tracker_runs_are_named_tagged_and_grouped_after_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep's job is `<sweep>/<job>` whatever the sweeper (Optuna's writes no multirun.yaml):
    MLflow's run name and `sweep` tag, W&B's name, id and group."""
    sweep = tmp_path / "2026-01-01_00-00-00_abcdef"
    (sweep / "3").mkdir(parents=True)
    job = {"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}}}
    monkeypatch.setattr(HydraConfig.instance(), "cfg", OmegaConf.create(job))
    cfg = OmegaConf.create({"paths": {"output_dir": str(sweep / "3")}, "resume": None})
    tracker = {
        name: OmegaConf.create({"_target_": f"lightning.pytorch.loggers.{name}"})
        for name in ("MLFlowLogger", "WandbLogger")
    }
    job = "2026-01-01_00-00-00_abcdef/3"
    assert run_identity(tracker["MLFlowLogger"], cfg) == {
        "_convert_": "all",
        "run_name": job,
        "tags": {"run_dir": str((sweep / "3").resolve()), "sweep": sweep.name},
    }
    assert run_identity(tracker["WandbLogger"], cfg) == {
        "_convert_": "all",
        "name": job,
        "id": "2026-01-01_00-00-00_abcdef-3",
        "group": sweep.name,
        "settings": {"symlink": False},
    }
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # a single run
    cfg.paths.output_dir = str(tmp_path / "my run")
    assert run_identity(tracker["WandbLogger"], cfg)["id"] == "my-run"


def test_only_wandbs_own_log_link_may_lead_out_of_a_resumed_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    logs = run / "wandb" / "offline-run-x" / "logs"
    logs.mkdir(parents=True)
    (logs / "debug-core.log").symlink_to(tmp_path)
    assert check_run_files(run) == run
    job = tmp_path / "sweep" / "0" / "wandb" / "offline-run-y" / "logs"
    job.mkdir(parents=True)
    (job / "debug-core.log").symlink_to(tmp_path)
    assert check_run_files(tmp_path / "sweep") == tmp_path / "sweep"  # re-launching a sweep
    for other in (run / "wandb" / "latest-run", logs / "debug.log"):  # any other link
        other.symlink_to(tmp_path)
        with pytest.raises(CheckpointError, match=f"{other} is a symbolic link"):
            check_run_files(run)
        other.unlink()
