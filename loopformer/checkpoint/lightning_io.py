"""Lightning's checkpoints written through ``atomic.write_atomically``: a ``CheckpointIO`` plugin, which the CLI
installs for every run (Lightning's extension point for how checkpoints are written)."""

from __future__ import annotations

from typing import Any, Optional

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from loopformer.checkpoint import atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r}).")
        if "://" in str(path):  # a remote filesystem: fsspec's own writer, as Lightning does
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic.save_torch(checkpoint, path)
