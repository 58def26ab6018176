"""The 3-stage training step, side by side: attention triton vs sdpa, eager vs compiled (``model.run.compile``).

    python benchmarks/bench_step.py                 # on a CUDA GPU: the recipe size, 200 steps per variant
    python benchmarks/bench_step.py --smoke         # tiny shapes on any machine, to exercise the code only

Each variant trains the same model from the same seed on the same batches (generated 9x9 Sudoku, 16 puzzle
prefix tokens: sequence 97) for ``--steps`` ACT steps, as a `loopformer fit` step does (forward under bf16
autocast, ACT loss, backward, AdamW, the puzzle embeddings' sign-SGD step) but without Lightning, so that it runs
where only torch and triton are installed. It prints samples/s over the steps after ``--warmup`` (compilation
excluded), peak memory, and the loss at the last step: the losses of all variants must agree to bf16 tolerance.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from loopformer.model import LoopTransformer, LoopTransformerConfig, act_loss
from loopformer.optim import OptimConfig, configure_optimizers, puzzle_embedding_step


def sudoku_batches(count: int, batch: int, seed: int, smoke: bool) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of generated 9x9 Sudoku (4x4 with --smoke), tokens as the dataset stores them; random
    tokens where the generator's own imports (tqdm, PyYAML) are missing."""
    n, clues = (4, 6) if smoke else (9, 30)
    rng = np.random.default_rng(seed)
    size = min(count * batch, 64 if smoke else 512)
    try:
        from loopformer.data.generators.sudoku import generate_sudoku

        pool = [generate_sudoku(n, clues, rng) for _ in range(size)]
        inputs = np.stack([p for p, _ in pool]).astype(np.int64) + 1  # 0 blank -> 1, digit d -> d + 1
        labels = np.stack([s for _, s in pool]).astype(np.int64) + 1
    except ImportError as e:
        print(f"(no Sudoku generator here: {e}; random tokens instead)")
        labels = rng.integers(2, n + 2, (size, n * n))
        inputs = np.where(rng.random((size, n * n)) < 0.4, labels, 1)
    batches = []
    for b in range(count):
        rows = (np.arange(batch) + b * batch) % len(pool)
        batches.append(
            {
                "inputs": torch.from_numpy(inputs[rows]),
                "labels": torch.from_numpy(labels[rows]),
                "puzzle_identifiers": torch.zeros(batch, dtype=torch.int32),
            }
        )
    return batches


def run_variant(args, backend: str, compiled: bool, batches, device: torch.device) -> dict:  # noqa: ANN001
    torch.manual_seed(0)
    side = 4 if args.smoke else 9
    cfg = LoopTransformerConfig(
        vocab_size=side + 2,
        seq_len=side * side,
        hidden_size=args.hidden,
        num_heads=args.heads,
        puzzle_emb_ndim=args.hidden,
        puzzle_emb_len=16,
        forward_dtype=args.dtype,
        attention_backend=backend,
        halt_max_steps=16,
    )  # fmt: skip  -- the 3-stage recipe's schedule (the ArchConfig defaults)
    net = LoopTransformer(cfg).to(device).train()
    if compiled:
        net.inner.compile()
    optim = OptimConfig(lr=1e-4, lr_warmup_steps=0, weight_decay=1.0, puzzle_emb_lr=1e-4, puzzle_emb_weight_decay=1.0)
    optimizer = configure_optimizers(net, optim, total_steps=args.steps)["optimizer"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    carry, times, loss = None, [], float("nan")
    for step in range(args.steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in batches[step % len(batches)].items()}
        start = time.perf_counter()
        if carry is None:
            carry = net.initial_carry(batch)
        with autocast:
            carry, outputs = net(carry, batch)
            loss_sum, _ = act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps, cfg.loss_type)
        (loss_sum / batch["inputs"].shape[0]).backward()
        optimizer.step()
        puzzle_embedding_step(net, optimizer, optim, None)
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        loss = float(loss_sum.detach()) / batch["inputs"].shape[0]
    timed = times[args.warmup :] or times
    seconds = statistics.median(timed)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {
        "variant": f"{backend}, {'compiled' if compiled else 'eager'}",
        "samples_per_s": args.batch / seconds,
        "ms_per_step": 1e3 * seconds,
        "spread_ms": 1e3 * (max(timed) - min(timed)),
        "peak_gb": peak,
        "loss": loss,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes, CPU, SDPA eager only: exercise the code")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20, help="first steps left out of the timing (compilation)")
    p.add_argument("--batch", type=int, default=192, help="rows per step (the recipe's batch per GPU)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.steps, args.warmup, args.batch, args.hidden, args.heads, args.dtype = 4, 1, 8, 32, 1, "float32"
    variants = [("sdpa", False)] if args.smoke else [(b, c) for b in ("triton", "sdpa") for c in (False, True)]
    batches = sudoku_batches(8, args.batch, seed=0, smoke=args.smoke)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}, hidden {args.hidden}, {args.steps} steps")
    rows = [run_variant(args, backend, compiled, batches, device) for backend, compiled in variants]
    print("| variant | samples/s | ms/step (median) | spread ms | peak GB | loss at last step |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['samples_per_s']:.0f} | {r['ms_per_step']:.2f} | {r['spread_ms']:.2f} | "
            f"{r['peak_gb']:.2f} | {r['loss']:.4f} |"
        )
    losses = [r["loss"] for r in rows]
    spread = (max(losses) - min(losses)) / max(abs(statistics.mean(losses)), 1e-12)
    print(f"losses agree within {spread:.2%} (bf16 tolerance: a few percent after {args.steps} steps)")
    eager = {r["variant"].split(",")[0]: r for r in rows if r["variant"].endswith("eager")}
    if "triton" in eager and "sdpa" in eager:
        print(f"fused kernel vs SDPA, eager step: {eager['sdpa']['ms_per_step'] / eager['triton']['ms_per_step']:.2f}x")


if __name__ == "__main__":
    main()
