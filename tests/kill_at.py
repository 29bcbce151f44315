"""A callback for the resume tests: signal the training process at the optimizer step named by
the environment variable KILL_AT_STEP (and do nothing without it, as in the resumed run). The
signal is SIGKILL, or the one named by KILL_SIGNAL (e.g. INT for Ctrl-C). With KILL_GROUP set it
goes to the whole process group: every process of a DDP run dies at once, as on a crash of the
machine. With STEP_SECONDS set, every step takes at least that long (a sleep after it), so a
time-based checkpoint interval spans a known most number of steps. With KILL_IN=validation (or test)
the signal comes during the first validation (or the test) after that step, after its first batch.

Lightning runs checkpoint callbacks after all others, so the kill lands before the checkpoint
of that step is written: the run loses everything since its previous checkpoint, for real.
"""

import os
import signal
import time

import lightning as L


class KillAt(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        time.sleep(float(os.environ.get("STEP_SECONDS", 0)))
        if os.environ.get("KILL_IN", "training") == "training":
            self.kill(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if os.environ.get("KILL_IN") == "validation" and not trainer.sanity_checking:
            self.kill(trainer)  # after its first batch: a validation half run

    def on_test_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if os.environ.get("KILL_IN") == "test":
            self.kill(trainer)

    def kill(self, trainer: L.Trainer) -> None:
        step = os.environ.get("KILL_AT_STEP")
        if step and trainer.global_step >= int(step):
            os.environ.pop("KILL_AT_STEP")  # once
            number = signal.Signals[f"SIG{os.environ.get('KILL_SIGNAL', 'KILL')}"]
            if os.environ.get("KILL_GROUP"):
                os.killpg(os.getpgrp(), number)
            else:
                os.kill(os.getpid(), number)
