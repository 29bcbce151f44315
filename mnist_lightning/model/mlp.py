"""The network: a multilayer perceptron from 28x28 pixels to 10 digit scores."""

import itertools
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
    """Why an MLP of these hidden layer widths cannot be built, as `hidden_dims=[...]: why`;
    None if it can."""
    widths = list(hidden_dims)
    if not all(isinstance(h, int) and not isinstance(h, bool) for h in widths):
        why = "the layer widths must be whole numbers"
    elif not all(0 < h <= MAX_WIDTH for h in widths):
        why = f"every layer width must be from 1 to {MAX_WIDTH}"
    elif len(widths) > MAX_LAYERS:
        why = f"{len(widths)} hidden layers are more than {MAX_LAYERS}"
    elif (weights := sum(a * b for a, b in itertools.pairwise([784, *widths, 10]))) > MAX_WEIGHTS:
        why = f"the layers would hold {weights:,} weights, more than {MAX_WEIGHTS:,}"
    else:
        return None
    shown = repr(widths)
    return f"hidden_dims={shown[:60] + ' ...' * (len(shown) > 60)}: {why}"


class MLP(nn.Module):
    """784 -> hidden_dims -> 10, on images in [0, 1]: (B, 28, 28), (B, 1, 28, 28) or (B, 784).

    The network normalises its own input with MNIST's mean and std, so a checkpoint or an
    exported model takes plain pixels and nobody has to remember the constants. An empty
    `hidden_dims` is a linear (multinomial logistic regression) model. `input_dropout` drops
    pixels (sets them to black) before anything else, as Srivastava et al. 2014 did.
    """

    def __init__(
        self,
        hidden_dims: Sequence[int],
        activation: str = "relu",
        dropout: float | Sequence[float] = 0.0,
        batch_norm: bool = False,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if problem := size_problem(hidden_dims):
            raise ValueError(problem)
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

    def weights(self) -> list[torch.Tensor]:
        """The linear layers' weight matrices, input layer first: what weight decay, L1, max-norm
        (all but the output layer's) and the gradient norms act on."""
        return [layer.weight for layer in self.layers if isinstance(layer, nn.Linear)]
