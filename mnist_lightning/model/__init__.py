"""The model side: the network (`mlp`), the LightningModule that trains it (`classifier`) and
running it outside Lightning (`inference`)."""

from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.model.mlp import MLP

__all__ = ["MLP", "MNISTClassifier"]
