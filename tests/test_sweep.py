"""Hydra multirun: a directory per job, a summary, failures recorded, re-launched in place."""

import csv
import json
import logging
import os
from pathlib import Path

import pytest

from mnist_lightning.errors import UserError
from mnist_lightning.run.resume import claim_run_directory, hydra_output_subdir, job_finished
from tests.helpers.commands import run_cli
from tests.helpers.hydra_jobs import locks_released, run_console
from tests.helpers.synthetic import SMALL
from tests.helpers.worlds import snapshot

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_sweep_summarises_its_jobs_survives_a_bad_one_and_runs_jobs_side_by_side(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """(A bad value refuses the whole sweep before it starts: test_bad_input.py.)"""
    args = ["-m", *SMALL, "trainer.max_epochs=1", "model.lr=0.001,0.002,1e30"]
    args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    done = run_cli("train", args, tmp_path, synthetic_mnist)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout  # a job failed
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    cores = os.cpu_count() or 1
    for job in ("0", "1"):  # (their metrics.json: the summary's val/acc_best below)
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
        log = (sweep / job / "train.log").read_text()
        assert f"2 jobs at once on {cores} cores; torch threads a job: {max(1, cores // 2)}" in log

    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [row["job"] for row in rows][-1] == "2"  # failed jobs last
    statuses = {row["job"]: row["status"] for row in rows}
    assert statuses["0"] == statuses["1"] == "completed"
    assert statuses["2"].startswith("failed: train/loss became nan")
    assert (sweep / "2" / "train.log").read_text().count("became nan") == 1  # said once
    best = [float(row["val/acc_best"]) for row in rows[:2]]
    assert best == sorted(best, reverse=True)  # best first
    wall = json.loads((sweep / "0" / "metrics.json").read_text())["wall_seconds"]
    assert "model.lr=0.002" in (summary := (sweep / "summary.md").read_text())
    assert f" | {wall} |" in summary  # seconds as measured, accuracies to 4 places
    assert "| job | overrides | status |" in done.stdout


@pytest.mark.slow
def test_a_killed_sweep_is_relaunched_in_place(
    tmp_path: Path, synthetic_mnist: Path, trained_run: Path
) -> None:
    """Killed in job 0: resumed, job 1 started; again: both skipped; with a higher max_epochs:
    both trained further. The jobs start from a checkpoint's weights: resume= continues them."""
    args = ["-m", *SMALL, f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}"]
    args += ["model.hidden_dims=[64]", "trainer.max_epochs=1"]
    args += ["callbacks.periodic_checkpoint.train_time_interval=null"]
    args += ["+callbacks.periodic_checkpoint.every_n_train_steps=5"]
    args += ["+callbacks.kill._target_=probes.KillAt", "model.dropout=0.1,0.3"]
    done = run_cli("train", args, tmp_path, synthetic_mnist, {"KILL_AT_STEP": "13"})
    assert done.returncode == -9
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert not (sweep / "1").exists()

    env = {"MNIST_DATA_DIR": str(synthetic_mnist), "PYTHONPATH": str(TESTS)}
    done = run_console("train", [*args, f"resume={sweep}"], tmp_path, env, 600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Resuming {sweep.resolve()}/0 from" in (sweep / "0" / "train.log").read_text()

    def rows() -> list[tuple[str, str, str]]:  # overrides: what differs between the jobs
        with open(sweep / "summary.csv") as f:
            return sorted((r["overrides"], r["status"], r["epoch"]) for r in csv.DictReader(f))

    assert rows() == [(f"model.dropout={d}", "completed", "1") for d in (0.1, 0.3)]
    records = {f: f.read_text() for f in [*sweep.glob("*/.hydra/*"), *sweep.glob("*/job_*")]}
    assert len(records) == 8 and "resume=" not in records[sweep / "0/.hydra/overrides.yaml"]

    done = run_console("train", [*args, "resume=latest"], tmp_path, env, 600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("finished before; skipped") == 2
    assert len(list((tmp_path / "outputs" / "multiruns").iterdir())) == 1

    longer = [arg.replace("max_epochs=1", "max_epochs=2") for arg in args]
    assert job_finished(sweep / "0", args[1:]) and not job_finished(sweep / "0", longer[1:])
    done = run_console("train", [*longer, "resume=latest"], tmp_path, env, 600)
    assert done.returncode == 0 and "skipped" not in done.stdout + done.stderr, done.stderr
    assert rows() == [(f"model.dropout={d}", "completed", "2") for d in (0.1, 0.3)]
    assert records == {f: f.read_text() for f in records}


def test_a_sweep_is_relaunched_only_as_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other values would train the jobs yet to run unlike those that ran (the overrides' order
    and RESUMABLE_KEYS unswept do not count)."""
    sweep = tmp_path / "outputs" / "multiruns" / "0"  # a name Hydra would read as a number
    sweep.mkdir(parents=True)
    ran = ["model.dropout=0,0.5", "data.source=files", "model.hidden_dims=[64]", "~logger"]
    (sweep / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": ran}}}))
    optuna = sweep.with_name("o")  # Hydra's Optuna sweeper writes no multirun.yaml to re-launch
    (optuna / "0").mkdir(parents=True)
    (optuna / "optuna.db").touch()
    before = snapshot(tmp_path, directory_times=True)
    relaunch = f"mnist-train -m {ran[0]} {ran[1]} 'model.hidden_dims=[64]' '~logger' resume="
    r = f"resume={sweep}"
    new_search = (  # not "not a sweep directory" but the documented way
        f"resume={optuna}: an Optuna search is not re-launched; continue its study in a new "
        "search: mnist-train -m hparams_search=optuna hydra.sweeper.storage="
        f"sqlite:///{optuna}/optuna.db"
    )
    monkeypatch.chdir(sweep.parent)
    for args, words in [
        (
            ["-m", "model.dropout=0,0.7", *ran[1:], "model.lr=2", r],
            "ran with model.dropout=0,0.5 and without model.dropout=0,0.7, model.lr=2;",
        ),
        (["-m", "model.dropout=0.5,0", *ran[1:], r], "without model.dropout=0.5,0"),  # other jobs
        (["-m", "model.dropout=0.0,0.5", *ran[1:], r], "without model.dropout=0.0"),  # 1.0 isn't 1
        ([r], f"{sweep} is a sweep; re-launch it with: {relaunch}"),
        (["-m", *ran, "trainer.max_epochs=3,4", r], "it ran without trainer.max_epochs=3,4;"),
        (["-m", *ran, "+hydra.sweeper.params.seed=1,2", r], "without +hydra.sweeper.params.seed"),
        (["-m", f"resume={optuna}"], new_search),
        ([f"resume={optuna}"], new_search),
    ]:
        with pytest.raises(UserError) as info, locks_released():  # exit 2, this line
            claim_run_directory(args)
        assert words in str(info.value) and "\n" not in str(info.value)
    assert snapshot(tmp_path, directory_times=True) == before
    with locks_released():
        args = ["-m", *ran[:0:-1], "model.dropout=0,0.5", "trainer.max_epochs=2", "resume=0"]
        assert claim_run_directory(args)[-1] == f"resume='{sweep.resolve()}'"


@pytest.mark.slow
def test_an_optuna_search_keeps_its_study_and_survives_failed_trials(
    tmp_path: Path,
    synthetic_mnist: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's own default
    monkeypatch.setattr(logging.getLogger("optuna"), "handlers", [caplog.handler])
    args = ["-m", *SMALL, "trainer.max_epochs=1", f"hydra.searchpath=[file://{TESTS / 'conf'}]"]
    args += ["hparams_search=optuna_failing"]  # optuna's search, with lr 0.002 or 1e30 (diverges)
    args += ["hydra.sweeper.n_trials=4", "seed=3"]
    done = run_console("train", args, tmp_path, {"MNIST_DATA_DIR": str(synthetic_mnist)}, 600)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout  # trials failed
    assert "A new study created" not in caplog.text  # Hydra's sweeper names it and its storage
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{sweep}/optuna.db")
    states = [trial.state.name for trial in study.trials]
    assert len(states) == 4 and "COMPLETE" in states and "FAIL" in states, states
    with open(sweep / "summary.csv") as f:
        statuses = [row["status"] for row in csv.DictReader(f)]
    assert sum(s.startswith("failed: train/loss became") for s in statuses) == states.count("FAIL")
    for trial in study.trials:
        if trial.state.name == "COMPLETE":  # what a trial reports is its val/acc_best
            metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
            assert trial.value == pytest.approx(metrics["val/acc_best"])


def test_hydra_records_the_config_only_of_a_job_that_has_not_run(tmp_path: Path) -> None:
    """A re-launched sweep's finished job (no checkpoint: fast_dev_run) keeps its .hydra/."""
    assert hydra_output_subdir(str(tmp_path)) == ".hydra"
    (tmp_path / "metrics.json").write_text('{"val/acc_best": 0.9}')
    assert hydra_output_subdir(str(tmp_path)) is None
