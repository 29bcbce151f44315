"""Shared fixtures: the synthetic and the real MNIST, Hydra on conf/, and the finished run the
read-only tests share. Helpers are in tests/helpers/."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

# The tests train tiny networks, often in processes side by side on a few cores: one torch
# thread each (also in the processes they start) is faster than threads that wait on each other.
# (Set before torch is imported, which reads it. The fixtures import what they need: pytest-xdist's
# main process, which runs no test, then starts its workers without loading torch first.)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The SLURM tests, the longest file, come first, so that under pytest-xdist (`make test`)
    one worker runs them while the others take the rest."""
    items.sort(key=lambda item: not item.get_closest_marker("slurm"))


@pytest.fixture(scope="module")
def hydra_on_conf() -> Iterator[None]:
    """Hydra initialised on conf/ for a module's compose calls."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.helpers.commands import ROOT

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
    from tests.helpers.synthetic import SYNTHETIC_TEST, SYNTHETIC_TRAIN, write_mnist

    return write_mnist(
        tmp_path_factory.mktemp("synthetic"), train=SYNTHETIC_TRAIN, test=SYNTHETIC_TEST
    )


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    """The project's data/ with the official MNIST files, fetched on first use (~15 s)."""
    from mnist_lightning.data.datasets import ensure_mnist
    from tests.helpers.commands import ROOT

    data_dir = ROOT / "data"
    ensure_mnist(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path) -> Path:
    """One finished run of `mnist-train` (TRAINED_RUN on the synthetic data), trained by its
    console entry in this process. Read-only: tests that change it work on a copy."""
    from tests.helpers.commands import TRAINED_RUN, run_dirs
    from tests.helpers.hydra_jobs import run_console
    from tests.helpers.synthetic import SMALL, merged

    cwd = tmp_path_factory.mktemp("trained")
    env = {"MNIST_DATA_DIR": str(synthetic_mnist)}
    done = run_console("train", merged(SMALL, TRAINED_RUN), cwd, env, timeout_s=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(cwd)
    return run
