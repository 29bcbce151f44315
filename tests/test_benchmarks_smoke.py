"""The benchmarks keep working: subcommands parse, the one runner of mnist-train measures a real
run, results keep their command, machine and date, the pages' tables print from the committed
JSON. What the figures say is the pages' business: no test checks a time or a sentence."""

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import SUBCOMMANDS, main, table
from benchmarks.common import DOCS, mnist_train, save, scalars
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH


@pytest.mark.parametrize("name", [*SUBCOMMANDS, "table"])
def test_every_subcommand_parses_its_arguments(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="0"):
        main([name, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: python -m benchmarks {name}")


@pytest.mark.slow  # one real mnist-train subprocess
def test_mnist_train_is_run_and_timed_epoch_by_epoch(
    synthetic_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_DATA_DIR", str(synthetic_mnist))
    run = mnist_train(SMALL, tmp_path, timer={"test_every_epoch": True, "bare_loop": True})
    assert run.command == ["mnist-train", *SMALL]
    assert [(e["epoch"], e["steps"]) for e in run.epochs] == [(k, STEPS_PER_EPOCH) for k in (0, 1)]
    assert all(0 < e["train_seconds"] < e["training_time"] for e in run.epochs)
    assert all(e["bare_seconds"] > 0 for e in run.epochs)
    assert run.epochs[-1]["test_acc"] == pytest.approx(run.metrics["test/acc"], abs=0.2)
    assert len(scalars(run.dir / "tensorboard")["val/acc"]) == 2
    assert run.peak_rss_mb > 100 and run.seconds > 0


def test_parts_measured_one_at_a_time_are_kept_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    save(out, ("presets", "a"), {"runs": [1]}, "python -m benchmarks accuracy --presets a")
    save(out, ("presets", "b"), {"runs": [2]}, "python -m benchmarks accuracy --presets b")
    save(out, (), {"seeds": [5]}, "python -m benchmarks handwriting --seeds 5")
    saved = json.loads(out.read_text())
    assert [saved["presets"][p]["runs"] for p in "ab"] == [[1], [2]]
    assert saved["presets"]["b"]["command"].endswith("--presets b")
    assert saved["command"].endswith("--seeds 5") and saved["seeds"] == [5]
    assert {"machine", "date"} <= set(saved["presets"]["a"])


@pytest.mark.parametrize(
    ("file", "key", "rows"),
    [
        ("benchmarks.json", "overhead", 4),
        ("benchmarks.json", "compile.rows", 4),
        ("accuracy.json", "presets", 3),
        ("studies.json", "fashion_mnist.activation.rows", 5),
        ("fashion.json", "authors.runs", 8),
        ("handwriting.json", "rows", 10),
        ("accuracy.json", "tutorial_presets.rows", 5),
    ],
)
def test_the_pages_tables_print_from_the_committed_json(file: str, key: str, rows: int) -> None:
    lines = table(DOCS / file, key).splitlines()
    assert len(lines) == 2 + rows
    assert lines[1].startswith("| --- |") and all(line.endswith(" |") for line in lines)
