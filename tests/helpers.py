"""Command lines shared by tests: the quickstart config shrunk to a model and batch that train in seconds."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_fit_args(data_dir, root, *extra: str) -> list[str]:
    """``loopformer fit`` of the quickstart at hidden size 32, batch 16, no progress bar, no logger."""
    return [
        "fit",
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        f"--data.data_paths={data_dir}",
        "--data.global_batch_size=16",
        "--model.arch.hidden_size=32",
        "--model.arch.puzzle_emb_ndim=32",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
        *extra,
    ]


def quickstart_fit_args(tmp_path, *extra: str) -> list[str]:
    """``loopformer fit`` of the quickstart as the README runs it, its data generated under ``tmp_path``."""
    return [
        "fit",
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        f"--data.data_paths={tmp_path / 'data'}",
        "--data.generate.seed=0",  # asked for on the command line: generate at this new path
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
