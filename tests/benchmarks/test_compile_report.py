"""The attention kernels compiled ahead of time for A100 (sm_80), sm_86 cards and H100 (sm_90), on the CPU.

Triton's compiler and ptxas build the cubins exactly as the launchers would issue them on those GPUs;
the tiles in TILES must compile without spilling registers, within shared memory, on tensor cores.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loopformer.kernels import attention as attn

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compile_report.py"


def _load_script():
    """benchmarks/compile_report.py is a developer tool, not part of the installed package: loaded by path."""
    spec = importlib.util.spec_from_file_location("compile_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compile_report"] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


compile_report = _load_script()
KernelResources, compile_kernels, preference = (
    compile_report.KernelResources,
    compile_report.compile_kernels,
    compile_report.preference,
)


def _has_nvidia_tools() -> bool:
    try:
        import triton

        return os.path.exists(triton.knobs.nvidia.cuobjdump.path)
    except (ImportError, AttributeError):
        return False


pytestmark = pytest.mark.skipif(
    not attn.HAVE_TRITON or not _has_nvidia_tools(), reason="needs triton with its NVIDIA backend (ptxas, cuobjdump)"
)


def _triton_version() -> tuple[int, int]:
    import triton

    return tuple(int(part) for part in triton.__version__.split(".")[:2])


# fp32 with D=128 on sm_86: every candidate tile of dK/dV spills a little there (16 B at best); Triton 3.6 (the lent
# GPU machines' torch 2.11) also spills 8 B in fp32 dK/dV at D=64 on sm_80 (BENCHMARKS.md, "Triton versions").
KNOWN_SPILLS = {(86, "float32", 128, "dkdv"): 16} | (
    {(80, "float32", 64, "dkdv"): 8} if attn.HAVE_TRITON and _triton_version() < (3, 7) else {}
)


@pytest.mark.slow  # about 70 s on 2 cores (every kernel through ptxas for three GPUs); .ci/run names it
def test_every_kernel_fits_a100_sm86_and_h100(tmp_path):
    report = tmp_path / "report.json"
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    cmd = [sys.executable, str(SCRIPT), "--json", str(report)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    reports = json.loads(report.read_text())
    expected = set()
    for a in (80, 86, 90):
        for d in ("bfloat16", "float16", "float32"):
            for h in (32, 64, 128):
                one_pass = attn.one_pass_tiles(97, h, getattr(torch, d), attn.family_of(a)) is not None
                expected |= {(a, d, h, k) for k in ("fwd", "delta", "dkdv", "dq") + ("one_pass",) * one_pass}
    assert {(r["arch"], r["dtype"], r["head_dim"], r["kernel"]) for r in reports} == expected
    # the Sudoku shape's backward takes one pass on every architecture
    assert {
        (80, "bfloat16", 64, "one_pass"),
        (86, "bfloat16", 64, "one_pass"),
        (90, "bfloat16", 64, "one_pass"),
    } <= expected
    for r in reports:
        where = f"{r['kernel']} sm_{r['arch']} {r['dtype']} D={r['head_dim']}"
        allowed = KNOWN_SPILLS.get((r["arch"], r["dtype"], r["head_dim"], r["kernel"]), 0)
        assert r["spilled_bytes"] <= allowed, where
        assert 0 < r["registers"] <= 255, where
        assert r["shared_bytes"] <= {80: 101_376, 86: 101_376, 90: 232_448}[r["arch"]], where  # sm80 tiles serve sm_86
        if r["kernel"] != "delta" and r["dtype"] != "float32":
            assert r["matmul"] in ({"mma", "wgmma"} if r["arch"] == 90 else {"mma"}), where
    # the forward at the Sudoku shape uses Hopper's wgmma on sm_90
    assert all(
        r["matmul"] == "wgmma" for r in reports if r["arch"] == 90 and r["kernel"] == "fwd" and r["dtype"] == "bfloat16"
    )
    # the table printed last names every kernel
    assert proc.stdout.count("| sm_90 | bfloat16 | 64 |") == 5


def test_compile_report_refuses_to_run_under_the_interpreter():
    assert attn.interpreter_enabled()  # tests/conftest.py sets it on machines without CUDA
    with pytest.raises(RuntimeError, match="unset TRITON_INTERPRET"):
        compile_kernels(90, torch.bfloat16, 64)


def _resources(**kw) -> KernelResources:
    base = dict(
        kernel="fwd", arch=90, dtype="bfloat16", head_dim=64, rope=True, block_m=64, block_n=64, num_warps=4,
        num_stages=2, registers=128, spilled_bytes=0, shared_bytes=40_000, matmul="wgmma",
    )  # fmt: skip
    return KernelResources(**{**base, **kw})


def test_preference_launchable_then_no_spills_then_tensor_cores_then_tile_size():
    ranked = sorted(
        [
            _resources(spilled_bytes=8, block_m=128),  # spills
            _resources(spilled_bytes=400),  # spills more
            _resources(shared_bytes=300_000),  # over H100's shared memory
            _resources(matmul="mma", block_m=128),  # fits, no wgmma
            _resources(block_m=128, registers=200),  # fits, wgmma, larger tile
            _resources(registers=100),  # fits, wgmma, smaller tile
        ],
        key=preference,
        reverse=True,
    )
    assert [(r.block_m, r.registers, r.matmul, r.spilled_bytes, r.shared_bytes) for r in ranked] == [
        (128, 200, "wgmma", 0, 40_000),
        (64, 100, "wgmma", 0, 40_000),
        (128, 128, "mma", 0, 40_000),
        (128, 128, "wgmma", 8, 40_000),
        (64, 128, "wgmma", 400, 40_000),
        (64, 128, "wgmma", 0, 300_000),  # cannot launch at all: last
    ]


def test_search_keeps_each_candidates_worst_compile_and_drops_a_one_pass_that_spills(monkeypatch):
    def fake_compile(arch, dtype, head_dim, seq_len, tiles, kernels):
        reports = []
        for name in sorted(kernels):
            t = tiles[name]
            spills = 0
            if name == "one_pass" and arch == 86:
                spills = 8  # fits sm_80 only: the sm80 family cannot use it
            if name == "fwd" and t.block_m == 128 and arch == 86:
                spills = 4  # the largest forward tiles spill on sm_86 only
            reports.append(
                _resources(
                    kernel=name, arch=arch, block_m=t.block_m, block_n=t.block_n, num_warps=t.num_warps,
                    num_stages=t.num_stages, spilled_bytes=spills, matmul="mma",
                )
            )  # fmt: skip
        return reports

    monkeypatch.setattr(compile_report, "compile_kernels", fake_compile)
    best = compile_report.search_tiles("sm80", torch.bfloat16, 64, seq_len=97)
    assert set(best) == {"fwd", "dkdv", "dq"}
    assert (best["fwd"].block_m, best["fwd"].block_n, best["fwd"].num_stages, best["fwd"].spilled_bytes) == (
        64,
        128,
        2,
        0,
    )
    assert (best["dq"].block_m, best["dq"].block_n) == (128, 128)
    # on sm90 (one architecture) the one-pass candidates fit, all with 128 keys to cover S = 97
    best = compile_report.search_tiles("sm90", torch.bfloat16, 64, seq_len=97)
    assert best["one_pass"].block_n == 128 and best["one_pass"].spilled_bytes == 0
    assert all(t.block_n == 128 for t in compile_report.one_pass_candidates(97))
    assert all(t.block_n == 32 for t in compile_report.one_pass_candidates(17))


def test_blocks_per_sm_follow_the_occupancy_calculator():
    # sm_90, 8 warps, 169 registers (22 x 256 per warp: 2 warps per scheduler) -> 1 block; 113 KiB shared alone -> 2
    assert _resources(arch=90, num_warps=8, registers=169, shared_bytes=115_712).blocks_per_sm == 1
    # 255 registers: 8 warps per SM whatever the block size
    assert _resources(arch=80, num_warps=8, registers=255).blocks_per_sm == 1
    assert _resources(arch=80, num_warps=4, registers=255).blocks_per_sm == 2
    # few registers: shared memory decides (sm_86 has 100 KiB per SM, 1 KiB reserved per block)
    assert _resources(arch=86, num_warps=4, registers=64, shared_bytes=32 * 1024).blocks_per_sm == 3
    # threads decide: 1536 per SM on sm_86 -> 3 blocks of 16 warps (512 threads each)
    assert _resources(arch=86, num_warps=16, registers=32, shared_bytes=0).blocks_per_sm == 3
    # and the block limit itself (16 on sm_86)
    assert _resources(arch=86, num_warps=1, registers=32, shared_bytes=0).blocks_per_sm == 16


def _sass_run(out_dir: Path, cache_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1", "TRITON_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, str(SCRIPT), "--arch", "90", "--dtype", "bfloat16", "--head-dim", "64", "--kernel", "fwd"]
    return subprocess.run(cmd + ["--sass", str(out_dir), *flags], env=env, capture_output=True, text=True, timeout=600)


def test_sass_is_written_per_launch_and_is_the_same_for_the_same_kernel(tmp_path):
    # each run compiles afresh (its own Triton cache), so equal text means the compile is reproducible
    for run in ("a", "b"):
        proc = _sass_run(tmp_path / run, tmp_path / f"cache_{run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _sass_run(tmp_path / "no_rope", tmp_path / "cache_no_rope", "--no-rope")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sm90_bfloat16_d64_rope_fwd.sass"]
    rope = (tmp_path / "a" / "sm90_bfloat16_d64_rope_fwd.sass").read_text()
    assert rope == (tmp_path / "b" / "sm90_bfloat16_d64_rope_fwd.sass").read_text()
    assert "HGMMA" in rope  # Hopper's tensor-core products
    assert not re.search(r"0x[0-9a-f]{16}", rope)  # the encodings are left out
    no_rope = (tmp_path / "no_rope" / "sm90_bfloat16_d64_no_rope_fwd.sass").read_text()
    # the rotation is code of its own: the variant without it has fewer instructions
    assert len(no_rope.splitlines()) < len(rope.splitlines())


def test_sass_does_not_combine_with_search(tmp_path):
    proc = _sass_run(tmp_path / "out", tmp_path / "cache", "--search")
    assert proc.returncode == 2
    assert "--sass writes the machine code of TILES' entries" in proc.stderr
    assert not (tmp_path / "out").exists()
