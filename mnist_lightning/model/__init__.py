"""The model side: the network (`mlp`), the LightningModule that trains it (`classifier`) and
running a trained one outside Lightning (`inference`)."""
