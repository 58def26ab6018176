"""A callback for tests: the process sends itself a signal when training reaches a step (as a scheduler or a sweep
agent would, at a moment the test knows)."""

import os

import lightning as L


class SignalAtStep(L.Callback):
    def __init__(self, step: int, signum: int = 15) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
