"""Time every candidate tile configuration of the attention kernels on this GPU, kernel by kernel.

    python benchmarks/tune_attention.py                   # bf16, head dim 64, S = 97 then 916
    python benchmarks/tune_attention.py --budget-s 120    # 2 minutes, shared equally by the kernels and lengths
    python benchmarks/tune_attention.py --smoke           # tiny, on the CPU interpreter: checks the script only

TILES (loopformer/kernels/attention.py) holds tiles chosen from ahead-of-time compiles, without timings.
This script measures, for each kernel (forward; the one-pass backward where S <= 128; delta, dK/dV and
dQ of the three-kernel backward) and sequence length, the TILES entry and every candidate that runs here
without spilling registers, and prints a table with the fastest one, then each backward path's total:
the numbers to put into TILES (with the GPU's name in BENCHMARKS.md). Each kernel is timed alone with
triton.testing.do_bench (median), on the same inputs, in this process.
"""

from __future__ import annotations

import argparse
import time

import torch
import triton
from compile_report import SM_LIMITS, resident_blocks  # beside this script

from loopformer.kernels import attention as attn
from loopformer.model.layers import RotaryEmbedding

# Tile shapes worth timing: tensor-core friendly, from the compile_report search space.
SHAPES = [(32, 64), (64, 32), (64, 64), (128, 32), (128, 64), (64, 128), (128, 128)]
ONE_PASS_MAX_S = 128
ROWS = {97: 192 * 8, 256: 512, 916: 128, 2048: 64}  # batch rows per length, filling an H100 as the benchmark does


def candidates(kernel: str, S: int) -> list[attn.Tiles]:
    if kernel == "one_pass":  # every key in one tile: block_n covers S
        n = max(16, triton.next_power_of_2(S))
        return [attn.Tiles(m, n, w, st) for m in (16, 32, 64) for w in (4, 8, 16) for st in (1, 2)]
    # largest tiles first: with a small budget those are the ones the compile-time rule would pick
    shapes = sorted(SHAPES, key=lambda mn: -mn[0] * mn[1])
    return [attn.Tiles(m, n, w, st) for m, n in shapes for w in (4, 8) for st in (2, 3)]


def _inputs(S: int, B: int, H: int, D: int, dtype: torch.dtype, dev: str) -> dict:
    qkv = torch.randn(B, S, 3 * H, D, device=dev, dtype=dtype)
    cos, sin = (t.to(dev) for t in RotaryEmbedding(D, S, 10000.0)())
    o, lse = attn.attention_forward(qkv, cos, sin, H)
    return dict(qkv=qkv, cos=cos, sin=sin, o=o, lse=lse, grad_o=torch.randn_like(o), dqkv=torch.empty_like(qkv))


def _launch(kernel: str, x: dict, H: int, tiles: attn.Tiles | None) -> attn.KernelLaunch:
    override = {kernel: tiles} if tiles is not None else None
    if kernel == "fwd":
        return attn.forward_launches(x["qkv"], x["cos"], x["sin"], H, x["o"], x["lse"], override)[0]
    launches = attn.backward_launches(
        x["grad_o"], x["qkv"], x["cos"], x["sin"], x["o"], x["lse"], H, x["dqkv"], override,
        one_pass=kernel == "one_pass",
    )  # fmt: skip
    if kernel != "one_pass":
        launches[0].run()  # delta, which the dK/dV and dQ kernels read
    return next(launch for launch in launches if launch.name == kernel)


def _time(launch: attn.KernelLaunch, smoke: bool) -> tuple[float, int, str]:
    """(median ms, spilled registers, "registers, blocks per SM") of one launch; raises if it cannot run here."""
    if smoke:  # the interpreter: one timed call, meaningless as a speed
        start = time.perf_counter()
        launch.run()
        return (time.perf_counter() - start) * 1e3, 0, "-"
    import triton.testing

    compiled = launch.run()
    torch.cuda.synchronize()
    spills = getattr(compiled, "n_spills", 0) or 0
    major, minor = torch.cuda.get_device_capability()
    arch, regs, shared = 10 * major + minor, compiled.n_regs, compiled.metadata.shared
    blocks = resident_blocks(arch, regs, shared, launch.meta["num_warps"]) if arch in SM_LIMITS else "?"
    return triton.testing.do_bench(launch.run, warmup=5, rep=20, return_mode="median"), spills, f"{regs}, {blocks}"


def _kernels(S: int) -> tuple[str, ...]:
    # the one-pass backward holds every key in one tile: only short sequences
    return ("fwd", "one_pass", "delta", "dkdv", "dq") if S <= ONE_PASS_MAX_S else ("fwd", "delta", "dkdv", "dq")


def tune(
    seq_lens: list[int], dtype: torch.dtype, head_dim: int, heads: int, budget_s: float, smoke: bool = False
) -> list[dict]:
    searches = sum(len(_kernels(S)) - 1 for S in seq_lens)  # delta has no candidates
    rows = []
    for S in seq_lens:
        x = _inputs(S, 1 if smoke else ROWS.get(S, 128), heads, head_dim, dtype, "cpu" if smoke else "cuda")
        family = attn.gpu_family(x["qkv"].device)
        for kernel in _kernels(S):
            current = None if kernel == "delta" else attn.tiles_for(kernel, head_dim, dtype, family)
            if kernel == "one_pass" and current is not None and current.block_n < S:
                current = None
            best, best_ms, current_ms, tried = current, float("inf"), float("nan"), 0
            current_use = best_use = "-"
            if current is not None or kernel == "delta":
                current_ms, _, current_use = _time(_launch(kernel, x, heads, None), smoke)
                best_ms, best_use, tried = current_ms, current_use, 1
            start = time.perf_counter()
            for t in [] if kernel == "delta" else candidates(kernel, S)[: 2 if smoke else None]:
                if time.perf_counter() - start > budget_s / searches:
                    break
                try:
                    ms, spills, use = _time(_launch(kernel, x, heads, t), smoke)
                except Exception as e:  # noqa: BLE001 (out of shared memory / registers: not a candidate here)
                    print(f"  S={S} {kernel} {t}: cannot run here ({type(e).__name__})", flush=True)
                    continue
                tried += 1
                if spills == 0 and ms < best_ms:
                    best, best_ms, best_use = t, ms, use
            rows.append(
                dict(
                    S=S,
                    kernel=kernel,
                    current=current,
                    current_ms=current_ms,
                    current_use=current_use,
                    best=best,
                    best_ms=best_ms,
                    best_use=best_use,
                    tried=tried,
                )
            )
            print(
                f"  S={S} {kernel}: TILES {current_ms:.4f} ms, best {best_ms:.4f} ms {best} ({tried} timed)", flush=True
            )
    return rows


def backward_totals(rows: list[dict]) -> list[str]:
    """Per length: the three-kernel backward (delta + dK/dV + dQ) against the one-pass kernel, TILES and fastest."""
    lines = []
    for S in sorted({r["S"] for r in rows}):
        by = {r["kernel"]: r for r in rows if r["S"] == S}
        three = [by[k] for k in ("delta", "dkdv", "dq") if k in by]
        if len(three) < 3:
            continue
        line = (
            f"S={S} backward, three kernels: {sum(r['current_ms'] for r in three):.4f} ms with TILES, "
            f"{sum(r['best_ms'] for r in three):.4f} ms fastest"
        )
        if "one_pass" in by:
            one = by["one_pass"]
            line += f"; one pass: {one['current_ms']:.4f} ms with TILES, {one['best_ms']:.4f} ms fastest"
        lines.append(line)
    return lines


def _fmt(t: attn.Tiles | None) -> str:
    if t is None:
        return "-"
    return f"{t.block_m}x{t.block_n} w{t.num_warps} s{t.num_stages}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, action="append", help="repeatable; default 97 and 916")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--head-dim", type=int, default=64, choices=attn.SUPPORTED_HEAD_DIMS)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument(
        "--budget-s", type=float, default=300.0, help="seconds of candidate timing, split evenly per kernel and length"
    )
    p.add_argument("--smoke", action="store_true", help="S = 17, two candidates, CPU interpreter: checks the script")
    args = p.parse_args(argv)
    if args.smoke and not attn.interpreter_enabled():
        raise SystemExit("tune_attention.py --smoke runs in Triton's interpreter: set TRITON_INTERPRET=1.")
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("tune_attention.py times kernels on a CUDA GPU; none is visible (--smoke checks the script).")
    dtype = getattr(torch, args.dtype)
    device = torch.device("cpu" if args.smoke else "cuda")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter, smoke run)"
    family = attn.gpu_family(device)
    print(f"device: {name} ({family}); dtype {dtype}; head dim {args.head_dim}; {args.heads} heads", flush=True)
    seq_lens = args.seq_len or ([17] if args.smoke else [97, 916])
    rows = tune(seq_lens, dtype, args.head_dim, args.heads, args.budget_s, args.smoke)
    print(
        f"\n| S | kernel | TILES ({family}) | ms | registers, blocks/SM | fastest candidate | ms | registers, blocks/SM "
        "| speed-up | timed |"
    )
    print("|---:|---|---|---:|---|---|---:|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['S']} | {r['kernel']} | {_fmt(r['current'])} | {r['current_ms']:.4f} | {r['current_use']} | "
            f"{_fmt(r['best'])} | {r['best_ms']:.4f} | {r['best_use']} | {r['current_ms'] / r['best_ms']:.2f}x | "
            f"{r['tried']} |"
        )
    print()
    for line in backward_totals(rows):
        print(line)


if __name__ == "__main__":
    main()
