"""Compile the attention kernels for NVIDIA GPUs on a machine without one, and report their resources.

    python benchmarks/compile_report.py                 # sm_80 (A100), sm_86, sm_90 (H100), every dtype
    python benchmarks/compile_report.py --arch 90 --dtype bfloat16 --head-dim 64
    python benchmarks/compile_report.py --sass /tmp/before   # then again after a change: diff -r /tmp/before /tmp/after

Triton's own compiler and ptxas turn each launch exactly as ``attention_forward`` / ``attention_backward``
would issue it (same arguments, so the same specialisations) into a cubin for the chosen architecture;
``cuobjdump`` then reads registers per thread, spilled bytes and static shared memory from it. This is what
decides whether a tile configuration can run at all (shared memory within the architecture's limit, no
register spills) and whether the matrix products use tensor cores; it says nothing about speed, which
``benchmarks/bench_attention.py`` measures on a GPU.

``--sass DIR`` also writes each launch's machine code (SASS, one file per architecture, dtype, head dim, RoPE and
kernel, without the instruction encodings): a kernel refactor meant to change nothing can be checked to compile to
the same instructions, on a machine without a GPU.

Needs ``TRITON_INTERPRET`` unset (the interpreter replaces the kernels with Python functions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from loopformer.kernels import attention as attn


@dataclass(frozen=True)
class SMLimits:
    """One architecture's limits (CUDA programming guide, compute capabilities table)."""

    block_shared_bytes: int  # the most dynamic shared memory one block may use
    sm_shared_bytes: int  # shared memory of one SM, of which each resident block also reserves 1 KiB
    max_threads: int  # per SM
    max_blocks: int  # per SM
    registers: int = 65_536  # per SM, in 4 scheduler partitions; warps take them 256 at a time


SM_LIMITS = {
    80: SMLimits(166_912, 167_936, 2048, 32),
    86: SMLimits(101_376, 102_400, 1536, 16),
    89: SMLimits(101_376, 102_400, 1536, 24),
    90: SMLimits(232_448, 233_472, 2048, 32),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class KernelResources:
    """What ptxas made of one kernel launch for one architecture."""

    kernel: str
    arch: int
    dtype: str
    head_dim: int
    rope: bool
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    registers: int  # per thread
    spilled_bytes: int  # local memory per thread: registers that did not fit
    shared_bytes: int  # dynamic (Triton's pipelining buffers) + static
    matmul: str  # wgmma (Hopper tensor cores), mma (Ampere-style tensor cores) or fma (no tensor cores)

    @property
    def blocks_per_sm(self) -> int:
        return resident_blocks(self.arch, self.registers, self.shared_bytes, self.num_warps)

    @property
    def fits(self) -> bool:
        return self.spilled_bytes == 0 and self.shared_bytes <= shared_limit(self.arch)


def resident_blocks(arch: int, registers: int, shared_bytes: int, num_warps: int) -> int:
    """Blocks of a kernel that one SM of ``sm_<arch>`` holds at once (the occupancy calculator's rule): what
    hides memory latency in a memory-bound kernel, together with each block's loads in flight."""
    limits = SM_LIMITS[arch]
    registers_per_warp = max(256, -(-registers * 32 // 256) * 256)
    warps_by_registers = 4 * ((limits.registers // 4) // registers_per_warp)
    by_shared = limits.sm_shared_bytes // (shared_bytes + 1024)
    by_threads = limits.max_threads // (32 * num_warps)
    return min(warps_by_registers // num_warps, by_shared, by_threads, limits.max_blocks)


# sm_89 (L4, RTX 40xx) also runs the sm80 tiles; its codegen is sm_86's (mma.sync), not compiled here.
FAMILY_ARCHS = {"sm80": (80, 86), "sm90": (90,)}


def shared_limit(arch: int) -> int:
    """The shared memory a tile may use on ``sm_<arch>``: the least of its family, which shares one TILES entry
    (sm_86 and sm_89 GPUs run the sm80 tiles with 99 KiB, not the A100's 163 KiB)."""
    return min(v.block_shared_bytes for a, v in SM_LIMITS.items() if attn.family_of(a) == attn.family_of(arch))


@contextlib.contextmanager
def _compiling_for(arch: int) -> Iterator[None]:
    """Make Triton's launcher compile for ``sm_<arch>`` instead of asking a (missing) CUDA driver."""
    from triton.backends import DriverBase
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    class AheadOfTimeDriver(DriverBase):
        @classmethod
        def is_active(cls) -> bool:
            return False

        def get_current_target(self) -> GPUTarget:
            return GPUTarget("cuda", arch, 32)

        def get_current_device(self) -> int:
            return arch  # Triton caches compiled kernels per device: one "device" per architecture

        def get_current_stream(self, device: Optional[int] = None) -> int:
            return 0

        def get_active_torch_device(self) -> torch.device:
            return torch.device("cpu")

        def map_python_to_cpp_type(self, ty: str) -> str:
            raise NotImplementedError

        def get_benchmarker(self):  # noqa: ANN201
            raise NotImplementedError("compile_report compiles only; it does not run kernels")

    previous = driver._active
    driver.set_active(AheadOfTimeDriver())
    try:
        yield
    finally:
        driver._active = previous


def _cuobjdump(cubin: bytes, option: str) -> str:
    """What Triton's bundled cuobjdump prints with ``option`` for ``cubin``."""
    import triton

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run(
            [triton.knobs.nvidia.cuobjdump.path, option, f.name], capture_output=True, text=True, check=True
        ).stdout


def _cubin_resources(cubin: bytes) -> dict[str, int]:
    out = _cuobjdump(cubin, "--dump-resource-usage")
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    if "REG" not in fields:
        raise RuntimeError(f"could not read the resource usage from cuobjdump's output:\n{out}")
    return {k: int(v) for k, v in fields.items()}


def sass_text(cubin: bytes) -> str:
    """The instructions of ``cubin`` as cuobjdump prints them, address and instruction per line, without the
    128-bit encodings printed beside them, so that a diff reads as instructions (register numbers included)."""
    out = _cuobjdump(cubin, "-sass")
    lines = (re.sub(r"\s*/\* 0x[0-9a-f]{16} \*/", "", line).rstrip() for line in out.splitlines() if "/*" in line)
    return "\n".join(line for line in lines if line.strip()) + "\n"


def _matmul_kind(ptx: str) -> str:
    if "wgmma" in ptx:
        return "wgmma"
    if "mma.sync" in ptx:
        return "mma"
    return "fma"


def _launches(dtype: torch.dtype, head_dim: int, rope: bool, seq_len: int, heads: int, tiles, family: str):  # noqa: ANN001
    """The kernels attention_forward and attention_backward launch, built on small CPU tensors."""
    from loopformer.model.layers import RotaryEmbedding

    B, S, H, D = 1, seq_len, heads, head_dim
    qkv = torch.zeros(B, S, 3 * H, D, dtype=dtype)
    cos, sin = RotaryEmbedding(D, S, 10000.0)() if rope else (None, None)
    o = torch.zeros(B, S, H, D, dtype=dtype)
    lse = torch.zeros(B, H, S)
    dqkv = torch.zeros_like(qkv)
    launches = attn.forward_launches(qkv, cos, sin, H, o, lse, tiles, family)
    launches += attn.backward_launches(o, qkv, cos, sin, o, lse, H, dqkv, tiles, family, one_pass=False)
    if attn.one_pass_tiles(S, D, dtype, family, tiles) is not None:
        launches += attn.backward_launches(o, qkv, cos, sin, o, lse, H, dqkv, tiles, family, one_pass=True)
    return launches


def compile_kernels(
    arch: int,
    dtype: torch.dtype,
    head_dim: int,
    rope: bool = True,
    seq_len: int = 97,
    heads: int = 8,
    tiles: Optional[dict[str, attn.Tiles]] = None,
    kernels: Optional[set[str]] = None,
    sass_dir: Optional[Path] = None,
) -> list[KernelResources]:
    """Compile every attention kernel (or those named in ``kernels``) for ``sm_<arch>`` (no GPU needed) and read
    back its resources. The one-pass backward is among them where a tile of it covers ``seq_len``. With
    ``sass_dir``, each kernel's machine code is written there too (see sass_text)."""
    if attn.interpreter_enabled():
        raise RuntimeError("compile_report compiles for a GPU: unset TRITON_INTERPRET (it is set to 1).")
    if not attn.HAVE_TRITON:
        raise RuntimeError("compile_report needs the `triton` package.")
    if arch not in SM_LIMITS:
        raise ValueError(f"unknown architecture sm_{arch}; known: {sorted(SM_LIMITS)}.")
    reports = []
    with _compiling_for(arch):
        for launch in _launches(dtype, head_dim, rope, seq_len, heads, tiles, attn.family_of(arch)):
            if kernels is not None and launch.name not in kernels:
                continue
            compiled = launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.meta)
            used = _cubin_resources(compiled.asm["cubin"])
            if sass_dir is not None:
                rope_name = "rope" if rope else "no_rope"
                name = f"sm{arch}_{str(dtype).removeprefix('torch.')}_d{head_dim}_{rope_name}_{launch.name}.sass"
                sass_dir.mkdir(parents=True, exist_ok=True)
                (sass_dir / name).write_text(sass_text(compiled.asm["cubin"]))
            meta = launch.meta
            reports.append(
                KernelResources(
                    kernel=launch.name, arch=arch, dtype=str(dtype).removeprefix("torch."), head_dim=head_dim,
                    rope=rope, block_m=meta["BLOCK_M"], block_n=meta.get("BLOCK_N", 0),
                    num_warps=compiled.metadata.num_warps, num_stages=compiled.metadata.num_stages,
                    registers=used["REG"], spilled_bytes=used.get("LOCAL", 0) + used.get("STACK", 0),
                    shared_bytes=compiled.metadata.shared + used.get("SHARED", 0), matmul=_matmul_kind(compiled.asm["ptx"]),
                )
            )  # fmt: skip
    return reports


KERNELS = ("fwd", "delta", "dkdv", "dq", "one_pass")
MATMUL_RANK = {"wgmma": 2, "mma": 1, "fma": 0}
CANDIDATE_SHAPES = [(32, 32), (32, 64), (64, 32), (64, 64), (32, 128), (128, 32), (64, 128), (128, 64), (128, 128)]
# float32 runs on FMA units with both operands in registers: only small tiles can fit.
FP32_SHAPES = [(32, 32), (32, 64), (64, 32), (64, 64)]


def candidates(dtype: torch.dtype) -> list[attn.Tiles]:
    shapes = FP32_SHAPES if dtype == torch.float32 else CANDIDATE_SHAPES
    return [attn.Tiles(m, n, w, st) for m, n in shapes for w in (4, 8) for st in (1, 2, 3)]


def one_pass_candidates(seq_len: int) -> list[attn.Tiles]:
    """The one-pass backward holds all keys in one tile (block_n covers seq_len) and loops over query rows."""
    n = max(16, 1 << (seq_len - 1).bit_length())
    return [attn.Tiles(m, n, w, st) for m in (16, 32, 64) for w in (4, 8) for st in (1, 2, 3)]


def preference(r: KernelResources) -> tuple:
    """The rule TILES follows: launchable (shared memory), no spills (else fewest), tensor cores, 2 stages,
    largest tile, fewest registers."""
    return (
        r.shared_bytes <= shared_limit(r.arch), r.fits, -r.spilled_bytes, MATMUL_RANK[r.matmul], r.num_stages == 2,
        r.block_m * r.block_n, -r.registers,
    )  # fmt: skip


def search_tiles(
    family: str, dtype: torch.dtype, head_dim: int, tiles: Optional[list[attn.Tiles]] = None, seq_len: int = 97,
    kernels: tuple[str, ...] = ("fwd", "dkdv", "dq", "one_pass"),
) -> dict[str, KernelResources]:  # fmt: skip
    """Compile every candidate for each kernel on every architecture of the family; keep the preferred one.

    A candidate counts as its worst compile over the family (sm_80 and sm_86 share the sm80 entry), so the
    kept one fits each of them. The report returned is that worst one. The one-pass backward has its own
    candidates (``tiles`` overrides both lists); it is left out of the result where none fits.
    """
    best: dict[str, KernelResources] = {}
    searches = [(set(kernels) - {"one_pass"}, tiles or candidates(dtype))]
    if "one_pass" in kernels:
        searches.append(({"one_pass"}, tiles or one_pass_candidates(seq_len)))
    for names, tile_list in searches:
        for t in tile_list:
            if names == {"one_pass"} and t.block_n < seq_len:
                continue  # the one-pass kernel must hold every key
            override = {name: t for name in names}
            per_arch = [
                compile_kernels(arch, dtype, head_dim, seq_len=seq_len, tiles=override, kernels=names)
                for arch in FAMILY_ARCHS[family]
            ]
            for reports in zip(*per_arch, strict=True):
                r = min(reports, key=preference)
                if r.kernel not in best or preference(r) > preference(best[r.kernel]):
                    best[r.kernel] = r
    if "one_pass" in best and not best["one_pass"].fits:
        del best["one_pass"]  # it spills everywhere: the three-kernel backward serves this entry
    return best


def markdown_table(reports: list[KernelResources]) -> str:
    lines = [
        "| arch | dtype | D | kernel | tiles (M x N, warps, stages) | registers | spilled B | shared KiB | matmul "
        "| blocks (warps) per SM |",
        "|---|---|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for r in reports:
        tiles = (
            f"{r.block_m} x {r.block_n}, {r.num_warps}, {r.num_stages}" if r.kernel != "delta" else f"{r.block_m} rows"
        )
        lines.append(
            f"| sm_{r.arch} | {r.dtype} | {r.head_dim} | {r.kernel} | {tiles} | {r.registers} | "
            f"{r.spilled_bytes} | {r.shared_bytes / 1024:.1f} | {r.matmul} | {r.blocks_per_sm} ({r.blocks_per_sm * r.num_warps}) |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--arch",
        type=int,
        action="append",
        help="compute capability: 80, 86, 89 or 90 (repeatable; default 80, 86, 90)",
    )
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES), help="repeatable; default: all three")
    p.add_argument("--head-dim", type=int, action="append", choices=attn.SUPPORTED_HEAD_DIMS)
    p.add_argument(
        "--kernel", action="append", choices=KERNELS, help="repeatable; default: every kernel (delta is not searched)"
    )
    p.add_argument("--no-rope", action="store_true", help="compile the variant without rotary embeddings")
    p.add_argument("--seq-len", type=int, default=97)
    p.add_argument("--json", type=Path, help="also write the reports to this file")
    p.add_argument("--search", action="store_true", help="compile every candidate tile and print the preferred ones")
    p.add_argument(
        "--sass", type=Path, metavar="DIR",
        help="also write each kernel's machine code (SASS) to DIR, one file per launch: diff -r two of them to see "
        "whether a change compiles to other instructions",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.sass is not None and args.search:
        p.error("--sass writes the machine code of TILES' entries; it does not combine with --search")
    reports = []
    archs = args.arch or [80, 86, 90]
    if args.search:  # one search per family, over all of its architectures
        archs = sorted({FAMILY_ARCHS[attn.family_of(a)][0] for a in archs})
    for arch in archs:
        for dtype in args.dtype or ["bfloat16", "float16", "float32"]:
            for head_dim in args.head_dim or list(attn.SUPPORTED_HEAD_DIMS):
                if args.search:
                    kernels = tuple(k for k in args.kernel or KERNELS if k != "delta")
                    best = search_tiles(
                        attn.family_of(arch), DTYPES[dtype], head_dim, seq_len=args.seq_len, kernels=kernels
                    )
                    reports += list(best.values())
                    precision = "fp32" if dtype == "float32" else "16-bit"
                    entries = ", ".join(
                        f'"{k}": Tiles({r.block_m}, {r.block_n}, {r.num_warps}, {r.num_stages})'
                        for k, r in best.items()
                    )
                    print(
                        f'    ("{attn.family_of(arch)}", "{precision}", {head_dim}): {{{entries}}},  # {dtype}',
                        flush=True,
                    )
                else:
                    reports += compile_kernels(
                        arch, DTYPES[dtype], head_dim, not args.no_rope, args.seq_len,
                        kernels=set(args.kernel) if args.kernel else None, sass_dir=args.sass,
                    )  # fmt: skip
    print(markdown_table(reports))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=1))
    for r in reports:
        if not r.fits:
            print(
                f"does not fit: {r.kernel} sm_{r.arch} {r.dtype} D={r.head_dim}: {r.spilled_bytes} B spilled, "
                f"{r.shared_bytes} B shared (limit {shared_limit(r.arch)})",
                file=sys.stderr,
            )
    # Spills only cost speed; shared memory over the limit means the kernel cannot launch.
    return 1 if any(r.shared_bytes > shared_limit(r.arch) for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
