"""`loopformer data`: build datasets in the HRM/TRM layout and look at them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loopformer.data.common import build_then_move, holds_dataset
from loopformer.data.format import DatasetError
from loopformer.data.registry import dataset_commands


def _print_summary(title: str, summary: dict) -> None:
    parts = [f"{k}: {v}" if not isinstance(v, float) else f"{k}: {v:.2f}" for k, v in summary.items()]
    print(f"{title} -> " + ", ".join(parts))


def _build_then_move(args: argparse.Namespace) -> tuple[str, dict]:
    """The builder writes into a new directory, moved to ``args.out`` when complete: a dataset there is replaced only
    with --overwrite, a directory of other files never."""
    out = Path(args.out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not holds_dataset(out):
            raise DatasetError(f"{out} exists and is not a dataset directory; build into a new or empty directory.")
        if not args.overwrite:
            raise DatasetError(
                f"{out} already holds a dataset; pass --overwrite to replace it (once the new one is built), or build "
                "into another directory."
            )

    def build(directory: Path) -> tuple[str, dict]:
        return args.build(argparse.Namespace(**{**vars(args), "out": str(directory)}))

    return build_then_move(out, build, replace=args.overwrite)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loopformer data", description="Build and inspect puzzle datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build a dataset").add_subparsers(dest="kind", required=True)
    for name, command in dataset_commands().items():  # each builder and generator registers its own (registry)
        parser = build.add_parser(name, help=command.help)
        command.add_arguments(parser)
        parser.add_argument(
            "--overwrite", action="store_true", help="replace the dataset the output directory holds (once built)"
        )
        parser.set_defaults(build=command.build)

    show = sub.add_parser("show", help="print examples and write them as a PNG")
    show.add_argument("path", help="dataset directory (train/ and test/)")
    show.add_argument("--count", type=int, default=4, help="examples to show")
    show.add_argument("--split", default="test", choices=("train", "test"), help="split to draw them from")
    show.add_argument(
        "--out",
        "--png",
        dest="out",
        default=None,
        help="picture to write, a .png file or a directory (default: ./<dataset>_<split>_examples.png, in the current "
        "directory)",
    )
    show.add_argument("--seed", type=int, default=0, help="seed of the draw")

    args = p.parse_args(argv)
    if args.command == "show" and args.count < 1:
        print(
            f"loopformer data show: error: --count {args.count}: expected an integer >= 1 (examples to show).",
            file=sys.stderr,
        )
        return 2
    try:
        if args.command == "build":
            _print_summary(*_build_then_move(args))
        else:
            from loopformer.data.show import picture_path, show_dataset

            png = picture_path(args.out, args.path, args.split)
            print(show_dataset(args.path, args.count, args.split, png, args.seed))
            print(f"picture: {png}")
    except DatasetError as e:
        print(f"loopformer data: error: {e}", file=sys.stderr)
        return 2
    return 0
