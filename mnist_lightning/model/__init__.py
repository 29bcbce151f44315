"""The model side: the network (`mlp`) and the LightningModule that trains it (`classifier`)."""
