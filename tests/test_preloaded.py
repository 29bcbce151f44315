"""The forked commands of tests/helpers/preloaded.py end as new interpreters of them do."""

import os
from pathlib import Path

import pytest

from tests.helpers.commands import command_servers, run_cli
from tests.helpers.preloaded import preloadable


def test_an_environment_read_at_import_gets_a_new_interpreter() -> None:
    """Lightning reads the process's rank at import: a command with another rank must not
    inherit the server's. Variables read when used may differ."""
    assert preloadable(os.environ | {"MNIST_DATA_DIR": "/d", "KILL_AT_STEP": "3"})
    assert not preloadable(os.environ | {"SLURM_PROCID": "1"})
    assert not preloadable({k: v for k, v in os.environ.items() if k != "PATH"})


@pytest.mark.slow  # starts a new interpreter
@pytest.mark.parametrize(
    "args",
    [
        ["ckpt_path=x.ckpt", "batch_size=nan"],  # refused by validate: exit 2
        ["ckpt_path=x.ckpt", "+unknown=1"],  # refused by Hydra: exit 1
        [],  # neither ckpt_path nor run_dir
    ],
    ids=["validate", "hydra", "missing"],
)
def test_a_forked_command_ends_as_a_new_interpreter_does(args: list[str], tmp_path: Path) -> None:
    command_servers()
    forked = run_cli("eval", args, tmp_path / "forked", tmp_path)
    fresh = run_cli("eval", args, tmp_path / "fresh", tmp_path, fresh=True)
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout)
    assert forked.stderr.replace("forked", "fresh") == fresh.stderr
