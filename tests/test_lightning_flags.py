"""Lightning's Trainer flags and built-in callbacks, given through mnist-train's config, do what
Lightning's documentation says (docs/lightning.md's table, one test or more per row).

Each test composes conf/train.yaml with the override a user would type, builds the trainer as
mnist-train does (`build_trainer`), trains a 784-32-10 MLP on the synthetic MNIST in this
process (20 steps an epoch) and observes what happened: probe callbacks, the CSV log, files.
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
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.config import validate
from tests.helpers.commands import ROOT, run_dirs
from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, merged

CONF = ROOT / "conf"
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


def callback(name: str, target: str, args: str = "") -> str:
    """`+callbacks.<name>={_target_:lightning.pytorch.callbacks.<target>,<args>}` as in the
    table (there quoted for the shell)."""
    return f"+callbacks.{name}={{_target_:lightning.pytorch.callbacks.{target}{args}}}"


# The table's EarlyStopping has patience:3; min_delta:1.0 forces the stop here.
EARLY_STOPPING = callback(
    "early_stopping", "EarlyStopping", ",monitor:val/acc,mode:max,patience:2,min_delta:1.0"
)
LR_MONITOR = callback("lr_monitor", "LearningRateMonitor", ",logging_interval:step")
STEP_CHECKPOINTS = callback(
    "step_checkpoint",
    "ModelCheckpoint",
    ',dirpath:${paths.output_dir}/steps,filename:"{step}",every_n_train_steps:10,save_top_k:-1',
)
SWA = callback(
    "swa", "StochasticWeightAveraging", ",swa_lrs:0.001,swa_epoch_start:2,annealing_epochs:1"
)
LR_FINDER = callback("lr_finder", "LearningRateFinder", ",num_training_steps:30")
BATCH_SIZE_FINDER = callback("batch_size_finder", "BatchSizeFinder")

pytestmark = pytest.mark.usefixtures("hydra_on_conf")


def config(tmp_path: Path, data_dir: Path, *overrides: str) -> DictConfig:
    """conf/train.yaml with SMALL (replaced key by key by `overrides`), writing under
    `tmp_path`, checked by `validate` as mnist-train does."""
    base = [*SMALL, *QUIET, f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    cfg = compose("train", overrides=merged(base, overrides))
    validate(cfg)
    return cfg


def fit(cfg: DictConfig, *probes: L.Callback) -> tuple[L.Trainer, MNISTClassifier, object]:
    """Train as mnist-train does (seed, data module, model, `build_trainer`), plus `probes`."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model, _convert_="all")
    trainer = build_trainer(cfg)
    trainer.callbacks.extend(probes)
    trainer.fit(model, datamodule=datamodule)
    return trainer, model, datamodule


def logged(cfg: DictConfig, name: str) -> list[tuple[int, float]]:
    """(step, value) of every point of `name` in the run's CSV log, in order."""
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv", newline="") as f:
        return [(int(row["step"]), float(row[name])) for row in csv.DictReader(f) if row.get(name)]


def steps_of(cfg: DictConfig, name: str) -> list[int]:
    return [step for step, _ in logged(cfg, name)]


def current_lr(trainer: L.Trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


def the(trainer: L.Trainer, kind: type) -> L.Callback:
    (found,) = [c for c in trainer.callbacks if isinstance(c, kind)]
    return found


class Loops(L.Callback):
    """What the loops did: training batches, losses, optimizer steps and their learning rates,
    validation runs (not the sanity check) and their batches, test batches; the gradients
    before clipping (Lightning clips right after `on_before_optimizer_step`) and after."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # epoch, x, y
        self.losses: list[tuple[int, int, float]] = []  # epoch, global batch number, loss
        self.lrs: list[float] = []
        self.validations: list[int] = []  # global_step at the end of each validation run
        self.val_batches: list[int] = []
        self.test_batches = 0
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, batch[0].clone(), batch[1].clone()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.before.append([p.grad.clone() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append((trainer.current_epoch, len(self.losses), float(outputs["loss"])))
        self.after.append([p.grad.clone() for p in pl_module.parameters()])

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
        return [(x, y) for e, x, y in self.batches if e == epoch]


def total_norm(grads: list[torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


FIVE_STEPS = ("trainer.max_epochs=1", "trainer.limit_train_batches=5", *NO_CHECKPOINTS)


def test_gradient_clip_val_clips_the_norm_of_all_gradients_together(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """gradient_clip_val=0.1 (Lightning's default algorithm, norm): each step's gradients are
    scaled together to a total L2 norm of 0.1."""
    loops = Loops()
    fit(config(tmp_path, synthetic_mnist, "trainer.gradient_clip_val=0.1", *FIVE_STEPS), loops)
    assert len(loops.before) == len(loops.after) == 5
    for before, after in zip(loops.before, loops.after, strict=True):
        norm = total_norm(before)
        assert norm > 0.5 and total_norm(after) == pytest.approx(0.1, rel=1e-4)
        for b, a in zip(before, after, strict=True):  # one factor for every element
            torch.testing.assert_close(a, b * (0.1 / (norm + 1e-6)), rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_gradient_clip_algorithm_value_clamps_each_gradient_element(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    loops = Loops()
    clip = ("trainer.gradient_clip_val=0.005", "trainer.gradient_clip_algorithm=value")
    fit(config(tmp_path, synthetic_mnist, *clip, *FIVE_STEPS), loops)
    assert len(loops.after) == 5
    for before, after in zip(loops.before, loops.after, strict=True):
        assert max(float(g.abs().max()) for g in before) > 0.05  # so the clamp acted
        for b, a in zip(before, after, strict=True):
            torch.testing.assert_close(a, b.clamp(-0.005, 0.005), rtol=0, atol=0)
        assert total_norm(after) > 0.1  # not a norm clip to 0.005


@pytest.mark.slow
def test_accumulate_grad_batches_steps_the_optimizer_once_every_k_batches(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """40 batches make 10 optimizer steps; global_step, the one-cycle horizon and the logging
    steps count those: a point after steps 4 and 8 (x = 3, 7) and at each epoch's end."""
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, "trainer.accumulate_grad_batches=4", *NO_CHECKPOINTS)
    trainer, model, _ = fit(cfg, loops)
    assert len(loops.batches) == 2 * STEPS_PER_EPOCH
    assert len(loops.lrs) == trainer.global_step == trainer.estimated_stepping_batches == 10
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)
    assert steps_of(cfg, "train/loss") == [3, 4, 7, 9]


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_the_cpu_under_bf16_autocast(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    seen: set[tuple[torch.dtype, bool]] = set()

    class Autocast(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            pl_module.net.layers[0].register_forward_hook(
                lambda m, i, output: seen.add((output.dtype, torch.is_autocast_enabled("cpu")))
            )

    cfg = config(tmp_path, synthetic_mnist, "trainer.precision=bf16-mixed", *FIVE_STEPS)
    trainer, model, _ = fit(cfg, Autocast())
    assert trainer.precision == "bf16-mixed" and seen == {(torch.bfloat16, True)}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("interval", "validated_at"),
    [
        ("0.25", [5, 10, 15, 20]),  # a fraction of an epoch: 4 times an epoch
        ("4", [4, 8, 12, 16, 20]),  # every 4 training batches
        ("1.0", [20]),  # the float 1.0 is once an epoch...
        ("1", list(range(1, 21))),  # ...and the integer 1 after every batch
    ],
)
def test_val_check_interval_runs_validation_that_often(
    interval: str, validated_at: list[int], tmp_path: Path, synthetic_mnist: Path
) -> None:
    loops = Loops()
    fit(
        config(
            tmp_path,
            synthetic_mnist,
            f"trainer.val_check_interval={interval}",
            *FIVE_STEPS[:1],
            *NO_CHECKPOINTS,
        ),
        loops,
    )
    assert loops.validations == validated_at


@pytest.mark.slow
def test_check_val_every_n_epoch_validates_every_nth_epoch_only(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Over 3 epochs: validation after the 2nd only; the best checkpoint (on val/acc),
    last.ckpt (every epoch, the last included) and the plateau schedule (steps on val/acc)
    cope with epochs that have none."""
    loops = Loops()
    every = ("trainer.check_val_every_n_epoch=2", "trainer.max_epochs=3", "model.scheduler=plateau")
    cfg = config(tmp_path, synthetic_mnist, *every)
    trainer, _, _ = fit(cfg, loops)
    assert loops.validations == [2 * STEPS_PER_EPOCH] and steps_of(cfg, "val/acc") == [39]
    assert Path(trainer.checkpoint_callback.best_model_path).name == "best-epoch001.ckpt"
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 * STEPS_PER_EPOCH


LIMITS = ("trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches")


@pytest.mark.slow
@pytest.mark.parametrize(
    "limits",
    [
        ("debug=limit",),
        tuple(f"{k}={v}" for k, v in zip(LIMITS, (5, 1, 1), strict=True)),
        tuple(f"{k}={v}" for k, v in zip(LIMITS, (0.25, 0.5, 0.5), strict=True)),
    ],
    ids=["debug=limit", "counts", "fractions"],
)
def test_limit_batches_limit_each_loop_and_the_one_cycle_schedule_follows(
    limits: tuple[str, ...], tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Each loop runs that many of its 20, 2 and 3 batches (fractions rounded down; debug=limit
    10, 2 and 2, for SMALL's 2 epochs), and the one-cycle schedule ends annealed."""
    loops = Loops()
    trainer, model, datamodule = fit(
        config(tmp_path, synthetic_mnist, *limits, *NO_CHECKPOINTS), loops
    )
    trainer.test(model, datamodule=datamodule, verbose=False)
    train, val, test = (10, 2, 2) if limits == ("debug=limit",) else (5, 1, 1)
    assert [len(loops.epoch_batches(epoch)) for epoch in range(2)] == [train, train]
    assert trainer.global_step == trainer.estimated_stepping_batches == 2 * train
    assert loops.val_batches == [val, val] and loops.test_batches == test
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)


@pytest.mark.parametrize(
    ("flag", "batches"), [("true", 1), pytest.param("3", 3, marks=pytest.mark.slow)]
)
def test_fast_dev_run_runs_n_batches_of_each_loop_and_writes_nothing(
    flag: str, batches: int, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """N training, validation and test batches, no sanity check, no checkpoint or log written
    (the project's checkpoint callbacks included)."""
    loops, out = Loops(), tmp_path / "run"
    overrides = ("debug=fdr", f"trainer.fast_dev_run={flag}", "data.eval_batch_size=50")
    trainer, model, datamodule = fit(config(out, synthetic_mnist, *overrides), loops)
    trainer.test(model, datamodule=datamodule, verbose=False)
    assert len(loops.batches) == len(loops.lrs) == trainer.global_step == batches
    assert loops.val_batches == [batches] and loops.test_batches == batches
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.slow
def test_overfit_batches_trains_on_the_same_batches_every_epoch(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """debug=overfit: the first 3 batches of the training split, in order, every epoch;
    limit_train_batches=3, which keeps shuffling, sees different ones."""
    overfit, limited = Loops(), Loops()
    cfg = config(
        tmp_path / "o", synthetic_mnist, "debug=overfit", "trainer.max_epochs=2", *NO_CHECKPOINTS
    )
    trainer, model, datamodule = fit(cfg, overfit)
    first, second = overfit.epoch_batches(0), overfit.epoch_batches(1)
    assert len(first) == len(second) == 3
    assert all(
        torch.equal(x0, x1) and torch.equal(y0, y1)
        for (x0, y0), (x1, y1) in zip(first, second, strict=True)
    )
    images, labels = datamodule.splits["train"]
    assert torch.equal(torch.cat([y for _, y in first]), labels[:150])
    assert torch.equal(torch.cat([x for x, _ in first]), images[:150].float() / 255)
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)  # 6 steps
    fit(
        config(tmp_path / "l", synthetic_mnist, "trainer.limit_train_batches=3", *NO_CHECKPOINTS),
        limited,
    )
    shuffled = zip(limited.epoch_batches(0), limited.epoch_batches(1), strict=True)
    assert not all(torch.equal(y0, y1) for (_, y0), (_, y1) in shuffled)


@pytest.mark.slow
def test_max_time_stops_training_after_that_long(tmp_path: Path, synthetic_mnist: Path) -> None:
    """max_time=00:00:00:01 (DD:HH:MM:SS) with 1000 epochs: the Timer stops it after 1 s."""
    limit = ("trainer.max_time=00:00:00:01", "trainer.max_epochs=1000")
    trainer, _, _ = fit(config(tmp_path, synthetic_mnist, *limit, *NO_CHECKPOINTS))
    assert the(trainer, Timer).time_elapsed("train") >= 1.0
    assert 0 < trainer.current_epoch < 1000 and trainer.global_step > 0


@pytest.mark.slow
def test_max_steps_stops_at_exactly_that_step(tmp_path: Path, synthetic_mnist: Path) -> None:
    """25 optimizer steps, 5 into the second epoch; the one-cycle horizon is those 25."""
    loops = Loops()
    limit = ("trainer.max_steps=25", "trainer.max_epochs=12")
    trainer, model, _ = fit(config(tmp_path, synthetic_mnist, *limit, *NO_CHECKPOINTS), loops)
    assert trainer.global_step == len(loops.lrs) == len(loops.batches) == 25
    assert len(loops.epoch_batches(1)) == 5 and trainer.estimated_stepping_batches == 25
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)


@pytest.mark.slow
def test_early_stopping_stops_when_val_acc_stops_improving(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """With min_delta 1.0 only the first epoch improves: patience 2 stops after the third."""
    cfg = config(
        tmp_path, synthetic_mnist, EARLY_STOPPING, "trainer.max_epochs=10", *NO_CHECKPOINTS
    )
    trainer, _, _ = fit(cfg)
    stopper = the(trainer, EarlyStopping)
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/acc", "max", 2)
    assert stopper.stopped_epoch == 2 and trainer.global_step == 3 * STEPS_PER_EPOCH


class LightningCadence(L.Callback):
    """A constant logged at every step with `on_step=True`: its points land where Lightning's
    log_every_n_steps puts step-level points."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("cadence", 1.0, on_step=True, on_epoch=False)


def window_means(losses: list[tuple[int, int, float]], every: int) -> list[tuple[int, float]]:
    """(step, mean loss) of each logging window: closed after every `every`-th step and at each
    epoch's end."""
    points, window = [], []
    for i, (epoch, step, loss) in enumerate(losses):
        window.append(loss)
        if (step + 1) % every == 0 or i + 1 == len(losses) or losses[i + 1][0] != epoch:
            points.append((step, sum(window) / len(window)))
            window = []
    return points


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every", "cadence", "points"), [(8, [7, 15, 23, 31, 39], [7, 15, 19, 23, 31, 39])]
)
def test_log_every_n_steps_logs_train_means_at_lightnings_logging_steps(
    every: int, cadence: list[int], points: list[int], tmp_path: Path, synthetic_mnist: Path
) -> None:
    """train/loss, train/acc and train/lr get a point where Lightning logs step-level points,
    and one for what is left of the window at an epoch's end; train/loss is the window's mean."""
    loops = Loops()
    cfg = config(tmp_path, synthetic_mnist, f"trainer.log_every_n_steps={every}", *NO_CHECKPOINTS)
    fit(cfg, loops, LightningCadence())
    assert steps_of(cfg, "cadence") == cadence
    expected = window_means(loops.losses, every)
    assert logged(cfg, "train/loss") == [(s, pytest.approx(v, rel=1e-5)) for s, v in expected]
    assert [s for s, _ in expected] == points
    assert steps_of(cfg, "train/acc") == steps_of(cfg, "train/lr") == points


@pytest.mark.slow
def test_an_epoch_shorter_than_log_every_n_steps_still_gets_train_points(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    test_log_every_n_steps_logs_train_means_at_lightnings_logging_steps(
        50, [], [19, 39], tmp_path, synthetic_mnist
    )


@pytest.mark.slow
def test_learning_rate_monitor_logs_once_a_window_beside_train_loss(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """One lr point per group and logging window, at train/loss's steps, equal to train/lr."""
    cfg = config(
        tmp_path, synthetic_mnist, LR_MONITOR, "trainer.log_every_n_steps=8", *NO_CHECKPOINTS
    )
    fit(cfg)
    train_lr = dict(logged(cfg, "train/lr"))
    for group in ("pg1", "pg2"):  # weights with weight decay, then biases without
        points = logged(cfg, f"lr-AdamW/{group}")
        assert [step for step, _ in points] == [7, 15, 23, 31, 39]
        assert all(lr == pytest.approx(train_lr[step], rel=1e-6) for step, lr in points)


@pytest.mark.slow
def test_profiler_simple_times_every_training_step(tmp_path: Path, synthetic_mnist: Path) -> None:
    trainer, _, _ = fit(config(tmp_path, synthetic_mnist, "debug=profiler", *NO_CHECKPOINTS))
    assert isinstance(trainer.profiler, SimpleProfiler)
    durations = trainer.profiler.recorded_durations
    assert len(durations["[Strategy]SingleDeviceStrategy.training_step"]) == 2 * STEPS_PER_EPOCH
    assert len(durations["[LightningModule]MNISTClassifier.optimizer_step"]) == 40
    assert "run_training_epoch" in trainer.profiler.summary()


@pytest.mark.slow
def test_deterministic_true_switches_on_torchs_deterministic_algorithms(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """On during training (off by default), and two runs end with identical weights."""
    flags: list[bool] = []

    class Flag(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            flags.append(torch.are_deterministic_algorithms_enabled())

    saved = torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        weights = [
            fit(
                config(tmp_path / run, synthetic_mnist, "trainer.deterministic=true", *FIVE_STEPS),
                Flag(),
            )[1].state_dict()
            for run in ("a", "b")
        ]
        fit(config(tmp_path / "c", synthetic_mnist, *FIVE_STEPS), Flag())
    finally:  # Lightning leaves the flag (and CUBLAS_WORKSPACE_CONFIG) set for the process
        torch.use_deterministic_algorithms(saved[0])
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        if saved[1] is not None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[1]
    assert flags == [True, True, False]
    assert all(torch.equal(tensor, weights[1][name]) for name, tensor in weights[0].items())


@pytest.mark.slow
def test_model_checkpoint_every_n_train_steps_writes_at_steps_10_20_30_40(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    fit(config(tmp_path, synthetic_mnist, STEP_CHECKPOINTS))
    written = sorted((tmp_path / "steps").iterdir())
    assert [p.name for p in written] == [f"step={s}.ckpt" for s in (10, 20, 30, 40)]
    for path in written:
        step = torch.load(path, map_location="cpu", weights_only=True)["global_step"]
        assert path.name == f"step={step}.ckpt"


@pytest.mark.slow
def test_model_checkpoint_train_time_interval_writes_mid_epoch(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """The periodic checkpoint rewrites last.ckpt mid-epoch when its interval has passed: at
    0.1 s with 20 ms steps several times an epoch; at the default 300 s never here."""

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
    assert len([step for step in short.steps if step % STEPS_PER_EPOCH]) >= 2, short.steps
    assert (tmp_path / "short" / "checkpoints" / "last.ckpt").is_file()
    assert not [step for step in default.steps if step % STEPS_PER_EPOCH], default.steps


class EpochStartWeights(L.Callback):
    """The weights at the start of each epoch (after SWA's own hook), the learning rates, and
    the weights after training and at the start of the test."""

    def __init__(self) -> None:
        self.weights: dict[int, list[torch.Tensor]] = {}
        self.lrs: dict[int, list[float]] = {}
        self.final: list[torch.Tensor] = []
        self.tested: list[torch.Tensor] = []

    def copy(self, module: L.LightningModule) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.weights[trainer.current_epoch] = self.copy(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.setdefault(trainer.current_epoch, []).append(current_lr(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        self.final = self.copy(pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self.tested = self.copy(pl_module)


@pytest.mark.slow
def test_stochastic_weight_averaging_leaves_the_model_the_average(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Over 3 epochs: from the 2nd (Lightning counts swa_epoch_start from 1) SWALR reaches
    0.001 after one epoch, and the model ends as the average of the weights at the start of
    epochs 2 and 3."""
    probe = EpochStartWeights()
    trainer, _, _ = fit(
        config(tmp_path, synthetic_mnist, SWA, "trainer.max_epochs=3", *NO_CHECKPOINTS), probe
    )
    assert the(trainer, StochasticWeightAveraging)
    assert probe.lrs[2] == pytest.approx([0.001] * STEPS_PER_EPOCH)
    for i, final in enumerate(probe.final):
        torch.testing.assert_close(final, (probe.weights[1][i] + probe.weights[2][i]) / 2)
        assert not torch.allclose(final, probe.weights[2][i])


@pytest.mark.slow
def test_mnist_train_tests_the_averaged_weights_with_swa(
    tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mnist-train tests the average SWA leaves, saved as best-swa.ckpt, which mnist-eval reads."""
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
    assert best_checkpoint(tmp_path) == tmp_path / "checkpoints" / "best-swa.ckpt"


@pytest.mark.slow
def test_rich_progress_bar_and_rich_model_summary_replace_the_defaults(
    tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rich bar counts the 20 training batches; the one model summary is the rich one, two
    levels deep (it lists net.layers, which the default depth of 1 does not)."""
    cfg = config(
        tmp_path,
        synthetic_mnist,
        "callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar",
        callback("model_summary", "RichModelSummary", ",max_depth:2"),
        "callbacks.progress_bar.refresh_rate=1",
        "trainer.enable_progress_bar=true",
        "trainer.enable_model_summary=true",
        "trainer.max_epochs=1",
        *NO_CHECKPOINTS,
    )
    trainer, _, _ = fit(cfg)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, RichProgressBar)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.completed, task.total) == (STEPS_PER_EPOCH, STEPS_PER_EPOCH)
    assert isinstance(the(trainer, ModelSummary), RichModelSummary)
    assert "net.layers" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(("scheduler", "factors"), [("none", [1, 1]), ("step", [1, 0.1])])
def test_learning_rate_finder_sets_the_lr_that_training_uses(
    scheduler: str, factors: list[float], tmp_path: Path, synthetic_mnist: Path
) -> None:
    """A 30-step range test (at most max_epochs x batches, 40 here) sets model.lr to its
    suggestion: every step's rate with scheduler=none, the rate step cuts by 10 each epoch.
    Its temporary checkpoint is removed."""
    loops = Loops()
    schedule = (f"model.scheduler={scheduler}", "model.lr_step_epochs=1")
    cfg = config(tmp_path, synthetic_mnist, LR_FINDER, *schedule, *NO_CHECKPOINTS)
    trainer, model, _ = fit(cfg, loops)
    suggestion = the(trainer, LearningRateFinder).optimal_lr.suggestion()
    assert suggestion != pytest.approx(cfg.model.lr) and model.hparams.lr == suggestion
    assert loops.lrs == pytest.approx(
        [suggestion * f for f in factors for _ in range(STEPS_PER_EPOCH)]
    )
    assert not list(tmp_path.glob(".lr_find*"))


@pytest.mark.slow
def test_learning_rate_finder_suggestion_drives_the_one_cycle_schedule(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    loops = Loops()
    trainer, _, _ = fit(config(tmp_path, synthetic_mnist, LR_FINDER, *NO_CHECKPOINTS), loops)
    suggestion = the(trainer, LearningRateFinder).optimal_lr.suggestion()
    assert max(loops.lrs[1:]) == pytest.approx(suggestion)  # the one-cycle peak
    assert current_lr(trainer) == pytest.approx(suggestion * ONE_CYCLE_END)  # annealed


@pytest.mark.slow
def test_batch_size_finder_trains_with_the_batch_size_it_found(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """On a CPU no batch runs out of memory, and Lightning cannot read our batches' data set
    size, so the search stops at its max_val, 8192: an epoch is one batch of all 1 000
    training images (docs/lightning.md)."""
    loops = Loops()
    trainer, _, datamodule = fit(
        config(tmp_path, synthetic_mnist, BATCH_SIZE_FINDER, *NO_CHECKPOINTS), loops
    )
    assert the(trainer, BatchSizeFinder).optimal_batch_size == datamodule.batch_size == 8192
    assert [len(y) for _, _, y in loops.batches] == [1000, 1000] and trainer.global_step == 2
    assert not list(tmp_path.glob(".scale_batch_size*"))


@pytest.mark.slow
def test_batch_size_finder_the_one_cycle_horizon_follows_the_new_batch_size(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """max_val=256: 4 batches an epoch, 8 steps, and the schedule ends annealed after those."""
    finder = callback("batch_size_finder", "BatchSizeFinder", ",max_val:256")
    trainer, model, datamodule = fit(config(tmp_path, synthetic_mnist, finder, *NO_CHECKPOINTS))
    assert datamodule.batch_size == 256 and trainer.global_step == 8
    assert current_lr(trainer) == pytest.approx(model.hparams.lr * ONE_CYCLE_END)


def test_accelerator_auto_is_lightnings_own_choice(
    tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved by Lightning's own auto selection, and the data go to the device it chose."""
    choices: list[str] = []
    choose = _AcceleratorConnector._choose_auto_accelerator
    monkeypatch.setattr(
        _AcceleratorConnector,
        "_choose_auto_accelerator",
        staticmethod(lambda: choices.append(choose()) or choices[-1]),
    )
    cfg = config(tmp_path, synthetic_mnist, "trainer.accelerator=auto", *NO_CHECKPOINTS)
    trainer = build_trainer(cfg)
    plain = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False)
    assert len(choices) == 2  # once for mnist-train's trainer, once for the plain one
    assert type(trainer.accelerator) is type(plain.accelerator)
    assert trainer.strategy.root_device == plain.strategy.root_device
    datamodule = instantiate(cfg.data)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    assert datamodule.splits["train"][0].device == trainer.strategy.root_device


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


@pytest.mark.parametrize("preset", sorted(PRESET_VALUES))
def test_each_debug_preset_composes_and_sets_its_trainer_flags(preset: str) -> None:
    """debug=<preset> wins over an experiment preset (it comes last), the command line over it."""
    assert {p.stem for p in (CONF / "debug").glob("*.yaml")} == set(PRESET_VALUES)
    text = (CONF / "debug" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_\n") and f"debug={preset}" in text
    cfg = compose("train", overrides=[f"debug={preset}", "experiment=best_cpu"])
    validate(cfg)
    assert {key: cfg.trainer[key] for key in PRESET_VALUES[preset]} == PRESET_VALUES[preset]
    assert (
        compose("train", overrides=[f"debug={preset}", "trainer.max_epochs=7"]).trainer.max_epochs
        == 7
    )


@pytest.mark.slow
def test_mnist_train_debug_fdr_with_gradient_clipping_on_the_command_line(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """`mnist-train debug=fdr trainer.gradient_clip_val=0.5 trainer.gradient_clip_algorithm=value`
    (no `+`: the keys are in conf/trainer/default.yaml): one batch of each loop, then the test
    and metrics.json; no checkpoint, no TensorBoard log."""
    clip = ["debug=fdr", "trainer.gradient_clip_val=0.5", "trainer.gradient_clip_algorithm=value"]
    done = run_console("train", [*SMALL, *clip], tmp_path, {"MNIST_DATA_DIR": str(synthetic_mnist)})
    assert done.returncode == 0 and "fast_dev_run" in done.stderr, done.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert '"global_step": 1' in (run / "metrics.json").read_text()
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert "gradient_clip_val: 0.5" in saved and "fast_dev_run: true" in saved
