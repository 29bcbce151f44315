"""Pictures of what a model does: confusion matrix, its most confident mistakes, and what its
first layer looks for. Each returns a matplotlib figure, for TensorBoard or a PNG."""

from collections.abc import Callable

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


def mosaic(tiles: torch.Tensor, columns: int, gap: int = 2, fill: float = 0.0) -> torch.Tensor:
    """Tiles (N, H, W) laid out in a grid with `gap` pixels between them: one image to draw,
    which is many times faster than one matplotlib axis per tile."""
    n, height, width = tiles.shape
    rows = max(1, -(-n // columns))
    grid = torch.full((rows * (height + gap), columns * (width + gap)), fill)
    for i, tile in enumerate(tiles):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        grid[top : top + height, left : left + width] = tile
    return grid


def digits_figure(
    images: torch.Tensor, captions: list[str], title: str, columns: int = 8
) -> Figure:
    """A grid of 28x28 images (values in [0, 1], ink bright) with a caption above each."""
    columns = max(1, min(columns, len(images)))
    grid = mosaic(images.detach().cpu().reshape(-1, 28, 28), columns, gap=14)
    fig = Figure(figsize=(columns * 1.1, grid.shape[0] / 42 * 1.1 + 0.4))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    for i, caption in enumerate(captions):
        x, y = (i % columns) * 42 + 14, (i // columns) * 42 - 1
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=6)
    ax.set_ylim(grid.shape[0], -14)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
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


def first_layer_figure(weight: torch.Tensor, count: int = 64) -> Figure:
    """The first layer's weight vectors as 28x28 tiles: red excites a unit, blue inhibits it."""
    tiles = weight[:count].detach().cpu().reshape(-1, 28, 28)
    tiles = tiles / tiles.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    fig = Figure(figsize=(8, 8 * (-(-len(tiles) // 8)) / 8 + 0.4))
    ax = fig.subplots()
    ax.imshow(mosaic(tiles, columns=8), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.axis("off")
    ax.set_title(f"First-layer weights ({len(tiles)} of {weight.shape[0]} units)", fontsize=10)
    fig.tight_layout()
    return fig


def augmentation_figure(
    images: torch.Tensor, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
) -> Figure:
    """Training digits as stored (top row) and three random distortions of each below: what
    `data.augment` shows the network."""
    images = images[:8].float().cpu() / 255
    rows = [images] + [augment(images, torch.Generator().manual_seed(k)) for k in range(3)]
    captions = ["stored"] * len(images) + [f"draw {k}" for k in range(3) for _ in images]
    return digits_figure(torch.cat(rows), captions, "Training images and their distortions")
