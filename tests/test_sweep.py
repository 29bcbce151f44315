"""Hydra multirun: one directory per job, a summary of all of them, failures recorded."""

import csv
from pathlib import Path

from conftest import SMALL, run_cli


def test_a_sweep_summarises_its_jobs_and_survives_a_bad_one(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    args = ["-m", *SMALL, "trainer.max_epochs=1", "model.dropout=0.0,0.5,1.5"]
    done = run_cli("train", args, tmp_path, synthetic_mnist)
    assert done.returncode == 1  # not every job succeeded
    assert "Traceback" not in done.stderr + done.stdout
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    for job in ("0", "1"):
        assert (sweep / job / "metrics.json").is_file()
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["job"] for row in rows][-1] == "2"  # failed jobs last
    statuses = {row["job"]: row["status"] for row in rows}
    assert statuses["0"] == statuses["1"] == "completed"
    assert statuses["2"].startswith("failed: model.dropout=1.5 is out of range")
    best = [float(row["val/acc_best"]) for row in rows[:2]]
    assert best == sorted(best, reverse=True)  # best first
    assert "model.dropout=0.5" in (sweep / "summary.md").read_text()
    assert "| job | overrides | status |" in done.stdout
