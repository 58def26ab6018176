"""Hyperband on simulated histories, and the offline runner honouring it with real processes."""

import csv
import json
import os
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

import sweeps
from loopformer.sweep.cli import main
from loopformer.sweep.runner import OfflineSweep
from sweeps import RunState, SweepRun

HERE = Path(__file__).resolve().parent
HYPERBAND = {"type": "hyperband", "min_iter": 3, "max_iter": 10, "s": 2, "eta": 3}


def _config(**extra):
    config = {
        "method": "grid",
        "metric": {"name": "val/exact_accuracy", "goal": "maximize"},
        "early_terminate": HYPERBAND,
        "parameters": {"quality": {"values": [0.9, 0.3, 0.2, 0.1]}},
        "command": [sys.executable, str(HERE / "fake_trial.py"), "${args}"],
    }
    config.update(extra)
    return config


def test_hyperband_stops_a_run_with_a_poor_history():
    history = lambda q, n: [{"val/exact_accuracy": q * k / 10} for k in range(1, n + 1)]  # noqa: E731
    runs = [SweepRun(name=f"good{i}", state=RunState.finished, history=history(0.9, 10), config={}) for i in range(3)]
    runs.append(SweepRun(name="poor", state=RunState.running, history=history(0.1, 3), config={}))
    runs.append(SweepRun(name="promising", state=RunState.running, history=history(1.0, 2), config={}))
    # With max_iter 10, s 2, eta 3 the engine compares runs after 1 and 3 reports (10/3, 10/9), keeping the top third.
    stopped = {r.name for r in sweeps.stop_runs(_config(), runs)}
    assert stopped == {"poor"}


def test_offline_runner_stops_poor_trials_and_resumes(tmp_path):
    sweep_file = tmp_path / "fake.yaml"
    sweep_file.write_text(yaml.safe_dump(_config()))
    out = tmp_path / "out"
    OfflineSweep(sweep_file, out, poll_seconds=0.05).run(count=1)
    state = json.loads((out / "state.json").read_text())
    assert [t["state"] for t in state["trials"]] == ["finished"]  # nothing to compare with yet

    trials = OfflineSweep(sweep_file, out, poll_seconds=0.05).run(count=10)  # resumes: 1 done, 3 more in the grid
    assert [t.name for t in trials] == ["trial-000", "trial-001", "trial-002", "trial-003"]
    by_quality = {t.config["quality"]["value"]: t for t in trials}
    assert by_quality[0.9].state == "finished" and len(by_quality[0.9].history) == 10
    stopped = [t for t in trials if t.state == "stopped"]
    assert stopped, [(t.config, t.state, len(t.history)) for t in trials]
    assert all(t.exitcode == 143 and len(t.history) < 10 for t in stopped)

    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and {"quality", "best val/exact_accuracy", "state"} <= set(rows[0])
    finished = next(r for r in rows if r["quality"] == "0.9")
    assert float(finished["val/flops_per_puzzle"]) == 1e6 * 0.9 + 10  # the compute behind its best report
    assert (out / "parallel_coordinates.png").stat().st_size > 1000


def test_a_finished_trial_without_a_report_is_named_with_the_likely_reason(tmp_path, capsys):
    sweep_file = tmp_path / "fake.yaml"
    sweep_file.write_text(yaml.safe_dump(_config(parameters={"quality": {"values": [0.5]}})))
    (trial,) = OfflineSweep(sweep_file, tmp_path / "out", poll_seconds=0.05, overrides=["--reports=0"]).run(count=1)
    assert trial.state == "finished" and trial.history == []
    out = capsys.readouterr().out
    assert "trial-000: finished (exit 0), 0 reports, best None" in out
    assert (
        "trial-000: it reported no val/exact_accuracy, so the sweep learns nothing from it: did training end before "
        "its first evaluation (trainer.max_steps below trainer.val_check_interval)? Its log: "
    ) in out


def test_trials_refused_their_shared_settings_stop_the_runner_after_two(tmp_path, capsys):
    """Two trials in a row stopped on bad input with the same error, whatever they drew: the runner stops, naming
    it, instead of failing the rest of the sweep; an error that depends on the drawn values does not stop it."""
    sweep_file = tmp_path / "fake.yaml"
    config = _config()
    del config["early_terminate"]
    sweep_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "shared"
    code = main([str(sweep_file), "--offline", "--count", "4", "--out", str(out), "--refuse=no GPU here."])
    assert code == 2
    captured = capsys.readouterr()
    assert f"trial-000: no GPU here. (its log: {out / 'trial-000.log'})" in captured.out
    assert captured.err.strip() == (
        f"loopformer sweep: error: {sweep_file}: two trials in a row stopped before they started, whatever values they "
        "drew, with: no GPU here; fix what every trial shares (the sweep file's command, the overrides) and run it "
        "again: the sweep continues where it stopped."
    )
    assert [t["state"] for t in json.loads((out / "state.json").read_text())["trials"]] == ["failed", "failed"]
    # fixed: the sweep continues with the new overrides (no trial ran with the old ones)
    assert main([str(sweep_file), "--offline", "--count", "3", "--out", str(out), "--pause=0.01"]) == 0
    states = [t["state"] for t in json.loads((out / "state.json").read_text())["trials"]]
    assert states == ["failed", "failed", "finished"]

    out = tmp_path / "per-trial"
    code = main([str(sweep_file), "--offline", "--count", "4", "--out", str(out), "--refuse=q={quality}"])
    assert code == 1  # every trial ran (and failed, each its own way): no trial finished
    assert [t["state"] for t in json.loads((out / "state.json").read_text())["trials"]] == ["failed"] * 4
    assert "trial-003: q=0.1 (its log:" in capsys.readouterr().out


def test_a_sweep_continues_only_with_the_settings_its_trials_ran_with(tmp_path, capsys):
    """Another sweep file configuration or other trial overrides on a sweep directory would add trials that are not
    comparable with its others: one line, exit 2, nothing run."""
    sweep_file = tmp_path / "fake.yaml"
    config = _config(parameters={"quality": {"values": [0.5, 0.6, 0.7]}})
    sweep_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main([str(sweep_file), "--offline", "--count", "1", "--out", str(out), "--pause=0.01"]) == 0
    capsys.readouterr()

    assert main([str(sweep_file), "--offline", "--count", "2", "--out", str(out), "--pause=0.02"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"loopformer sweep: error: {out} holds 1 trial of a sweep started with other settings: they ran with the "
        "overrides --pause=0.01, not --pause=0.02. New trials would not be comparable with them: give the settings "
        "it was started with to continue it, or another --out for a new sweep."
    )
    sweep_file.write_text(yaml.safe_dump({**config, "parameters": {"quality": {"values": [0.1, 0.2]}}}))
    assert main([str(sweep_file), "--offline", "--count", "2", "--out", str(out), "--pause=0.01"]) == 2
    assert "the sweep file's parameters differ from those they ran with." in capsys.readouterr().err
    assert len(json.loads((out / "state.json").read_text())["trials"]) == 1  # nothing was run

    sweep_file.write_text(yaml.safe_dump({**config, "description": "a label, which changes no trial"}))
    assert main([str(sweep_file), "--offline", "--count", "2", "--out", str(out), "--pause=0.01"]) == 0
    assert len(json.loads((out / "state.json").read_text())["trials"]) == 2
    capsys.readouterr()
    assert main([str(sweep_file), "--offline", "--count", "2", "--out", str(out), "--pause=0.01"]) == 0
    said = capsys.readouterr().out
    assert "nothing new ran: the sweep already holds 2 trials (--count 2; a larger --count runs more)" in said
    assert main([str(sweep_file), "--offline", "--count", "5", "--out", str(out), "--pause=0.01"]) == 0  # the grid
    assert main([str(sweep_file), "--offline", "--count", "5", "--out", str(out), "--pause=0.01"]) == 0
    said = capsys.readouterr().out
    assert "nothing new ran: the sweep file proposes no more trials than the 3 trials it holds (a grid run" in said


def test_runners_started_together_with_other_settings_do_not_mix_their_trials(tmp_path):
    """Both find the directory empty at their start; the one that claims a trial second stops, under the lock."""
    from loopformer.sweep.spec import SweepFileError

    sweep_file = tmp_path / "fake.yaml"
    sweep_file.write_text(yaml.safe_dump(_config(parameters={"quality": {"values": [0.5, 0.6]}})))
    out = tmp_path / "out"
    second = OfflineSweep(sweep_file, out, poll_seconds=0.05, overrides=["--pause=0.02"])
    OfflineSweep(sweep_file, out, poll_seconds=0.05, overrides=["--pause=0.01"]).run(count=1)
    with pytest.raises(SweepFileError, match=r"holds 1 trial of a sweep started with other settings: they ran with"):
        second.run(count=2)
    assert len(json.loads((out / "state.json").read_text())["trials"]) == 1


def test_sweep_command_rejects_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: sideways\n")
    assert main([str(bad), "--offline", "--out", str(tmp_path / "o")]) == 2
    assert "bad.yaml: not a valid sweep configuration" in capsys.readouterr().err


def test_online_sweep_creates_the_sweep_and_runs_the_wandb_agent(tmp_path, monkeypatch, capsys):
    import wandb

    from loopformer.sweep import cli as sweep_module

    created = {}

    def fake_sweep(config, project, entity):
        created.update(config=config, project=project, entity=entity)
        return "abc123"

    calls = []
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the tests' "disabled" would refuse an online sweep
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a login, as an online sweep needs
    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(sweep_module.subprocess, "call", lambda cmd, env: calls.append((cmd, env["PATH"])) or 0)
    root = Path(__file__).resolve().parents[2]
    assert main([str(root / "sweeps/stages_random.yaml"), "--count", "3", "--project", "p", "--entity", "e"]) == 0
    assert created["project"] == "p" and created["entity"] == "e"
    assert created["config"]["metric"]["name"] == "val/exact_accuracy"
    assert [cmd for cmd, _ in calls] == [["wandb", "agent", "e/p/abc123", "--count", "3"]]
    scripts = sysconfig.get_path("scripts")
    if (Path(scripts) / "loopformer").is_file():  # installed: `wandb` and its trials' `loopformer` are this one's
        assert calls[0][1].split(os.pathsep)[0] == scripts
    assert "wandb agent e/p/abc123" in capsys.readouterr().out
