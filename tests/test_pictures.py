"""Every picture reads at a glance, checked on the figure itself (each ``savefig`` is captured): series that coincide
stay visible, a sweep of one or two runs gets sensible axes, colour bars span the metric's real range, booleans read
False/True, panels name the metric, prediction pictures say what red means and at which step, and `data show` names
the dataset and the split and draws into the current directory."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture
def figures(monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        saved.append(self)
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def test_a_depth_curve_whose_two_series_coincide_shows_both(figures, tmp_path):
    from loopformer.evaluation.depth_curve import plot

    rows = [dict(depth=d, act_inference=a, exact_accuracy=0.5 + 0.1 * d) for d in (1, 2, 4) for a in (False, True)]
    plot(rows, tmp_path / "curve.png")
    (ax,) = figures[-1].axes
    fixed, halting = ax.get_lines()
    assert list(fixed.get_ydata()) == list(halting.get_ydata())
    assert halting.get_markerfacecolor() == "none" and halting.get_markersize() > fixed.get_markersize()
    assert halting.get_zorder() > fixed.get_zorder()  # the hollow marker drawn over the filled one
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["fixed depth", "halting on the Q head (the same at every depth)"]
    rows[-1]["exact_accuracy"] = 0.2
    plot(rows, tmp_path / "curve.png")
    assert [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()][1] == "halting on the Q head"


def _run(name, flops, best, state="finished"):
    return SimpleNamespace(name=name, flops_per_puzzle=flops, best=best, state=state)


@pytest.mark.parametrize("bests", [[0.0], [1.0], [0.4, 0.4]])
def test_a_pareto_picture_of_one_or_two_runs_keeps_accuracy_within_0_and_1(figures, tmp_path, bests):
    from loopformer.sweep.report.plots import plot_pareto

    runs = [_run(f"r{i}", 1e6 * (i + 1), b) for i, b in enumerate(bests)]
    plot_pareto(runs, runs[:1], "val/exact_accuracy", tmp_path / "p.png")
    ax = figures[-1].axes[0]
    bottom, top = ax.get_ylim()
    assert -0.01 <= bottom and top <= 1.01 and top - bottom >= 0.09
    assert all(bottom <= b <= top for b in bests)
    assert not ax.get_lines()  # no step line for a front of one run
    left, right = ax.get_xlim()
    assert left < 1e6 and right > 1e6 * len(bests)


def test_the_pareto_step_line_ends_at_the_last_run_of_the_front(figures, tmp_path):
    from loopformer.sweep.report.plots import plot_pareto

    runs = [_run("a", 1e6, 0.5), _run("b", 4e6, 0.8), _run("c", 9e6, 0.7)]
    plot_pareto(runs, runs[:2], "val/exact_accuracy", tmp_path / "p.png")
    (step,) = figures[-1].axes[0].get_lines()
    assert max(step.get_xdata()) == 4e6


def test_parallel_coordinates_colour_bar_spans_the_metric_and_booleans_read_false_true(figures, tmp_path):
    from loopformer.sweep.report.plots import plot_parallel_coordinates

    lines = [{"model.arch.stages.0.include_inputs": flag, "model.arch.stages.0.repeat": r, "val/exact_accuracy": 0.0,
              "state": "finished"} for flag, r in ((True, 1), (False, 2), (True, 3))]  # fmt: skip
    axes = ["model.arch.stages.0.include_inputs", "model.arch.stages.0.repeat", "val/exact_accuracy"]
    plot_parallel_coordinates(lines, axes, "val/exact_accuracy", tmp_path / "pc.png")
    main, colour_bar = figures[-1].axes
    assert colour_bar.get_ylim() == (0.0, 1.0)  # every run scored 0: the bar still spans an accuracy's 0..1
    on_the_boolean_axis = {t.get_text() for t in main.texts if t.get_position()[0] < 0.5}
    assert on_the_boolean_axis == {"False", "True"}  # not 0 and 1

    for line, score in zip(lines, (0.2, 0.5, 0.6), strict=True):
        line["val/exact_accuracy"] = score
    plot_parallel_coordinates(lines, axes, "val/exact_accuracy", tmp_path / "pc.png")
    assert figures[-1].axes[1].get_ylim() == pytest.approx((0.2, 0.6))


def test_importance_panels_are_titled_with_the_metric(figures, tmp_path):
    from loopformer.sweep.report.plots import plot_importance

    effect = SimpleNamespace(parameter="model.arch.stages.0.repeat", importance=1.0, correlation=0.5)
    plot_importance({"metric": [effect], "metric per GFLOP": [effect]}, tmp_path / "i.png", "val/exact_accuracy")
    titles = [ax.get_title() for ax in figures[-1].axes]
    assert titles[0].startswith("importance for val/exact_accuracy\n")
    assert titles[1].startswith("importance for val/exact_accuracy per GFLOP\n")


def test_a_prediction_picture_says_what_red_means_and_at_which_step(figures, sudoku4_dir, tmp_path):
    from loopformer.data.format import load_split
    from loopformer.data.show import save_prediction_png

    meta, sets = load_split(sudoku4_dir / "test")
    s = next(iter(sets.values()))
    inputs, labels = np.asarray(s.inputs[:2]), np.asarray(s.labels[:2])
    preds = labels.copy()
    preds[0, 0] = 2 if labels[0, 0] != 2 else 3
    assert save_prediction_png(meta, inputs, preds, labels, tmp_path / "p.png", "val predictions at step 7")
    title = figures[-1].get_suptitle()
    assert title.startswith("val predictions at step 7\n") and "red" in title


def test_data_show_names_the_dataset_and_split_and_draws_into_the_current_directory(
    figures, sudoku4_dir, tmp_path, monkeypatch, capsys
):
    from loopformer.data.cli import main as data_main

    monkeypatch.chdir(tmp_path)
    assert data_main(["show", str(sudoku4_dir), "--count", "2", "--split", "train"]) == 0
    picture = tmp_path / f"{Path(sudoku4_dir).name}_train_examples.png"
    assert picture.stat().st_size > 2000 and f"picture: {picture.name}" in capsys.readouterr().out
    assert not list(Path(sudoku4_dir).glob("*.png"))  # nothing written into the dataset
    title = figures[-1].get_suptitle()
    assert str(sudoku4_dir) in title and "train split: 2 of" in title
    assert data_main(["show", str(sudoku4_dir), "--count", "1", "--out", "elsewhere.png"]) == 0
    assert (tmp_path / "elsewhere.png").is_file()
    capsys.readouterr()
    # --out: a directory gets the default name inside it, a new directory is made, a name without suffix is a .png
    # (it wrote "dir.png" beside a directory, and said "picture: dir"; a missing directory was a traceback)
    (tmp_path / "pics").mkdir()
    for out, written in [("pics", f"pics/{picture.name}"), ("new/a.png", "new/a.png"), ("new/b", "new/b.png")]:
        assert data_main(["show", str(sudoku4_dir), "--count", "1", "--split", "train", "--out", out]) == 0
        assert (tmp_path / written).is_file() and f"picture: {written}\n" in capsys.readouterr().out
    assert not (tmp_path / "pics.png").exists()
    assert data_main(["show", str(sudoku4_dir), "--out", "a.jpg"]) == 2
    assert capsys.readouterr().err == (
        "loopformer data: error: --out a.jpg: expected a .png file name or a directory (the picture is a PNG).\n"
    )


def test_data_show_given_a_split_or_a_missing_directory_says_what_it_expects(sudoku4_dir, tmp_path, capsys):
    from loopformer.data.cli import main as data_main

    expected = "expected a dataset directory holding train/ and test/ (as `loopformer data build` writes it)."
    assert data_main(["show", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"loopformer data: error: {tmp_path / 'nope'}: no such directory; {expected}\n"
    split = Path(sudoku4_dir) / "test"
    assert data_main(["show", str(split)]) == 2  # it read <split>/test/dataset.json: "missing"
    assert capsys.readouterr().err == (
        f"loopformer data: error: {split}: no test/ there; {expected} {split} is the test split of the dataset "
        f"{sudoku4_dir}: give that directory.\n"
    )


def test_a_maze_picture_says_which_colour_is_the_start_the_goal_and_the_path(figures, tmp_path):
    from matplotlib.colors import to_hex

    from loopformer.data.common import GOAL, PATH, START
    from loopformer.data.show import save_png

    grid = np.full((5, 5), 2)  # open cells
    grid[0, 0], grid[4, 4], grid[2, 2] = START, GOAL, PATH
    save_png([("maze", grid.ravel(), "maze", None)], tmp_path / "m.png")
    title = figures[-1].get_suptitle()
    image = figures[-1].axes[0].get_images()[0]
    colour = {t: to_hex(image.cmap(image.norm(t))) for t in (START, GOAL, PATH)}
    assert title == "green: the start, red: the goal, blue: the path"
    assert colour == {START: "#2ecc40", GOAL: "#ff4136", PATH: "#0074d9"}  # green, red, blue
