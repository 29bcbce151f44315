"""The network: a multilayer perceptron from 28x28 pixels to 10 digit scores."""

from collections.abc import Sequence

import torch
from torch import nn

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}
# Bounds on the network's size, far above what MNIST needs: a layer width or a hidden_dims
# beyond them (a typo, or a crafted checkpoint's hyper_parameters) would only exhaust memory.
MAX_WIDTH = 65_536  # units in one hidden layer
MAX_WEIGHTS = 2**28  # weights of all layers together: 1 GiB in float32
MAX_LAYERS = 1_000  # hidden layers


def size_problem(hidden_dims: Sequence[int]) -> str | None:
    """Why an MLP of these hidden layer widths cannot be built, in words; None if it can."""
    widths = list(hidden_dims)
    if not all(isinstance(h, int) and not isinstance(h, bool) for h in widths):
        return "the layer widths must be whole numbers"
    if not all(0 < h <= MAX_WIDTH for h in widths):
        return f"every layer width must be from 1 to {MAX_WIDTH}"
    if len(widths) > MAX_LAYERS:
        return f"{len(widths)} hidden layers are more than {MAX_LAYERS}"
    sizes = [28 * 28, *widths, 10]
    weights = sum(sizes[i] * sizes[i + 1] for i in range(len(widths) + 1))
    if weights > MAX_WEIGHTS:
        return f"the layers would hold {weights:,} weights, more than {MAX_WEIGHTS:,}"
    return None


class MLP(nn.Module):
    """784 -> hidden_dims -> 10, on images in [0, 1] of shape (B, 28, 28), (B, 1, 28, 28) or
    (B, 784).

    The network normalises its own input with MNIST's mean and std, so a checkpoint or an
    exported model takes plain pixels and nobody has to remember the constants. An empty
    `hidden_dims` is a linear (multinomial logistic regression) model. `input_dropout` drops
    pixels (sets them to black) before anything else, as Srivastava et al. 2014 did.
    """

    def __init__(
        self,
        hidden_dims: Sequence[int] = (512, 256),
        activation: str = "relu",
        dropout: float | Sequence[float] = 0.0,
        batch_norm: bool = False,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        problem = size_problem(hidden_dims)
        if problem:
            shown = repr(list(hidden_dims))
            raise ValueError(f"hidden_dims={shown[:60] + ' ...' * (len(shown) > 60)}: {problem}")
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        dropouts = [dropout] * len(hidden_dims) if isinstance(dropout, float | int) else dropout
        layers: list[nn.Module] = []
        width = 28 * 28
        for hidden, p in zip(hidden_dims, dropouts, strict=True):
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(ACTIVATIONS[activation]())
            if p > 0:
                layers.append(nn.Dropout(p))
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.input_dropout(images.flatten(1)) - MNIST_MEAN) / MNIST_STD
        return self.layers(x)

    def hidden_weights(self) -> list[torch.Tensor]:
        """The weight matrices that feed hidden units (all but the output layer's)."""
        return [layer.weight for layer in self.layers if isinstance(layer, nn.Linear)][:-1]
