"""The published HRM, TRM and VirtualRecursiveNetwork code, run beside loopformer's by the opt-in tests
(tests/model/test_upstream_code.py, tests/data/test_upstream_data.py).

``LOOPFORMER_UPSTREAM_DIR`` names a directory holding checkouts of sapientinc/HRM (``HRM``),
SamsungSAILMontreal/TinyRecursiveModels (``TinyRecursiveModels``) and maxwell-gao/VirtualRecursiveNetwork
(``VirtualRecursiveNetwork``); without it those tests skip. Their code needs ``einops`` and ``pydantic``. The three
have top-level packages of the same names (``models``, ``dataset``, ...), so one directory's code is importable at a
time (``their_code``), with stand-ins for what a CPU test cannot run or need not install: FlashAttention (SDPA),
numba's ``njit`` (plain Python) and argdantic (their scripts' command line: the tests call the functions) where they
are not installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch.nn.functional as F

UPSTREAM_ENV = "LOOPFORMER_UPSTREAM_DIR"
REPOS = {"hrm": "HRM", "trm": "TinyRecursiveModels", "vrn": "VirtualRecursiveNetwork"}
THEIR_PACKAGES = ("models", "utils", "dataset", "evaluators", "common")  # in more than one of the repositories


def checkout(source: str) -> Path:
    """The checkout of ``source`` (hrm, trm, vrn), or the test skips, saying what it needs."""
    base = os.environ.get(UPSTREAM_ENV)
    if not base:
        pytest.skip(f"{UPSTREAM_ENV} is not set (a directory with checkouts of {', '.join(REPOS.values())})")
    path = Path(base) / REPOS[source]
    if not (path / "models").is_dir():
        pytest.skip(f"{path}: no checkout of {REPOS[source]} there ({UPSTREAM_ENV} names their parent directory)")
    pytest.importorskip("einops")
    pytest.importorskip("pydantic")
    return path


def _sdpa_flash_attention() -> types.ModuleType:
    """FlashAttention's ``flash_attn_func`` (HRM's attention: [B, S, H, D] in and out), as SDPA."""
    flash = types.ModuleType("flash_attn_interface")

    def flash_attn_func(q, k, v, causal=False):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)

    flash.flash_attn_func = flash_attn_func
    return flash


def _stand_ins() -> dict[str, types.ModuleType]:
    """For packages their code imports that a test does not need installed."""
    numba = types.ModuleType("numba")
    numba.njit = lambda fn: fn
    argdantic = types.ModuleType("argdantic")
    argdantic.ArgParser = lambda: types.SimpleNamespace(command=lambda **_: lambda fn: fn)
    return {"numba": numba, "argdantic": argdantic}


@contextmanager
def their_code(directory: Path, **modules: types.ModuleType) -> Iterator[None]:
    """Their modules importable from ``directory`` alone for the block, and forgotten after it, with the stand-ins:
    FlashAttention's and ``modules`` (by name) always, the others where the package is not installed."""
    stand_ins = {name: m for name, m in _stand_ins().items() if importlib.util.find_spec(name) is None}
    stand_ins.update(flash_attn_interface=_sdpa_flash_attention(), **modules)  # the tensors are on the CPU
    theirs = (str(directory) + os.sep, str(directory.resolve()) + os.sep)  # where their modules' files are

    def forget() -> None:
        for name, module in list(sys.modules.items()):
            from_there = (getattr(module, "__file__", None) or "").startswith(theirs)
            if from_there or name in stand_ins or name.split(".")[0] in THEIR_PACKAGES:
                del sys.modules[name]

    saved = list(sys.path)
    forget()
    sys.modules.update(stand_ins)
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path[:] = saved
        forget()
