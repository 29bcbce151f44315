"""`mnist-train`: compose the config, train, test the best checkpoint, write metrics.json.

mnist-train                                   # the default experiment
mnist-train model=mlp_128_64 trainer.max_epochs=5
mnist-train -m model.dropout=0,0.25,0.5       # a sweep
mnist-train resume=outputs/runs/<run>         # continue an interrupted run
"""

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import StochasticWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from mnist_lightning.cli import CONFIG_DIR, exit_on_user_error
from mnist_lightning.errors import CheckpointError, ConfigError, UserError
from mnist_lightning.files import atomic_write_json, lock_run, unlock_run
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.checkpoint import load_checkpoint
from mnist_lightning.run.config import validate
from mnist_lightning.run.distributed import ddp_child_run, ddp_job, is_rank_zero
from mnist_lightning.run.report import (
    log_figures_to_tensorboard,
    log_hparams,
    results_table,
)
from mnist_lightning.run.resume import (
    GracefulInterrupt,
    check_writes_inside,
    claim_run_directory,
    continue_or_finish,
    last_checkpoint,
    register_resolvers,
)
from mnist_lightning.run.sweep import divide_threads_between_jobs
from mnist_lightning.run.trackers import finish_wandb_run
from mnist_lightning.run.trainer import build_trainer, fit_failure
from mnist_lightning.run.trust import check_resumable, network_weights

log = logging.getLogger(__name__)

CHANCE_LEVEL = 0.15  # train/acc below this at the end: the run learned nothing (10 classes)


class LearnedNothingError(UserError):
    """Training ended with the training accuracy at chance level."""


@exit_on_user_error
def main() -> None:
    """Console entry point. `resume=` is checked first: Hydra would otherwise create or log
    into the directory it names before any check of ours could run."""
    quiet_and_fast()
    child = ddp_child_run()
    if child:  # another process of a DDP run: train what the first one composed
        fit_and_test(*child)
        return
    if any(arg.startswith("hydra/launcher=slurm") for arg in sys.argv[1:]) and not find_spec(
        "hydra_plugins.hydra_submitit_launcher"
    ):
        raise ConfigError(
            "hydra/launcher=slurm needs the cluster extra: pip install -e '.[cluster]'"
        )
    sys.argv[1:] = claim_run_directory(sys.argv[1:])
    train()


def quiet_and_fast() -> None:
    """Settings for this process, made before any training starts."""
    # `import lightning` makes torch check for CUDA through NVML (safe for forked workers).
    # With a CUDA build of torch on a machine without a GPU that check fails, uncached, every
    # time, and Adam makes it on every step (docs/benchmarks.md). Without a GPU there is nothing a
    # fork could break, so torch's ordinary, cached check is used instead.
    if not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    # Messages that do not apply to this project: an epoch shorter than the logging interval
    # still gets its train/* points (the model logs what is left of a window at each epoch
    # end), the data module itself reads the same batches with overfit_batches, under DDP the
    # epoch metrics are sums the model or torchmetrics already reduced, a resumed run's
    # checkpoint directory is not empty, a diverged run stops with its own message, and a
    # machine with SLURM's commands need not run on SLURM (jobs of hydra/launcher=slurm do).
    for pattern in (
        r"The `srun` command is available on your system but is not used",
        r".*smaller than the logging interval",
        r"You requested to overfit but enabled train dataloader shuffling",
        r".*sync_dist=True.*when logging on epoch level",
        r"Checkpoint directory .* exists and is not empty",
        r"Encountered `nan` values in tensor",
        r".*isinstance\(treespec, LeafSpec\)",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(no_advertisement)
    # submitit's messages go to Hydra's log handlers (the terminal, a job's log, train.log),
    # not also to submitit's own, which would print each twice (submitit's own switch).
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")


def no_advertisement(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


# conf/hydra/default.yaml names run and sweep directories through these resolvers; Hydra
# resolves them as it composes, before `train` runs (also in a launcher's worker processes,
# which import this module to run a job, and in tests that compose the config).
register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@exit_on_user_error
def train(cfg: DictConfig) -> float:
    """Train and test one run as `cfg` says; return `val/acc_best` for sweepers."""
    quiet_and_fast()  # again: a launcher's job (a SLURM job) runs this function, not `main`
    cfg, result = continue_or_finish(cfg)
    if result is not None:
        return result
    validate(cfg)
    divide_threads_between_jobs()
    run_dir = Path(cfg.paths.output_dir)
    resume_from = str(last_checkpoint(run_dir)) if cfg.resume else None
    if not is_rank_zero():  # another task of a SLURM DDP run: the first one holds the lock
        return fit_and_test(cfg, run_dir, resume_from)
    lock_run(run_dir, "mnist-train")
    try:
        return fit_and_test(cfg, run_dir, resume_from)
    finally:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the sweep goes on to its next job
            unlock_run(run_dir)


def fit_and_test(cfg: DictConfig, run_dir: Path, resume_from: str | None) -> float:
    """Train, test the best checkpoint, and (in the first process) write the results."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls: free speed, no accuracy loss
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    datamodule.check_sizes()  # before the Trainer's loggers write anything
    # Plain lists and numbers, not OmegaConf containers, so checkpoints load with weights_only.
    model: MNISTClassifier = instantiate(cfg.model, _convert_="all")
    if resume_from:  # checked before the Trainer is built and says anything
        check_resumable(model, load_checkpoint(resume_from), resume_from)
    elif cfg.ckpt_path:
        checkpoint = load_checkpoint(cfg.ckpt_path)
        model.net.load_state_dict(network_weights(model, checkpoint, cfg.ckpt_path))
    trainer = build_trainer(cfg)
    if resume_from:
        check_writes_inside(trainer, run_dir)
        log.info("Resuming %s from %s", run_dir, resume_from)
    elif cfg.ckpt_path:
        log.info("Starting from the weights of %s", cfg.ckpt_path)
    # Only the first process writes; under DDP the others' loggers are placeholders.
    tensorboards = [
        lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger) and is_rank_zero()
    ]
    log_hparams(trainer.loggers if is_rank_zero() else [], cfg)

    started = time.perf_counter()
    with ddp_job(trainer, cfg, run_dir, resume_from):
        try:
            with exit_when_interrupted(trainer, run_dir):
                trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        except Exception as e:
            error = fit_failure(e, resume_from)
            if error is None:  # not the config's or the checkpoint's fault: a bug
                raise
            raise error from None
        fit_seconds = time.perf_counter() - started
        stop_if_learned_nothing(trainer)
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
        swa = next((c for c in trainer.callbacks if isinstance(c, StochasticWeightAveraging)), None)
        if swa is not None and trainer.current_epoch - 1 >= swa.swa_end:
            # The result of SWA is the averaged network Lightning puts in the model when its
            # last epoch ends (not if the run stopped before): save it where mnist-eval looks.
            best = str(Path(cfg.paths.output_dir) / "checkpoints" / "best-swa.ckpt")
            trainer.save_checkpoint(best)
        if best and not Path(best).is_file():
            raise CheckpointError(f"The best checkpoint {best} is gone; test it with mnist-eval.")
        with exit_when_interrupted(trainer, run_dir):
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    tested = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if not is_rank_zero():
        return float(model.val_acc_best)

    for tensorboard in tensorboards:
        log_figures_to_tensorboard(tensorboard, model, datamodule, trainer.global_step)
    finish_wandb_run()

    metrics = {
        "test/acc": tested["test/acc"],
        "test/loss": tested["test/loss"],
        "val/acc_best": float(model.val_acc_best),
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "fit_seconds": round(fit_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "best_checkpoint": best,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    print(results_table(run_dir, metrics))
    return metrics["val/acc_best"]


@contextmanager
def exit_when_interrupted(trainer: L.Trainer, run_dir: Path) -> Iterator[None]:
    """Lightning's exits on Ctrl-C and SIGTERM (and the scheduler's signal, GracefulInterrupt)
    become exit status 130 with how to continue; a SLURM job's time limit goes to submitit."""
    try:
        yield
    except (SystemExit, SIGTERMException):
        if not trainer.interrupted:
            raise
        for callback in trainer.callbacks:
            if isinstance(callback, GracefulInterrupt):
                callback.hand_back()  # a SLURM job's time limit: submitit requeues it
        if is_rank_zero():
            hydra = HydraConfig.get() if HydraConfig.initialized() else None
            sweep = hydra and hydra.mode == RunMode.MULTIRUN and hydra.sweep.dir
            how = f"-m <the sweep's overrides> resume={sweep}" if sweep else f"resume={run_dir}"
            print(
                f"\nTraining stopped; {last_checkpoint(run_dir)} holds the state to "
                f"continue from:\n  mnist-train {how}",
                file=sys.stderr,
            )
        sys.exit(130)


def stop_if_learned_nothing(trainer: L.Trainer) -> None:
    """A run whose training accuracy ended at chance learned nothing: not a result. (A run of
    a few batches, such as fast_dev_run, is not judged.)"""
    acc = trainer.callback_metrics.get("train/acc")
    if acc is None or trainer.fast_dev_run or trainer.global_step < 100:
        return
    if acc < CHANCE_LEVEL:
        raise LearnedNothingError(
            f"train/acc ended at {float(acc):.1%} after {trainer.global_step} steps: chance "
            "level, the network learned nothing (its loss stayed finite). Try another model.lr "
            f"(now {trainer.lightning_module.hparams.lr}) or model.optimizer, or "
            "model.batch_norm=true."
        )


if __name__ == "__main__":
    main()
