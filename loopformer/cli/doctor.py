"""`loopformer doctor`: what a user runs on a new machine before a sweep. The versions, the devices, and for the
recipe's attention shape on each visible GPU: the fused kernel's self-check, which attention ``auto`` takes there
and why (timed), and whether the compiled step captures CUDA graphs; then a one-line verdict and exit 0 (ready) or
1 (something would make runs slower or fail). The same checks a run makes at its start and `benchmarks/gpu_check.sh`
makes first. On a machine without a GPU it says what it checked and what it cannot."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from loopformer.argtypes import at_least

PACKAGES = ("torch", "triton", "lightning", "jsonargparse", "wandb", "sweeps", "numpy")
RECIPE = dict(dtype="bfloat16", head_dim=64, seq_len=97)  # configs/loop_transformer-3stage.yaml: 512/8, 81 + 16


NEEDED_FOR_RUNS = ("torch", "lightning", "jsonargparse", "numpy")  # fit/validate/test/predict cannot start without
WITHOUT = {  # what a missing package costs, said beside it
    "triton": "the fused kernel: runs use SDPA; `pip install -e '.[triton]'`",
    "wandb": "the default logger: runs need `--trainer.logger=false`; `pip install wandb`",
    "sweeps": "the offline sweep runner; `pip install -e '.[sweep]'`",
    **{name: "fit/validate/test/predict cannot start; `pip install -e .`" for name in NEEDED_FOR_RUNS},
}


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def versions() -> list[str]:
    lines = [f"python {platform.python_version()} ({sys.executable})"]
    for name in PACKAGES:
        found = installed_version(name)
        lines.append(f"{name} {found}" if found else f"{name}: not installed ({WITHOUT[name]})")
    return lines


def missing_for_runs() -> list[str]:
    return [name for name in NEEDED_FOR_RUNS if installed_version(name) is None]


def print_verdict(ready: bool, verdict: str) -> int:
    """The last line and the exit code: ``verdict`` unless a package that runs need is missing, which fails it."""
    missing = missing_for_runs()
    if missing:
        print(f"verdict: NOT READY: {', '.join(missing)} not installed: runs cannot start (`pip install -e .`)")
        return 1
    print(verdict)
    return 0 if ready else 1


def check_gpu(index: int, dtype_name: str, head_dim: int, seq_len: int, compile_step: bool) -> tuple[bool, list[str]]:
    """(ready, lines) for one CUDA device."""
    import torch

    from loopformer.kernels import selfcheck
    from loopformer.kernels.dispatch import resolve_attention

    device, dtype = torch.device("cuda", index), getattr(torch, dtype_name)
    lines, ok = (
        [
            f"cuda:{index} {selfcheck.device_name(device)}, {torch.cuda.get_device_properties(index).total_memory / 2**30:.0f} GiB"
        ],
        True,
    )
    start = time.perf_counter()
    verdict = selfcheck.check_kernel(device, dtype, head_dim, seq_len)
    lines.append(f"  kernel self-check ({dtype_name}, head dim {head_dim}, length {seq_len}): "
                 f"{'passed' if verdict.ok else 'FAILED'}: {verdict.detail} ({time.perf_counter() - start:.1f} s)")  # fmt: skip
    ok &= verdict.ok
    resolution = resolve_attention("auto", device, dtype, head_dim, seq_len)
    lines.append(f"  attention auto: {resolution.implementation} ({resolution.reason})")
    if compile_step:
        ready, line = check_cuda_graphs(device, dtype_name)
        lines.append(f"  compiled step: {line}")
        ok &= ready
    return ok, lines


def check_cuda_graphs(device, dtype_name: str) -> tuple[bool, str]:  # noqa: ANN001 (a torch.device)
    """Compile a small 3-stage ACT step with CUDA graphs (reduce-overhead) and run it: captured, or why not."""
    import torch

    from loopformer.model import LoopTransformer
    from loopformer.model.training_step import ACTTrainingStep
    from loopformer.training.config import network_config_from_flat

    torch._dynamo.reset()
    config = network_config_from_flat(vocab_size=11, seq_len=81, num_puzzle_identifiers=1, hidden_size=128,
                                      num_heads=2, forward_dtype=dtype_name, halt_max_steps=2)  # fmt: skip
    net = LoopTransformer(config).to(device).train()
    step = ACTTrainingStep(net, "stablemax_cross_entropy", "act")
    step.compile("reduce-overhead")
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(2, 11, (8, 81), generator=g)
    batch = {"inputs": labels.clone(), "labels": labels, "puzzle_identifiers": torch.zeros(8, dtype=torch.int32)}
    batch = {k: v.to(device) for k, v in batch.items()}
    start = time.perf_counter()
    try:
        carry = net.initial_carry(batch)
        for _ in range(3):
            carry, loss, _ = step(carry, batch)
            loss.backward()
        torch.cuda.synchronize(device)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return (
            False,
            f"FAILED to compile or run: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
        )
    seconds = time.perf_counter() - start
    if step._fn.graphs_failed:
        return False, f"compiles, CUDA graphs not captured ({step._fn.graphs_failed}); runs go on without them"
    return True, f"compiles and captures CUDA graphs ({seconds:.0f} s for 3 steps, compilation included)"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loopformer doctor", description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default=RECIPE["dtype"], choices=("bfloat16", "float16", "float32"))
    p.add_argument("--head-dim", type=int, default=RECIPE["head_dim"])
    p.add_argument("--seq-len", type=at_least(1), default=RECIPE["seq_len"], help="tokens, the puzzle prefix included")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled step (its compilation takes ~1 min)")
    args = p.parse_args(argv)
    gpu_likely = Path("/dev/nvidiactl").exists() or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if not gpu_likely and "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # no GPU: the kernel can still check itself in the interpreter
    from loopformer.kernels.attention import SUPPORTED_HEAD_DIMS  # after TRITON_INTERPRET: it may load triton

    if args.head_dim not in SUPPORTED_HEAD_DIMS:
        p.error(
            f"argument --head-dim: the fused kernel supports head dims {', '.join(map(str, SUPPORTED_HEAD_DIMS))}; "
            f"a model of head dim {args.head_dim} runs PyTorch SDPA, so there is no kernel to check"
        )
    for line in versions():
        print(line)
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    print(f"CUDA {torch.version.cuda or 'none'} ({'driver ' + _driver() if count else 'no CUDA device visible'}); "
          f"{count} GPU(s); {os.cpu_count()} CPU core(s)")  # fmt: skip
    if count == 0:
        return _cpu_only(args)
    ready = True
    for index in range(count):
        ok, lines = check_gpu(index, args.dtype, args.head_dim, args.seq_len, not args.no_compile)
        print("\n".join(lines))
        ready &= ok
    return print_verdict(
        ready,
        f"verdict: {'ready' if ready else 'NOT READY'}: " + ("every GPU passed" if ready else "see the lines above"),
    )


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _cpu_only(args: argparse.Namespace) -> int:
    import torch

    from loopformer.kernels import selfcheck
    from loopformer.kernels.attention import HAVE_TRITON, interpreter_enabled

    if HAVE_TRITON and interpreter_enabled():
        verdict = selfcheck.run_check(torch.device("cpu"), torch.float32, args.head_dim, min(args.seq_len, 40))
        print(f"kernel self-check in Triton's interpreter (float32, head dim {args.head_dim}): "
              f"{'passed' if verdict.ok else 'FAILED'}: {verdict.detail}")  # fmt: skip
        if not verdict.ok:
            print("verdict: NOT READY: the fused kernel computes wrong values even in the interpreter")
            return 1
    else:
        print("kernel self-check: not run (Triton is not installed, or TRITON_INTERPRET was not set before it loaded)")
    print(
        "not checked here (no GPU): the kernel on a device, auto's timing of kernel against SDPA, CUDA graphs. "
        "Runs use PyTorch SDPA on this machine (attention auto on cpu)."
    )
    return print_verdict(
        True, "verdict: ready for CPU runs (attention: sdpa); run `loopformer doctor` on the GPU machine before a sweep"
    )
