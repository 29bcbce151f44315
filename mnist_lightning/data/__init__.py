"""The data side: MNIST's IDX files (`idx`), where they come from (`download`), random
distortions on the device (`augment`) and the LightningDataModule (`datamodule`)."""

from mnist_lightning.data.datamodule import MNISTDataModule

__all__ = ["MNISTDataModule"]
