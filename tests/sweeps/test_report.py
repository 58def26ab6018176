"""`loopformer sweep report`: ranking, Pareto front, importance, and both sources (offline directory, W&B API)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from loopformer.sweep.cli import main as sweep_main
from loopformer.sweep.report.analysis import pareto_front, permutation_importance
from loopformer.sweep.report.records import RunRecord, ScoredRun, describe_schedule
from loopformer.sweep.report.report import main as report_main

ROOT = Path(__file__).resolve().parents[2]
METRIC = "val/exact_accuracy"
PER_ACT_STEP = 1e7  # FLOPs per ACT step of a schedule with one block application in all


def _arch(r0: int, r1: int) -> dict:
    return {
        "model": {
            "arch": {
                "stages": [
                    {"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": r0},
                    {"target": "z_H", "sources": ["z_L"], "include_inputs": False, "repeat": r1},
                ],
                "outer_cycles": 2,
            }
        },
        "compute/flops_per_act_step": PER_ACT_STEP * (r0 + r1),
        "compute/blocks_per_act_step": 2 * (r0 + r1),
    }


def _reports(values: list[float], r0: int, r1: int, steps: float = 4.0, with_flops: bool = True) -> list[dict]:
    out = []
    for i, v in enumerate(values):
        report = {"_step": 100 * (i + 1), METRIC: v, "val/steps": steps}
        if with_flops:
            report["val/flops_per_puzzle"] = steps * PER_ACT_STEP * (r0 + r1)
        out.append(report)
    return out


def _trial(name, state, r0, r1, lr, values, **kw) -> dict:
    config = {"model.arch.stages.0.repeat": {"value": r0}, "model.arch.stages.1.repeat": {"value": r1}}
    config["model.optim.lr"] = {"value": lr}  # a swept parameter that is not a stage field
    return {
        "name": name,
        "config": config,
        "state": state,
        "history": _reports(values, r0, r1, **kw),
        "exitcode": {"finished": 0, "stopped": 143, "failed": 1}.get(state),
        "seconds": 10.0,
        "run_config": _arch(r0, r1),
    }


@pytest.fixture
def offline_dir(tmp_path) -> Path:
    """A hand-made offline sweep: cheap-and-good, dear-and-best, a dominated one, a hyperband-stopped one, one
    that crashed before reporting, one still running, and one from before compute accounting (no FLOPs)."""
    trials = [
        _trial("cheap", "finished", 1, 1, 1e-3, [0.2, 0.6, 0.7]),  # 8e7 FLOPs/puzzle
        _trial("dear", "finished", 4, 2, 1e-3, [0.3, 0.8, 0.9]),  # 2.4e8
        _trial("dominated", "finished", 3, 2, 3e-4, [0.1, 0.5, 0.65]),  # 2e8, worse than cheap
        _trial("middle", "stopped", 2, 1, 3e-4, [0.75]),  # 1.2e8, stopped after one report
        _trial("crashed", "failed", 2, 2, 1e-4, []),
        _trial("busy", "running", 1, 2, 1e-4, [0.99]),
    ]
    old = _trial("old", "finished", 2, 2, 1e-4, [0.4, 0.5], with_flops=False)
    old["run_config"] = {}  # recorded before runs kept their config: no schedule, no FLOPs
    trials.append(old)
    state = {
        "sweep": "sweeps/gone.yaml",
        "metric": {"name": METRIC, "goal": "maximize"},
        "parameters": ["model.arch.stages.0.repeat", "model.arch.stages.1.repeat", "model.optim.lr"],
        "trials": trials,
    }
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "state.json").write_text(json.dumps(state))
    return tmp_path / "sweep"


def test_offline_report_ranks_finds_the_front_and_writes_every_file(offline_dir, capsys):
    assert report_main([str(offline_dir)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((offline_dir / "report.json").read_text())
    assert [r["run"] for r in report["ranked"]] == ["dear", "middle", "cheap", "dominated", "old"]
    assert [r["run"] for r in report["unscored"]] == ["crashed"] and report["running"] == ["busy"]
    dear = report["ranked"][0]
    assert dear["best"] == 0.9 and dear["flops_per_puzzle"] == pytest.approx(4 * 6 * PER_ACT_STEP)
    assert dear["schedule"] == "z_L<-[z_H,x]x4  z_H<-[z_L]x2, 2 cycles"
    assert report["ranked"][-1]["schedule"] == "?" and report["ranked"][-1]["flops_per_puzzle"] is None
    assert [r["run"] for r in report["pareto_front"]] == ["cheap", "middle", "dear"]  # cheapest first
    metric_effects = {e["parameter"]: e for e in report["importance"]["metric"]}
    assert set(metric_effects) == {"model.arch.stages.0.repeat", "model.arch.stages.1.repeat", "model.optim.lr"}
    assert sum(e["importance"] for e in metric_effects.values()) == pytest.approx(1.0)
    assert metric_effects["model.arch.stages.0.repeat"]["correlation"] > 0
    assert "metric per GFLOP" in report["importance"]

    md = (offline_dir / "report.md").read_text()
    assert "7 runs: 4 finished, 1 stopped early, 1 crashed, 1 still running" in md
    assert "| 0.08 to 0.12 | cheap | z_L<-[z_H,x]x1  z_H<-[z_L]x1, 2 cycles | 4 | 0.7 |" in md
    assert "| 0.24 and up | dear |" in md
    assert "| model.optim.lr |" in md
    for picture in ("pareto.png", "importance.png", "parallel_coordinates.png"):
        assert (offline_dir / picture).stat().st_size > 5000, picture
    assert "best: dear val/exact_accuracy=0.9 at 0.24 GFLOPs/puzzle" in printed
    assert "Pareto front (3 runs, cheapest first)" in printed and f"report: {offline_dir / 'report.md'}" in printed


def test_a_sweep_of_one_run_is_counted_in_the_singular(offline_dir, capsys):
    state = json.loads((offline_dir / "state.json").read_text())
    state["trials"] = state["trials"][:1]
    (offline_dir / "state.json").write_text(json.dumps(state))
    assert report_main([str(offline_dir)]) == 0
    printed = capsys.readouterr().out  # it said "1 runs: 1 finished" and "Pareto front (1 runs, ..."
    assert "1 run: 1 finished, 0 stopped early, 0 crashed." in printed and "Pareto front (1 run, cheapest" in printed


def test_report_goes_where_out_says_and_reads_state_files_without_a_recorded_metric(offline_dir, tmp_path):
    state = json.loads((offline_dir / "state.json").read_text())
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "method": "grid",
                "metric": {"name": METRIC, "goal": "maximize"},
                "parameters": {"model.arch.stages.0.repeat": {"values": [1, 2]}},
                "command": ["loopformer", "fit", "${args}"],
            }
        )
    )
    del state["metric"], state["parameters"]  # a state.json written before the runner kept them
    state["sweep"] = str(sweep_file)
    (offline_dir / "state.json").write_text(json.dumps(state))
    out = tmp_path / "elsewhere"
    assert report_main([str(offline_dir), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["ranked"][0]["run"] == "dear"
    assert [e["parameter"] for e in report["importance"]["metric"]] == ["model.arch.stages.0.repeat"]
    assert not (offline_dir / "report.md").exists()


def _state(text: str):
    def make(d: Path) -> Path:
        (d / "state.json").write_text(text)
        return d

    return make


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "no such directory, and not a W&B sweep path"),
        (lambda d: d, "holds no state.json"),
        (_state("{not json"), "not valid JSON"),
        (_state('{"trials": 3}'), "has no list of trials"),
        (_state('{"trials": []}'), "the sweep has no runs yet"),
        (
            _state(json.dumps({"trials": [_trial("a", "failed", 1, 1, 0.1, [])]})),
            "no run has reported val/exact_accuracy yet (a crashed)",
        ),
    ],
)
def test_a_source_with_nothing_to_report_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    source = make(tmp_path)
    assert report_main([str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loopformer sweep report: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "report.md").exists()


def test_pareto_front_keeps_only_runs_nothing_cheaper_beats():
    def run(name, flops, best):
        return ScoredRun(RunRecord(name, "finished", {}, []), best, 1.0, 1.0, flops, "?")

    runs = [run("a", 1.0, 0.5), run("b", 2.0, 0.4), run("c", 3.0, 0.9), run("d", 3.0, 0.95), run("e", 9.0, 0.95)]
    runs.append(run("no-flops", None, 1.0))
    assert [r.name for r in pareto_front(runs, "maximize")] == ["a", "d"]
    assert [r.name for r in pareto_front(runs, "minimize")] == ["a", "b"]  # a loss: lower is better


def test_permutation_importance_finds_the_parameter_that_matters():
    rng = np.random.default_rng(1)
    rows = [{"depth": int(d), "noise": float(n), "flag": bool(f)} for d, n, f in rng.integers(0, 5, (30, 3))]
    y = np.array([r["depth"] ** 2 * 0.1 - (0.3 if r["flag"] else 0.0) for r in rows])
    effects = {e.parameter: e for e in permutation_importance(rows, ["depth", "noise", "flag"], y)}
    assert effects["depth"].importance > 0.7 and effects["noise"].importance < 0.05
    assert effects["flag"].importance > effects["noise"].importance
    assert effects["depth"].correlation > 0.9 and effects["flag"].correlation < 0
    assert sum(e.importance for e in effects.values()) == pytest.approx(1.0)


def test_schedule_in_words_and_unknown_schedules():
    assert describe_schedule(_arch(3, 1)) == "z_L<-[z_H,x]x3  z_H<-[z_L]x1, 2 cycles"
    assert describe_schedule({}) == "?" and describe_schedule({"model": {"arch": {"stages": "x"}}}) == "?"
    hrm = _arch(2, 1)
    for stage in hrm["model"]["arch"]["stages"]:
        stage["grad_last"] = 1
    assert describe_schedule(hrm) == "z_L<-[z_H,x]x2(grad last 1)  z_H<-[z_L]x1(grad last 1), 2 cycles"


# -- the W&B source, through a fake of the public API -------------------------------------------------------------
class FakeRun:
    """Shaped like ``wandb.apis.public.Run``: name, state, config, summary_metrics, scan_history(keys)."""

    def __init__(self, name, state, config, summary, history):
        self.id, self.name, self.state = name, name, state
        self.config, self.summary_metrics, self._history = config, summary, history

    def scan_history(self, keys=None):
        return iter([row for row in self._history if all(k in row for k in keys or [])])


class FakeSweep:
    def __init__(self, config, runs):
        self.config, self.runs = config, runs


class FakeApi:
    def __init__(self, sweep):
        self._sweep, self.asked = sweep, []

    def sweep(self, path):
        self.asked.append(path)
        return self._sweep


def _wandb_config(r0, r1, lr):
    nested = _arch(r0, r1)
    nested["model"]["optim"] = {"lr": lr}
    return {**nested, "model.arch.stages.0.repeat": r0, "trainer": {"max_steps": 1000}}  # flat only for stage 0


def _fake_sweep() -> FakeSweep:
    config = {
        "method": "random",
        "metric": {"name": METRIC, "goal": "maximize"},
        "parameters": {p: {"values": [1]} for p in ("model.arch.stages.0.repeat", "model.arch.stages.1.repeat")},
    }
    config["parameters"]["model.optim.lr"] = {"values": [1e-3]}
    runs = [
        FakeRun("w-cheap", "finished", _wandb_config(1, 1, 1e-3), {METRIC: 0.7}, _reports([0.2, 0.7], 1, 1)),
        FakeRun("w-dear", "finished", _wandb_config(4, 2, 1e-3), {METRIC: 0.9}, _reports([0.5, 0.9], 4, 2)),
        FakeRun("w-killed", "killed", _wandb_config(2, 1, 3e-4), {METRIC: 0.6}, _reports([0.6], 2, 1)),
        # our runs exit 128+SIGTERM when the agent stops them (W&B: "failed") and say so in the summary
        FakeRun("w-stopped", "failed", _wandb_config(3, 2, 3e-4), {METRIC: 0.5, "stopped_by_signal": True}, []),
        FakeRun("w-crashed", "crashed", _wandb_config(2, 2, 1e-4), {}, []),
        FakeRun("w-running", "running", _wandb_config(1, 2, 1e-4), {METRIC: 0.3}, _reports([0.3], 1, 2)),
        FakeRun("w-bare", "finished", None, None, [{METRIC: 0.1, "_step": 5}]),  # no config, no summary
    ]
    runs.append(FakeRun("w-dear", "finished", _wandb_config(4, 2, 1e-3), {}, _reports([0.5], 4, 2)))  # listed twice
    return FakeSweep(config, runs)


def test_wandb_sweep_report_through_the_public_api_shape(tmp_path, capsys):
    api = FakeApi(_fake_sweep())
    out = tmp_path / "wb"
    assert sweep_main(["report", "me/loopformer/abc123", "--out", str(out)], wandb_api=lambda: api) == 0
    assert api.asked == ["me/loopformer/abc123"]
    report = json.loads((out / "report.json").read_text())
    ranked = {r["run"]: r for r in report["ranked"]}
    assert list(ranked) == ["w-dear", "w-cheap", "w-killed", "w-stopped", "w-bare"]
    assert ranked["w-killed"]["state"] == "stopped" and ranked["w-stopped"]["state"] == "stopped"
    assert ranked["w-stopped"]["reports"] == 1  # no readable history: the summary's value
    assert ranked["w-dear"]["reports"] == 2  # the fuller of the two listings
    assert ranked["w-dear"]["params"] == {
        "model.arch.stages.0.repeat": 4,  # a flat config key, as the agent sets it
        "model.arch.stages.1.repeat": 2,  # found in the nested config
        "model.optim.lr": 1e-3,
    }
    assert ranked["w-bare"]["params"] == {} and ranked["w-bare"]["schedule"] == "?"
    assert [r["run"] for r in report["unscored"]] == ["w-crashed"] and report["running"] == ["w-running"]
    assert [r["run"] for r in report["pareto_front"]] == ["w-cheap", "w-dear"]
    md = (out / "report.md").read_text()
    assert "1 duplicate record(s) of a run dropped" in md and "1 still running" in md
    assert "w-dear" in capsys.readouterr().out


def test_unreachable_wandb_and_a_missing_key_are_one_line(tmp_path, monkeypatch, capsys):
    def unreachable():
        raise ConnectionError("HTTPSConnectionPool(host='api.wandb.ai'): Max retries exceeded\nmore detail")

    assert sweep_main(["report", "me/proj/abc", "--out", str(tmp_path)], wandb_api=unreachable) == 2
    err = capsys.readouterr().err
    assert "me/proj/abc: cannot read this W&B sweep (ConnectionError: HTTPSConnectionPool" in err
    assert err.count("\n") == 1

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login either
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert sweep_main(["report", "me/proj/abc", "--out", str(tmp_path)]) == 2
    assert "no W&B login or API key found" in capsys.readouterr().err

    empty = FakeApi(FakeSweep({"metric": {"name": METRIC}}, []))
    assert sweep_main(["report", "me/proj/abc", "--out", str(tmp_path)], wandb_api=lambda: empty) == 2
    assert "the sweep has no runs yet" in capsys.readouterr().err


@pytest.mark.slow
def test_report_of_a_real_offline_quickstart_sweep(sudoku4_dir, tmp_path):
    """A 3-trial grid over stage 0's repeat, each a short quickstart run; the report names every schedule."""
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "method": "grid",
                "metric": {"name": METRIC, "goal": "maximize"},
                "parameters": {"model.arch.stages.0.repeat": {"values": [1, 2, 3]}},
                "command": [
                    "${env}",
                    str(Path(sys.executable).parent / "loopformer"),
                    "fit",
                    "--config",
                    str(ROOT / "configs/quickstart.yaml"),
                    f"--data.data_paths={sudoku4_dir}",
                    "--data.global_batch_size=16",
                    "--model.arch.hidden_size=32",
                    "--model.arch.puzzle_emb_ndim=32",
                    "--trainer.max_steps=20",
                    "--trainer.val_check_interval=10",
                    "--trainer.enable_progress_bar=false",
                    f"--trainer.default_root_dir={tmp_path / 'runs'}",
                    "${args}",
                ],
            }
        )
    )
    out = tmp_path / "sweep"
    env = {"WANDB_MODE": "disabled", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    cmd = [str(Path(sys.executable).parent / "loopformer"), "sweep", str(sweep_file), "--offline", "--out", str(out)]
    proc = subprocess.run([*cmd, "--count", "3"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "loopformer sweep report" in proc.stdout
    report_cmd = [str(Path(sys.executable).parent / "loopformer"), "sweep", "report", str(out)]
    proc = subprocess.run(report_cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert sorted(r["schedule"].split("  ")[0] for r in report["ranked"]) == [
        "z_L<-[z_H,x]x1",
        "z_L<-[z_H,x]x2",
        "z_L<-[z_H,x]x3",
    ]
    flops = {r["params"]["model.arch.stages.0.repeat"]: r["flops_per_puzzle"] for r in report["ranked"]}
    steps = {r["params"]["model.arch.stages.0.repeat"]: r["steps"] for r in report["ranked"]}
    assert flops[1] / steps[1] < flops[2] / steps[2] < flops[3] / steps[3]  # more repeats, more work per ACT step
    assert report["pareto_front"] and (out / "pareto.png").exists() and (out / "report.md").exists()


def test_importance_with_too_few_runs_says_why_in_one_sentence():
    from loopformer.sweep.report.analysis import parameter_importance

    _, note = parameter_importance([], ["model.arch.stages.0.repeat"])
    assert note == (
        "for the metric, 0 runs with a value and 0 parameters that vary (it needs at least 4 runs and one varying "
        "parameter); for the metric per GFLOP, 0 runs with a value and 0 parameters that vary (it needs at least 4 "
        "runs and one varying parameter)"
    )
