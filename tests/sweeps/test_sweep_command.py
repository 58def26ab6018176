"""`loopformer sweep FILE --offline` as a user drives it: --key=value overrides appended to every trial, the sweep's
parameters and the overrides checked against the CLI before the first trial, a non-zero exit when no trial
finished, only files it wrote named, and a missing `sweeps` package in one line."""

import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from loopformer.sweep.cli import main
from loopformer.sweep.spec import this_installation_first

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _fake_sweep(tmp_path) -> Path:
    config = {
        "method": "grid",
        "metric": {"name": "val/exact_accuracy", "goal": "maximize"},
        "parameters": {"pause": {"values": [0.01, 0.02]}},  # the trial's quality comes from the override
        "command": [sys.executable, str(HERE / "fake_trial.py"), "${args}"],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_overrides_reach_every_trial_and_only_written_files_are_named(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(_fake_sweep(tmp_path)), "--offline", "--out", str(out), "--count", "2", "--quality=0.5"]) == 0
    printed = capsys.readouterr().out
    state = yaml.safe_load((out / "state.json").read_text())
    assert [t["state"] for t in state["trials"]] == ["finished", "finished"]
    assert all(t["history"][-1]["val/exact_accuracy"] == 0.5 for t in state["trials"])  # quality=0.5 reached them
    results = next(line for line in printed.splitlines() if line.startswith("results: "))
    named = [Path(p) for p in results[len("results: ") :].split(", ")]
    assert named and all(p.exists() for p in named)


def test_trials_run_the_loopformer_of_this_installation_whatever_is_on_path(tmp_path, capsys, monkeypatch):
    """A runner started as .venv/bin/loopformer, its environment not activated (or another installation's
    `loopformer` first on PATH): its trials' `${env} loopformer` is this installation's (the online agent's `wandb`
    too: tests/sweeps/test_offline_runner.py)."""
    scripts = Path(sysconfig.get_path("scripts"))
    if not (scripts / "loopformer").is_file():
        pytest.skip("loopformer is not installed in this environment (no loopformer script)")
    elsewhere = tmp_path / "other-env" / "bin"
    elsewhere.mkdir(parents=True)
    (elsewhere / "loopformer").write_text("#!/bin/sh\nexit 3\n")
    (elsewhere / "loopformer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{elsewhere}:/usr/bin:/bin")
    which = tmp_path / "which.txt"
    out = tmp_path / "out"
    assert main([str(_fake_sweep(tmp_path)), "--offline", "--out", str(out), "--count", "1", "--quality=0.5",
                 f"--which={which}"]) == 0  # fmt: skip
    assert which.read_text() == str(scripts / "loopformer")
    assert this_installation_first({"PATH": f"{elsewhere}:/bin"})["PATH"] == f"{scripts}:{elsewhere}:/bin"
    once = this_installation_first({"PATH": "/bin"})
    assert this_installation_first(once) == once  # already first: unchanged


def test_a_sweep_where_no_trial_finished_exits_1(tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(_fake_sweep(tmp_path)), "--offline", "--out", str(out), "--count", "2", "--quality=oops"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"loopformer sweep: error: no trial finished (2 run); their logs: {out}/*.log." in captured.err
    assert "results: " not in captured.out


@pytest.mark.parametrize(
    "edit, override, expected",
    [
        ("model.arch.stages.2.repaet", [], "model.arch.stages.2 has no field 'repaet'; its fields are: target"),
        (None, ["--trainer.max_stepz=5"], "trainer.max_stepz: did you mean trainer.max_steps"),
    ],
    ids=["unknown-parameter", "unknown-override"],
)
def test_unknown_keys_stop_the_sweep_before_its_first_trial(tmp_path, capsys, monkeypatch, edit, override, expected):
    monkeypatch.chdir(ROOT)  # the sweep file's command names configs/ relative to the checkout
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the environment not activated: the runner finds its `loopformer`
    config = yaml.safe_load((ROOT / "sweeps/quickstart_stages.yaml").read_text())
    if edit:
        config["parameters"][edit] = config["parameters"].pop("model.arch.stages.2.repeat")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main([str(sweep), "--offline", "--out", str(out), "--count", "1", *override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its trials would not start" in err[0] and expected in err[0], err
    assert not (out / "state.json").exists()  # no trial was run


def test_a_missing_sweeps_package_is_one_line_with_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sweeps", None)  # `import sweeps` raises ImportError
    assert main([str(_fake_sweep(tmp_path)), "--offline", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[sweep]'" in err[0] and "numpy<2" in err[0]


def test_stray_arguments_and_online_overrides_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main([str(_fake_sweep(tmp_path)), "--offline", "stray"])
    assert done.value.code == 2 and "unrecognized arguments: stray" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main([str(_fake_sweep(tmp_path)), "--trainer.max_steps=5"])
    assert done.value.code == 2 and "trial overrides are for --offline sweeps" in capsys.readouterr().err


def test_gpus_that_are_no_device_list_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:  # "abc" was run as a GPU: its trials got CUDA_VISIBLE_DEVICES=abc
        main([str(_fake_sweep(tmp_path)), "--offline", "--gpus", "0,abc"])
    assert done.value.code == 2
    assert "--gpus '0,abc': expected a comma-separated list of device numbers" in capsys.readouterr().err


def test_an_online_sweep_without_a_server_to_reach_is_one_line_naming_offline(tmp_path, capsys, monkeypatch):
    """Each was a wandb traceback (UsageError: No API key configured; AuthenticationError)."""
    import wandb

    sweep = str(_fake_sweep(tmp_path))
    offline = f"or run it without a server: loopformer sweep {sweep} --offline.\n"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main([sweep]) == 2
    assert capsys.readouterr().err == (
        "loopformer sweep: error: WANDB_MODE=offline is set, and a W&B sweep needs the W&B server to propose its runs: "
        f"unset it, {offline}"
    )
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert main([sweep]) == 2
    assert capsys.readouterr().err == (
        "loopformer sweep: error: no W&B login or API key found, and a W&B sweep needs the W&B server: run `wandb "
        f"login` or set WANDB_API_KEY, {offline}"
    )
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)

    def unreachable(*args, **kwargs):
        raise wandb.errors.CommError("Failed to verify credentials: no network")

    monkeypatch.setattr(wandb, "sweep", unreachable)
    assert main([sweep]) == 2
    assert capsys.readouterr().err == (
        "loopformer sweep: error: W&B could not create the sweep (CommError: Failed to verify credentials: no network):"
        f" check the login and the network, {offline}"
    )
