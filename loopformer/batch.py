"""The batch every data loader yields and the model reads: a dict of tensors with these keys.

========================  =============  ===========================================================================
key                       dtype, shape   what
========================  =============  ===========================================================================
inputs                    int, [B, L]    token ids of the puzzle (0 is padding)
labels                    int64, [B, L]  token ids of the solution; ``IGNORE_LABEL_ID`` where nothing is scored
puzzle_identifiers        int, [B]       row of the puzzle-embedding table
example_index             int64, [B]     evaluation and predict batches: the example's index in its split (-1: pad)
========================  =============  ===========================================================================
"""

from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor]
IGNORE_LABEL_ID = -100
"""Labels with this value count in no loss and no metric (PyTorch's cross-entropy default ``ignore_index``)."""
