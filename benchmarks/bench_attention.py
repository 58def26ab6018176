"""Fused packed-QKV attention vs the reference path, and the kernel's two backward paths.

    python benchmarks/bench_attention.py            # on a CUDA GPU: medians from triton.testing.do_bench
    python benchmarks/bench_attention.py --smoke    # tiny shapes on any machine, to exercise the code only

Segment measured: "packed QKV -> attention output [B, S, H, D]".
  fused:      loopformer.kernels.attention.packed_attention (one kernel, RoPE inside)
  reference:  RoPE in float32 in PyTorch + transposes + scaled_dot_product_attention (best backend) + transpose
Both sides run in this process on the same inputs; results go to BENCHMARKS.md with the GPU's name.
The whole training step with each attention backend, eager and compiled: benchmarks/bench_step.py.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from loopformer.kernels import attention as attn
from loopformer.kernels.attention import packed_attention, packed_attention_reference
from loopformer.model.layers import RotaryEmbedding

# Peak HBM bandwidth (GB/s) of the GPUs we expect, for the memory-bandwidth floor.
PEAK_GBPS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}
# The fused segment's forward+backward speed-up over the reference path (RoPE + SDPA) that it must reach, by length.
GOALS = {97: 2.0, 916: 1.0}


def bench(fn, smoke: bool) -> float:
    """Median milliseconds (with --smoke: one call's, to exercise the code only)."""
    if smoke:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def peak_extra_mib(fn, device: str) -> float:
    """Memory one call allocates beyond what was live before it, at its peak (CUDA only; NaN elsewhere)."""
    if device != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def segment_rows(device: str, smoke: bool, dtype: torch.dtype) -> list[dict]:
    H, D = 8, 64
    shapes = [(97, 1), (144, 1)] if smoke else [(97, 192 * 8), (256, 512), (916, 128), (2048, 64)]
    rows = []
    for S, B in shapes:
        qkv = torch.randn(B, S, 3 * H, D, device=device, dtype=dtype, requires_grad=True)
        cos, sin = (t.to(device) for t in RotaryEmbedding(D, S, 10000.0)())
        grad = torch.randn(B, S, H, D, device=device, dtype=dtype)
        flops_fwd = 4 * B * H * S * S * D  # QK^T and PV
        # Forward memory floor: read q, k, v once, write o (and a float32 lse per row and head).
        bytes_fwd = 4 * B * S * H * D * qkv.element_size() + 4 * B * H * S
        for name, fn in (("fused", packed_attention), ("reference", packed_attention_reference)):

            def fwd(fn=fn):
                with torch.no_grad():
                    fn(qkv, cos, sin, H)

            def fwd_bwd(fn=fn):
                qkv.grad = None
                fn(qkv, cos, sin, H).backward(grad)

            ms_f, ms_fb = bench(fwd, smoke), bench(fwd_bwd, smoke)
            qkv.grad = None
            rows.append(
                dict(
                    S=S, B=B, impl=name, fwd_ms=ms_f, fwd_bwd_ms=ms_fb,
                    fwd_tflops=flops_fwd / ms_f / 1e9, fwd_bwd_tflops=3.5 * flops_fwd / ms_fb / 1e9,
                    fwd_gbps=bytes_fwd / ms_f / 1e6, bytes_fwd=bytes_fwd,
                    fwd_bwd_mib=peak_extra_mib(fwd_bwd, device), qkv_mib=qkv.numel() * qkv.element_size() / 2**20,
                )
            )  # fmt: skip
    return rows


def backward_path_rows(device: str, smoke: bool, dtype: torch.dtype) -> list[dict]:
    """The backward kernels alone where the one-pass kernel serves S: one pass vs delta + dK/dV + dQ."""
    H, D = 8, 64
    family = attn.gpu_family(torch.device(device))
    dtype = torch.float16 if smoke else dtype  # the smoke run's float32 has no one-pass tile
    rows = []
    for S, B in [(97, 1)] if smoke else [(97, 192 * 8), (128, 1024)]:
        if attn.one_pass_tiles(S, D, dtype, family) is None:
            continue
        qkv = torch.randn(B, S, 3 * H, D, device=device, dtype=dtype)
        cos, sin = (t.to(device) for t in RotaryEmbedding(D, S, 10000.0)())
        o, lse = attn.attention_forward(qkv, cos, sin, H)
        grad = torch.randn_like(o)
        dqkv = torch.empty_like(qkv)
        ms = {
            one_pass: bench(
                lambda one_pass=one_pass: attn.attention_backward(
                    grad, qkv, cos, sin, o, lse, H, out=dqkv, one_pass=one_pass
                ),
                smoke,
            )
            for one_pass in (True, False)
        }
        rows.append(dict(S=S, B=B, one_pass_ms=ms[True], three_kernels_ms=ms[False]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true", help="tiny shapes, any device: checks the script, not speed")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        raise SystemExit("bench_attention.py needs a CUDA GPU (use --smoke to exercise it on the CPU).")
    dtype = torch.float32 if args.smoke else getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter, smoke run)"
    peak = next((v for k, v in PEAK_GBPS.items() if k in name), float("nan"))
    print(f"device: {name}; torch {torch.__version__}; dtype {dtype}")

    seg = segment_rows(device, args.smoke, dtype)
    print(
        "\n| S | B x H | impl | fwd ms | fwd+bwd ms | fwd TFLOP/s | fwd GB/s | fwd % of bandwidth floor "
        "| fwd+bwd peak extra MiB (qkv MiB) |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in seg:
        floor_pct = 100 * r["fwd_gbps"] / peak if math.isfinite(peak) else float("nan")
        print(
            f"| {r['S']} | {r['B']}x8 | {r['impl']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
            f"{r['fwd_tflops']:.1f} | {r['fwd_gbps']:.0f} | {floor_pct:.0f}% | "
            f"{r['fwd_bwd_mib']:.0f} ({r['qkv_mib']:.0f}) |"
        )
    print("\n| S | fwd speed-up (reference / fused) | fwd+bwd speed-up |")
    print("|---:|---:|---:|")
    for fused, ref in zip(seg[0::2], seg[1::2], strict=True):
        print(
            f"| {fused['S']} | {ref['fwd_ms'] / fused['fwd_ms']:.2f}x | {ref['fwd_bwd_ms'] / fused['fwd_bwd_ms']:.2f}x |"
        )
    for fused, ref in zip(seg[0::2], seg[1::2], strict=True):
        if fused["S"] in GOALS:
            speedup = ref["fwd_bwd_ms"] / fused["fwd_bwd_ms"]
            met = "met" if speedup >= GOALS[fused["S"]] else "NOT met"
            print(
                f"goal at S = {fused['S']}: fwd+bwd >= {GOALS[fused['S']]:.1f}x the reference path: "
                f"{speedup:.2f}x, {met}"
            )

    paths = backward_path_rows(device, args.smoke, dtype)
    print("\n| S | B x H | backward: one pass ms | three kernels (delta, dK/dV, dQ) ms | one pass speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for r in paths:
        print(
            f"| {r['S']} | {r['B']}x8 | {r['one_pass_ms']:.3f} | {r['three_kernels_ms']:.3f} | "
            f"{r['three_kernels_ms'] / r['one_pass_ms']:.2f}x |"
        )


if __name__ == "__main__":
    main()
