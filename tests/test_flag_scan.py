"""The one scan of the command line that the checks before jsonargparse share (cli/flag_scan.py)."""

from loopformer.cli.flag_scan import Flag, find_flags, replace_flags

ARGS = ["fit", "--config", "a.yaml", "--trainer.max_steps=5", "--config=b.yaml", "--model.arch", "x.yaml", "--config"]


def test_find_flags_reads_both_spellings_and_a_missing_value():
    assert list(find_flags(ARGS, lambda key: key == "config")) == [
        Flag("config", "a.yaml", 1, 3),
        Flag("config", "b.yaml", 4, 5),
        Flag("config", None, 7, 8),  # last, with no value
    ]


def test_find_flags_passes_other_arguments_over_one_at_a_time():
    found = list(find_flags(ARGS, lambda key: key.startswith(("trainer.", "model."))))
    assert found == [Flag("trainer.max_steps", "5", 3, 4), Flag("model.arch", "x.yaml", 5, 7)]
    assert list(find_flags(["-c", "x", "--", "plain"], lambda key: True)) == []


def test_replace_flags_puts_each_flag_and_its_value_in_place():
    out = replace_flags(ARGS, lambda key: key == "config", lambda f: [f"--config={(f.value or '?').upper()}"])
    assert out == [
        "fit", "--config=A.YAML", "--trainer.max_steps=5", "--config=B.YAML", "--model.arch", "x.yaml", "--config=?",
    ]  # fmt: skip
    assert replace_flags(ARGS, lambda key: key == "model.arch", lambda f: []) == ARGS[:5] + ARGS[7:]
