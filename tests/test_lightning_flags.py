"""Lightning's Trainer flags and callbacks, as a user overrides them, do what Lightning's docs say
(docs/lightning.md's table, a test or more per row): a 784-32-10 MLP trained on the synthetic
MNIST (20 steps an epoch) by the trainer mnist-train builds, seen by a probe, the CSV log, files."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import (
    BatchSizeFinder,
    LearningRateFinder,
    ModelSummary,
    RichModelSummary,
    RichProgressBar,
    Timer,
)
from lightning.pytorch.profilers import SimpleProfiler
from omegaconf import DictConfig

import mnist_lightning.cli.train as train_module
from mnist_lightning.cli import pick_device
from mnist_lightning.cli.eval import best_checkpoint
from mnist_lightning.cli.train import build_callbacks, build_trainer
from mnist_lightning.model.classifier import lr_factor
from mnist_lightning.run.config import validate
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, merged
from tests.helpers.tiers import one_of_each_kind

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
    """`+callbacks.<name>={_target_:lightning.pytorch.callbacks.<target>,<args>}`, as the table."""
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
BATCH_SIZE_FINDER = callback("batch_size_finder", "BatchSizeFinder", ",init_val:1024")

pytestmark = pytest.mark.usefixtures("hydra_on_conf")


def config(tmp_path: Path, data_dir: Path, *overrides: str) -> DictConfig:
    """conf/train.yaml with SMALL, then `overrides`, writing under `tmp_path`, validated."""
    base = [*SMALL, *QUIET, f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    cfg = compose("train", overrides=merged(base, overrides))
    validate(cfg)
    return cfg


def fit(cfg: DictConfig, probe: "Probe | None" = None) -> tuple[L.Trainer, "Probe"]:
    """Train as mnist-train does (seed, data module, model, `build_trainer`), with a probe."""
    probe = probe or Probe()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model, _convert_="all")
    trainer = build_trainer(cfg, [*build_callbacks(cfg), probe])
    trainer.fit(model, datamodule=datamodule)
    return trainer, probe


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


class Probe(L.Callback):
    """What the loops did (validation: not the sanity check's), gradients before clipping (right
    after `on_before_optimizer_step`) and after, weights at each epoch's start (after SWA's own
    hook); a constant `cadence` logged on_step lands at Lightning's step-level points."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # epoch, x, y
        self.losses: list[tuple[int, int, float]] = []  # epoch, global batch number, loss
        self.lrs: list[float] = []
        self.validations: list[list[int]] = []  # [global_step, its batches] of each validation
        self.test_batches = 0
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []
        self.weights: dict[int, list[torch.Tensor]] = {}
        self.tested: list[torch.Tensor] = []
        self.autocast: set[tuple[torch.dtype, bool]] = set()
        self.deterministic: list[bool] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.deterministic.append(torch.are_deterministic_algorithms_enabled())
        pl_module.net.layers[0].register_forward_hook(
            lambda m, i, out: self.autocast.add((out.dtype, torch.is_autocast_enabled("cpu")))
        )

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.weights[trainer.current_epoch] = copy(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, batch[0].clone(), batch[1].clone()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.before.append([p.grad.clone() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append((trainer.current_epoch, len(self.losses), float(outputs["loss"])))
        self.after.append([p.grad.clone() for p in pl_module.parameters()])
        pl_module.log("cadence", 1.0, on_step=True, on_epoch=False)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        if trainer.sanity_checking:
            return
        if batch_idx == 0:
            self.validations.append([trainer.global_step, 0])
        self.validations[-1][1] += 1

    def on_test_start(self, trainer, pl_module) -> None:
        self.tested = copy(pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self.test_batches += 1


def copy(module: L.LightningModule) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


FIVE_STEPS = ("trainer.max_epochs=1", "trainer.limit_train_batches=5", *NO_CHECKPOINTS)


# overrides -> the gradients clipping leaves of those before it and their total norm; bf16-mixed:
# forward under bf16 autocast (weights, gradients float32); deterministic=true: torch's algorithms
FIVE_STEP_RUNS = {
    # Lightning's default algorithm, norm: all gradients scaled together to a norm of 0.1
    "trainer.gradient_clip_val=0.1": lambda b, norm: b * (0.1 / (norm + 1e-6)),
    "trainer.gradient_clip_val=0.005 trainer.gradient_clip_algorithm=value": (
        lambda b, _: b.clamp(-0.005, 0.005)  # each element
    ),
    # clipped under bf16-mixed too (a fused AdamW could not be: Lightning unscales first)
    "trainer.precision=bf16-mixed trainer.deterministic=true trainer.gradient_clip_val=0.1": (
        lambda b, norm: b * (0.1 / (norm + 1e-6))
    ),
}


@pytest.mark.parametrize(
    ("overrides", "clipped"), one_of_each_kind(FIVE_STEP_RUNS.items()), ids=list(FIVE_STEP_RUNS)
)
def test_gradient_clipping_bf16_autocast_and_deterministic_do_what_lightnings_docs_say(
    overrides: str, clipped, tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # Lightning sets it for the process:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # it is put back after the test
    saved = torch.are_deterministic_algorithms_enabled()
    try:
        trainer, probe = fit(config(tmp_path, synthetic_mnist, *overrides.split(), *FIVE_STEPS))
    finally:  # Lightning leaves the flag set for the process
        torch.use_deterministic_algorithms(saved)
    assert probe.deterministic == ["deterministic" in overrides]
    bf16 = "bf16" in overrides
    assert probe.autocast == {(torch.bfloat16, True) if bf16 else (torch.float32, False)}
    assert {p.dtype for p in trainer.lightning_module.parameters()} == {torch.float32}
    assert len(probe.before) == len(probe.after) == 5
    for before, after in zip(probe.before, probe.after, strict=True):
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in before])))
        assert norm > 0.5 and max(float(g.abs().max()) for g in before) > 0.05  # so it acted
        for b, a in zip(before, after, strict=True):
            torch.testing.assert_close(a, clipped(b, norm), rtol=1e-4, atol=1e-9)


EVERY_2ND_EPOCH = "trainer.check_val_every_n_epoch=2 trainer.max_epochs=3 model.scheduler=plateau"
# overrides -> training batches, optimizer steps (= Lightning's estimated_stepping_batches,
# the one-cycle horizon, annealed at the end), global_step at each validation, batches of each
# validation, test batches. SMALL: 2 epochs of 20 training, 2 validation and 3 test batches.
LOOPS = {
    "trainer.limit_train_batches=0.25 trainer.limit_val_batches=0.5 "
    "trainer.limit_test_batches=0.5": (10, 10, [5, 10], 1, 1),  # fractions rounded down
    # one optimizer step per 4 batches; the logging steps count steps (test below)
    "trainer.accumulate_grad_batches=4": (40, 10, [5, 10], 2, 3),
    "trainer.val_check_interval=0.25 trainer.max_epochs=1": (20, 20, [5, 10, 15, 20], 2, 3),
    "trainer.val_check_interval=4 trainer.max_epochs=1": (20, 20, [4, 8, 12, 16, 20], 2, 3),
    # the integer 1: after every batch (the float 1.0: once an epoch, the default)
    "trainer.val_check_interval=1 trainer.max_epochs=1": (20, 20, list(range(1, 21)), 2, 3),
    "debug=limit": (20, 20, [10, 20], 2, 2),  # 10, 2 and 2 batches, for SMALL's 2 epochs
    # each epoch the first 3 training batches, unshuffled; 3 of 4 validation batches; all test
    "debug=overfit trainer.max_epochs=2 data.eval_batch_size=50": (6, 6, [3, 6], 3, 6),
    # 5 steps into epoch 2 (-1, null: no epoch limit); log_every_n_steps=0: epoch-end points only
    "trainer.max_steps=25 trainer.max_epochs=-1 trainer.log_every_n_steps=0": (25, 25, [20], 2, 3),
    "trainer.max_steps=25 trainer.max_epochs=null": (25, 25, [20], 2, 3),
    # no sanity check, no checkpoint or log written (the project's checkpoints included)
    "debug=fdr data.eval_batch_size=50": (1, 1, [1], 1, 1),
    "debug=fdr trainer.fast_dev_run=3 data.eval_batch_size=50": (3, 3, [3], 3, 3),
    # after the 2nd of 3 epochs only; the best checkpoint (val/acc), last.ckpt (each epoch) and
    # the plateau schedule (its rate kept: one validation) cope with epochs that have none
    EVERY_2ND_EPOCH: (60, 60, [40], 2, 3),
}


@pytest.mark.parametrize(
    ("overrides", "counts"),
    one_of_each_kind(LOOPS.items(), lambda case: "fdr" in case[0]),
    ids=list(LOOPS),
)
def test_loop_flags_run_each_loop_that_often_and_the_one_cycle_schedule_follows(
    overrides: str, counts: tuple, tmp_path: Path, synthetic_mnist: Path
) -> None:
    batches, steps, validated_at, val_batches, test_batches = counts
    out, plateau = tmp_path / "run", "plateau" in overrides  # (only that row checks checkpoints)
    cfg = config(out, synthetic_mnist, *overrides.split(), *([] if plateau else NO_CHECKPOINTS))
    trainer, probe = fit(cfg)
    trainer.test(trainer.lightning_module, datamodule=trainer.datamodule, verbose=False)
    assert len(probe.batches) == batches and len(probe.lrs) == trainer.global_step == steps
    assert trainer.estimated_stepping_batches == steps
    assert probe.validations == [[step, val_batches] for step in validated_at]
    assert probe.test_batches == test_batches
    end = 1.0 if plateau else ONE_CYCLE_END
    assert current_lr(trainer) == pytest.approx(trainer.lightning_module.hparams.lr * end)
    if "accumulate" in overrides:
        assert steps_of(cfg, "train/loss") == [3, 4, 7, 9]  # after steps 4 and 8, epoch ends
    if "log_every_n_steps=0" in overrides:
        assert steps_of(cfg, "train/loss") == [STEPS_PER_EPOCH - 1, 24]
    if "overfit" in overrides:  # each epoch the first 150 training images, in order
        assert steps_of(cfg, "train/loss") == [2, 3, 5]  # an epoch shorter than the window too
        images, labels = trainer.datamodule.splits["train"]
        for epoch in (0, 1):
            seen = [(x, y) for e, x, y in probe.batches if e == epoch]
            assert torch.equal(torch.cat([y for _, y in seen]), labels[:150])
            assert torch.equal(torch.cat([x for x, _ in seen]), images[:150].float() / 255)
    if "fdr" in overrides:
        assert not out.exists() or not any(out.rglob("*"))
    if plateau:
        assert steps_of(cfg, "val/acc") == [39]
        assert Path(trainer.checkpoint_callback.best_model_path).name == "best-epoch001.ckpt"
        assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 60


@pytest.mark.slow
def test_max_time_and_early_stopping_stop_training_where_lightnings_docs_say(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """max_time=00:00:00:01 (DD:HH:MM:SS) with 1000 epochs: the Timer stops it after 1 s. With
    min_delta 1.0 only the first epoch improves: EarlyStopping, patience 2, stops after the 3rd."""
    limit = ("trainer.max_time=00:00:00:01", "trainer.max_epochs=1000", *NO_CHECKPOINTS)
    trainer, _ = fit(config(tmp_path / "timed", synthetic_mnist, *limit))
    assert the(trainer, Timer).time_elapsed("train") >= 1.0
    assert 0 < trainer.current_epoch < 1000 and trainer.global_step > 0
    lr, horizon = trainer.lightning_module.hparams.lr, 1000 * STEPS_PER_EPOCH  # max_epochs's
    assert current_lr(trainer) == pytest.approx(
        lr * lr_factor("onecycle", trainer.global_step, horizon)
    )
    ten = ("trainer.max_epochs=10", *NO_CHECKPOINTS)
    trainer, _ = fit(config(tmp_path / "early", synthetic_mnist, EARLY_STOPPING, *ten))
    assert trainer.global_step == 3 * STEPS_PER_EPOCH  # of max_epochs=10


@pytest.mark.slow
def test_log_every_n_steps_lr_monitor_step_checkpoints_the_profiler_and_rich_in_one_run(
    tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Points at Lightning's step-level points (where the probe's `cadence` lands) and each
    epoch's end; the rich summary, two levels deep, lists net.layers (depth 1 would not)."""
    flags = ("trainer.log_every_n_steps=8", LR_MONITOR, STEP_CHECKPOINTS, "debug=profiler")
    rich = (
        "callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar",
        callback("model_summary", "RichModelSummary", ",max_depth:2"),
        "callbacks.progress_bar.refresh_rate=1",
        "trainer.enable_progress_bar=true",
        "trainer.enable_model_summary=true",
    )
    cfg = config(tmp_path, synthetic_mnist, *flags, *rich)
    trainer, probe = fit(cfg)
    steps, windows, window = [7, 15, 23, 31, 39], [], []  # (step, mean loss) of each window:
    for i, (epoch, step, loss) in enumerate(probe.losses):  # closed each 8th step, epoch end
        window.append(loss)
        if (step + 1) % 8 == 0 or i + 1 == len(probe.losses) or probe.losses[i + 1][0] != epoch:
            windows.append((step, sum(window) / len(window)))
            window = []
    assert logged(cfg, "train/loss") == [(s, pytest.approx(v, rel=1e-5)) for s, v in windows]
    assert [s for s, _ in windows] == sorted([*steps, 19])
    assert steps_of(cfg, "train/acc") == steps_of(cfg, "train/lr") == sorted([*steps, 19])
    assert steps_of(cfg, "cadence") == steps
    train_lr = dict(logged(cfg, "train/lr"))
    for group in ("pg1", "pg2"):  # weights with weight decay, then biases without
        expected = [(s, pytest.approx(train_lr[s], rel=1e-6)) for s in steps]
        assert logged(cfg, f"lr-AdamW/{group}") == expected
    written = sorted((tmp_path / "steps").iterdir())
    assert [p.name for p in written] == [f"step={s}.ckpt" for s in (10, 20, 30, 40)]
    assert [torch.load(p, weights_only=True)["global_step"] for p in written] == [10, 20, 30, 40]
    assert isinstance(trainer.profiler, SimpleProfiler)
    durations = trainer.profiler.recorded_durations
    assert len(durations["[Strategy]SingleDeviceStrategy.training_step"]) == 2 * STEPS_PER_EPOCH
    assert len(durations["[LightningModule]MNISTClassifier.optimizer_step"]) == 40
    assert "run_training_epoch" in trainer.profiler.summary()
    bar = trainer.progress_bar_callback
    assert isinstance(bar, RichProgressBar)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.completed, task.total) == (STEPS_PER_EPOCH, STEPS_PER_EPOCH)
    assert isinstance(the(trainer, ModelSummary), RichModelSummary)
    assert "net.layers" in capsys.readouterr().out


@pytest.mark.slow
def test_stochastic_weight_averaging_leaves_the_average_which_mnist_train_tests(
    tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 3 epochs of 5 steps: from the 2nd (Lightning counts swa_epoch_start from 1) SWALR
    reaches 0.001 after one epoch; mnist-train saves the model it ends with as best-swa.ckpt and
    tests it: the average of the weights at the start of epochs 2 and 3; so does the run resumed
    at its end (stopped as it wrote its results), where Lightning's fit runs no SWA hook."""
    probe = Probe()
    with_probe = lambda cfg, callbacks: build_trainer(cfg, [*callbacks, probe])  # noqa: E731
    monkeypatch.setattr(train_module, "build_trainer", with_probe)
    short = ("trainer.max_epochs=3", "trainer.limit_train_batches=5")
    cfg = config(tmp_path, synthetic_mnist, SWA, *short)
    for resume_from in (None, str(tmp_path / "checkpoints" / "last.ckpt")):
        train_module.fit_and_test(cfg, tmp_path, resume_from)
        assert probe.lrs[10:] == pytest.approx([0.001] * 5)
        starts = zip(probe.weights[1], probe.weights[2], strict=True)  # of epochs 2 and 3
        for tested, (epoch2, epoch3) in zip(probe.tested, starts, strict=True):
            torch.testing.assert_close(tested, (epoch2 + epoch3) / 2)
            assert not torch.allclose(tested, epoch3)
        assert best_checkpoint(tmp_path) == tmp_path / "checkpoints" / "best-swa.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tuner", "scheduler"),
    [(LR_FINDER, "step"), (LR_FINDER, "onecycle"), (BATCH_SIZE_FINDER, "onecycle")],
    ids=["lr-finder-step", "lr-finder-onecycle", "batch-size-finder"],
)
def test_the_tuners_choice_is_what_training_then_uses(
    tuner: str, scheduler: str, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """LearningRateFinder: a 30-step range test (at most max_epochs x batches, 40 here) sets
    model.lr. BatchSizeFinder on a CPU: no batch runs out of memory and Lightning cannot read our
    batches' data set size, so it stops at its max_val, 8192: an epoch is one batch of all 1 000
    training images (docs/lightning.md). The schedule follows; the tuner's checkpoint is removed."""
    schedule = (f"model.scheduler={scheduler}", "model.lr_step_epochs=1")
    cfg = config(tmp_path, synthetic_mnist, tuner, *schedule, *NO_CHECKPOINTS)
    trainer, probe = fit(cfg)
    lr = trainer.lightning_module.hparams.lr
    if tuner == BATCH_SIZE_FINDER:
        found = the(trainer, BatchSizeFinder).optimal_batch_size
        assert found == trainer.datamodule.batch_size == 8192 and trainer.global_step == 2
        assert [len(y) for _, _, y in probe.batches] == [1000, 1000]
    else:  # its suggestion: the rate step cuts by 10 each epoch, the one-cycle peak
        suggestion = the(trainer, LearningRateFinder).optimal_lr.suggestion()
        assert lr == suggestion != pytest.approx(cfg.model.lr)
        assert scheduler == "step" or max(probe.lrs[1:]) == pytest.approx(lr)
    if scheduler == "step":
        assert probe.lrs == pytest.approx([lr] * STEPS_PER_EPOCH + [lr / 10] * STEPS_PER_EPOCH)
    else:  # annealed at the end of the horizon
        assert current_lr(trainer) == pytest.approx(lr * ONE_CYCLE_END)
    assert not list(tmp_path.glob(".*.ckpt"))  # .lr_find_*.ckpt, .scale_batch_size_*.ckpt


def test_accelerator_and_device_auto_are_lightnings_own_choice(
    tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trainer.accelerator=auto, and the data go to that device; mnist-eval's and mnist-predict's
    device=auto: what Lightning's own auto selection picks (MPS, CUDA, CPU)."""
    cfg = config(tmp_path, synthetic_mnist, "trainer.accelerator=auto", *NO_CHECKPOINTS)
    trainer = build_trainer(cfg, build_callbacks(cfg))
    plain = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False)
    assert type(trainer.accelerator) is type(plain.accelerator)
    assert trainer.strategy.root_device == plain.strategy.root_device
    datamodule = instantiate(cfg.data)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    assert datamodule.splits["train"][0].device == trainer.strategy.root_device
    assert pick_device("auto").type == type(plain.accelerator).name()
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    assert pick_device("auto") == torch.device("cuda")
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: True))
    assert pick_device("auto") == torch.device("mps")
