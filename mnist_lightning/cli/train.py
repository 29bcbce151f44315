"""`mnist-train`: compose the config, train, test the best checkpoint, write metrics.json.

mnist-train                                   # the default experiment
mnist-train model=mlp_128_64 trainer.max_epochs=5
mnist-train -m model.dropout=0,0.25,0.5       # a sweep
mnist-train resume=outputs/runs/<run>         # continue an interrupted run
"""

import sys
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from mnist_lightning.cli import exit_on_user_error
from mnist_lightning.files import lock_run
from mnist_lightning.run.config import CONFIG_DIR, check_command_line, validate
from mnist_lightning.run.report import log_hparams, report_run
from mnist_lightning.run.resume import (
    BEFORE_HYDRA,
    claim_run_directory,
    continue_or_finish,
    is_rank_zero,
    last_checkpoint,
    register_resolvers,
)
from mnist_lightning.run.trainer import (
    build,
    build_callbacks,
    build_trainer,
    check_before_training,
    checkpoint_to_test,
    ddp_child_run,
    ddp_job,
    lightning_errors,
    setup_process,
    start_from,
    stop_if_learned_nothing,
)

# conf/hydra/default.yaml names run and sweep directories through these resolvers; Hydra
# resolves them as it composes (also in a launcher's worker processes and in tests).
register_resolvers()


@exit_on_user_error
def main() -> None:
    """Console entry point. The command line is checked first (`resume=` locks its run): Hydra
    would otherwise create or log into the directory it names before any check of ours ran."""
    setup_process()
    if child := ddp_child_run():  # another DDP process: train what the first one composed
        fit_and_test(*child)
        return
    check_command_line(sys.argv[1:], "train", then=check_before_training)
    sys.argv[1:] = claim_run_directory(sys.argv[1:])
    train()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@exit_on_user_error
def train(cfg: DictConfig) -> float:
    """Train and test one run as `cfg` says; return `val/acc_best` for sweepers."""
    setup_process()  # again: a launcher's job (a SLURM job) runs this function, not `main`
    cfg, result = continue_or_finish(cfg)  # a resumed run's own config, checked; or its result
    if result is not None:
        return result
    validate(cfg)
    if cfg.ckpt_path:  # from where the command ran, also with hydra.job.chdir=true
        cfg.ckpt_path = to_absolute_path(cfg.ckpt_path)
    check_before_training(cfg)  # again: what Hydra resolved for the job (resume, Optuna)
    run_dir = Path(cfg.paths.output_dir)
    if is_rank_zero():  # its one writer until the process exits (a sweep's job: it ends)
        lock_run(run_dir, "mnist-train")
    return fit_and_test(cfg, run_dir, str(last_checkpoint(run_dir)) if cfg.resume else None)


def fit_and_test(cfg: DictConfig, run_dir: Path, resume_from: str | None) -> float:
    """Train, test the best checkpoint, and (in the first process) write the results."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    callbacks = build_callbacks(cfg)  # a value one refuses: before the data is fetched
    datamodule = build("data", cfg.data)
    datamodule.prepare_data()  # the files, before the loggers write anything
    # Plain lists and numbers, not OmegaConf containers, so checkpoints load with weights_only.
    model = build("model", cfg.model, _convert_="all")
    start_from(model, cfg, resume_from)
    trainer = build_trainer(cfg, callbacks)
    log_hparams(trainer, cfg)

    started = time.perf_counter()
    with ddp_job(trainer, cfg, run_dir, resume_from):
        with lightning_errors(trainer, run_dir, resume_from):
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        BEFORE_HYDRA.clear()  # trained: a later refusal or Ctrl-C undoes nothing of the run
        fit_seconds = time.perf_counter() - started
        with lightning_errors(trainer, run_dir, None):  # Ctrl-C: resume= tests it again
            stop_if_learned_nothing(trainer)
            best = checkpoint_to_test(trainer, run_dir)
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    if not is_rank_zero():  # only the first process writes
        return float(model.val_acc_best)

    metrics = {
        **{key: float(trainer.callback_metrics[key]) for key in ("test/acc", "test/loss")},
        "val/acc_best": float(model.val_acc_best),
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "fit_seconds": round(fit_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "best_checkpoint": best,
    }
    with lightning_errors(trainer, run_dir, None):
        report_run(trainer, datamodule, run_dir, metrics, resumed=resume_from is not None)
    return metrics["val/acc_best"]


if __name__ == "__main__":
    main()
