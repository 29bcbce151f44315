"""Pictures of what a model does: confusion matrix, its most confident mistakes, and what its
first layer looks for. Each returns a matplotlib figure, for TensorBoard or a PNG."""

import torch
from matplotlib.figure import Figure  # the object API: no pyplot state, no screen needed


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """counts[true, predicted] over the ten digits."""
    return torch.bincount(labels * 10 + preds, minlength=100).reshape(10, 10).cpu()


def confusion_figure(counts: torch.Tensor) -> Figure:
    """Row-normalised confusion matrix; the numbers are the counts, zeros left blank."""
    rates = counts.float() / counts.sum(1, keepdim=True).clamp(min=1)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.imshow(rates.sqrt(), cmap="Blues", vmin=0, vmax=1)  # sqrt: rare confusions stay visible
    for true in range(10):
        for pred in range(10):
            n = int(counts[true, pred])
            if n:
                color = "white" if rates[true, pred] > 0.5 else "black"
                ax.text(pred, true, str(n), ha="center", va="center", fontsize=7, color=color)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true")
    accuracy = counts.diag().sum() / counts.sum().clamp(min=1)
    ax.set_title(f"Confusion matrix (accuracy {accuracy:.2%})")
    fig.tight_layout()
    return fig


def digits_figure(
    images: torch.Tensor, captions: list[str], title: str, columns: int = 8
) -> Figure:
    """A grid of 28x28 images (values in [0, 1]) with a caption under each."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(columns * 1.1, rows * 1.3))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images.cpu(), captions, strict=False):
        ax.imshow(image.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def mistakes_figure(
    images: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, count: int = 24
) -> Figure:
    """The `count` wrong predictions the model was most sure of."""
    confidence, preds = probs.max(1)
    wrong = (preds != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)[:count]]
    captions = [
        f"pred {int(preds[i])} ({float(confidence[i]):.0%})\ntrue {int(labels[i])}" for i in worst
    ]
    title = f"Most confident mistakes ({len(wrong)} of {len(labels)} wrong)"
    return digits_figure(images[worst], captions, title)


def first_layer_figure(weight: torch.Tensor, count: int = 32) -> Figure:
    """The first layer's weight vectors as 28x28 tiles: red excites a unit, blue inhibits it."""
    tiles = weight[:count].detach().cpu().reshape(-1, 28, 28)
    columns = 8
    rows = max(1, -(-len(tiles) // columns))
    fig = Figure(figsize=(columns, rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, tile in zip(axes.flat, tiles, strict=False):
        limit = float(tile.abs().max()) or 1.0
        ax.imshow(tile, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.suptitle(f"First-layer weights ({count} of {weight.shape[0]} units)", fontsize=10)
    fig.tight_layout()
    return fig
