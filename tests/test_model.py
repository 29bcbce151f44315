import io

import lightning as L
import pytest
import torch
from torch import nn

from mnist_lightning.data import TensorBatches
from mnist_lightning.model import ACTIVATIONS, MLP, MNISTClassifier, lr_factor


@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 1, 28, 28), (5, 784)])
def test_mlp_output_shape(shape: tuple[int, ...]) -> None:
    assert MLP([16])(torch.rand(shape)).shape == (5, 10)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation(activation: str) -> None:
    net = MLP([8, 8], activation=activation)
    assert sum(isinstance(m, ACTIVATIONS[activation]) for m in net.modules()) == 2
    assert torch.isfinite(net(torch.rand(3, 784))).all()


def test_no_hidden_layers_is_a_linear_model() -> None:
    (layer,) = MLP([]).layers
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (10, 784)


def test_dropout_per_layer_and_batch_norm() -> None:
    net = MLP([8, 8], dropout=[0.1, 0.0], batch_norm=True)
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.1]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 2


def test_dropout_is_off_in_eval_mode() -> None:
    net, x = MLP([64], dropout=0.5), torch.rand(4, 784)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_weight_decay_only_on_weight_matrices(name: str, cls: type) -> None:
    model = MNISTClassifier(
        hidden_dims=[8], batch_norm=True, optimizer=name, weight_decay=0.1, scheduler="none"
    )
    optimizer = model.configure_optimizers()
    assert type(optimizer) is cls
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])  # biases and batch-norm parameters
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_hparams_survive_a_weights_only_load() -> None:
    model = MNISTClassifier(hidden_dims=[8, 4], dropout=[0.1, 0.2])
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(model.hparams)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["hyper_parameters"]
    assert MNISTClassifier(**loaded).hparams == model.hparams


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_lr_schedules_are_functions_of_progress(schedule: str) -> None:
    values = [lr_factor(schedule, step, 100) for step in range(101)]
    assert max(values) == pytest.approx(1.0, abs=1e-3)
    assert values[-1] < 1e-3
    # Stretching the horizon keeps the shape: step 50 of 100 equals step 100 of 200.
    assert lr_factor(schedule, 50, 100) == pytest.approx(lr_factor(schedule, 100, 200))
    if schedule == "onecycle":
        assert values[0] == pytest.approx(1 / 25) and values.index(max(values)) == 30


def test_a_grouped_training_step_equals_single_steps() -> None:
    """data.steps_per_call changes how work is handed to Lightning, not the training."""
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))

    def train(group: int) -> dict[str, torch.Tensor]:
        L.seed_everything(0, verbose=False)
        model = MNISTClassifier(hidden_dims=[16], dropout=0.3, scheduler="onecycle")
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        loader = TensorBatches(images, labels, 16, shuffle=True, seed=0, group=group)
        trainer.fit(model, train_dataloaders=loader)
        assert trainer.global_step == 8
        return model.state_dict()

    one, four = train(1), train(4)
    assert all(torch.equal(one[k], four[k]) for k in one)
