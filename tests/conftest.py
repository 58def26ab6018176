import os
import tempfile

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
# `loopformer --help` caches its text (cli/entry.py): the tests' copies go to a directory of their own, not ~/.cache.
os.environ.setdefault("LOOPFORMER_CACHE_DIR", tempfile.mkdtemp(prefix="loopformer-test-cache-"))
if not torch.cuda.is_available():
    # Triton kernels run in Triton's CPU interpreter; this must be set before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def sudoku4_dir(tmp_path_factory):
    """A small generated 4x4 Sudoku dataset in the HRM/TRM layout."""
    from loopformer.data.generators.sudoku import build_sudoku_dataset

    out = tmp_path_factory.mktemp("data") / "sudoku4"
    build_sudoku_dataset(out, n=4, clues=6, num_train=96, num_test=40, seed=1)
    return out
