"""The sweep report against training compute: learning curves, the ranking at equal training compute, the best
schedule at each training budget and the Pareto front of the best metric against the compute it took."""

import json

import pytest

from loopformer.sweep.report.analysis import analyse
from loopformer.sweep.report.records import RunRecord, SweepRuns
from loopformer.sweep.report.report import write_json, write_markdown, write_pictures
from loopformer.sweep.report.training_compute import learning_curve

METRIC = "val/exact_accuracy"


def _record(name, state, per_step, values, every=100, logged=True):
    reports = []
    for k, v in enumerate(values, 1):
        report = {"_step": every * k, METRIC: v}
        if logged:
            report["compute/train_flops"] = every * k * per_step
        reports.append(report)
    config = {"compute/train_flops_per_step": per_step, "model": {"arch": {"stages": [{"target": "z", "repeat": 1}]}}}
    return RunRecord(name, state, {"model.arch.stages.0.repeat": per_step}, reports, config)


def _sweep(tmp_path, runs):
    return SweepRuns("test", METRIC, "maximize", ["model.arch.stages.0.repeat"], runs, tmp_path)


def test_equal_steps_favour_the_deeper_schedule_and_equal_compute_takes_it_back(tmp_path):
    # the deep schedule costs 2x a step; at equal steps it wins (0.9 vs 0.8), but at the compute the shallow one
    # spent in its 4 reports the deep one had reached only 0.6
    deep = _record("deep", "finished", 2e9, [0.3, 0.6, 0.8, 0.9])
    shallow = _record("shallow", "finished", 1e9, [0.5, 0.65, 0.75, 0.8])
    stopped = _record("stopped", "stopped", 1e9, [0.1])  # never reached the equal budget
    analysis = analyse(_sweep(tmp_path, [deep, shallow, stopped]))
    assert analysis.ranked[0].name == "deep"  # by best metric alone
    views = analysis.training
    assert views.equal_budget == 4e11  # the smallest final training compute of the finished runs
    assert [(r.name, v) for r, v in views.at_equal] == [("shallow", 0.8), ("deep", 0.6)]
    assert [(b, r.name, v) for b, r, v, _ in views.best_at_budget] == [
        (1e11, "shallow", 0.5), (2e11, "shallow", 0.65), (3e11, "shallow", 0.75), (4e11, "shallow", 0.8),
        (6e11, "deep", 0.8), (8e11, "deep", 0.9),
    ]  # fmt: skip
    assert [(r.name, spent, v) for r, spent, v in views.front] == [
        ("stopped", 1e11, 0.1), ("shallow", 4e11, 0.8), ("deep", 8e11, 0.9)
    ]  # fmt: skip

    write_pictures(analysis, tmp_path)
    write_markdown(analysis, tmp_path / "report.md")
    write_json(analysis, tmp_path / "report.json")
    assert (tmp_path / "learning_curves.png").stat().st_size > 5000
    assert (tmp_path / "pareto_training.png").stat().st_size > 5000
    text = (tmp_path / "report.md").read_text()
    assert "## At equal training compute" in text and "within 4e+11 training FLOPs" in text
    assert "| 1 | shallow | finished |" in text
    report = json.loads((tmp_path / "report.json").read_text())["training_compute"]
    assert report["equal_budget"] == 4e11 and report["at_equal_budget"][0] == {"run": "shallow", "best": 0.8}


def test_runs_without_logged_training_compute_use_their_step_and_per_step_cost(tmp_path):
    old = _record("old", "finished", 3e9, [0.2, 0.4], logged=False)
    assert learning_curve(old, METRIC) == [(3e11, 0.2), (6e11, 0.4)]
    del old.run_config["compute/train_flops_per_step"]
    assert learning_curve(old, METRIC) == []
    analysis = analyse(_sweep(tmp_path, [old]))
    assert analysis.training.best_at_budget == [] and analysis.training.equal_budget is None
    write_markdown(analysis, tmp_path / "report.md")
    assert "No run reported its training compute" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_hyperband_on_the_offline_runner_stops_at_equal_training_compute(sudoku4_dir, tmp_path, monkeypatch):
    """A real offline sweep of the quickstart at equal compute: every trial reports 10 times, its k-th report after
    k x eval_every_flops within half a step per report whatever its depth, so hyperband's rungs compare equal
    compute; and it stops the trials that cannot see the puzzle."""
    import os
    import sys
    from pathlib import Path

    import yaml

    from loopformer.sweep.runner import OfflineSweep

    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}")
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "sweeps/quickstart_stages_equal_compute.yaml").read_text())
    config["method"], config["metric"]["name"] = "grid", "val/accuracy"  # token accuracy moves within a few steps
    config["parameters"] = {"model.arch.stages.0.repeat": {"values": [3, 1]},
                            "model.arch.stages.0.include_inputs": {"values": [True, False]},
                            "model.arch.stages.1.include_inputs": {"values": [True, False]}}  # fmt: skip
    every = 2e9  # about 5 steps of the default schedule at hidden size 32, batch 16
    flags = [f"--data.data_paths={sudoku4_dir}", "--data.global_batch_size=16", "--data.eval_batch_size=40",
             "--model.arch.hidden_size=32", "--model.arch.puzzle_emb_ndim=32", "--model.train.act.halt_max_steps=2",
             "--model.eval.num_pictures=0", f"--model.budget.train_flops={10 * every}",
             f"--model.budget.eval_every_flops={every}"]  # fmt: skip
    config["command"] = [str(root / a) if a.startswith("configs/") else a for a in config["command"][:-1]]
    config["command"] += [*flags, "${args}"]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    trials = OfflineSweep(tmp_path / "sweep.yaml", tmp_path / "out", poll_seconds=0.2).run(count=8)
    summary = [(t.name, t.config, t.state, len(t.history)) for t in trials]
    assert any(t.state == "stopped" for t in trials) and any(t.state == "finished" for t in trials), summary
    for t in trials:
        reports = [r for r in t.history if "compute/train_flops" in r]
        assert len(reports) == 10 if t.state == "finished" else 0 < len(reports) < 10, summary
        config_line = t.run_config["compute/train_flops_per_step"]
        for k, report in enumerate(reports, 1):  # the k-th report after k x every, within k half steps
            assert abs(report["compute/train_flops"] - k * every) <= k * config_line / 2, (t.name, k, report)
