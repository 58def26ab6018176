"""`loopformer data`: build datasets in the HRM/TRM layout and look at them."""

from __future__ import annotations

import argparse
import sys

from loopformer.data.format import DatasetError


def _print_summary(title: str, summary: dict) -> None:
    parts = [f"{k}: {v}" if not isinstance(v, float) else f"{k}: {v:.2f}" for k, v in summary.items()]
    print(f"{title} -> " + ", ".join(parts))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loopformer data", description="Build and inspect puzzle datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build a dataset").add_subparsers(dest="kind", required=True)
    sk = build.add_parser("sudoku", help="Sudoku-Extreme from its CSV files (a directory or a Hugging Face repo id)")
    sk.add_argument(
        "source", help="directory with train.csv and test.csv, or a repo id such as sapientinc/sudoku-extreme"
    )
    sk.add_argument("out", help="dataset directory to write (train/ and test/)")
    sk.add_argument(
        "--subsample-size", type=int, default=None, help="training puzzles kept, drawn at random (default: all)"
    )
    sk.add_argument("--min-difficulty", type=int, default=None, help="keep puzzles rated at least this (default: all)")
    sk.add_argument(
        "--num-aug",
        type=int,
        default=0,
        help="augmented copies of each training puzzle (digit relabelling, band/row shuffles, transposes)",
    )
    sk.add_argument("--seed", type=int, default=0, help="seed of the subsampling and the augmentations")

    gen = build.add_parser("sudoku-gen", help="generated n x n Sudoku with unique solutions (offline)")
    gen.add_argument("out", help="dataset directory to write (train/ and test/)")
    gen.add_argument("--size", type=int, default=4, help="grid size n of the n x n Sudoku (4, 6, 8, 9, ...)")
    gen.add_argument("--clues", type=int, default=6, help="givens per puzzle (the difficulty knob)")
    gen.add_argument("--num-train", type=int, default=10000, help="training puzzles")
    gen.add_argument("--num-test", type=int, default=1000, help="held-out test puzzles, none of them in training")
    gen.add_argument("--seed", type=int, default=0, help="generator seed")

    mz = build.add_parser("maze", help="Maze-Hard from its CSV files (a directory or a Hugging Face repo id)")
    mz.add_argument(
        "source", help="directory with train.csv and test.csv, or a repo id such as sapientinc/maze-30x30-hard-1k"
    )
    mz.add_argument("out", help="dataset directory to write (train/ and test/)")
    mz.add_argument("--aug", action="store_true", help="the 8 dihedral transforms of every training maze")
    mz.add_argument(
        "--subsample-size", type=int, default=None, help="training mazes kept, drawn at random (default: all)"
    )
    mz.add_argument("--seed", type=int, default=0, help="seed of the subsampling")

    mg = build.add_parser("maze-gen", help="generated mazes with a unique shortest path (offline)")
    mg.add_argument("out", help="dataset directory to write (train/ and test/)")
    mg.add_argument("--side", type=int, default=15, help="odd grid side")
    mg.add_argument("--num-train", type=int, default=1000, help="training mazes")
    mg.add_argument("--num-test", type=int, default=200, help="held-out test mazes, none of them in training")
    mg.add_argument("--aug", action="store_true", help="the 8 dihedral transforms of every training maze")
    mg.add_argument("--seed", type=int, default=0, help="generator seed")

    ar = build.add_parser("arc", help="ARC-AGI from the Kaggle JSON files, with the HRM/TRM augmentations")
    ar.add_argument(
        "prefix", help="path prefix of the files, e.g. data/arc-agi/arc-agi (then _<subset>_challenges.json)"
    )
    ar.add_argument("out", help="dataset directory to write (train/ and test/)")
    ar.add_argument("--subsets", nargs="+", default=["training", "evaluation", "concept"], help="subsets to read")
    ar.add_argument("--test-set", default="evaluation", help="subset whose test inputs form the test split")
    ar.add_argument(
        "--num-aug",
        type=int,
        default=1000,
        help="augmented copies of each task (dihedral, colour permutation, translation)",
    )
    ar.add_argument("--seed", type=int, default=42, help="seed of the augmentations")

    show = sub.add_parser("show", help="print examples and write them as a PNG")
    show.add_argument("path", help="dataset directory (train/ and test/)")
    show.add_argument("--count", type=int, default=4, help="examples to show")
    show.add_argument("--split", default="test", choices=("train", "test"), help="split to draw them from")
    show.add_argument("--png", default=None, help="picture to write (default: <path>/<split>_examples.png)")
    show.add_argument("--seed", type=int, default=0, help="seed of the draw")

    args = p.parse_args(argv)
    try:
        if args.command == "build" and args.kind == "sudoku":
            from loopformer.data.builders.sudoku import build_sudoku_from_csv

            summary = build_sudoku_from_csv(
                args.source, args.out, args.subsample_size, args.min_difficulty, args.num_aug, args.seed
            )
            _print_summary(f"sudoku {args.source}", summary)
        elif args.command == "build" and args.kind == "sudoku-gen":
            from loopformer.data.generators.sudoku import build_sudoku_dataset

            summary = build_sudoku_dataset(args.out, args.size, args.clues, args.num_train, args.num_test, args.seed)
            _print_summary(f"{args.size}x{args.size} sudoku", summary)
        elif args.command == "build" and args.kind == "maze":
            from loopformer.data.builders.maze import build_maze_from_csv

            _print_summary(
                f"maze {args.source}",
                build_maze_from_csv(args.source, args.out, args.aug, args.subsample_size, args.seed),
            )
        elif args.command == "build" and args.kind == "maze-gen":
            from loopformer.data.generators.maze import build_maze_dataset

            summary = build_maze_dataset(args.out, args.side, args.num_train, args.num_test, args.aug, args.seed)
            _print_summary(f"{args.side}x{args.side} mazes", summary)
        elif args.command == "build" and args.kind == "arc":
            from loopformer.data.builders.arc import build_arc_dataset

            summary = build_arc_dataset(args.prefix, args.out, args.subsets, args.test_set, args.num_aug, args.seed)
            _print_summary(f"arc {args.prefix}", summary)
        elif args.command == "show":
            from pathlib import Path

            from loopformer.data.show import show_dataset

            png = args.png or str(Path(args.path) / f"{args.split}_examples.png")
            print(show_dataset(args.path, args.count, args.split, png, args.seed))
            print(f"picture: {png}")
    except DatasetError as e:
        print(f"loopformer data: error: {e}", file=sys.stderr)
        return 2
    return 0
