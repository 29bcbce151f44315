"""The package's layout: entry points import no other entry point; each rule that moved to one
place (the best checkpoint, another architecture) still says what it said."""

import ast
import json
from pathlib import Path

import pytest
import torch

from mnist_lightning.cli.eval import best_checkpoint
from mnist_lightning.errors import CheckpointError
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.checkpoint import network_weights
from tests.helpers.commands import ROOT

PACKAGE = ROOT / "mnist_lightning"


COMMANDS = {f"mnist_lightning.cli.{c}" for c in ("train", "eval", "predict", "export")}


def test_the_imports_follow_the_layout() -> None:
    """Only cli/ imports cli/; errors.py imports nothing of the package."""
    imports = {}  # every `mnist_lightning...` module each source file imports, at any depth
    for path in PACKAGE.rglob("*.py"):
        nodes = list(ast.walk(ast.parse(path.read_text())))
        found = {node.module for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
        found |= {a.name for node in nodes if isinstance(node, ast.Import) for a in node.names}
        imports[path.relative_to(PACKAGE)] = {n for n in found if n.startswith("mnist_lightning")}
    wrong = {
        path: found & (COMMANDS if path.parent.name == "cli" else {m for m in found if ".cli" in m})
        for path, found in imports.items()
    }
    assert {path: found for path, found in wrong.items() if found} == {}
    assert imports[Path("errors.py")] == set()


def fake_checkpoint(path: Path, **extra: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {}, **extra}, path)


@pytest.mark.parametrize(
    ("tested", "found"),
    [  # metrics.json's best_checkpoint, and what mnist-eval tests
        (None, "best-epoch002.ckpt"),  # last.ckpt's record, not the newest of save_top_k=3
        ("/moved/away/best-epoch001.ckpt", "best-epoch001.ckpt"),  # by name: the run moved
        *((out, "best-epoch002.ckpt") for out in ("../../a", "/etc/passwd", "..", "no.ckpt")),
        ("evil.ckpt", None),  # a link out of the run: refused
    ],
)
def test_mnist_eval_tests_the_checkpoint_mnist_train_tested(
    tmp_path: Path, tested: str | None, found: str | None
) -> None:
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(CheckpointError, match=r"no checkpoint of its best epoch or last\.ckpt"):
        best_checkpoint(tmp_path)
    fake_checkpoint(checkpoints / "last.ckpt")  # without a best checkpoint, last.ckpt
    assert best_checkpoint(tmp_path) == checkpoints / "last.ckpt"
    for epoch in (1, 2, 3):
        fake_checkpoint(checkpoints / f"best-epoch00{epoch}.ckpt")
    state = {"monitor": "val/acc", "best_model_path": str(checkpoints / "best-epoch002.ckpt")}
    fake_checkpoint(checkpoints / "last.ckpt", callbacks={"ModelCheckpoint{val/acc}": state})
    fake_checkpoint(tmp_path.parent / f"{tmp_path.name}-other.ckpt")
    (checkpoints / "evil.ckpt").symlink_to(tmp_path.parent / f"{tmp_path.name}-other.ckpt")
    if tested:
        metrics = {"val/acc_best": 0.9, "best_checkpoint": tested}
        (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    if found is None:
        with pytest.raises(CheckpointError, match=r"evil\.ckpt is a symbolic link"):
            best_checkpoint(tmp_path)
    else:
        assert best_checkpoint(tmp_path) == checkpoints / found


NUL_NAMED = {"val/acc_best": 0.9, "best_checkpoint": "a\0b"}
LINKED = {"val/acc_best": 0.9, "best_checkpoint": "a\nb"}  # and a link of that name


@pytest.mark.parametrize(
    ("spoil", "words"),
    [  # the run's checkpoints/ itself: a link to a folder outside the run, a file; a NUL
        (lambda run: (run / "checkpoints").symlink_to(run.parent), "symbolic link, not a dir"),
        (lambda run: (run / "checkpoints").write_text("x"), "checkpoints is a regular file, not"),
        (
            lambda run: (run / "metrics.json").write_text(json.dumps(NUL_NAMED)),
            "checkpoints/a\\x00b: cannot see what is there (embedded null byte).",
        ),
        (
            lambda run: (run / "metrics.json").write_text(json.dumps(LINKED)),
            "checkpoints/a\\nb is a symbolic link, not a regular file",
        ),
    ],
)
def test_a_runs_checkpoints_are_its_own_regular_files(tmp_path: Path, spoil, words: str) -> None:
    fake_checkpoint(tmp_path / "last.ckpt")  # a checkpoint outside the run, in its parent
    (run := tmp_path / "run").mkdir()
    spoil(run)
    if not (run / "checkpoints").exists():  # (the named rows)
        fake_checkpoint(run / "checkpoints" / "last.ckpt")
        (run / "checkpoints" / "a\nb").symlink_to(tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError) as info:
        best_checkpoint(run)
    said = str(info.value)
    assert said.startswith(f"run_dir={run}: {run}/checkpoints") and words in said


def test_a_checkpoint_of_another_architecture_names_its_model_values() -> None:
    trained = MNISTClassifier(hidden_dims=[16], batch_norm=True)
    checkpoint = {"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}
    asked = MNISTClassifier(hidden_dims=[32, 8])
    with pytest.raises(CheckpointError) as info:
        network_weights(asked, checkpoint, "x.ckpt")
    assert (
        "it was trained with model.hidden_dims=[16] model.batch_norm=true, the config has "
        "model.hidden_dims=[32,8] model.batch_norm=false" in str(info.value)
    )
    checkpoint["hyper_parameters"] = dict(asked.hparams)  # that its weights belie
    with pytest.raises(CheckpointError, match=r"\(its weight shapes: \{'layers\.0\.weight': \(16,"):
        network_weights(asked, checkpoint, "x.ckpt")
