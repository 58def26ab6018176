"""ARC: the canvas codec, the augmentations and their exact inverses, the builder on the real ARC files
(set LOOPFORMER_ARC_DIR to the directory of arc-agi_*_challenges.json; skipped when absent), and voting."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from loopformer.data.builders.arc import (
    EOS,
    augmentation,
    build_arc_dataset,
    decode_grid,
    encode_pair,
    grid_hash,
    inverse_augmentation,
)
from loopformer.data.common import dihedral_transform
from loopformer.data.format import load_split
from loopformer.evaluation.arc import arc_pass_at_k

ARC_DIR = os.environ.get("LOOPFORMER_ARC_DIR")
needs_arc = pytest.mark.skipif(
    not ARC_DIR or not Path(ARC_DIR, "arc-agi_training_challenges.json").is_file(),
    reason="set LOOPFORMER_ARC_DIR to the directory holding the public ARC-AGI JSON files",
)


def test_every_augmentation_inverts_exactly():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 5), (7, 2), (30, 30)]:
        grid = rng.integers(0, 10, size=shape).astype(np.uint8)
        seen_tids = set()
        for _ in range(200):
            name, forward = augmentation("abc123", rng)
            seen_tids.add(int(name.split("|||")[1][1:]))
            original, backward = inverse_augmentation(name)
            assert original == "abc123"
            assert np.array_equal(backward(forward(grid)), grid)
            assert (forward(grid) == 0).sum() == (grid == 0).sum()  # black stays black
        assert seen_tids == set(range(8))
    # every transform id, every one of its inverse pairs, on a non-square grid
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for tid in range(8):
        name = f"p|||t{tid}|||0123456789"
        assert np.array_equal(inverse_augmentation(name)[1](dihedral_transform(grid, tid)), grid)


@pytest.mark.parametrize(
    "shape_in,shape_out", [((1, 1), (1, 1)), ((3, 7), (5, 2)), ((30, 30), (30, 30)), ((29, 4), (2, 29))]
)
def test_canvas_roundtrip_and_eos(shape_in, shape_out):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 10, size=shape_in).astype(np.uint8)
    b = rng.integers(0, 10, size=shape_out).astype(np.uint8)
    x, y = encode_pair(a, b, None)
    assert np.array_equal(decode_grid(x), a) and np.array_equal(decode_grid(y), b)
    canvas = x.reshape(30, 30)
    if shape_in[0] < 30:
        assert np.all(canvas[shape_in[0], : shape_in[1]] == EOS)
    tx, ty = encode_pair(a, b, rng)  # translated: same content, same offset for both grids
    assert (tx >= 2).sum() == a.size and (ty >= 2).sum() == b.size


def test_decoding_a_ragged_prediction_takes_the_largest_rectangle():
    canvas = np.zeros((30, 30), dtype=np.uint8)
    canvas[:2, :4] = 5
    canvas[2, :1] = 5
    assert decode_grid(canvas.reshape(-1)).shape == (2, 4)
    assert decode_grid(np.zeros(900, dtype=np.uint8)).shape == (0, 0)


def _puzzle():
    rng = np.random.default_rng(2)
    grids = [rng.integers(0, 10, size=(3, 4)).astype(np.uint8) for _ in range(4)]
    return {"train": [], "test": [{"input": grids[0].tolist(), "output": grids[1].tolist()},
                                  {"input": grids[2].tolist(), "output": grids[3].tolist()}]}, grids  # fmt: skip


def _vote(name, tid_colours, inp, out, q):
    """A prediction `out` for test input `inp`, made on the augmented version `name|||t..|||..`."""
    aug_name = f"{name}|||t{tid_colours[0]}|||{tid_colours[1]}"
    colours = np.array([int(c) for c in tid_colours[1]], dtype=np.uint8)
    fwd = lambda g: dihedral_transform(colours[g], tid_colours[0])  # noqa: E731
    x, y = encode_pair(fwd(inp), fwd(out), None)
    return aug_name, x, y, q


def test_voting_counts_then_confidence_and_scores_pass_at_k():
    puzzle, (in0, out0, in1, out1) = _puzzle()
    wrong = (out0 + 1) % 10
    views = [(0, "0123456789"), (3, "0987654321"), (6, "0213456789")]
    rows = [
        _vote("p", views[0], in0, out0, -2.0),  # right answer, 2 votes, low confidence
        _vote("p", views[1], in0, out0, -2.0),
        _vote("p", views[2], in0, wrong, 3.0),  # wrong answer, 1 vote, high confidence
        _vote("p", views[0], in1, out1, 1.0),  # second test input: a 1-1 tie, broken by confidence
        _vote("p", views[1], in1, (out1 + 3) % 10, 2.0),
    ]
    identifiers = ["<blank>"] + [r[0] for r in rows]
    preds = [(i + 1, x, y, q) for i, (_, x, y, q) in enumerate(rows)]
    scores = arc_pass_at_k(preds, identifiers, {"p": puzzle})
    assert scores[1] == pytest.approx(0.5)  # input 0 right by votes; input 1 loses the tie on confidence
    assert scores[2] == pytest.approx(1.0)
    assert arc_pass_at_k([], identifiers, {"p": puzzle}) == {1: 0.0, 2: 0.0}


@needs_arc
def test_builder_on_the_real_files_and_perfect_predictions_score_one(tmp_path):
    prefix = str(Path(ARC_DIR) / "arc-agi")
    summary = build_arc_dataset(prefix, tmp_path, ["training", "evaluation"], "evaluation", num_aug=2, seed=0)
    evaluation = json.loads(Path(f"{prefix}_evaluation_challenges.json").read_text())
    n_test_inputs = sum(len(p["test"]) for p in evaluation.values())
    assert summary["test"] == {"groups": 400, "puzzles": 1200, "examples": 3 * n_test_inputs}
    identifiers = json.loads((tmp_path / "identifiers.json").read_text())
    assert identifiers[0] == "<blank>" and len(identifiers) == summary["identifiers"] == 1 + 800 * 3
    test_puzzles = json.loads((tmp_path / "test_puzzles.json").read_text())
    assert set(test_puzzles) == set(evaluation)

    meta, sets = load_split(tmp_path / "test")
    s = sets["all"]
    assert meta.vocab_size == 12 and meta.seq_len == 900
    example_puzzle = np.repeat(np.arange(s.puzzle_identifiers.size), np.diff(s.puzzle_indices))
    ids = s.puzzle_identifiers[example_puzzle]
    labels, inputs = np.asarray(s.labels), np.asarray(s.inputs)
    # Every test example maps back to an original test pair through its identifier's inverse augmentation.
    for i in range(0, s.num_examples, 97):
        name, back = inverse_augmentation(identifiers[ids[i]])
        tests = test_puzzles[name]["test"]
        pairs = {(grid_hash(np.array(t["input"], np.uint8)), grid_hash(np.array(t["output"], np.uint8))) for t in tests}
        assert (grid_hash(back(decode_grid(inputs[i]))), grid_hash(back(decode_grid(labels[i])))) in pairs

    perfect = [(ids[i], inputs[i], labels[i], 0.0) for i in range(s.num_examples)]
    solutions = json.loads(Path(f"{prefix}_evaluation_solutions.json").read_text())
    for name, puzzle in test_puzzles.items():
        assert [t["output"] for t in puzzle["test"]] == solutions[name]
    assert arc_pass_at_k(perfect, identifiers, test_puzzles) == {1: 1.0, 2: 1.0}
    blank = [(ids[i], inputs[i], inputs[i], 0.0) for i in range(s.num_examples)]  # "output = input"
    assert arc_pass_at_k(blank, identifiers, test_puzzles)[1] < 0.05

    _, train = load_split(tmp_path / "train")
    assert train["all"].num_examples == summary["train"]["examples"]


def test_validation_logs_arc_pass_at_k(tmp_path, caplog):
    from loopformer.cli import LoopformerCLI

    caplog.set_level("INFO")

    rng = np.random.default_rng(5)
    for subset in ("training", "evaluation"):
        challenges, solutions = {}, {}
        for p in range(2):
            g = lambda: rng.integers(0, 10, size=(3, 3)).tolist()  # noqa: E731
            challenges[f"{subset}{p}"] = {"train": [{"input": g(), "output": g()}], "test": [{"input": g()}]}
            solutions[f"{subset}{p}"] = [g()]
        (tmp_path / f"arc-agi_{subset}_challenges.json").write_text(json.dumps(challenges))
        (tmp_path / f"arc-agi_{subset}_solutions.json").write_text(json.dumps(solutions))
    build_arc_dataset(str(tmp_path / "arc-agi"), tmp_path / "data", ["training", "evaluation"], "evaluation", num_aug=3)
    cli = LoopformerCLI(
        args=[
            "validate",
            f"--data.data_paths={tmp_path / 'data'}",
            "--data.eval_batch_size=8",
            "--model.arch.hidden_size=32",
            "--model.arch.num_heads=1",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.train.act.halt_max_steps=1",
            "--model.runtime.forward_dtype=float32",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert metrics["val/count"].item() == 8  # 2 test inputs x (1 + 3 augmentations)
    assert 0.0 <= metrics["val/arc/pass@1"].item() <= metrics["val/arc/pass@2"].item() <= 1.0
    # the terminal's line ends with the Kaggle score (two attempts) beside pass@1
    pass_1, pass_2 = (f"{metrics[f'val/arc/pass@{k}'].item():.4g}" for k in (1, 2))
    assert f"| steps 1 | arc/pass@1 {pass_1} | arc/pass@2 {pass_2}\n" in caplog.text


def _tiny_arc_build(root, seed, num_aug=3, prefix="arc-agi"):
    """Two training and two evaluation tasks of random 3x3 grids, built as the ARC builder builds them."""
    rng = np.random.default_rng(seed)
    solutions_by_task = {}
    for subset in ("training", "evaluation"):
        challenges, solutions = {}, {}
        for p in range(2):
            g = lambda: rng.integers(0, 10, size=(3, 3)).tolist()  # noqa: E731
            name = f"{subset}{seed}{p}"
            challenges[name] = {"train": [{"input": g(), "output": g()}], "test": [{"input": g()}, {"input": g()}]}
            solutions[name] = [g(), g()]
        (root / f"{prefix}_{subset}_challenges.json").write_text(json.dumps(challenges))
        (root / f"{prefix}_{subset}_solutions.json").write_text(json.dumps(solutions))
        if subset == "evaluation":
            solutions_by_task = solutions
    out = root / f"data{seed}"
    build_arc_dataset(str(root / prefix), out, ["training", "evaluation"], "evaluation", num_aug=num_aug, seed=seed)
    return out, solutions_by_task


def test_labels_as_predictions_round_trip_into_a_perfect_submission(tmp_path):
    from loopformer.evaluation.arc import ARCCollector, ARCSet

    data, solutions = _tiny_arc_build(tmp_path, seed=3)
    identifiers = json.loads((data / "identifiers.json").read_text())
    test_puzzles = json.loads((data / "test_puzzles.json").read_text())
    _, sets = load_split(data / "test")
    s = sets["all"]
    example_puzzle = np.repeat(np.arange(s.puzzle_identifiers.size), np.diff(s.puzzle_indices))
    collector = ARCCollector([ARCSet("data3", identifiers, test_puzzles)], ks=(1, 2, 1000))
    # every augmented view predicts its own label, i.e. the augmented true output
    collector.add(
        s.puzzle_identifiers[example_puzzle], np.asarray(s.inputs), np.asarray(s.labels), np.zeros(s.num_examples)
    )
    metrics, submissions = collector.compute()
    assert metrics == {"arc/pass@1": 1.0, "arc/pass@2": 1.0, "arc/pass@1000": 1.0}
    (submission,) = submissions.values()
    assert set(submission) == set(solutions)
    for task, outputs in solutions.items():
        assert [a["attempt_1"] for a in submission[task]] == outputs  # mapped back through every augmentation
        assert [a["attempt_2"] for a in submission[task]] == outputs  # one candidate: repeated
    empty = ARCCollector([ARCSet("data3", identifiers, test_puzzles)], ks=(1,)).compute()[1]["data3"]
    assert all(a == {"attempt_1": [[0]], "attempt_2": [[0]]} for attempts in empty.values() for a in attempts)


def test_validation_scores_each_arc_set_and_writes_their_submissions(tmp_path):
    from loopformer.cli import LoopformerCLI

    first, _ = _tiny_arc_build(tmp_path, seed=1, num_aug=1)
    second, second_solutions = _tiny_arc_build(tmp_path, seed=2, num_aug=1)
    cli = LoopformerCLI(
        args=[
            "validate",
            f"--data.data_paths=[{first}, {second}]",
            "--data.eval_batch_size=8",
            "--model.arch.hidden_size=32",
            "--model.arch.num_heads=1",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.train.act.halt_max_steps=1",
            "--model.runtime.forward_dtype=float32",
            "--model.eval.arc_pass_k=[1, 3]",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert metrics["val/count"].item() == 2 * 4 * 2  # 2 sets x 4 test inputs x (1 + 1 augmentation)
    for name in ("data1", "data2"):
        assert 0.0 <= metrics[f"val/arc/{name}/pass@1"].item() <= metrics[f"val/arc/{name}/pass@3"].item() <= 1.0
    assert "val/arc/pass@3" in metrics and "val/arc/pass@2" not in metrics
    written = json.loads(next((tmp_path / "runs").rglob("submission-data2.json")).read_text())
    assert set(written) == set(second_solutions)
    for task, attempts in written.items():
        assert len(attempts) == len(second_solutions[task])
        for a in attempts:
            assert set(a) == {"attempt_1", "attempt_2"}
            assert all(isinstance(row, list) and all(0 <= c <= 9 for c in row) for row in a["attempt_1"])


def test_arc_pass_k_must_list_positive_ks():
    from loopformer.errors import ConfigError
    from loopformer.evaluation.options import EvalOptions

    with pytest.raises(ConfigError, match=r"model.eval.arc_pass_k must list k >= 1"):
        EvalOptions(arc_pass_k=[0, 2])
    assert EvalOptions().arc_pass_k == [1, 2, 5, 10, 100, 1000]


def _one_task_votes(grids_and_q: list[tuple[list[list[int]], float]]):
    """Predictions for one task's one test input ([[1]] -> [[2]]): each (predicted grid, q_halt logit)."""
    from loopformer.evaluation.arc import rank_candidates

    inp = np.array([[1]], dtype=np.uint8)
    rows = []
    for grid, q in grids_and_q:
        inputs, _ = encode_pair(inp, inp, None)
        pred = (
            np.full(900, 0, dtype=np.uint8) if not grid else encode_pair(inp, np.array(grid, dtype=np.uint8), None)[1]
        )
        rows.append((0, inputs, pred, q))
    test_puzzles = {"task": {"train": [], "test": [{"input": [[1]], "output": [[2]]}]}}
    return rank_candidates(rows, ["task"], test_puzzles), test_puzzles


def test_halting_confidence_is_trms_torch_float64_sigmoid_bit_for_bit():
    """TRM's evaluator takes q_halt_logits.to(torch.float64).sigmoid(); numpy's 1 / (1 + exp(-q)) differs from it
    by an ulp for about one value in ten, which decides exact ties in votes differently."""
    import torch

    rng = np.random.default_rng(0)
    q = rng.normal(0, 3, 4000).astype(np.float32).astype(np.float64)
    torch_sig = torch.sigmoid(torch.tensor(q, dtype=torch.float64)).numpy()
    differ = q[torch_sig != 1 / (1 + np.exp(-q))][:25]
    assert differ.size == 25  # these values tell the two computations apart
    ranked, _ = _one_task_votes([([[2]], float(v)) for v in differ])
    (candidate,) = ranked[("task", grid_hash(np.array([[1]], dtype=np.uint8)))]
    expected = 0.0
    for value in torch.sigmoid(torch.tensor(differ, dtype=torch.float64)).tolist():  # summed in row order, as TRM
        expected += value
    assert candidate.votes == 25 and candidate.confidence == expected


def test_an_empty_prediction_is_never_a_submitted_grid():
    from loopformer.evaluation.arc import submission

    # the empty prediction has the most votes, yet both attempts are grids
    ranked, puzzles = _one_task_votes([([], 5.0), ([], 5.0), ([[2]], 0.0), ([[3]], -1.0)])
    assert [c.grid.size for c in next(iter(ranked.values()))] == [0, 1, 1]
    assert submission(ranked, puzzles) == {"task": [{"attempt_1": [[2]], "attempt_2": [[3]]}]}
    ranked, puzzles = _one_task_votes([([], 5.0)])
    assert submission(ranked, puzzles) == {"task": [{"attempt_1": [[0]], "attempt_2": [[0]]}]}


def test_the_directory_of_the_kaggle_files_reads_as_their_prefix(tmp_path, capsys):
    from loopformer.data.cli import main as data_main

    out, _ = _tiny_arc_build(tmp_path, seed=3, num_aug=1)  # from the prefix <tmp_path>/arc-agi
    assert data_main(["build", "arc", str(tmp_path), str(tmp_path / "from_dir"), "--subsets", "training",
                      "evaluation", "--num-aug", "1", "--seed", "3"]) == 0  # fmt: skip
    for split in ("train", "test"):
        for name in ("all__inputs.npy", "all__puzzle_identifiers.npy", "dataset.json"):
            assert (out / split / name).read_bytes() == (tmp_path / "from_dir" / split / name).read_bytes()
    capsys.readouterr()
    (tmp_path / "other_training_challenges.json").write_text("{}")
    for directory, expected in (
        (tmp_path / "from_dir", "a directory without *_training_challenges.json; give the directory of the Kaggle"),
        (tmp_path, "holds several sets of ARC files (arc-agi_training_challenges.json, other_training_challenges"),
    ):
        assert data_main(["build", "arc", str(directory), str(tmp_path / "x"), "--subsets", "training"]) == 2
        assert f"error: {directory}: {expected}" in capsys.readouterr().err


def test_a_test_set_outside_the_subsets_read_is_one_line(tmp_path, capsys):
    """The test split was empty: numpy's "need at least one array to stack" traceback."""
    from loopformer.data.cli import main as data_main

    _tiny_arc_build(tmp_path, seed=3, num_aug=1)  # writes the Kaggle files under <tmp_path>/arc-agi
    capsys.readouterr()
    args = ["build", "arc", str(tmp_path), str(tmp_path / "x"), "--subsets", "training", "--test-set", "evaluation"]
    assert data_main(args) == 2
    assert capsys.readouterr().err == (
        "loopformer data: error: --test-set evaluation is not among --subsets (training): the test split is the test "
        "inputs of a subset the build reads; add evaluation to --subsets, or name one of them.\n"
    )
    assert not (tmp_path / "x").exists()
