"""DDP with Hydra: every process joins the same run, and a sweep can run DDP job after job.

Lightning's `ddp` strategy starts the other processes of a run by running the command line
again. Under Hydra that goes wrong twice (lightning-hydra-template #393 and #194): each
process composes its own config and makes its own run directory, and in a sweep (`-m`) each
one re-launches the whole sweep. And Lightning leaves `LOCAL_RANK` and friends in the
environment after a job, so the next job of a sweep believes its processes were started for
it, waits for them, and hangs.

So the first process hands the others its composed config and run directory in the
environment (`DDP_RUN_ENV`); a process that finds it there skips Hydra and trains that run
(`ddp_child_run`). When the job ends, the process group is torn down and the environment put
back as it was (`ddp_job`). On a SLURM cluster, where `srun` starts every process itself,
each one composes the config with Hydra as usual, and `config.run_dir` names the run
directory after the SLURM job, so they still share it.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

DDP_RUN_ENV = "MNIST_LIGHTNING_DDP_RUN"


def is_rank_zero() -> bool:
    """The process that writes metrics.json, figures and summaries (the only one, under DDP)."""
    return rank_zero_only.rank == 0


def ddp_child_run() -> tuple[DictConfig, Path, str | None] | None:
    """(config, run directory, checkpoint to resume) when Lightning started this process for
    another rank of a run; None for a process a user (or srun) started."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or DDP_RUN_ENV not in os.environ:
        return None
    run = json.loads(os.environ[DDP_RUN_ENV])
    return OmegaConf.create(run["config"]), Path(run["run_dir"]), run["resume_from"]


@contextmanager
def ddp_job(
    trainer: L.Trainer, cfg: DictConfig, run_dir: Path, resume_from: str | None
) -> Iterator[None]:
    """Around one run's fit and test: publish the run to the processes Lightning starts, and
    leave nothing behind that would confuse the next job of a sweep."""
    if trainer.world_size == 1:
        yield
        return
    saved = dict(os.environ)
    if is_rank_zero():
        os.environ[DDP_RUN_ENV] = json.dumps(
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "run_dir": str(run_dir),
                "resume_from": resume_from and str(resume_from),
            }
        )
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)
