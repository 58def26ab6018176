"""Start-up of the command: the tool subcommands' help without Lightning or torch, and the Lightning subcommands'
help from a cache that follows the installed versions and loopformer's own files."""

import os
import subprocess
import sys
import textwrap

import pytest

from loopformer.cli.entry import source_fingerprint
from loopformer.cli.flag_scan import is_plain_help

PROBE = textwrap.dedent(
    """
    import sys
    from loopformer.cli.entry import main
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
    print("EXIT", code, "lightning" in sys.modules, "torch" in sys.modules)
    """
)


def _probe(args, cache):
    env = {**os.environ, "LOOPFORMER_CACHE_DIR": str(cache), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=300)
    *text, status = done.stdout.rstrip("\n").split("\n")
    return "\n".join(text), status


@pytest.mark.parametrize("args", [["data", "--help"], ["data", "build", "sudoku-gen", "--help"], ["sweep", "--help"],
                                  ["import-checkpoint", "--help"]])  # fmt: skip
def test_the_tools_answer_help_without_lightning_or_torch(args, tmp_path):
    text, status = _probe(args, tmp_path)
    assert status == "EXIT 0 False False" and "usage: loopformer" in text


def test_version_a_missing_command_and_a_misspelt_one_answer_without_lightning(tmp_path):
    """`loopformer --version` was "unrecognized arguments"; a bare `loopformer` and `loopformer swep` listed only the
    Lightning commands (after importing Lightning)."""
    from importlib.metadata import version

    text, status = _probe(["--version"], tmp_path)
    assert status == "EXIT 0 False False" and text.startswith(f"loopformer {version('loopformer')} (python 3.")
    misspelt = "'swep' is not a command (did you mean sweep?); expected fit, "
    for args, start in [([], "expected a command: fit, "), (["swep", "x.yaml"], misspelt)]:
        env = {**os.environ, "LOOPFORMER_CACHE_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "EXIT 2 False False"
        assert (
            done.stderr.startswith(f"loopformer: error: {start}")
            and "data, doctor, import-checkpoint or sweep (each" in done.stderr
        )


@pytest.mark.slow
def test_the_lightning_commands_help_is_cached_and_identical(tmp_path):
    built, status = _probe(["fit", "--help"], tmp_path)
    assert status == "EXIT 0 True True" and "--model.arch.stages" in built and "--trainer.max_steps" in built
    assert len(list(tmp_path.glob("help-*.txt"))) == 1
    cached, status = _probe(["fit", "--help"], tmp_path)
    assert status == "EXIT 0 False False"  # no Lightning, no torch: a file read
    assert cached == built
    top, status = _probe(["--help"], tmp_path)
    assert status == "EXIT 0 True True" and "{fit,validate,test,predict}" in top and "import-checkpoint" in top


def test_only_plain_help_is_cached_and_the_key_follows_the_sources(tmp_path):
    assert is_plain_help(["--help"]) and is_plain_help(["validate", "-h"])
    assert not is_plain_help(["fit", "--config", "c.yaml", "--help"]) and not is_plain_help(["fit"])
    (tmp_path / "a.py").write_text("x = 1\n")
    before = source_fingerprint(tmp_path)
    (tmp_path / "a.py").write_text("x = 22\n")
    assert source_fingerprint(tmp_path) != before


def test_only_the_subcommand_whose_help_is_printed_reads_the_fields_docstrings(tmp_path, capsys, monkeypatch):
    """Reading the config classes' field docstrings is most of building the parser: a run skips it, ``fit --help``
    reads them for fit alone, and the help is what it was (ArchConfig's field docs in it)."""
    import jsonargparse

    from loopformer.cli.command import main
    from loopformer.cli.flag_scan import help_asked_of

    read_for = []
    real = jsonargparse.set_parsing_settings
    monkeypatch.setattr(
        jsonargparse,
        "set_parsing_settings",
        lambda **kw: read_for.append(kw["docstring_parse_attribute_docstrings"]) or real(**kw),
    )
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model.optim.lr=-1", f"--trainer.default_root_dir={tmp_path}"])
    assert done.value.code == 2 and read_for == [False] * 4  # fit, validate, test, predict
    capsys.readouterr()
    read_for.clear()
    with pytest.raises(SystemExit) as done:
        main(["fit", "--help"])
    assert done.value.code == 0 and read_for == [True, False, False, False]
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Passes over the whole schedule per ACT step." in help_text  # ArchConfig.outer_cycles's docstring
    assert help_asked_of(["validate", "--config", "c.yaml", "-h"]) == "validate"
    assert help_asked_of(["--help"]) == ""  # the top level lists the subcommands: no field docs
    assert help_asked_of(["--print_config", "fit", "--help"]) == "*"  # unusual order: every subcommand reads them
    assert help_asked_of(["fit", "--model.optim.lr=1e-3"]) is None and help_asked_of({"fit": {}}) is None
