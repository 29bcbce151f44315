"""The data side: MNIST's IDX files (`idx`), where they come from (`download`), random
distortions on the device (`augment`) and the LightningDataModule (`datamodule`)."""
