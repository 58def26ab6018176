"""Command lines shared by tests: the quickstart config shrunk to a model and batch that train in seconds."""

import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

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


# Tensor methods that wait for the device
SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "unique")


@contextmanager
def recorded_syncs(keep: Callable[[traceback.FrameSummary], bool] = lambda caller: True) -> Iterator[list]:
    """The calls of ``SYNC_METHODS`` made while the block runs, as ``(method, caller frame)``, for the callers
    ``keep`` accepts (the caller: the code that asked, the frame above the call)."""
    calls: list[tuple[str, traceback.FrameSummary]] = []
    originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def wrapper(name: str, original: Callable) -> Callable:
        def wrapped(self, *args, **kwargs):  # noqa: ANN001, ANN202
            caller = traceback.extract_stack()[-2]
            if keep(caller):
                calls.append((name, caller))
            return original(self, *args, **kwargs)

        return wrapped

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrapper(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _proc_stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_proc_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def process_alive(pid: int) -> bool:
    """Running: not gone and not a zombie (this machine's init may be slow to reap one)."""
    try:
        return _proc_stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


NOT_INSTALLED = """import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {names!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, _NotInstalled())
"""


def environment_without(packages: set[str], site: Path) -> dict[str, str]:
    """``os.environ`` for a subprocess in which ``packages`` cannot be imported, as on a machine that lacks them (a
    ``sitecustomize`` written into ``site``), with this checkout importable."""
    (site / "sitecustomize.py").write_text(NOT_INSTALLED.format(names=sorted(packages)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), WANDB_MODE="disabled")
