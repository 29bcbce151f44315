"""Sweeps on a SLURM cluster: hydra-submitit-launcher's launcher, with this project's contract.

Who does what when a job must stop is docs/sweeps.md's table: SLURM signals, `GracefulInterrupt`
(run/resume.py) saves `last.ckpt` after the step, submitit (or SLURM) requeues, and the job run
again continues from it (resume.continue_or_finish). The launcher adds what the plugin's lacks:
one line for a setup the cluster refuses, the state of the jobs while they run, and a job that
ends without a result (cancelled, failed on its node, out of requeues) recorded in the sweep's
summary while the others finish.
"""

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import submitit
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from mnist_lightning.errors import ConfigError, one_line
from mnist_lightning.run.resume import job_finished, refuse, results
from mnist_lightning.run.sweep import record_failure, write_summary

log = logging.getLogger(__name__)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            return self._launch(list(job_overrides), initial_job_idx, sweep_dir)
        except ConfigError as e:  # before any job is submitted: one line, as mnist-train's
            refuse(str(e))

    def executor(self) -> submitit.AutoExecutor:
        """The submitit executor with hydra.launcher's resources, as the plugin builds it."""
        params = dict(self.params)
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"),
            cluster="slurm",
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        try:
            executor.update_parameters(
                **{k if k in shared else f"slurm_{k}": v for k, v in params.items()}
            )
        except (NameError, ValueError) as e:  # a key sbatch does not know (+hydra.launcher.x)
            raise ConfigError(f"hydra.launcher cannot be used: {one_line(e, 300)}") from None
        return executor

    def _launch(
        self, job_overrides: list[list[str]], first: int, sweep_dir: Path
    ) -> list[JobReturn]:
        self.check_resources(job_overrides)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        returns: dict[int, JobReturn] = {}
        todo = []
        for num, overrides in enumerate(job_overrides, start=first):
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            if job_finished(sweep_dir / str(num), overrides):  # re-launched: not submitted
                returns[num] = finished_return(sweep_dir / str(num), overrides)
                continue
            todo.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}"))
        if todo:
            executor = self.executor()
            folder = submitit.core.utils.JobPaths.get_first_id_independent_folder(executor.folder)
            before = set(folder.glob("*"))
            state = Singleton.get_state()
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal
                try:
                    jobs = executor.map_array(self, *zip(*[(*t, state) for t in todo], strict=True))
                except submitit.core.utils.FailedJobError as e:
                    for path in set(folder.glob("*")) - before:  # its script and pickle
                        path.unlink()
                    raise ConfigError(
                        f"SLURM refused the sweep's jobs: {sbatch_error(e)}. They asked for "
                        f"{self.request()} (hydra.launcher; for the local cluster of make "
                        "slurm: hydra/launcher=slurm_local)."
                    ) from None
            log.info("Submitted SLURM job %s", jobs[0].job_id.split("_")[0])
            # submitit links its script's temporary name to the script: a sweep directory
            # holds no links (resume= refuses them, run/resume.py), and nothing uses this one.
            for link in folder.glob(".submission_file_*.sh"):
                link.unlink()
            try:
                wait_for(jobs)
            except KeyboardInterrupt:  # nothing left running behind the user's back
                for (overrides, _, num, _), job in zip(todo, jobs, strict=True):
                    if not job.done():
                        job.cancel(check=False)
                        record_failure("cancelled (Ctrl-C)", sweep_dir / str(num), overrides)
                write_summary(sweep_dir)
                print(
                    f"\nCancelled the sweep's jobs (each saves its last.ckpt): "
                    f"{sweep_dir}/summary.md. To continue them, run the same command with "
                    f"resume={sweep_dir}",
                    file=sys.stderr,
                )
                sys.exit(130)
            for (overrides, _, num, _), job in zip(todo, jobs, strict=True):
                returns[num] = job_return(job, sweep_dir / str(num), overrides)
        return [returns[num] for num in sorted(returns)]

    def request(self) -> str:
        p = self.params
        return (
            f"{p['nodes']} node(s) of {p['tasks_per_node']} task(s) with {p['cpus_per_task']} "
            f"CPU(s) each, {p['gpus_per_node']} GPU(s) and {p['mem_gb']} GB per node, "
            f"{p['timeout_min']} minutes, partition {p['partition'] or '(default)'}"
        )

    def check_resources(self, job_overrides: list[list[str]]) -> None:
        """SLURM gets one request for all the jobs of a sweep: they must agree on it; submitit
        writes their scripts and logs into the sweep (which resume= and a refusal know)."""
        own = os.path.abspath(Path(str(self.config.hydra.sweep.dir), ".submitit"))
        if not Path(os.path.abspath(self.params["submitit_folder"])).is_relative_to(own):
            raise ConfigError(
                f"hydra.launcher.submitit_folder={self.params['submitit_folder']}: mnist-train "
                f"decides where Hydra writes, the jobs' scripts and logs into {own}; choose the "
                "sweep's directory with hydra.sweep.dir."
            )
        if shutil.which("sbatch") is None:
            raise ConfigError(
                "hydra/launcher=slurm submits jobs with sbatch, which is not on the PATH: run "
                "the sweep on a machine of the cluster (make slurm starts a local one)."
            )
        if self.params["tasks_per_node"] < 1:
            raise ConfigError(
                f"hydra/launcher=slurm needs the number of processes per node: "
                f"trainer.devices={self.config.trainer.devices} cannot be asked of SLURM. "
                "Give a number, e.g. trainer.devices=4."
            )
        loader = self.hydra_context.config_loader
        for overrides in job_overrides:
            trainer = loader.load_sweep_config(self.config, list(overrides)).trainer
            asked = (trainer.num_nodes, trainer.devices, str(trainer.accelerator))
            base = self.config.trainer
            if asked != (base.num_nodes, base.devices, str(base.accelerator)):
                raise ConfigError(
                    "hydra/launcher=slurm asks SLURM for the same nodes, tasks and GPUs for "
                    "every job of a sweep, so trainer.num_nodes, trainer.devices and "
                    "trainer.accelerator cannot vary between its jobs: run one sweep per setting."
                )


def sbatch_error(error: Exception) -> str:
    """sbatch's reasons, without their prefixes."""
    lines = [line.removeprefix("sbatch: error: ") for line in str(error).splitlines() if line]
    return one_line("; ".join(lines) or error, 300)


def wait_for(jobs: list[submitit.Job]) -> list[submitit.Job]:
    """Wait until every job is done, saying how many are queued, running and done as that
    changes (SLURM's states, read with one sacct call for all of them)."""
    watcher = jobs[0].watcher
    shown, started = None, time.monotonic()
    while True:
        watcher.update()
        states = Counter(simple_state(job) for job in jobs)
        if states != shown:
            log.info(", ".join(f"{n} {state}" for state, n in sorted(states.items())))
            shown = states
        if states["done"] == len(jobs):
            return jobs
        # Every 2 s at first, then less often: a long sweep asks slurmdbd every 30 s.
        time.sleep(min(30, 2 + (time.monotonic() - started) / 30))


def simple_state(job: submitit.Job) -> str:
    if job.done():
        return "done"
    state = job.watcher.get_state(job.job_id, mode="cache")
    return "running" if state in ("RUNNING", "COMPLETING") else "queued"


def job_return(job: submitit.Job, job_dir: Path, overrides: list[str]) -> JobReturn:
    """What the job returned; a job that ended without a result (cancelled, failed on its node,
    requeued too many times) is recorded as failed for the summary, and the sweep goes on."""
    if job.state.startswith("CANCELLED"):  # no result can come: not waited for (15 s)
        job._results_timeout_s = 0
    try:
        return job.results()[0]
    except submitit.core.utils.UncompletedJobError as e:
        if job_finished(job_dir, overrides):  # killed after it wrote its results (or late)
            return finished_return(job_dir, overrides)
        if isinstance(e, submitit.core.utils.FailedJobError):  # its traceback: the error
            errors = re.findall(r"^[\w.]+(?:Error|Exception)\b.*$", str(e), re.MULTILINE)
            reason = errors[-1] if errors else type(e).__name__
        else:
            reason = f"SLURM job {job.job_id} ended {job.state} without a result"
        record_failure(f"{one_line(reason, 300)} (log: {job.paths.stderr})", job_dir, overrides)
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)


def finished_return(job_dir: Path, overrides: list[str]) -> JobReturn:
    log.info("%s finished before; skipped", job_dir)
    value = results(job_dir)["val/acc_best"]
    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=value)
