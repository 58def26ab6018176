import json

import numpy as np
import pytest

from loopformer.data.builders.sudoku import build_sudoku_from_csv, shuffle_sudoku
from loopformer.data.cli import main as data_main
from loopformer.data.format import load_split
from loopformer.data.generators.sudoku import generate_sudoku
from tests.data.test_sudoku import _valid_solution


def _write_csv(path, rows):
    lines = ["source,question,answer,rating"]
    for i, (q, a, rating) in enumerate(rows):
        qs = "".join("." if d == 0 else str(d) for d in q)
        lines.append(f"src{i},{qs},{''.join(map(str, a))},{rating}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def extreme_csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    src = tmp_path_factory.mktemp("sudoku-extreme")
    for split, n in (("train", 6), ("test", 3)):
        _write_csv(src / f"{split}.csv", [(*generate_sudoku(9, 30, rng), r) for r in range(n)])
    return src


def test_no_augmentation_writes_what_the_trm_builder_writes(extreme_csv, tmp_path):
    out = tmp_path / "built"
    build_sudoku_from_csv(str(extreme_csv), out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    arrays = ["inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"]
    expected_files = ["identifiers.json"] + [
        f"{s}/{f}" for s in ("test", "train") for f in ["all__" + a + ".npy" for a in sorted(arrays)] + ["dataset.json"]
    ]
    assert files == sorted(expected_files)
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>"]
    for split in ("train", "test"):
        rows = [line.split(",") for line in (extreme_csv / f"{split}.csv").read_text().splitlines()[1:]]
        n = len(rows)
        # The TRM builder: '.' -> 0, digits as uint8, +1 so that 0 is padding; one puzzle per example.
        q = np.array([[0 if ch == "." else int(ch) for ch in r[1]] for r in rows], dtype=np.uint8) + 1
        a = np.array([[int(ch) for ch in r[2]] for r in rows], dtype=np.uint8) + 1
        expected = {
            "inputs": q,
            "labels": a,
            "puzzle_identifiers": np.zeros(n, np.int32),
            "puzzle_indices": np.arange(n + 1, dtype=np.int32),
            "group_indices": np.arange(n + 1, dtype=np.int32),
        }
        for name, arr in expected.items():
            got = np.load(out / split / f"all__{name}.npy")
            assert got.dtype == arr.dtype and np.array_equal(got, arr), (split, name)
        # TRM's fields, in TRM's order and formatting; then loopformer's declared kind and token names, which
        # TRM's loader (a pydantic model) ignores
        trm_text = json.dumps(
            {
                "pad_id": 0,
                "ignore_label_id": 0,
                "blank_identifier_id": 0,
                "vocab_size": 11,
                "seq_len": 81,
                "num_puzzle_identifiers": 1,
                "total_groups": n,
                "mean_puzzle_examples": 1.0,
                "total_puzzles": n,
                "sets": ["all"],
            }
        )
        ours = (out / split / "dataset.json").read_text()
        declared = ', "kind": "sudoku", "token_names": ["<pad>", ".", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}'
        assert ours == trm_text[:-1] + declared


def test_augmentations_are_valid_puzzles_grouped_with_their_source(extreme_csv, tmp_path):
    out = tmp_path / "aug"
    summary = build_sudoku_from_csv(str(extreme_csv), out, num_aug=3, seed=1)
    assert summary["train"] == {"puzzles": 6, "examples": 24} and summary["test"] == {"puzzles": 3, "examples": 3}
    meta, sets = load_split(out / "train")
    s = sets["all"]
    assert np.array_equal(s.group_indices, np.arange(7) * 4)
    for i in range(s.num_examples):
        q, a = np.asarray(s.inputs[i]).astype(int) - 1, np.asarray(s.labels[i]).astype(int) - 1
        assert _valid_solution(a.astype(np.uint8), 9)
        given = q > 0
        assert np.array_equal(q[given], a[given])
    first, second = np.asarray(s.inputs[0]), np.asarray(s.inputs[1])
    assert (first > 1).sum() == (second > 1).sum() and not np.array_equal(first, second)


def test_shuffle_keeps_the_solution_consistent():
    rng = np.random.default_rng(3)
    q, a = generate_sudoku(9, 28, rng)
    for _ in range(20):
        q2, a2 = shuffle_sudoku(q, a, rng)
        assert _valid_solution(a2, 9)
        assert np.array_equal(q2[q2 > 0], a2[q2 > 0]) and (q2 > 0).sum() == (q > 0).sum()


def test_min_difficulty_and_subsample(extreme_csv, tmp_path):
    build_sudoku_from_csv(str(extreme_csv), tmp_path / "a", subsample_size=2, min_difficulty=3, seed=0)
    _, sets = load_split(tmp_path / "a" / "train")
    assert sets["all"].num_examples == 2  # ratings 3, 4, 5 pass; 2 of them kept
    build_sudoku_from_csv(str(extreme_csv), tmp_path / "b", subsample_size=2, min_difficulty=3, seed=0)
    _, again = load_split(tmp_path / "b" / "train")
    assert np.array_equal(np.asarray(sets["all"].inputs), np.asarray(again["all"].inputs))


def test_bad_csv_and_missing_source_are_clear_errors(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.csv").write_text("source,question,answer,rating\nx,123,456,0\n")
    (src / "test.csv").write_text("source,question,answer,rating\n")
    assert data_main(["build", "sudoku", str(src), str(tmp_path / "o")]) == 2
    assert "train.csv:2: question and answer must be 81 digits" in capsys.readouterr().err
    (src / "test.csv").unlink()
    (src / "train.csv").write_text("source,question,answer,rating\n")
    assert data_main(["build", "sudoku", str(src), str(tmp_path / "o")]) == 2
    assert "test.csv: missing" in capsys.readouterr().err


def test_show_prints_grids_and_writes_a_png(sudoku4_dir, tmp_path, capsys):
    png = tmp_path / "examples.png"
    assert data_main(["show", str(sudoku4_dir), "--count", "2", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.count("input:") == 2 and out.count("label:") == 2 and "|" in out
    assert png.stat().st_size > 2000


def test_a_repo_id_is_downloaded_and_an_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import io
    import urllib.error

    from loopformer.data import common
    from loopformer.data.builders import sudoku as build_sudoku

    header = "source,question,answer,rating\n"
    row = "s," + "." * 81 + "," + "1" * 81 + ",0\n"
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO((header + row).encode())

    monkeypatch.setattr(common.urllib.request, "urlopen", fake_urlopen)
    summary = build_sudoku.build_sudoku_from_csv("someone/sudoku-extreme", tmp_path / "dl")
    assert asked == [common.HUB_URL.format(repo="someone/sudoku-extreme", split=s) for s in ("train", "test")]
    assert summary["train"] == {"puzzles": 1, "examples": 1}

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(common.urllib.request, "urlopen", offline)
    assert data_main(["build", "sudoku", "someone/other-repo", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "someone/other-repo: not a local directory" in err and "no network" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["sudoku-gen", "--size", "5", "--clues", "3"], "sudoku size n=5 has no box shape"),
        (["sudoku-gen", "--size", "0"], "sudoku size n=0: expected n >= 4 with a box shape (not prime)"),  # traceback
        (["sudoku-gen", "--size", "1", "--clues", "1"], "sudoku size n=1: expected n >= 4"),  # a 1x1 "sudoku"
        (["sudoku-gen", "--size", "4", "--clues", "30"], "clues=30 must lie in [1, 16]"),
        (["maze-gen", "--side", "4"], "maze side must be odd and >= 5, got 4"),
    ],
)
def test_generator_arguments_out_of_range_exit_2_before_generating(args, message, tmp_path, capsys):
    kind, *rest = args
    assert data_main(["build", kind, str(tmp_path / "out"), *rest]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "%|" not in err  # no progress bar was started
    assert not (tmp_path / "out").exists()
