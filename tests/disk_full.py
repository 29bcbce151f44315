"""A callback for the reliability tests: from the end of epoch DISK_FULL_AT_EPOCH on, every
fsync fails with ENOSPC, as on a full disk. Lightning runs checkpoint callbacks after the
others, so the first write to fail is that epoch's checkpoint."""

import errno
import os

import lightning as L


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class DiskFullAt(L.Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.current_epoch >= int(os.environ["DISK_FULL_AT_EPOCH"]):
            os.fsync = _no_space
