import numpy as np
import pytest

from loopformer.data.format import DatasetError, load_split
from loopformer.data.generators.sudoku import _Grid, box_shape, build_sudoku_dataset, generate_sudoku


def _valid_solution(grid: np.ndarray, n: int) -> bool:
    g = grid.reshape(n, n)
    br, bc = box_shape(n)
    want = set(range(1, n + 1))
    rows = all(set(r) == want for r in g)
    cols = all(set(c) == want for c in g.T)
    boxes = all(set(g[r : r + br, c : c + bc].ravel()) == want for r in range(0, n, br) for c in range(0, n, bc))
    return rows and cols and boxes


@pytest.mark.parametrize("n,clues", [(4, 4), (4, 6), (6, 16), (9, 32)])
def test_generated_puzzles_have_one_solution_consistent_with_the_clues(n, clues):
    rng = np.random.default_rng(n * 100 + clues)
    grid = _Grid(n)
    for _ in range(5):
        puzzle, solution = generate_sudoku(n, clues, rng)
        assert _valid_solution(solution, n)
        given = puzzle > 0
        assert np.array_equal(puzzle[given], solution[given])
        assert given.sum() >= clues
        assert grid.count_solutions(list(puzzle), limit=2) == 1


def test_box_shapes_and_prime_sizes():
    assert box_shape(4) == (2, 2) and box_shape(6) == (2, 3) and box_shape(9) == (3, 3)
    with pytest.raises(DatasetError, match="n=5"):
        box_shape(5)


def test_dataset_split_has_no_overlap_and_hrm_tokens(tmp_path):
    build_sudoku_dataset(tmp_path / "d", n=4, clues=6, num_train=200, num_test=50, seed=3)
    meta, train = load_split(tmp_path / "d" / "train")
    test_meta, test = load_split(tmp_path / "d" / "test")
    assert meta.vocab_size == 6 and meta.seq_len == 16 and meta.ignore_label_id == 0
    tr, te = train["all"], test["all"]
    assert tr.num_examples == 200 and te.num_examples == 50
    assert not ({r.tobytes() for r in np.asarray(tr.inputs)} & {r.tobytes() for r in np.asarray(te.inputs)})
    assert set(np.unique(tr.inputs)) <= {1, 2, 3, 4, 5} and set(np.unique(tr.labels)) == {2, 3, 4, 5}
    assert np.array_equal(tr.puzzle_indices, np.arange(201)) and np.array_equal(tr.group_indices, np.arange(201))


def test_puzzles_that_keep_more_clues_than_asked_are_said_to(tmp_path, capsys):
    """Removal stops where the solution would stop being unique: 9x9 puzzles keep more than 17 clues, and the build
    says why its mean is above what was asked (the help says it too)."""
    from loopformer.data.cli import main as data_main

    args = ["--size", "9", "--num-train", "3", "--num-test", "1"]
    assert data_main(["build", "sudoku-gen", str(tmp_path / "hard"), "--clues", "17", *args]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    mean = float(line.split("mean_clues: ")[1].split(",")[0])
    assert mean >= 17.5 and line.endswith(
        ", note: 17 asked: a clue stays where removing it would leave more than one solution"
    )
    assert data_main(["build", "sudoku-gen", str(tmp_path / "easy"), "--clues", "60", *args]) == 0
    assert "note" not in capsys.readouterr().out  # 60 clues are reached exactly
