"""The `loopformer predict` file: rows of every rank merged in dataset order, exact accuracy over labelled tokens."""

import numpy as np
import torch

from loopformer.batch import IGNORE_LABEL_ID
from loopformer.evaluation.predictions import exact_accuracy, merge_batches, save_predictions


def test_rows_of_two_ranks_merge_in_dataset_order_and_score_labelled_tokens_only(tmp_path):
    ignore = IGNORE_LABEL_ID
    rank0 = {"example_index": torch.tensor([0, 2]), "preds": torch.tensor([[1, 2], [3, 3]]),
             "labels": torch.tensor([[1, 2], [3, 4]])}  # fmt: skip
    rank1 = {"example_index": torch.tensor([1, 3]), "preds": torch.tensor([[5, 9], [7, 7]]),
             "labels": torch.tensor([[5, ignore], [7, 8]])}  # fmt: skip
    rows = merge_batches([rank0, rank1])
    assert rows["example_index"].tolist() == [0, 1, 2, 3]
    assert rows["preds"].tolist() == [[1, 2], [5, 9], [3, 3], [7, 7]]
    assert exact_accuracy(rows) == 0.5  # rows 0 and 1 (its wrong token is not labelled)
    assert exact_accuracy({"preds": rows["preds"]}) is None

    path = tmp_path / "out" / "predictions.npz"
    save_predictions(str(path), rows)
    assert [p.name for p in path.parent.iterdir()] == ["predictions.npz"]  # no temporary file left
    saved = np.load(path)
    assert all(np.array_equal(saved[k], v) for k, v in rows.items())
