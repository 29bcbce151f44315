"""Lightning's Trainer flags and built-in callbacks, given through mnist-train's config, do what
Lightning's documentation says (docs/lightning.md).

Each test composes the real conf/train.yaml with Hydra's compose API and the override a user
would type, builds the trainer as mnist-train does (`build_trainer`), trains a 784-32-10 MLP on
the synthetic MNIST in this process (1 000 training images: 20 steps an epoch) and observes
what happened: probe callbacks, the CSV log, the files written. A flag that silently meant
something else fails its test. One test runs the real `mnist-train` command line.
"""

import csv
import math
import os
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose
from hydra.utils import instantiate
from lightning.pytorch.callbacks import (
    BatchSizeFinder,
    EarlyStopping,
    LearningRateFinder,
    ModelSummary,
    RichModelSummary,
    RichProgressBar,
    StochasticWeightAveraging,
    Timer,
)
from lightning.pytorch.profilers import SimpleProfiler
from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector
from omegaconf import DictConfig

import mnist_lightning.cli.train as train_module
from mnist_lightning.cli.eval import best_checkpoint
from mnist_lightning.cli.train import build_trainer
from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.config import validate
from tests.helpers.commands import ROOT, run_dirs, run_train
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, merged

CONF = ROOT / "conf"
DEBUG_PRESETS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))
# Quieter, faster runs whose metrics the tests read back from <run>/csv/metrics.csv.
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# For tests that do not look at checkpoints: fsync'ed writes are most of such a tiny run.
NO_CHECKPOINTS = [
    "~callbacks.best_checkpoint",
    "~callbacks.last_checkpoint",
    "~callbacks.periodic_checkpoint",
    "+trainer.enable_checkpointing=false",
]
ONE_CYCLE_END = 1 / 250_000  # the one-cycle schedule's last learning rate, as a fraction of lr

# The overrides of the table in docs/lightning.md (there in single quotes, for the shell; its
# EarlyStopping line has patience:3 and not this min_delta:1.0, which forces the stop for the
# test).
EARLY_STOPPING = (
    "+callbacks.early_stopping={_target_:lightning.pytorch.callbacks.EarlyStopping,"
    "monitor:val/acc,mode:max,patience:2,min_delta:1.0}"
)
LR_MONITOR = (
    "+callbacks.lr_monitor={_target_:lightning.pytorch.callbacks.LearningRateMonitor,"
    "logging_interval:step}"
)
STEP_CHECKPOINTS = (
    "+callbacks.step_checkpoint={_target_:lightning.pytorch.callbacks.ModelCheckpoint,"
    'dirpath:${paths.output_dir}/steps,filename:"{step}",every_n_train_steps:10,save_top_k:-1}'
)
SWA = (
    "+callbacks.swa={_target_:lightning.pytorch.callbacks.StochasticWeightAveraging,"
    "swa_lrs:0.001,swa_epoch_start:2,annealing_epochs:1}"
)
RICH = [
    "callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar",
    "+callbacks.model_summary={_target_:lightning.pytorch.callbacks.RichModelSummary,max_depth:2}",
]
LR_FINDER = (
    "+callbacks.lr_finder={_target_:lightning.pytorch.callbacks.LearningRateFinder,"
    "num_training_steps:30}"
)
BATCH_SIZE_FINDER = (
    "+callbacks.batch_size_finder={_target_:lightning.pytorch.callbacks.BatchSizeFinder}"
)


pytestmark = pytest.mark.usefixtures("hydra_on_conf")


def config(tmp_path: Path, data_dir: Path, *overrides: str) -> DictConfig:
    """conf/train.yaml with the SMALL settings (tests/helpers/synthetic.py), writing under
    `tmp_path`, then `overrides` (which replace SMALL's key by key), checked by `validate` as
    mnist-train does."""
    base = [*SMALL, *QUIET, f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    cfg = compose("train", overrides=merged(base, overrides))
    validate(cfg)
    return cfg


def fit(cfg: DictConfig, *probes: L.Callback) -> tuple[L.Trainer, MNISTClassifier, MNISTDataModule]:
    """Train as mnist-train does (seed, data module, model, `build_trainer`), plus `probes`."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _convert_="all")
    trainer = build_trainer(cfg)
    trainer.callbacks.extend(probes)
    trainer.fit(model, datamodule=datamodule)
    return trainer, model, datamodule


def logged(cfg: DictConfig, name: str) -> list[tuple[int, float]]:
    """(step, value) of every point of `name` in the run's CSV log, in order."""
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv", newline="") as f:
        return [(int(row["step"]), float(row[name])) for row in csv.DictReader(f) if row.get(name)]


def current_lr(trainer: L.Trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


class Loops(L.Callback):
    """What the loops did: every training batch, loss and optimizer step, every validation run
    (not the sanity check) and batch, every test batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []  # epoch, idx, x, y
        self.losses: list[tuple[int, int, float]] = []  # epoch, global batch number, loss
        self.optimizer_steps = 0
        self.lrs: list[float] = []  # the learning rate of each optimizer step
        self.validations: list[int] = []  # global_step at the end of each validation run
        self.val_batches: list[int] = []  # validation batches of each run
        self.test_batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images, labels = batch
        self.batches.append((trainer.current_epoch, batch_idx, images.clone(), labels.clone()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.losses.append((epoch, len(self.losses), float(outputs["loss"])))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.optimizer_steps += 1
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_batches.append(0)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val_batches[-1] += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validations.append(trainer.global_step)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self.test_batches += 1

    def epoch_batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(x, y) for e, _, x, y in self.batches if e == epoch]


# Gradient clipping ---------------------------------------------------------------------------


class Gradients(L.Callback):
    """Every parameter's gradient before clipping (Lightning clips right after
    `on_before_optimizer_step`) and after it (still in `.grad` when the batch ends)."""

    def __init__(self) -> None:
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append([p.grad.clone() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append([p.grad.clone() for p in pl_module.parameters()])


def total_norm(grads: list[torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def test_gradient_clip_val_clips_the_norm_of_all_gradients_together(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.gradient_clip_val=0.1 (algorithm null: Lightning's default, norm): every step's
    gradients are scaled together so their total L2 norm is 0.1; nothing is clipped per value."""
    grads = Gradients()
    cfg = config(
        tmp_path,
        synthetic_mnist,
        "trainer.gradient_clip_val=0.1",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        *NO_CHECKPOINTS,
    )
    fit(cfg, grads)
    assert len(grads.before) == len(grads.after) == 5
    for before, after in zip(grads.before, grads.after, strict=True):
        norm = total_norm(before)
        assert norm > 0.5  # so the clip acted
        assert total_norm(after) == pytest.approx(0.1, rel=1e-4)
        for b, a in zip(before, after, strict=True):  # one factor for every element
            torch.testing.assert_close(a, b * (0.1 / (norm + 1e-6)), rtol=1e-4, atol=1e-9)


def test_gradient_clip_algorithm_value_clamps_each_gradient_element(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.gradient_clip_algorithm=value: each element is clamped to [-0.005, 0.005]."""
    grads = Gradients()
    cfg = config(
        tmp_path,
        synthetic_mnist,
        "trainer.gradient_clip_val=0.005",
        "trainer.gradient_clip_algorithm=value",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        *NO_CHECKPOINTS,
    )
    fit(cfg, grads)
    assert len(grads.after) == 5
    for before, after in zip(grads.before, grads.after, strict=True):
        assert max(float(g.abs().max()) for g in before) > 0.05  # so the clamp acted
        for b, a in zip(before, after, strict=True):
            torch.testing.assert_close(a, b.clamp(-0.005, 0.005), rtol=0, atol=0)
        assert total_norm(after) > 0.1  # not a norm clip to 0.005


# Accumulation, precision ---------------------------------------------------------------------


@pytest.mark.slow
def test_accumulate_grad_batches_steps_the_optimizer_once_every_k_batches(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.accumulate_grad_batches=4: 40 batches in 2 epochs make 10 optimizer steps, and
    global_step, the one-cycle horizon and the logging steps count those steps."""
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, "trainer.accumulate_grad_batches=4", *NO_CHECKPOINTS)
    trainer, model, _ = fit(cfg, loops)
    assert len(loops.batches) == 2 * STEPS_PER_EPOCH
    assert loops.optimizer_steps == trainer.global_step == 2 * STEPS_PER_EPOCH // 4
    assert trainer.estimated_stepping_batches == 10
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)
    # log_every_n_steps=4 counts optimizer steps: a point after steps 4 and 8 (x = 3, 7), and
    # what is left of each epoch's window at its end (steps 5 and 10).
    assert [step for step, _ in logged(cfg, "train/loss")] == [3, 4, 7, 9]


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_the_cpu_under_bf16_autocast(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.precision=bf16-mixed: the forward pass runs under CPU autocast in bfloat16, the
    weights stay float32, and the model learns."""
    seen: set[tuple[torch.dtype, bool]] = set()

    class Autocast(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            pl_module.net.layers[0].register_forward_hook(
                lambda module, inputs, output: seen.add(
                    (output.dtype, torch.is_autocast_enabled("cpu"))
                )
            )

    cfg = config(
        tmp_path,
        synthetic_mnist,
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=10",
        *NO_CHECKPOINTS,
    )
    trainer, model, _ = fit(cfg, Autocast())
    assert trainer.precision == "bf16-mixed"
    assert seen == {(torch.bfloat16, True)}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and float(metrics["val/acc"]) > 0.5


# When validation runs ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("interval", "validated_at"),
    [
        ("0.25", [5, 10, 15, 20, 25, 30, 35, 40]),  # a fraction of an epoch: 4 times an epoch
        ("4", [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]),  # every 4 training batches
        ("1.0", [20, 40]),  # the float 1.0 is once an epoch...
        ("1", list(range(1, 41))),  # ...and the integer 1 after every batch
    ],
)
def test_val_check_interval_runs_validation_that_often(
    interval: str, validated_at: list[int], tmp_path: Path, synthetic_mnist: Path
) -> None:
    loops = Loops()
    cfg = config(
        tmp_path, synthetic_mnist, f"trainer.val_check_interval={interval}", *NO_CHECKPOINTS
    )
    fit(cfg, loops)
    assert loops.validations == validated_at


@pytest.mark.slow
def test_check_val_every_n_epoch_validates_every_nth_epoch_only(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.check_val_every_n_epoch=2 over 5 epochs: validation after epochs 2 and 4 only,
    with the default checkpoints (the best one monitors val/acc; last.ckpt is still written at
    every epoch's end, the last one included) and the plateau schedule (which steps on
    val/acc) both content with epochs that have none."""
    loops = Loops()
    cfg = config(
        tmp_path,
        synthetic_mnist,
        "trainer.check_val_every_n_epoch=2",
        "trainer.max_epochs=5",
        "model.scheduler=plateau",
    )
    trainer, _, _ = fit(cfg, loops)
    assert loops.validations == [2 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH]
    assert [step for step, _ in logged(cfg, "val/acc")] == [39, 79]
    best = Path(trainer.checkpoint_callback.best_model_path).name
    assert best in ("best-epoch001.ckpt", "best-epoch003.ckpt")  # epochs 2 and 4, from 0
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5 * STEPS_PER_EPOCH


# How much of the data ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limits", "epochs", "train", "val", "test"),
    [
        (("debug=limit",), 2, 10, 2, 2),  # 2 epochs: SMALL's max_epochs=2 beats the preset
        (
            (
                "trainer.limit_train_batches=5",
                "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1",
            ),
            2,
            5,
            1,
            1,
        ),
        (
            (
                "trainer.limit_train_batches=0.25",
                "trainer.limit_val_batches=0.5",
                "trainer.limit_test_batches=0.5",
            ),
            2,
            5,
            1,
            1,
        ),  # fractions of 20, 2 and 3 batches, rounded down
    ],
    ids=["debug=limit", "counts", "fractions"],
)
def test_limit_batches_limit_each_loop_and_the_one_cycle_schedule_follows(
    limits: tuple[str, ...],
    epochs: int,
    train: int,
    val: int,
    test: int,
    tmp_path: Path,
    synthetic_mnist: Path,
) -> None:
    """limit_train_batches, limit_val_batches and limit_test_batches (counts or fractions):
    each loop runs that many batches (of 20, 2 and 3), and the one-cycle schedule's horizon
    is the steps trained, so it ends annealed at lr/250 000."""
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, *limits, *NO_CHECKPOINTS)
    trainer, model, datamodule = fit(cfg, loops)
    trainer.test(model, datamodule=datamodule, verbose=False)
    assert [len(loops.epoch_batches(epoch)) for epoch in range(epochs)] == [train] * epochs
    assert trainer.global_step == trainer.estimated_stepping_batches == epochs * train
    assert loops.val_batches == [val] * epochs and loops.test_batches == test
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)


@pytest.mark.parametrize(("flag", "batches"), [("true", 1), ("3", 3)])
def test_fast_dev_run_runs_n_batches_of_each_loop_and_writes_nothing(
    flag: str, batches: int, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.fast_dev_run=true (debug=fdr) or N: N training, validation and test batches,
    no sanity check, one epoch, and no checkpoint or log written (the project's checkpoint
    callbacks included)."""
    loops = Loops()
    out = tmp_path / "run"
    overrides = ("debug=fdr", f"trainer.fast_dev_run={flag}", "data.eval_batch_size=50")
    cfg = config(out, synthetic_mnist, *overrides)  # 4 validation and 6 test batches
    trainer, model, datamodule = fit(cfg, loops)
    trainer.test(model, datamodule=datamodule, verbose=False)
    assert len(loops.batches) == loops.optimizer_steps == trainer.global_step == batches
    assert loops.val_batches == [batches] and loops.test_batches == batches
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.slow
def test_overfit_batches_trains_on_the_same_batches_every_epoch(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """debug=overfit (trainer.overfit_batches=3): the same 3 batches, in the same order, every
    epoch: the first 3 of the training split. limit_train_batches=3, which keeps shuffling,
    sees different ones (so this test can tell them apart)."""
    overfit, limited = Loops(), Loops()
    overrides = ("debug=overfit", "trainer.max_epochs=2", *NO_CHECKPOINTS)
    cfg = config(tmp_path / "overfit", synthetic_mnist, *overrides)
    trainer, model, datamodule = fit(cfg, overfit)
    first, second = overfit.epoch_batches(0), overfit.epoch_batches(1)
    assert len(first) == len(second) == 3
    for (x0, y0), (x1, y1) in zip(first, second, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    images, labels = datamodule.splits["train"]
    assert torch.equal(torch.cat([y for _, y in first]), labels[:150])
    assert torch.equal(torch.cat([x for x, _ in first]), images[:150].float() / 255)
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)  # 6 steps

    cfg = config(
        tmp_path / "limited", synthetic_mnist, "trainer.limit_train_batches=3", *NO_CHECKPOINTS
    )
    fit(cfg, limited)
    shuffled = zip(limited.epoch_batches(0), limited.epoch_batches(1), strict=True)
    assert not all(torch.equal(y0, y1) for (_, y0), (_, y1) in shuffled)


# When training stops -------------------------------------------------------------------------


@pytest.mark.slow
def test_max_time_stops_training_after_that_long(tmp_path: Path, synthetic_mnist: Path) -> None:
    """trainer.max_time=00:00:00:01 (DD:HH:MM:SS) with max_epochs=1000: Lightning's Timer
    stops the run once a second of training has passed, long before the epochs run out."""
    cfg = config(
        tmp_path,
        synthetic_mnist,
        "trainer.max_time=00:00:00:01",
        "trainer.max_epochs=1000",
        *NO_CHECKPOINTS,
    )
    started = time.monotonic()
    trainer, _, _ = fit(cfg)
    (timer,) = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert timer.time_elapsed("train") >= 1.0
    assert 0 < trainer.current_epoch < 1000 and trainer.global_step > 0
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_max_steps_stops_at_exactly_that_step(tmp_path: Path, synthetic_mnist: Path) -> None:
    """trainer.max_steps=25: 25 optimizer steps exactly, 5 into the second epoch, and the
    one-cycle schedule's horizon is those 25 steps."""
    loops = Loops()
    overrides = ("trainer.max_steps=25", "trainer.max_epochs=12", *NO_CHECKPOINTS)
    cfg = config(tmp_path, synthetic_mnist, *overrides)
    trainer, model, _ = fit(cfg, loops)
    assert trainer.global_step == loops.optimizer_steps == len(loops.batches) == 25
    assert len(loops.epoch_batches(1)) == 5
    assert trainer.estimated_stepping_batches == 25
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)


@pytest.mark.slow
def test_early_stopping_stops_when_val_acc_stops_improving(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """EarlyStopping on val/acc with patience 2 and min_delta 1.0 (an accuracy gain of more
    than 1.0 is impossible, so only the first epoch counts as an improvement): training stops
    after the third of 10 epochs."""
    cfg = config(
        tmp_path, synthetic_mnist, EARLY_STOPPING, "trainer.max_epochs=10", *NO_CHECKPOINTS
    )
    trainer, _, _ = fit(cfg)
    (stopper,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/acc", "max", 2)
    assert stopper.stopped_epoch == 2 and trainer.current_epoch == 3
    assert trainer.global_step == 3 * STEPS_PER_EPOCH


# Logging -------------------------------------------------------------------------------------


class LightningCadence(L.Callback):
    """Logs a constant at every training step with `self.log(on_step=True)`: its points land
    where Lightning's log_every_n_steps puts step-level points."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("cadence", 1.0, on_step=True, on_epoch=False)


def expected_windows(losses: list[tuple[int, int, float]], every: int) -> list[tuple[int, float]]:
    """(step, mean loss) of each logging window: closed after every `every`-th step and at the
    end of each epoch (what is left of a window), as the model's docstring says."""
    points, window = [], []
    for i, (epoch, step, loss) in enumerate(losses):
        window.append(loss)
        epoch_ends = i + 1 == len(losses) or losses[i + 1][0] != epoch
        if (step + 1) % every == 0 or epoch_ends:
            points.append((step, sum(window) / len(window)))
            window = []
    return points


@pytest.mark.slow
def test_log_every_n_steps_logs_train_means_at_lightnings_logging_steps(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.log_every_n_steps=8: train/loss, train/acc and train/lr get a point where
    Lightning logs step-level metrics (x = 7, 15, 23, 31, 39) and one for what is left of the
    window at an epoch's end (x = 19); each train/loss point is the mean of its window."""
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, "trainer.log_every_n_steps=8", *NO_CHECKPOINTS)
    fit(cfg, loops, LightningCadence())
    cadence = [step for step, _ in logged(cfg, "cadence")]
    assert cadence == [7, 15, 23, 31, 39]
    points = logged(cfg, "train/loss")
    assert [step for step, _ in points] == [7, 15, 19, 23, 31, 39]
    for (step, value), (expected_step, mean) in zip(
        points, expected_windows(loops.losses, 8), strict=True
    ):
        assert step == expected_step and value == pytest.approx(mean, rel=1e-5)
    for name in ("train/acc", "train/lr"):
        assert [step for step, _ in logged(cfg, name)] == [7, 15, 19, 23, 31, 39]


@pytest.mark.slow
def test_an_epoch_shorter_than_log_every_n_steps_still_gets_train_points(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.log_every_n_steps=50 with 20-step epochs: Lightning logs no step-level point,
    yet each epoch ends with one train/* point, the mean over the whole epoch."""
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, "trainer.log_every_n_steps=50", *NO_CHECKPOINTS)
    fit(cfg, loops, LightningCadence())
    assert logged(cfg, "cadence") == []
    points = logged(cfg, "train/loss")
    assert [step for step, _ in points] == [19, 39]
    for (step, value), (expected_step, mean) in zip(
        points, expected_windows(loops.losses, 50), strict=True
    ):
        assert step == expected_step and value == pytest.approx(mean, rel=1e-5)
    assert [step for step, _ in logged(cfg, "train/acc")] == [19, 39]


@pytest.mark.slow
def test_learning_rate_monitor_logs_once_a_window_beside_train_loss(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """LearningRateMonitor(logging_interval=step): one lr point per logging window, at the
    same steps as the train/loss points of those windows, with the same value as train/lr."""
    cfg = config(
        tmp_path, synthetic_mnist, LR_MONITOR, "trainer.log_every_n_steps=8", *NO_CHECKPOINTS
    )
    fit(cfg)
    train_lr = dict(logged(cfg, "train/lr"))
    for group in ("pg1", "pg2"):  # weights with weight decay, then biases without
        points = logged(cfg, f"lr-AdamW/{group}")
        assert [step for step, _ in points] == [7, 15, 23, 31, 39]
        for step, lr in points:
            assert lr == pytest.approx(train_lr[step], rel=1e-6)


@pytest.mark.slow
def test_profiler_simple_times_every_training_step(tmp_path: Path, synthetic_mnist: Path) -> None:
    """debug=profiler (trainer.profiler=simple): Lightning's SimpleProfiler times every hook,
    one record per training step and optimizer step."""
    cfg = config(tmp_path, synthetic_mnist, "debug=profiler", *NO_CHECKPOINTS)
    trainer, _, _ = fit(cfg)
    assert isinstance(trainer.profiler, SimpleProfiler)
    durations = trainer.profiler.recorded_durations
    assert len(durations["[Strategy]SingleDeviceStrategy.training_step"]) == 2 * STEPS_PER_EPOCH
    assert len(durations["[LightningModule]MNISTClassifier.optimizer_step"]) == 40
    assert "run_training_epoch" in trainer.profiler.summary()


@pytest.mark.slow
def test_deterministic_true_switches_on_torchs_deterministic_algorithms(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.deterministic=true: torch.use_deterministic_algorithms(True) during training
    (false by default), and two runs end with identical weights."""
    flags: list[bool] = []

    class Flag(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            flags.append(torch.are_deterministic_algorithms_enabled())

    saved = torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        weights = []
        short = ("trainer.max_epochs=1", "trainer.limit_train_batches=5", *NO_CHECKPOINTS)
        for run in ("a", "b"):
            cfg = config(tmp_path / run, synthetic_mnist, "trainer.deterministic=true", *short)
            weights.append(fit(cfg, Flag())[1].state_dict())
        fit(config(tmp_path / "c", synthetic_mnist, *short), Flag())
    finally:  # Lightning leaves the flag (and CUBLAS_WORKSPACE_CONFIG) set for the process
        torch.use_deterministic_algorithms(saved[0])
        if saved[1] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[1]
    assert flags == [True, True, False]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


# Checkpoints ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_checkpoint_every_n_train_steps_writes_at_steps_10_20_30_40(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    cfg = config(tmp_path, synthetic_mnist, STEP_CHECKPOINTS)
    fit(cfg)
    written = {p.name: p for p in (tmp_path / "steps").iterdir()}
    assert sorted(written) == ["step=10.ckpt", "step=20.ckpt", "step=30.ckpt", "step=40.ckpt"]
    for name, path in written.items():
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert f"step={checkpoint['global_step']}.ckpt" == name


@pytest.mark.slow
def test_model_checkpoint_train_time_interval_writes_mid_epoch(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """The periodic checkpoint (ModelCheckpoint(train_time_interval=...), 300 s by default)
    rewrites last.ckpt mid-epoch when its interval has passed: with 0.1 s and 20 ms steps,
    several times an epoch; with the default 300 s, never in a short run."""

    class Saves(L.Callback):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            time.sleep(0.02)

        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
            self.steps.append(trainer.global_step)

    short, default = Saves(), Saves()
    interval = "callbacks.periodic_checkpoint.train_time_interval.seconds=0.1"
    fit(config(tmp_path / "short", synthetic_mnist, interval, "trainer.max_epochs=1"), short)
    fit(config(tmp_path / "default", synthetic_mnist, "trainer.max_epochs=1"), default)
    mid_epoch = [step for step in short.steps if step % STEPS_PER_EPOCH]
    assert len(mid_epoch) >= 2, short.steps
    assert (tmp_path / "short" / "checkpoints" / "last.ckpt").is_file()
    assert not [step for step in default.steps if step % STEPS_PER_EPOCH], default.steps


# Stochastic weight averaging -----------------------------------------------------------------


class EpochStartWeights(L.Callback):
    """The weights at the start of each epoch (after SWA's own hook), and after training."""

    def __init__(self) -> None:
        self.weights: dict[int, list[torch.Tensor]] = {}
        self.lrs: dict[int, list[float]] = {}
        self.final: list[torch.Tensor] = []
        self.tested: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.weights[trainer.current_epoch] = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.setdefault(trainer.current_epoch, []).append(current_lr(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        self.final = [p.detach().clone() for p in pl_module.parameters()]

    def on_test_start(self, trainer, pl_module) -> None:
        self.tested = [p.detach().clone() for p in pl_module.parameters()]


@pytest.mark.slow
def test_stochastic_weight_averaging_leaves_the_model_the_average(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """StochasticWeightAveraging(swa_lrs=0.001, swa_epoch_start=2, annealing_epochs=1) over 3
    epochs: from the 2nd epoch (Lightning counts this one from 1) the one-cycle schedule is
    swapped for SWALR, which reaches 0.001 after one epoch, and at the end the model holds the
    average of the weights Lightning averaged: those at the start of epochs 2 and 3."""
    probe = EpochStartWeights()
    cfg = config(tmp_path, synthetic_mnist, SWA, "trainer.max_epochs=3", *NO_CHECKPOINTS)
    trainer, _, _ = fit(cfg, probe)
    assert any(isinstance(c, StochasticWeightAveraging) for c in trainer.callbacks)
    assert probe.lrs[2] == pytest.approx([0.001] * STEPS_PER_EPOCH)
    for i, final in enumerate(probe.final):
        average = (probe.weights[1][i] + probe.weights[2][i]) / 2
        torch.testing.assert_close(final, average)
        assert not torch.allclose(final, probe.weights[2][i])


@pytest.mark.slow
def test_mnist_train_tests_the_averaged_weights_with_swa(
    tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network mnist-train tests is the average Lightning leaves in the model at the end
    of fit, saved as checkpoints/best-swa.ckpt, which mnist-eval reads."""
    probe = EpochStartWeights()

    def with_probe(cfg: DictConfig) -> L.Trainer:
        trainer = build_trainer(cfg)
        trainer.callbacks.append(probe)
        return trainer

    monkeypatch.setattr(train_module, "build_trainer", with_probe)
    cfg = config(tmp_path, synthetic_mnist, SWA, "trainer.max_epochs=3")
    train_module.fit_and_test(cfg, tmp_path, None)
    assert (tmp_path / "metrics.json").is_file()
    for tested, final in zip(probe.tested, probe.final, strict=True):
        torch.testing.assert_close(tested, final)
    swa = Path(cfg.paths.output_dir) / "checkpoints" / "best-swa.ckpt"
    assert best_checkpoint(Path(cfg.paths.output_dir)) == swa


# Progress bar and model summary --------------------------------------------------------------


@pytest.mark.slow
def test_rich_progress_bar_and_rich_model_summary_replace_the_defaults(
    tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """callbacks.progress_bar._target_=...RichProgressBar and a RichModelSummary(max_depth=2):
    the rich bar counts the 20 training batches, and the one model summary is the rich one,
    two levels deep (so it lists net.layers, which the default depth of 1 does not)."""
    cfg = config(
        tmp_path,
        synthetic_mnist,
        *RICH,
        "callbacks.progress_bar.refresh_rate=1",
        "trainer.enable_progress_bar=true",
        "trainer.enable_model_summary=true",
        "trainer.max_epochs=1",
        *NO_CHECKPOINTS,
    )
    trainer, _, _ = fit(cfg)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, RichProgressBar)
    train_task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (train_task.completed, train_task.total) == (STEPS_PER_EPOCH, STEPS_PER_EPOCH)
    (summary,) = [c for c in trainer.callbacks if isinstance(c, ModelSummary)]
    assert isinstance(summary, RichModelSummary)
    assert "net.layers" in capsys.readouterr().out


# Tuner callbacks -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("scheduler", "factors"), [("none", [1, 1]), ("step", [1, 0.1])])
def test_learning_rate_finder_sets_the_lr_that_training_uses(
    scheduler: str, factors: list[float], tmp_path: Path, synthetic_mnist: Path
) -> None:
    """LearningRateFinder (a 30-step range test; Lightning cannot run more steps than
    max_epochs x batches an epoch, 40 here) sets model.lr to its suggestion, and the training
    uses it: for every step with model.scheduler=none, as the rate that model.scheduler=step
    cuts by 10 after each epoch. Its temporary checkpoint is removed."""
    loops = Loops()
    overrides = (f"model.scheduler={scheduler}", "model.lr_step_epochs=1", *NO_CHECKPOINTS)
    cfg = config(tmp_path, synthetic_mnist, LR_FINDER, *overrides)
    trainer, model, _ = fit(cfg, loops)
    (finder,) = [c for c in trainer.callbacks if isinstance(c, LearningRateFinder)]
    suggestion = finder.optimal_lr.suggestion()
    assert suggestion != pytest.approx(cfg.model.lr)
    assert model.hparams.lr == suggestion
    expected = [suggestion * factor for factor in factors for _ in range(STEPS_PER_EPOCH)]
    assert loops.lrs == pytest.approx(expected)
    assert not list(tmp_path.glob(".lr_find*"))


@pytest.mark.slow
def test_learning_rate_finder_suggestion_drives_the_one_cycle_schedule(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, LR_FINDER, *NO_CHECKPOINTS)
    trainer, _, _ = fit(cfg, loops)
    (finder,) = [c for c in trainer.callbacks if isinstance(c, LearningRateFinder)]
    suggestion = finder.optimal_lr.suggestion()
    assert suggestion != pytest.approx(cfg.model.lr)
    assert max(loops.lrs[1:]) == pytest.approx(suggestion)  # the one-cycle peak
    assert current_lr(trainer) == pytest.approx(suggestion * ONE_CYCLE_END)  # annealed at the end


@pytest.mark.slow
def test_batch_size_finder_trains_with_the_batch_size_it_found(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """BatchSizeFinder (mode power) doubles data.batch_size from 2 until a batch does not fit
    in memory; the training then uses what it found. On a CPU no batch runs out of memory,
    and TensorBatches has no `.dataset` from which Lightning could read the data set's size
    (CombinedLoader._dataset_length), so the search stops at its max_val, 8192: every epoch
    is then one batch of all 1 000 training images (docs/lightning.md)."""
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, BATCH_SIZE_FINDER, *NO_CHECKPOINTS)
    trainer, _, datamodule = fit(cfg, loops)
    (finder,) = [c for c in trainer.callbacks if isinstance(c, BatchSizeFinder)]
    assert finder.optimal_batch_size == datamodule.batch_size == 8192
    assert [len(y) for _, _, _, y in loops.batches] == [1000, 1000]
    assert trainer.global_step == 2
    assert not list(tmp_path.glob(".scale_batch_size*"))


@pytest.mark.slow
def test_batch_size_finder_the_one_cycle_horizon_follows_the_new_batch_size(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """With max_val=256 the finder settles on 256: 4 batches an epoch, 8 steps in 2 epochs,
    and the one-cycle schedule should end annealed after those 8."""
    finder = BATCH_SIZE_FINDER.replace("BatchSizeFinder}", "BatchSizeFinder,max_val:256}")
    cfg = config(tmp_path, synthetic_mnist, finder, *NO_CHECKPOINTS)
    trainer, model, datamodule = fit(cfg)
    assert datamodule.batch_size == 256 and trainer.global_step == 8
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)


# Accelerator ---------------------------------------------------------------------------------


def test_accelerator_auto_is_lightnings_own_choice(
    tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trainer.accelerator=auto (the default) is resolved by Lightning's own auto selection
    (TPU, then MPS, then CUDA, then the CPU), and the data go to the device it chose."""
    choices: list[str] = []
    choose = _AcceleratorConnector._choose_auto_accelerator

    def spy() -> str:
        choices.append(choose())
        return choices[-1]

    monkeypatch.setattr(_AcceleratorConnector, "_choose_auto_accelerator", staticmethod(spy))
    cfg = config(tmp_path, synthetic_mnist, "trainer.accelerator=auto", *NO_CHECKPOINTS)
    assert cfg.trainer.accelerator == "auto"
    trainer = build_trainer(cfg)
    plain = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False)
    assert len(choices) == 2  # once for mnist-train's trainer, once for the plain one
    assert type(trainer.accelerator) is type(plain.accelerator)
    assert trainer.strategy.root_device == plain.strategy.root_device
    datamodule = instantiate(cfg.data)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    assert datamodule.splits["train"][0].device == trainer.strategy.root_device


# The debug presets ---------------------------------------------------------------------------

PRESET_VALUES = {
    "fdr": {"fast_dev_run": True},
    "limit": {
        "max_epochs": 3,
        "limit_train_batches": 10,
        "limit_val_batches": 2,
        "limit_test_batches": 2,
    },
    "overfit": {"overfit_batches": 3, "max_epochs": 20},
    "profiler": {"profiler": "simple", "max_epochs": 2},
}


def test_the_debug_presets_are_all_listed() -> None:
    assert set(DEBUG_PRESETS) == set(PRESET_VALUES)
    for preset in DEBUG_PRESETS:
        text = (CONF / "debug" / f"{preset}.yaml").read_text()
        assert text.startswith("# @package _global_\n") and f"debug={preset}" in text


@pytest.mark.parametrize("preset", sorted(PRESET_VALUES))
def test_each_debug_preset_composes_and_sets_its_trainer_flags(preset: str) -> None:
    """debug=<preset> sets its flags over any experiment preset (debug comes last in the
    defaults list), and the command line still overrides it."""
    cfg = compose("train", overrides=[f"debug={preset}", "experiment=best_cpu"])
    validate(cfg)
    for key, value in PRESET_VALUES[preset].items():
        assert cfg.trainer[key] == value, key
    cfg = compose("train", overrides=[f"debug={preset}", "trainer.max_epochs=7"])
    assert cfg.trainer.max_epochs == 7


@pytest.mark.slow
def test_mnist_train_debug_fdr_with_gradient_clipping_on_the_command_line(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """`mnist-train debug=fdr trainer.gradient_clip_val=0.5 trainer.gradient_clip_algorithm=value`
    (no `+`: the keys are in conf/trainer/default.yaml): one batch of each loop, then the usual
    test and metrics.json; no checkpoint, no TensorBoard log."""
    done = run_train(
        tmp_path,
        synthetic_mnist,
        "debug=fdr",
        "trainer.gradient_clip_val=0.5",
        "trainer.gradient_clip_algorithm=value",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fast_dev_run" in done.stderr
    (run,) = run_dirs(tmp_path)
    metrics = (run / "metrics.json").read_text()
    assert '"global_step": 1' in metrics
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert "gradient_clip_val: 0.5" in saved and "fast_dev_run: true" in saved
