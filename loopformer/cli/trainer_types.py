"""The Trainer's option types as Lightning wrote them.

Lightning annotates ``limit_{train,val,test,predict}_batches`` as ``Optional[Union[int, float]]``: an int is a number
of batches, a float a fraction of them. typing caches unions by their set of types, so the Trainer gets the
``Optional[Union[float, int]]`` that lightning.fabric created first, and jsonargparse, trying a union's types in
order, read ``--trainer.limit_val_batches=1`` (or ``limit_val_batches: 1`` in a config file) as 1.0: every batch
instead of one (Lightning-AI/pytorch-lightning#21259). Putting int first again restores what the user wrote.
"""

from __future__ import annotations

from typing import Any, get_args

BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def counts_before_fractions(trainer_class: Any) -> None:  # noqa: ANN401 (a Trainer class)
    """An int-or-float batch limit of ``trainer_class.__init__`` parses an integer as an int (a number of batches)."""
    annotations = trainer_class.__init__.__annotations__
    for key in BATCH_LIMITS:
        if set(get_args(annotations.get(key))) == {int, float, type(None)}:
            annotations[key] = int | float | None  # types.UnionType: built as written, not taken from typing's cache
