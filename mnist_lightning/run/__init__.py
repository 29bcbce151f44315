"""The run side: config checks, run directories, checkpoints, resume, sweeps, DDP and the
figures a run reports."""
