"""Reading the files a user hands over (configs, arch YAMLs, sweep files, JSON metadata, PyTorch files): any
failure becomes one line naming the file and what was expected, raised as the caller's error class."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any


def first_line(error: BaseException) -> str:
    """An exception in one line: its type and the first line of its message, without torch's advice to load
    with ``weights_only=False`` (wrong advice for a file nobody vouched for)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Weights only load failed", "Re-running", "(1)", "(2)"))]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def read_text(path: str | Path, error: type[Exception], expected: str) -> str:
    path = Path(path)
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (binary content); expected {expected}.") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e}); expected {expected}.") from None


def load_yaml(path: str | Path, error: type[Exception], expected: str) -> Any:
    import yaml  # here: the kernels and the model run where only torch is installed (benchmarks/gpu_check.sh)

    text = read_text(path, error, expected)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({' '.join(str(e).split())}); expected {expected}.") from None


def load_json(path: str | Path, error: type[Exception], expected: str) -> Any:
    text = read_text(path, error, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e}); expected {expected}.") from None


def load_torch(path: str | Path, error: type[Exception], expected: str, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` on the CPU: never unpickles arbitrary objects. ``mmap``: tensors are mapped,
    not read, until used (for a look at a large checkpoint's metadata); files torch cannot map are read whole."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise error(f"{path}: empty file; expected {expected}.")
    if mmap:
        try:
            return _quiet_torch_load(path, mmap=True)
        except Exception:  # noqa: BLE001 - the plain read below names the problem, if there is one
            pass
    try:
        return _quiet_torch_load(path, mmap=False)
    except FileNotFoundError:
        raise error(f"{path}: does not exist; expected {expected}.") from None
    except Exception as e:  # noqa: BLE001 - whatever torch's readers raise, the user gets one line
        raise error(f"{path}: cannot be read as {expected}: {_torch_file_problem(path, e)}.") from None


def _quiet_torch_load(path: Path, mmap: bool) -> Any:
    with warnings.catch_warnings():  # torch's own advice on unusual pickles would follow our one line
        warnings.simplefilter("ignore")
        import torch  # here: `loopformer data/sweep --help` answer without loading torch

        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _torch_file_problem(path: Path, e: Exception) -> str:
    """What is wrong with a file ``torch.load`` refused, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as os_error:
        return f"it cannot be read ({os_error.strerror or os_error})"
    reason = first_line(e).split(". ")[0]
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return f"a truncated or damaged zip archive ({reason})"
        return f"a PyTorch archive whose content the weights-only reader refuses ({reason})"
    if head[:1] == b"\x80":
        return (
            "a pickle holding objects other than tensors and plain containers (not loaded: unpickling it could run "
            "arbitrary code)"
        )
    return "not a PyTorch file (it starts with neither a zip archive nor a pickle)"


def is_a_terminal(stream: Any) -> bool:
    """Whether ``stream`` (sys.stdout, sys.stderr) is a terminal; False for a file, a pipe or a closed stream."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
