"""The weight-fitting rules that init_from, the importer and resuming share."""

import torch

from loopformer.checkpoint.fitting import misfit, refit_puzzle_table


def test_a_table_with_other_rows_restarts_every_row_from_its_mean_row():
    table = torch.arange(12.0).reshape(3, 4)
    weights = {"t": table}
    assert refit_puzzle_table(weights, "t", torch.Size([5, 4])) == 3
    assert weights["t"].shape == (5, 4) and torch.equal(weights["t"], table.mean(0).expand(5, 4))
    assert refit_puzzle_table(weights, "t", torch.Size([5, 4])) is None  # already fits
    other_width = {"t": table}
    assert refit_puzzle_table(other_width, "t", torch.Size([5, 8])) is None and other_width["t"] is table
    assert refit_puzzle_table({}, "t", torch.Size([5, 4])) is None


def test_misfit_names_missing_foreign_and_misshaped_weights():
    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(4)}
    assert misfit({"a": torch.ones(2), "b": torch.ones(3), "c": torch.ones(4)}, expected) == ""
    found = misfit({"a": torch.ones(2), "b": torch.ones(5), "z": torch.ones(1)}, expected)
    assert found == "missing ['c']; not in this model ['z']; b is (5,), here (3,)"


def test_initial_weights_fit_but_for_the_puzzle_tables_rows():
    import pytest

    from loopformer.checkpoint.warm_start import check_initial_weights
    from loopformer.errors import ConfigError
    from loopformer.model import PUZZLE_TABLE_KEY

    expected = {"w": torch.zeros(2, 3), PUZZLE_TABLE_KEY: torch.zeros(7, 4, device="meta")}
    check_initial_weights({"w": torch.ones(2, 3), PUZZLE_TABLE_KEY: torch.ones(3, 4)}, expected, "c.ckpt")  # rows
    with pytest.raises(ConfigError, match=rf"c.ckpt: .*{PUZZLE_TABLE_KEY} is \(3, 8\), here \(7, 4\)"):
        check_initial_weights({"w": torch.ones(2, 3), PUZZLE_TABLE_KEY: torch.ones(3, 8)}, expected, "c.ckpt")
    with pytest.raises(ConfigError, match=r"missing \['w'\]"):
        check_initial_weights({PUZZLE_TABLE_KEY: torch.ones(3, 4)}, expected, "c.ckpt")


def test_a_checkpoints_puzzle_table_may_differ_in_rows_only():
    """check_weights_fit set the table aside whole: another width (model.arch.puzzle_emb_ndim) passed the check, and
    the load failed with torch's size mismatch."""
    import pytest

    from loopformer.checkpoint.format import NET_PREFIX, check_weights_fit
    from loopformer.errors import ConfigError
    from loopformer.model import PUZZLE_TABLE_KEY

    expected = {"w": torch.zeros(2), PUZZLE_TABLE_KEY: torch.zeros(7, 4)}
    checkpoint = {"state_dict": {NET_PREFIX + "w": torch.ones(2), NET_PREFIX + PUZZLE_TABLE_KEY: torch.ones(3, 4)}}
    check_weights_fit(checkpoint, expected, "C", [])  # other rows: refitted when it loads
    checkpoint["state_dict"][NET_PREFIX + PUZZLE_TABLE_KEY] = torch.ones(3, 8)
    with pytest.raises(
        ConfigError, match=rf"C: .*\({PUZZLE_TABLE_KEY} is \(3, 8\), here \(7, 4\)\); its .* but for --x=8"
    ):
        check_weights_fit(checkpoint, expected, "C", ["--x=8"])
