"""`python -m benchmarks studies` reading a sweep back: which failed sweeps it accepts (jobs
that learned nothing, mnist-train's chance-level check) and which it refuses, and the check
that every job trained on the data set asked for. Fake sweep directories: no training."""

import csv
import inspect
import json
from pathlib import Path

import pytest

from benchmarks import studies

LEARNED_NOTHING = (
    "failed: train/acc ended at 10.0% after 471 steps: chance level, the network learned "
    "nothing (its loss stayed finite). Try another model.lr (now 0.05) or model.optimizer, or "
    "model.batch_norm=true."
)
ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "gelu"]


def fake_sweep(root: Path, statuses: list[str], dataset: str = "mnist") -> Path:
    """A study_activation sweep directory as mnist-train -m leaves it: summary.csv and one
    job directory per row (.hydra/config.yaml, job_status.json, metrics.json if it ended)."""
    sweep = root / "outputs" / "multiruns" / "2026-11-30_12-00-00"
    rows = []
    for job, (activation, status) in enumerate(zip(ACTIVATIONS, statuses, strict=False)):
        job_dir = sweep / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "config.yaml").write_text(f"data:\n  dataset: {dataset}\n")
        override = f"model.activation={activation}"
        (job_dir / "job_status.json").write_text(
            json.dumps({"status": status.split(":")[0], "overrides": [override]})
        )
        done = status == "completed"
        if done:
            (job_dir / "metrics.json").write_text(json.dumps({"val/acc_best": 0.9}))
        rows.append(
            {
                "job": str(job),
                "overrides": override,
                "status": status,
                "val/acc_best": "0.9" if done else "",
                "test/acc": "0.9" if done else "",
                "epoch": "2" if done else "",
                "wall_seconds": "10" if done else "",
            }
        )
    with (sweep / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return sweep


def failing_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    def exits_1(overrides: list[str], workdir: Path) -> None:
        raise RuntimeError("mnist-train -m ... exited with 1:\n2 of 5 jobs failed.")

    monkeypatch.setattr(studies, "mnist_train", exits_1)


def test_a_sweep_whose_failed_jobs_learned_nothing_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fake_sweep(tmp_path, [LEARNED_NOTHING, *["completed"] * 3, LEARNED_NOTHING])
    failing_sweep(monkeypatch)
    assert studies.sweep("activation", tmp_path) == made
    assert studies.only_learned_nothing(made, "activation") == ["0", "4"]


def test_a_job_that_failed_otherwise_stops_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = "failed: RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed."
    fake_sweep(tmp_path, [LEARNED_NOTHING, "completed", crash, "completed", "completed"])
    failing_sweep(monkeypatch)
    with pytest.raises(RuntimeError, match=r"job 2 \(model.activation=relu\) failed for another"):
        studies.sweep("activation", tmp_path)


def test_a_sweep_that_stopped_early_stops_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sweep(tmp_path, [LEARNED_NOTHING, "completed", "completed"])  # 3 of 5 jobs
    failing_sweep(monkeypatch)
    with pytest.raises(RuntimeError, match="3 of study_activation's 5 jobs ended"):
        studies.sweep("activation", tmp_path)


def test_every_job_must_have_trained_on_the_data_set_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fake_sweep(tmp_path, ["completed"] * 5, dataset="mnist")
    curves = {"val/acc": [(1, 1.0, 0.5), (2, 2.0, 0.9)]}
    monkeypatch.setattr(studies, "scalars", lambda _: curves)
    assert [r["params"] for r in studies.jobs(made)] == [
        {"model.activation": a} for a in ACTIVATIONS
    ]
    with pytest.raises(RuntimeError, match="trained on mnist, not fashion_mnist"):
        studies.jobs(made, "fashion_mnist")


def test_the_accepted_failure_is_mnist_trains_chance_level_check() -> None:
    from mnist_lightning.cli import train

    assert studies.LEARNED_NOTHING in inspect.getsource(train.stop_if_learned_nothing)
