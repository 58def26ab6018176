"""`loopformer fit` of the 3-stage recipe with each attention backend, side by side: time per step and the losses.

    python benchmarks/fit_backends.py --data DIR        # CUDA: 200 bf16 steps per backend (triton, sdpa)
    python benchmarks/fit_backends.py --smoke           # CPU: the quickstart, a few steps, sdpa only

Each backend trains in its own `loopformer fit` process (the real command: Lightning, bf16-mixed, the data module,
EMA, gradient checkpointing) from the same seed on the same batches, for ``--steps`` optimizer steps at the
recipe's shape (configs/loop_transformer-3stage.yaml with configs/trainer/gpu-1.yaml, global batch ``--batch``),
without a logger. A callback (``StepClock``) writes each step's loss and the time of the steps after
``--warmup``, measured between two device synchronisations. The table gives ms/step, samples/s, peak memory, the
first loss and the mean of the last ``--tail`` losses per backend, then the fused kernel's speed-up over SDPA and
whether the two backends' losses agree within bf16's tolerance (``--loss-rtol``). The attention each run really
used is read off its start-up line (a kernel that fails its self-check falls back to SDPA, and the row says so).

Without ``--data`` a small 9x9 Sudoku set is generated first (``loopformer data build sudoku-gen``, about 30 s
per 1000 puzzles on one core): benchmarks/device_prep.sh makes it ahead, where device time is not spent on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = ["configs/loop_transformer-3stage.yaml", "configs/trainer/gpu-1.yaml"]
SMOKE = ["configs/quickstart.yaml", "configs/trainer/cpu.yaml"]


class StepClock(L.Callback):
    """Each optimizer step's loss, and the wall time of the steps after ``warmup`` (synchronised at both ends),
    written as JSON to ``out`` when fit ends."""

    def __init__(self, out: str, warmup: int = 20) -> None:
        self.out, self.warmup = out, warmup
        self.losses: list[torch.Tensor] = []
        self.started: Optional[float] = None
        self.timed_steps = 0

    def _synchronize(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach().float().clone())
        if len(self.losses) == self.warmup:
            self._synchronize(pl_module)
            self.started = time.perf_counter()
        elif self.started is not None:
            self.timed_steps += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._synchronize(pl_module)
        seconds = time.perf_counter() - self.started if self.started is not None else float("nan")
        cuda = pl_module.device.type == "cuda"
        record = {
            "losses": [float(x) for x in self.losses],
            "timed_steps": self.timed_steps,
            "timed_seconds": seconds,
            "peak_gb": torch.cuda.max_memory_allocated(pl_module.device) / 1e9 if cuda else float("nan"),
        }
        Path(self.out).write_text(json.dumps(record))


def fit_command(configs: list[str], data: Path, backend: str, args: argparse.Namespace, record: Path) -> list[str]:
    clock = {"class_path": f"benchmarks.fit_backends.{StepClock.__name__}",
             "init_args": {"out": str(record), "warmup": args.warmup}}  # fmt: skip
    command = [sys.executable, "-m", "loopformer.cli", "fit"]
    for config in configs:
        command += ["--config", str(REPO / config)]
    return command + [
        f"--data.data_paths={data}",
        f"--data.global_batch_size={args.batch}",
        f"--trainer.max_steps={args.steps}",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=" + json.dumps([clock]),  # replaces the recipe's ModelCheckpoint: nothing is saved
        "--last_checkpoint.at_end=false",
        f"--model.runtime.attention_backend={backend}",
    ]


def attention_line(output: str) -> str:
    """The run's own account of the attention it used: ``attention: triton (...)``."""
    lines = [line for line in output.splitlines() if line.startswith("attention: ")]
    return lines[-1].removeprefix("attention: ") if lines else "(no attention line)"


def generate_sudoku(out: Path, size: int, num_train: int, num_test: int) -> None:
    command = [sys.executable, "-m", "loopformer.cli", "data", "build", "sudoku-gen", str(out), "--size", str(size),
               "--num-train", str(num_train), "--num-test", str(num_test)]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO, env=child_environment(), stdout=subprocess.DEVNULL)


def child_environment() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_backend(configs: list[str], data: Path, backend: str, args: argparse.Namespace, workdir: Path) -> dict:
    """The backend's record, or ``{"backend": ..., "failed": why}`` (a failed or timed-out run does not stop the
    others)."""
    record = workdir / f"{backend}.json"
    run_dir = workdir / backend
    run_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        proc = subprocess.run(fit_command(configs, data, backend, args, record), cwd=run_dir, env=child_environment(),
                              capture_output=True, text=True, timeout=args.timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        text = (x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (e.stdout, e.stderr))
        output = "".join(text)
        return {"backend": backend, "failed": f"not done in {args.timeout_s:.0f} s", "output": output}
    wall = time.perf_counter() - began
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or not record.is_file():
        return {"backend": backend, "failed": f"exit {proc.returncode}", "output": output}
    result = json.loads(record.read_text())
    result.update(backend=backend, attention=attention_line(output), wall_s=wall)
    return result


def table(results: list[dict], batch: int, tail: int) -> list[str]:
    lines = [
        "| attention (asked) | attention (used) | ms/step | samples/s | peak GB | loss step 1 | "
        f"mean loss last {tail} | fit wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ms = 1000 * r["timed_seconds"] / max(1, r["timed_steps"])
        lines.append(
            f"| {r['backend']} | {r['attention']} | {ms:.1f} | {batch / ms * 1000:.0f} | {r['peak_gb']:.2f} | "
            f"{r['losses'][0]:.4f} | {statistics.fmean(r['losses'][-tail:]):.4f} | {r['wall_s']:.0f} |"
        )
    return lines


def comparison(results: list[dict], tail: int, rtol: float) -> list[str]:
    by = {r["backend"]: r for r in results}
    if not {"triton", "sdpa"} <= by.keys():
        return []
    kernel, sdpa = by["triton"], by["sdpa"]
    ms = {name: r["timed_seconds"] / max(1, r["timed_steps"]) for name, r in by.items()}
    speedup = ms["sdpa"] / ms["triton"]
    first = abs(kernel["losses"][0] - sdpa["losses"][0]) / abs(sdpa["losses"][0])
    mean_k, mean_s = statistics.fmean(kernel["losses"][-tail:]), statistics.fmean(sdpa["losses"][-tail:])
    last = abs(mean_k - mean_s) / abs(mean_s)
    agree = first <= rtol and last <= rtol
    return [
        f"training step, fused kernel vs SDPA: {speedup:.2f}x ({'faster' if speedup > 1 else 'NOT faster'})",
        f"losses: step 1 differ by {first:.2e}, the last {tail} steps' means by {last:.2e} (relative; tolerance "
        f"{rtol:g}): {'agree' if agree else 'DISAGREE'}",
    ]


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="a 9x9 Sudoku dataset directory (default: generate one)")
    p.add_argument("--num-train", type=int, default=500, help="puzzles to generate without --data")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20, help="steps before the clock starts (autotuning, caches)")
    p.add_argument("--batch", type=int, default=192, help="global batch (the recipe's is 768, for 4 GPUs)")
    p.add_argument(
        "--backends", nargs="+", choices=["triton", "sdpa", "auto"], help="default: triton sdpa (smoke: sdpa)"
    )
    p.add_argument("--tail", type=int, default=20, help="the last steps whose mean loss is compared")
    p.add_argument("--loss-rtol", type=float, default=2e-2, help="relative tolerance of the losses (bf16)")
    p.add_argument("--timeout-s", type=float, default=300, help="per fit")
    p.add_argument("--smoke", action="store_true", help="CPU: the quickstart, 6 steps, sdpa, generated 4x4 data")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.batch, args.tail = 6, 2, 16, 2
    args.backends = args.backends or (["sdpa"] if args.smoke else ["triton", "sdpa"])
    with tempfile.TemporaryDirectory(prefix="loopformer_fit_backends_") as tmp:
        workdir = Path(tmp)
        data = args.data
        if data is None:
            data = workdir / "sudoku"
            generate_sudoku(data, 4 if args.smoke else 9, 64 if args.smoke else args.num_train, 16)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        print(f"device: {device}; torch {torch.__version__}; lightning {L.__version__}; {args.steps} steps per "
              f"backend, global batch {args.batch}, timed after {args.warmup}; data {data}")  # fmt: skip
        configs = SMOKE if args.smoke else RECIPE
        results = [run_backend(configs, data.resolve(), backend, args, workdir) for backend in args.backends]
    done = [r for r in results if "failed" not in r]
    print("\n".join(table(done, args.batch, args.tail) + comparison(done, args.tail, args.loss_rtol)))
    for failed in (r for r in results if "failed" in r):
        tail = "\n".join(failed["output"].splitlines()[-25:])
        print(f"the {failed['backend']} run failed ({failed['failed']}); its output ends:\n{tail}")
    if len(done) < len(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
