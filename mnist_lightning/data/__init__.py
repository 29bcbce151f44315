"""The data side: the data sets and their IDX files (`datasets`), random distortions on the
device (`augment`), the LightningDataModule (`datamodule`) and your own pictures (`images`)."""
