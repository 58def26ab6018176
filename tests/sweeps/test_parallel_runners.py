"""Offline runners that survive being killed and share a sweep: several on one directory run every trial exactly
once; a runner killed with SIGKILL leaves no trial running and its trial is run again; SIGTERM stops a runner's
trial and writes the results."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loopformer.sweep.runner import OfflineSweep
from loopformer.sweep.state import TrialRecord
from tests.helpers import child_pids, process_alive

HERE = Path(__file__).resolve().parent


def _sweep_file(tmp_path, qualities, pause=0.15, goal="maximize"):
    config = {
        "method": "grid",
        "metric": {"name": "val/exact_accuracy", "goal": goal},
        "parameters": {"quality": {"values": qualities}, "pause": {"value": pause}},
        "command": [sys.executable, str(HERE / "fake_trial.py"), "${args}"],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _runner(sweep_file, out, count, log, env=None):
    command = [sys.executable, "-m", "loopformer.cli", "sweep", str(sweep_file), "--offline", "--out", str(out)]
    env = {**os.environ, **(env or {})}
    return subprocess.Popen([*command, "--count", str(count)], stdout=log, stderr=subprocess.STDOUT, env=env)


def _state(out):
    return json.loads((out / "state.json").read_text())["trials"]


def test_two_runners_on_one_sweep_run_every_trial_exactly_once(tmp_path):
    sweep_file = _sweep_file(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    out = tmp_path / "out"
    with open(tmp_path / "a.log", "w") as log_a, open(tmp_path / "b.log", "w") as log_b:
        runners = [_runner(sweep_file, out, 6, log_a), _runner(sweep_file, out, 6, log_b)]
        codes = [r.wait(timeout=300) for r in runners]
    assert codes == [0, 0], (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    trials = _state(out)
    assert sorted(t["name"] for t in trials) == [f"trial-{i:03d}" for i in range(6)]
    assert sorted(t["config"]["quality"]["value"] for t in trials) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert all(t["state"] == "finished" and t["attempt"] == 1 and len(t["history"]) == 10 for t in trials)
    for t in trials:  # each trial's history written by one process: 10 reports, not 20
        assert len((out / f"{t['name']}.metrics.jsonl").read_text().splitlines()) == 10
    assert len({t["runner"] for t in trials}) == 2  # both runners took trials
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 6 and all(r["state"] == "finished" for r in rows)


def test_a_runner_with_nothing_left_to_run_says_so_and_exits_0(tmp_path, capsys):
    """`--gpus 0,1 --count 1`: the second runner found the one trial taken, and said "error: no trial finished"
    with exit 1 while the other ran it."""
    from loopformer.sweep.cli import main

    sweep_file = _sweep_file(tmp_path, [0.5], pause=0.3)
    out = tmp_path / "out"
    with open(tmp_path / "first.log", "w") as log:
        runner = _runner(sweep_file, out, 1, log)
        deadline = time.time() + 60
        while not (out / "trial-000.metrics.jsonl").exists():
            assert runner.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.1)
        assert main([str(sweep_file), "--offline", "--out", str(out), "--count", "1"]) == 0
        assert runner.wait(timeout=120) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == (
        "[sweep] nothing left to run: the sweep holds its 1 of --count 1 trials, 1 of them running in other runners\n"
    )
    assert [t["state"] for t in _state(out)] == ["finished"]


@pytest.mark.slow  # run by .ci/run; the default suite stays under 15 minutes
def test_a_runner_killed_with_sigkill_leaves_no_trial_behind_and_its_trial_runs_again(tmp_path):
    sweep_file = _sweep_file(tmp_path, [0.5], pause=1.0)
    out = tmp_path / "out"
    with open(tmp_path / "first.log", "w") as log:
        runner = _runner(sweep_file, out, 1, log)
        metrics = out / "trial-000.metrics.jsonl"
        deadline = time.time() + 60
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert runner.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.1)
        (trial_pid,) = child_pids(runner.pid)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    deadline = time.time() + 5
    while process_alive(trial_pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not process_alive(trial_pid), "the trial outlived its runner"
    partial = len(metrics.read_text().splitlines())
    assert _state(out)[0]["state"] == "running"  # as the dead runner left it

    with open(tmp_path / "second.log", "w") as log:
        second = _runner(sweep_file, out, 1, log, env={"FAKE_TRIAL_PAUSE": "0.05"})  # the same sweep, sooner done
        assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()
    second_log = (tmp_path / "second.log").read_text()
    assert "trial-000: its runner" in second_log and "attempt 1 is recorded as crashed" in second_log
    (trial,) = _state(out)
    assert trial["state"] == "finished" and trial["attempt"] == 2 and len(trial["history"]) == 10
    assert [a["state"] for a in trial["attempts"]] == ["crashed"] and len(trial["attempts"][0]["history"]) >= 1
    assert len(metrics.read_text().splitlines()) == partial  # the first attempt's history kept apart
    assert len((out / "trial-000.attempt-2.metrics.jsonl").read_text().splitlines()) == 10


def test_sigterm_to_a_runner_stops_its_trial_and_writes_the_results(tmp_path):
    sweep_file = _sweep_file(tmp_path, [0.5, 0.6], pause=1.0)
    out = tmp_path / "out"
    with open(tmp_path / "runner.log", "w") as log:
        runner = _runner(sweep_file, out, 2, log)
        metrics = out / "trial-000.metrics.jsonl"
        deadline = time.time() + 60
        while not metrics.exists():
            assert runner.poll() is None and time.time() < deadline, (tmp_path / "runner.log").read_text()
            time.sleep(0.1)
        runner.send_signal(signal.SIGTERM)
        code = runner.wait(timeout=60)
    assert code == 128 + signal.SIGTERM, (tmp_path / "runner.log").read_text()
    trials = _state(out)
    assert [(t["name"], t["state"]) for t in trials] == [("trial-000", "stopped")]  # and no new trial started
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["trial"], r["state"]) for r in rows] == [("trial-000", "stopped")]
    assert (out / "parallel_coordinates.png").stat().st_size > 1000


def test_the_results_rank_by_the_sweeps_goal(tmp_path):
    sweep = OfflineSweep(_sweep_file(tmp_path, [0.1], goal="minimize"), tmp_path / "out")
    history = [{"val/exact_accuracy": v, "val/flops_per_puzzle": 10 * v} for v in (0.5, 0.2, 0.4)]
    sweep.trials = [TrialRecord("trial-000", {"quality": {"value": 0.1}}, "finished", history)]
    (row,) = sweep.table()
    assert row["best val/exact_accuracy"] == 0.2 and row["val/flops_per_puzzle"] == 2.0
    assert row["last val/exact_accuracy"] == 0.4


def test_one_runner_per_gpu_shares_one_sweep(tmp_path):
    config = yaml.safe_load(_sweep_file(tmp_path, [0.1, 0.2, 0.3, 0.4]).read_text())
    config["command"] = [sys.executable, str(HERE / "device_trial.py"), "${args}"]
    del config["parameters"]["pause"]
    sweep_file = tmp_path / "gpus.yaml"
    sweep_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "loopformer.cli", "sweep", str(sweep_file), "--offline", "--out", str(out)]
    done = subprocess.run([*command, "--count", "4", "--gpus", "0,1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 runners ended (exit codes [0, 0])" in done.stdout
    trials = _state(out)
    assert sorted(t["config"]["quality"]["value"] for t in trials) == [0.1, 0.2, 0.3, 0.4]
    assert all(t["state"] == "finished" and len(t["history"]) == 3 for t in trials)
    gpu_of_runner = {}
    for t in trials:  # every report of a trial names its runner's one GPU
        (gpu,) = {h["gpu"] for h in t["history"]}
        assert gpu_of_runner.setdefault(t["runner"], gpu) == gpu
    assert sorted(gpu_of_runner.values()) == ["0", "1"]
    assert "[sweep gpu 0]" in done.stdout and "[sweep gpu 1]" in done.stdout
