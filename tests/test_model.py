"""The network (`MLP`) and the LightningModule (`MNISTClassifier`)."""

import contextlib
import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LambdaCallback
from omegaconf import OmegaConf
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mnist_lightning.cli.eval import main as mnist_eval
from mnist_lightning.data.augment import Augment
from mnist_lightning.data.datamodule import TensorBatches
from mnist_lightning.errors import CheckpointError
from mnist_lightning.model.classifier import SCHEDULERS, MNISTClassifier, lr_factor
from mnist_lightning.model.mlp import MAX_WIDTH, MLP, MNIST_MEAN, MNIST_STD, size_problem
from mnist_lightning.run.checkpoint import load_classifier
from tests.helpers.tiers import one_of_each_kind

# Lightning's notes on the bare training loops here
pytestmark = [
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no"),
    pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\)"),
    pytest.mark.filterwarnings("ignore:.*ReduceLROnPlateau conditioned on metric"),
]


def linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize(
    ("kwargs", "layers"),
    [
        ({"hidden_dims": []}, "Linear"),  # multinomial logistic regression
        ({"hidden_dims": [8, 6]}, "Linear ReLU Linear ReLU Linear"),
        ({"hidden_dims": [8], "activation": "gelu"}, "Linear GELU Linear"),
        ({"hidden_dims": [8], "activation": "leaky_relu"}, "Linear LeakyReLU Linear"),
        ({"hidden_dims": [8, 8], "dropout": 0.25}, "Linear ReLU Dropout0.25 " * 2 + "Linear"),
        (
            {"hidden_dims": [8, 8, 8], "dropout": [0.1, 0.0, 0.3]},
            "Linear ReLU Dropout0.1 Linear ReLU Linear ReLU Dropout0.3 Linear",
        ),
        ({"hidden_dims": [8, 4], "batch_norm": True}, "Linear BatchNorm1d ReLU " * 2 + "Linear"),
    ],
)
def test_the_layers_follow_the_keys(kwargs: dict, layers: str) -> None:
    net = MLP(**kwargs)
    names = [type(m).__name__ + (str(m.p) if isinstance(m, nn.Dropout) else "") for m in net.layers]
    assert " ".join(names) == layers
    pairs = list(itertools.pairwise([28 * 28, *kwargs["hidden_dims"], 10]))
    assert [(m.in_features, m.out_features) for m in linears(net)] == pairs
    no_bias = [bool(kwargs.get("batch_norm"))] * len(kwargs["hidden_dims"]) + [False]
    assert [m.bias is None for m in linears(net)] == no_bias  # batch norm has its own shift
    images = torch.rand(4, 28, 28)
    logits = net.eval()(images)  # every input layout gives the same logits
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    assert torch.allclose(net(images[:, None]), logits)
    assert torch.allclose(net(images.reshape(4, 784)), logits)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
@pytest.mark.parametrize("batch_norm", [False, True])
def test_weight_decay_only_on_weight_matrices(name: str, cls: type, batch_norm: bool) -> None:
    model = MNISTClassifier(
        hidden_dims=[8, 4], batch_norm=batch_norm, optimizer=name, lr=0.05, weight_decay=0.1
    )
    optimizer = model.build_optimizer()
    assert type(optimizer) is cls
    decayed, plain = optimizer.param_groups
    assert (decayed["weight_decay"], plain["weight_decay"], decayed["lr"]) == (0.1, 0.0, 0.05)
    assert ids(decayed["params"]) == ids(m.weight for m in linears(model.net))
    # The rest: biases, batch-norm scales and shifts.
    assert ids(plain["params"]) == ids(p for p in model.parameters() if p.dim() == 1)
    assert name != "sgd" or decayed["momentum"] == 0.9
    # Without weight decay, one group (as earlier runs' optimizer states have).
    model = MNISTClassifier(hidden_dims=[8], optimizer=name, weight_decay=0)
    (only,) = model.build_optimizer().param_groups
    assert ids(only["params"]) == ids(model.parameters()) and only["weight_decay"] == 0


def ids(params: Iterable[torch.Tensor]) -> list[int]:
    return [id(p) for p in params]


@pytest.mark.parametrize("scheduler", [s for s in SCHEDULERS if s != "none"])
def test_lightning_steps_the_schedule_at_its_interval(scheduler: str) -> None:
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))
    model = MNISTClassifier(hidden_dims=[4], scheduler=scheduler, lr_step_epochs=1)
    trainer = bare_trainer()
    trainer.fit(model, train_dataloaders=TensorBatches(images, labels, 16, True, 0))
    (config,) = trainer.lr_scheduler_configs
    assert config.scheduler.optimizer is trainer.optimizers[0]
    assert config.interval == ("step" if scheduler in ("onecycle", "cosine") else "epoch")
    expected_steps = {"onecycle": 8, "cosine": 8, "step": 2, "plateau": 0}[scheduler]
    assert config.scheduler.last_epoch == expected_steps  # torch's count of its steps
    if scheduler not in ("onecycle", "cosine"):
        return
    values = [lr_factor(scheduler, step, 100) for step in range(101)]  # a function of progress
    assert max(values) == pytest.approx(1.0, abs=1e-3) and values[-1] < 1e-3
    # Stretching the horizon keeps the shape: step 50 of 100 equals step 100 of 200.
    assert lr_factor(scheduler, 50, 100) == pytest.approx(lr_factor(scheduler, 100, 200))
    if scheduler == "onecycle":
        assert values[0] == pytest.approx(1 / 25) and values.index(max(values)) == 30
    else:
        assert values[0] == 1.0 and values == sorted(values, reverse=True)


def bare_trainer(max_epochs: int = 2, **kwargs) -> L.Trainer:  # training only, on the CPU
    return L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kwargs,
    )


class DeviceReads(TorchDispatchMode):
    """Records what makes the host wait for the device: reading a value back (`.item()`,
    `bool(tensor)`, data-dependent shapes) or a tensor made from Python values."""

    SYNCS = {
        getattr(torch.ops.aten, name).default
        for name in ("_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select")
    } | {torch.ops.aten.lift_fresh.default}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.slow
def test_training_reads_nothing_back_from_the_device_between_logs() -> None:
    """With every per-step option on: the metrics are read once per logging window (none in
    these 24 steps). model.max_norm caps each hidden unit's incoming weights after each step."""
    with DeviceReads() as control:  # the watcher does see a read and a tensor from the host
        torch.ones(()).item()
        torch.tensor([1, 2])
    assert len(control.reads) == 2
    images = torch.randint(0, 256, (96, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (96,))
    model = MNISTClassifier(
        hidden_dims=[16, 16], lr=0.05, max_norm=0.5, l1=1e-5, label_smoothing=0.1
    )
    norms = []  # the largest row norm of the hidden layers after each step, left on the device
    hidden = model.net.weights()[:-1]  # what the cap acts on
    largest = lambda *_: norms.append(  # noqa: E731
        torch.stack([w.detach().norm(dim=1).max() for w in hidden]).max()
    )
    watched, stack = DeviceReads(), contextlib.ExitStack()  # on after epoch 1 (building caches)
    start = lambda trainer, *_: trainer.current_epoch and stack.enter_context(watched)  # noqa: E731
    stop = lambda *_: stack.close()  # noqa: E731 (an empty stack: nothing to close)
    callbacks = [LambdaCallback(on_train_epoch_start=start, on_train_epoch_end=stop)]
    callbacks += [LambdaCallback(on_exception=stop, on_train_batch_end=largest)]
    trainer = bare_trainer(log_every_n_steps=1000, callbacks=callbacks)
    loader = TensorBatches(images, labels, 8, shuffle=True, seed=0, augment=Augment("elastic"))
    largest()
    assert len(hidden) == 2 and norms.pop() > 0.5  # the cap bites
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == len(norms) == 24
    assert watched.reads == [] and max(map(float, norms)) <= 0.5 + 1e-5


def test_input_dropout_drops_pixels_in_training_only() -> None:
    net = MLP(hidden_dims=[8], input_dropout=0.5)
    images = torch.full((4, 28, 28), 0.5)
    seen: list[torch.Tensor] = []
    net.layers[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    net.train()(images)
    black = torch.isclose(seen[-1], torch.tensor(-MNIST_MEAN / MNIST_STD))  # a dropped pixel
    assert 0.4 < black.float().mean() < 0.6
    net.eval()(images)
    assert torch.allclose(seen[-1], torch.full_like(seen[-1], (0.5 - MNIST_MEAN) / MNIST_STD))


@pytest.mark.slow
def test_half_precision_keeps_the_window_sums_in_float32() -> None:
    """bf16-true converts the module's float buffers: the window's count would stop at 256."""
    images = torch.randint(0, 256, (320, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (320,))
    model = MNISTClassifier(hidden_dims=[16], optimizer="sgd", scheduler="none")
    seen: list[float] = []
    window = LambdaCallback(on_train_batch_end=lambda *_: seen.append(float(model.train_window[2])))
    trainer = bare_trainer(1, precision="bf16-true", callbacks=[window])
    trainer.fit(model, train_dataloaders=TensorBatches(images, labels, 64, True, 0))
    assert model.train_window.dtype == model.val_acc_best.dtype == torch.float32
    assert seen == [64.0, 128.0, 192.0, 256.0, 320.0]  # 320 is not a bfloat16 value


def checkpoint_file(path: Path, model: MNISTClassifier, **changes: object) -> Path:
    """`model` saved as Lightning does, each of `changes` a hyper-parameter or a top-level key."""
    hparams = dict(model.hparams) | {k: v for k, v in changes.items() if k in model.hparams}
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hparams, "global_step": 20}
    torch.save(checkpoint | {k: v for k, v in changes.items() if k not in hparams}, path)
    return path


BUILT = "hyper_parameters do not describe a model of this version"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"hidden_dims": [-1]}, f"{BUILT} (hidden_dims=[-1]: every layer width must be from 1 to"),
        ({"hidden_dims": [10**11]}, "every layer width must be from 1 to 65536"),
        ({"hidden_dims": [MAX_WIDTH] * 2}, "would hold 4,347,002,880 weights, more than 268,"),
        ({"hidden_dims": [1] * 1001}, "1001 hidden layers are more than 1000"),
        ({"hidden_dims": [2.5]}, "the layer widths must be whole numbers"),
        ({"hidden_dims": 5}, f"{BUILT} ('int' object is not iterable)"),
        ({"hyper_parameters": {"attention_heads": 8}}, "unexpected keyword argument 'attention_he"),
        ({"dropout": 1.5}, "dropout probability has to be between 0 and 1"),
        ({"hyper_parameters": [4]}, "must be a mapping"),
        ({"state_dict": [1, 2]}, "its weights cannot be loaded"),
    ],
)
def test_a_checkpoint_with_crafted_hyper_parameters_is_a_checkpoint_error(
    change: dict, words: str, tmp_path: Path
) -> None:
    """Never torch's exception (a negative width) or tens of GB allocated (a huge one)."""
    path = checkpoint_file(tmp_path / "x.ckpt", MNISTClassifier(hidden_dims=[4]), **change)
    with pytest.raises(CheckpointError) as info:
        load_classifier(path, torch.device("cpu"))
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value), info.value
    assert size_problem([MAX_WIDTH]) is None  # the widest allowed is made


@pytest.mark.parametrize("step", one_of_each_kind(["20", 2**70]))
def test_eval_takes_a_global_step_that_is_not_a_count_as_0(
    step: object, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """TensorBoard failed with a traceback on such a step, after eval/ was written."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint_file(path, MNISTClassifier(hidden_dims=[4]), global_step=step)
    args = {"ckpt_path": str(path), "run_dir": None, "data_dir": str(synthetic_mnist)}
    args |= {"data_source": "files", "batch_size": 1000, "device": "cpu", "tensorboard": True}
    mnist_eval(OmegaConf.create(args))  # (as Hydra composes it: test_fashion_mnist.py)
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["global_step"] == 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
