"""The training step, eager against compiled (``model.runtime.compile``), side by side in one process.

    python benchmarks/bench_step.py             # CPU: the quickstart (4x4 Sudoku, hidden 64, batch 128, float32)
                                                # CUDA: the 3-stage recipe (9x9 Sudoku, hidden 512, batch 192, bf16)
    python benchmarks/bench_step.py --smoke     # tiny shapes, to exercise the code only

Every variant trains its own copy of the same model from the same seed on the same batches, as a `loopformer
fit` step does (the ACT step with its loss, under bf16 autocast on CUDA, backward, AdamW, the puzzle table's
sign-SGD step), without Lightning, so that it runs where only torch and triton are installed. After a warm-up
(compilation), rounds of ``--steps-per-round`` steps alternate between the variants, so that a machine's drift
falls on all of them alike; a round's time per step is one sample. It prints the median and the spread (lowest
to highest round) per variant, samples/s, peak memory, the last loss, and each compiled variant's speed-up over
the eager one with the same attention.

On CUDA the variants are attention triton eager, sdpa eager, triton compiled with CUDA graphs (``compile_mode:
reduce-overhead``), triton compiled, sdpa compiled (warmed up in that order, so that ``--warmup-budget-s`` leaves
out the least wanted); on the CPU, sdpa eager and compiled. SIGTERM (a time limit) stops it and prints the rounds
measured so far.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from loopformer.model import LoopTransformer, LoopTransformerConfig, StageSpec, StateSpec
from loopformer.model.training_step import ACTTrainingStep
from loopformer.training.config import network_config_from_flat
from loopformer.training.optimization import OptimConfig, configure_optimizers, puzzle_embedding_step

QUICKSTART_SCHEDULE = {  # configs/quickstart.yaml: three states sharing one block, 3 outer cycles
    "states": [StateSpec("z_H", 1), StateSpec("z_M", 1, share_weights_with="z_H"),
               StateSpec("z_L", 1, share_weights_with="z_H")],
    "stages": [StageSpec("z_L", ["z_H"], True, 3), StageSpec("z_M", ["z_L"], True, 2),
               StageSpec("z_H", ["z_M"], False, 1)],
    "outer_cycles": 3, "no_grad_cycles": 2,
}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    side: int  # Sudoku side: 4 or 9
    batch: int
    hidden: int
    heads: int
    dtype: str
    prefix: int  # puzzle-embedding prefix tokens


SHAPES = {
    "quickstart": Shape(side=4, batch=128, hidden=64, heads=4, dtype="float32", prefix=1),
    "recipe": Shape(side=9, batch=192, hidden=512, heads=8, dtype="bfloat16", prefix=16),
    "smoke": Shape(side=4, batch=8, hidden=32, heads=1, dtype="float32", prefix=1),
}


def sudoku_batches(count: int, shape: Shape, seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of generated Sudoku, tokens as the dataset stores them; random tokens where the
    generator's own imports (tqdm, PyYAML) are missing."""
    n, clues = (4, 6) if shape.side == 4 else (9, 30)
    rng = np.random.default_rng(seed)
    size = min(count * shape.batch, 512)
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
        rows = (np.arange(shape.batch) + b * shape.batch) % size
        batches.append(
            {
                "inputs": torch.from_numpy(inputs[rows]),
                "labels": torch.from_numpy(labels[rows]),
                "puzzle_identifiers": torch.zeros(shape.batch, dtype=torch.int32),
            }
        )
    return batches


def model_config(shape: Shape, backend: str) -> LoopTransformerConfig:
    sizes = dict(vocab_size=shape.side + 2, seq_len=shape.side**2, hidden_size=shape.hidden, num_heads=shape.heads,
                 puzzle_emb_ndim=shape.hidden, puzzle_emb_len=shape.prefix, forward_dtype=shape.dtype,
                 attention_backend=backend)  # fmt: skip
    if shape.side == 4:  # the quickstart's model
        return network_config_from_flat(**sizes, **QUICKSTART_SCHEDULE, expansion=2.0, pos_encodings="learned",
                                     halt_max_steps=8, loss_type="softmax_cross_entropy")  # fmt: skip
    return network_config_from_flat(**sizes, halt_max_steps=16)  # the 3-stage recipe's schedule: ArchConfig defaults


MODE_NAMES = {None: "eager", "default": "compiled", "reduce-overhead": "compiled + CUDA graphs"}


class Variant:
    """One way of running the step, with its own model, optimizer and carry."""

    def __init__(self, shape: Shape, backend: str, mode: Optional[str], device: torch.device,
                 compile_backend: Optional[str]) -> None:  # fmt: skip
        self.backend, self.mode, self.shape, self.device = backend, mode, shape, device
        self.name = f"{backend}, {MODE_NAMES[mode]}"
        torch.manual_seed(0)
        self.net = LoopTransformer(model_config(shape, backend)).to(device).train()
        loss_type = "softmax_cross_entropy" if shape.side == 4 else "stablemax_cross_entropy"  # as model_config's
        self.step = ACTTrainingStep(self.net, loss_type, "act")
        if mode is not None:
            self.step.compile(mode, compile_backend)
        self.optim = OptimConfig(lr=1e-4, lr_warmup_steps=0, weight_decay=1.0, puzzle_emb_lr=1e-4,
                                 puzzle_emb_weight_decay=1.0)  # fmt: skip
        self.optimizer = configure_optimizers(self.net, self.optim, total_steps=10**6)["optimizer"]
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=shape.dtype == "bfloat16")
        self.carry: Any = None
        self.taken = 0
        self.loss = float("nan")
        self.samples: list[float] = []  # seconds per step, one per round

    def run(self, steps: int, batches: list[dict[str, torch.Tensor]]) -> float:
        """``steps`` training steps; seconds per step (the device synchronised at the end)."""
        start = time.perf_counter()
        for _ in range(steps):
            batch = batches[self.taken % len(batches)]
            if self.carry is None:
                self.carry = self.net.initial_carry(batch)
            with self.autocast:
                self.carry, loss_sum, _ = self.step(self.carry, batch)
            loss = loss_sum / self.shape.batch
            loss.backward()
            self.optimizer.step()
            puzzle_embedding_step(self.net, self.optimizer, self.optim, None)
            self.optimizer.zero_grad(set_to_none=True)
            self.taken += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.loss = float(loss.detach())
        return (time.perf_counter() - start) / steps


class Stopped(Exception):
    """SIGTERM (the GPU check's time limit): what has been measured is still printed."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped


def report(variants: list[Variant], shape: Shape) -> None:
    measured = [v for v in variants if v.samples]
    print("| variant (attention, compile mode) | ms/step (median) | spread ms (min-max) | samples/s | peak GB | "
          "last loss |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for v in measured:
        med = statistics.median(v.samples)
        print(
            f"| {v.name} | {1e3 * med:.2f} | {1e3 * min(v.samples):.2f}-{1e3 * max(v.samples):.2f} | "
            f"{shape.batch / med:.0f} | {v.peak_gb:.2f} | {v.loss:.4f} |"
        )
    median = {(v.backend, v.mode): statistics.median(v.samples) for v in measured}
    for v in measured:
        if v.mode is not None and (v.backend, None) in median:
            ratio = median[v.backend, None] / median[v.backend, v.mode]
            print(f"{v.name} vs {v.backend}, eager: {ratio:.2f}x" + _goal(ratio, GOALS.get((v.backend, v.mode))))
    if ("triton", None) in median and ("sdpa", None) in median:
        ratio = median["sdpa", None] / median["triton", None]
        print(f"triton vs sdpa, eager: {ratio:.2f}x" + _goal(ratio, GOALS["triton vs sdpa"]))


# Issue 27's goals on a GPU: the compiled step with CUDA graphs >= 2x the eager one; the fused kernel's step faster
# than SDPA's.
GOALS = {("triton", "reduce-overhead"): (">=", 2.0), "triton vs sdpa": (">", 1.0)}


def _goal(ratio: float, goal: Optional[tuple[str, float]]) -> str:
    if goal is None:
        return ""
    op, bound = goal
    met = ratio >= bound if op == ">=" else ratio > bound
    return f" (goal {op} {bound:g}x: {'met' if met else 'NOT met'})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (compiled with aot_eager)")
    p.add_argument("--shape", choices=sorted(SHAPES), help="default: recipe on CUDA, quickstart on the CPU")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps-per-round", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5, help="steps per variant before timing (compilation)")
    p.add_argument("--budget-s", type=float, help="start no round after this many seconds (at least one runs)")
    p.add_argument("--warmup-budget-s", type=float, help="warm up (compile) no further variant after this many seconds")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    shape = SHAPES["smoke" if args.smoke else args.shape or ("recipe" if device.type == "cuda" else "quickstart")]
    compile_backend = "aot_eager" if args.smoke else None
    if args.smoke:
        args.rounds, args.steps_per_round, args.warmup = 2, 2, 1
    # Most wanted first: a variant whose compilation does not fit the warm-up budget is left out, not the eager ones.
    plan = [("sdpa", None), ("sdpa", "default")]
    if device.type == "cuda":
        plan = [("triton", None), ("sdpa", None), ("triton", "reduce-overhead"), ("triton", "default"),
                ("sdpa", "default")]  # fmt: skip
    batches = [{k: v.to(device) for k, v in b.items()} for b in sudoku_batches(8, shape, seed=0)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {shape}")
    print(f"{args.rounds} interleaved rounds of {args.steps_per_round} steps per variant after {args.warmup} warm-up")
    variants: list[Variant] = []
    began = time.perf_counter()
    try:
        for backend, mode in plan:
            if variants and args.warmup_budget_s and time.perf_counter() - began > args.warmup_budget_s:
                print(
                    f"  {backend}, {MODE_NAMES[mode]}: left out (warm-up budget of {args.warmup_budget_s:.0f} s spent)"
                )
                continue
            v = Variant(shape, backend, mode, device, compile_backend)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            v.run(args.warmup, batches)
            v.peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            print(f"  {v.name}: warm-up (compilation) {time.perf_counter() - start:.1f} s", flush=True)
            variants.append(v)
        started = time.perf_counter()
        for r in range(args.rounds):
            if r and args.budget_s and time.perf_counter() - started > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s spent: {r} rounds")
                break
            for v in variants:
                v.samples.append(v.run(args.steps_per_round, batches))
            print(
                f"  round {r + 1}: " + ", ".join(f"{v.name} {1e3 * v.samples[-1]:.2f} ms" for v in variants), flush=True
            )
    except Stopped:
        print(f"stopped (SIGTERM) after {time.perf_counter() - began:.0f} s: the rounds measured so far")
    report(variants, shape)


if __name__ == "__main__":
    main()
