import numpy as np
import pytest

from loopformer.data.cli import main as data_main
from loopformer.data.common import CHARSET, DIHEDRAL_INVERSE, GOAL, OPEN, PATH, START, WALL, dihedral_transform
from loopformer.data.format import load_split
from loopformer.data.generators.maze import generate_maze, shortest_paths


def test_dihedral_transforms_are_the_eight_symmetries_and_invert_exactly():
    grid = np.arange(12).reshape(3, 4)
    images = {dihedral_transform(grid, t).tobytes() + bytes(dihedral_transform(grid, t).shape) for t in range(8)}
    assert len(images) == 8
    for t in range(8):
        assert np.array_equal(dihedral_transform(dihedral_transform(grid, t), DIHEDRAL_INVERSE[t]), grid)


@pytest.mark.parametrize("side", [5, 11, 15])
def test_generated_maze_label_is_the_unique_shortest_path(side):
    rng = np.random.default_rng(side)
    for _ in range(5):
        maze, label = generate_maze(side, rng)
        assert (maze == START).sum() == 1 and (maze == GOAL).sum() == 1 and not (maze == PATH).any()
        assert np.array_equal(np.where(label == PATH, OPEN, label), maze)  # label = maze + path
        start = tuple(np.argwhere(maze == START)[0])
        goal = tuple(np.argwhere(maze == GOAL)[0])
        length, count, path = shortest_paths(maze != WALL, start, goal)
        assert count == 1
        assert {tuple(c) for c in np.argwhere(label == PATH)} == set(path[1:-1])
        assert length == len(path) - 1


def test_maze_csv_builder_with_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "maze-src"
    src.mkdir()
    for split, n in (("train", 3), ("test", 2)):
        rows = ["source,question,answer,rating"]
        for i in range(n):
            maze, label = generate_maze(7, rng)
            to_str = lambda g: "".join(CHARSET[t - 1] for t in g.ravel())  # noqa: E731
            rows.append(f"s{i},{to_str(maze)},{to_str(label)},0")
        (src / f"{split}.csv").write_text("\n".join(rows) + "\n")
    assert data_main(["build", "maze", str(src), str(tmp_path / "out"), "--aug"]) == 0
    meta, sets = load_split(tmp_path / "out" / "train")
    assert meta.vocab_size == 6 and meta.seq_len == 49
    s = sets["all"]
    assert s.num_examples == 24 and np.array_equal(s.group_indices, [0, 8, 16, 24])
    first = np.asarray(s.inputs[0]).reshape(7, 7)
    assert np.array_equal(np.asarray(s.inputs[1]).reshape(7, 7), np.rot90(first))
    _, test = load_split(tmp_path / "out" / "test")
    assert test["all"].num_examples == 2


def test_maze_csv_with_unknown_characters_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "train.csv").write_text("source,question,answer,rating\ns,#####X###,#########,0\n")
    (src / "test.csv").write_text("source,question,answer,rating\n")
    assert data_main(["build", "maze", str(src), str(tmp_path / "o")]) == 2
    expected = "expected a question and an answer that are n x n grids (the same n in every row) over the characters"
    assert f"train.csv:2: {expected} '# SGo'; found characters ['X'].\n" in capsys.readouterr().err
    # each thing wrong is named (a 3-character row was "expected two 2x2 grids")
    (src / "train.csv").write_text("source,question,answer,rating\ns,#########,#########,0\ns,# S,#,0\n"
                                   "s,################,################,0\n")  # fmt: skip
    assert data_main(["build", "maze", str(src), str(tmp_path / "o")]) == 2
    assert "train.csv:3: " in (err := capsys.readouterr().err) and err.endswith(
        "found the question's 3 characters are no square grid, the answer has 1 characters, the question 3.\n"
    )
    (src / "train.csv").write_text("source,question,answer,rating\ns,#########,#########,0\n"
                                   "s,################,################,0\n")  # fmt: skip
    assert data_main(["build", "maze", str(src), str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.endswith("found a 4x4 maze where the file's first is 3x3.\n")


def test_maze_generator_command_and_show(tmp_path, capsys):
    assert (
        data_main(["build", "maze-gen", str(tmp_path / "m"), "--side", "9", "--num-train", "20", "--num-test", "5"])
        == 0
    )
    assert data_main(["show", str(tmp_path / "m"), "--count", "1", "--png", str(tmp_path / "m.png")]) == 0
    out = capsys.readouterr().out
    assert "S" in out and "G" in out and "o" in out and "#" in out
    assert (tmp_path / "m.png").stat().st_size > 1000
