"""Subcommands of ``loopformer`` that are not Lightning runs."""

from __future__ import annotations

import argparse
import os
import sys

from loopformer.argtypes import at_least


def _import_checkpoint(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="loopformer import-checkpoint",
        description="Convert an HRM, TRM (trm, trm_singlez, trm_hier6, hrm) or VirtualRecursiveNetwork checkpoint "
        "into a loopformer checkpoint that `loopformer validate/test/predict --ckpt_path DEST` accept, or that "
        "`--model.init_from DEST` starts a run from.",
    )
    p.add_argument(
        "--from", dest="source", choices=("hrm", "trm", "vrn"), required=True, help="codebase that saved SRC"
    )
    p.add_argument("src", help="state dict saved by their pretrain script")
    p.add_argument(
        "--arch",
        required=True,
        help="their architecture YAML (config/arch/*.yaml or all_config.yaml); TRM's `name` picks the variant",
    )
    p.add_argument("dest", help="loopformer checkpoint to write")
    p.add_argument(
        "--seq-len", type=at_least(1), default=None, help="token sequence length (needed for RoPE checkpoints)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace the file DEST names (once the new one is written)")
    args = p.parse_args(argv)
    if os.path.lexists(args.dest) and (os.path.isdir(args.dest) or not args.overwrite):
        what = "is a directory" if os.path.isdir(args.dest) else "exists"
        print(
            f"loopformer import-checkpoint: error: {args.dest} {what}; expected the path of a checkpoint file to write"
            + ("" if os.path.isdir(args.dest) else " (pass --overwrite to replace it)")
            + ".",
            file=sys.stderr,
        )
        return 2
    from loopformer.checkpoint.importer import CheckpointImportError, import_checkpoint  # after --help: it loads torch

    try:
        hparams = import_checkpoint(args.source, args.src, args.arch, args.dest, seq_len=args.seq_len)
    except CheckpointImportError as e:
        print(f"loopformer import-checkpoint: error: {e}", file=sys.stderr)
        return 2
    from loopformer.sweep.report.records import describe_schedule

    schedule = describe_schedule({"model": {"arch": hparams["arch"]}})
    print(f"wrote {args.dest}: {args.source.upper()} weights, schedule {schedule}")
    if hparams["train"].get("algorithm") == "dis":
        print(
            "note: VirtualRecursiveNetwork evaluates a DIS model without its step embeddings; loopformer evaluates "
            "with them, as it trained: add --model.train.dis.eval_step_embedding=false to evaluate as VRN does."
        )
    return 0


def _sweep(argv: list[str]) -> int:
    from loopformer.sweep.cli import main

    return main(argv)


def _data(argv: list[str]) -> int:
    from loopformer.data.cli import main

    return main(argv)


def _doctor(argv: list[str]) -> int:
    from loopformer.cli.doctor import main

    return main(argv)


TOOLS = {"import-checkpoint": _import_checkpoint, "sweep": _sweep, "data": _data, "doctor": _doctor}


def run_tool(name: str, argv: list[str]) -> int:
    return TOOLS[name](argv)
