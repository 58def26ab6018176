"""Where one run's outputs go: the directory that holds its ``checkpoints/``, beside them ``config.yaml`` and
``predictions/``, so that runs sharing a logger's save_dir (a sweep) never overwrite each other's files."""

from __future__ import annotations

import os

import lightning as L


def run_directory(trainer: L.Trainer) -> str:
    """``<save_dir>/<name>/<version>`` of the first logger, as Lightning's ModelCheckpoint places
    ``checkpoints/``; ``default_root_dir`` without a logger. A collective: every rank must call it
    (only rank 0 knows a W&B run's id; it is broadcast)."""
    if not trainer.loggers:
        return trainer.default_root_dir
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    directory = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), version)
    return trainer.strategy.broadcast(directory)
