"""benchmarks/fashion_authors.py: the authors' MLP grid read as their runner.py reads it."""

import json
from pathlib import Path

import pytest

from benchmarks import fashion
from benchmarks.fashion_authors import settings


def test_the_authors_grid_is_read_as_scikit_learn_takes_it_widest_first() -> None:
    grid = [
        {"activation": "relu", "hidden_layer_sizes": "(10,)"},
        {"activation": "tanh", "hidden_layer_sizes": "(100,10,)"},
        {"activation": "relu", "hidden_layer_sizes": "(100,)"},
    ]
    assert settings(grid) == [
        {"activation": "tanh", "hidden_layer_sizes": (100, 10)},
        {"activation": "relu", "hidden_layer_sizes": (100,)},
        {"activation": "relu", "hidden_layer_sizes": (10,)},
    ]


def test_the_page_shows_the_rerun_best_first_and_says_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rerun = tmp_path / "fashion_authors.json"
    monkeypatch.setattr(fashion, "AUTHORS_RERUN", rerun)
    assert "Not rerun yet" in "\n".join(fashion.rerun_lines(8))
    runs = [
        {"setting": {"activation": "relu", "hidden_layer_sizes": "(10,)"}, "test_acc": 0.84},
        {"setting": {"activation": "tanh", "hidden_layer_sizes": "(100,)"}, "test_acc": 0.88},
    ]
    for run in runs:
        run |= {"passes": 200, "seconds": 300.0}
    record = {"measured": "2026-11-30", "machine": "M", "command": "C", "runs": runs}
    rerun.write_text(json.dumps(record))
    text = "\n".join(fashion.rerun_lines(8))
    assert "2 of its 8 settings" in text and "The best, tanh (100,), reads 88.00 %" in text
    rows = [
        line for line in text.splitlines() if line.startswith("| tanh") or line.startswith("| relu")
    ]
    assert rows[0].startswith("| tanh | (100,) | 88.00 %") and rows[1].startswith("| relu")
