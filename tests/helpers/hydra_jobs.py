"""The console commands' Hydra entry points, run in the test process.

`run_command(train, "train", overrides)` does for `mnist-train overrides...` what `@hydra.main`
does, by Hydra's own `Hydra.run`: compose the config with Hydra's node in it (as
`compose(..., return_hydra_config=True)`), make the run directory, save the config in its
.hydra/, set `HydraConfig`, and call the function with the config (the `@hydra.main` wrapper
passes a DictConfig straight through to the function it wraps). Only Hydra's logging set-up is
left out: it would take the root logger from pytest. The checks `mnist-train` makes before
Hydra starts (`claim_run_directory`, `check_hydra_dirs`) are not run: a test passes a fresh
`hydra.run.dir`.
"""

from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.global_hydra import GlobalHydra

from mnist_lightning import files


def run_command(main: Callable[..., Any], config_name: str, overrides: Sequence[str]) -> Any:
    """What `main` (a command's function under `@hydra.main`) returns when Hydra runs it for
    the command line `overrides`; its exceptions, and the SystemExit of a refused command, go
    through. Needs Hydra initialised on conf/ (the `hydra_on_conf` fixture).

    The run locks the command took are released at the end, as its process would release them
    by ending.
    """
    held = set(files._held_locks)
    hydra = GlobalHydra.instance().hydra
    assert hydra is not None, "initialise Hydra on conf/ first (the hydra_on_conf fixture)"
    try:
        job = hydra.run(config_name, main, list(overrides), with_log_configuration=False)
        return job.return_value
    finally:
        for run in set(files._held_locks) - held:
            files.unlock_run(run)
