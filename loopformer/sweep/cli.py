"""`loopformer sweep`: run a W&B sweep file with the W&B agent, or offline (one runner, or one per GPU), and
`loopformer sweep report`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

from loopformer.runs.parent import die_with_parent
from loopformer.sweep.spec import SweepFileError, load_sweep


def run_online(path: str, count: Optional[int], project: str, entity: Optional[str]) -> int:
    import wandb

    config = load_sweep(path)
    sweep_id = wandb.sweep(config, project=project, entity=entity)
    target = "/".join(p for p in (entity, project, sweep_id) if p)
    print(f"sweep id: {sweep_id}\nrun more agents (e.g. on other machines) with:\n  wandb agent {target}")
    command = ["wandb", "agent", target] + (["--count", str(count)] if count else [])
    return subprocess.call(command)


def run_offline(sweep_file: str, out: Path, count: int, label: str = "") -> int:
    from loopformer.sweep.runner import OfflineSweep

    sweep = OfflineSweep(sweep_file, out, label=label)
    sweep.run(count)
    if sweep.stop_signal is not None:
        print(
            f"sweep runner stopped by {signal.Signals(sweep.stop_signal).name}; results so far: {out / 'results.csv'}"
        )
        return 128 + sweep.stop_signal
    print(f"results: {out / 'results.csv'}, picture: {out / 'parallel_coordinates.png'}")
    print(f"compare the schedules at equal compute: loopformer sweep report {out}")
    return 0


def run_offline_per_gpu(sweep_file: str, out: Path, count: int, gpus: list[str]) -> int:
    """One runner per GPU (``CUDA_VISIBLE_DEVICES`` set to it), all on one sweep directory, as one W&B agent per GPU
    on one sweep. Signals are passed on to the runners; they die with this process."""
    load_sweep(sweep_file)  # a bad file is one error here, not one per runner
    parent = os.getpid()
    procs = []
    for gpu in gpus:
        command = [sys.executable, "-m", "loopformer.cli", "sweep", sweep_file, "--offline", "--out", str(out)]
        command += ["--count", str(count), "--label", f"gpu {gpu}"]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        procs.append(subprocess.Popen(command, env=env, preexec_fn=lambda: die_with_parent(parent)))
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
    codes = [proc.wait() for proc in procs]
    print(f"{len(gpus)} runners ended (exit codes {codes}); results: {out / 'results.csv'}")
    if received:
        return 128 + received[0]
    return max(codes, key=abs)


def main(argv: list[str], wandb_api=None) -> int:  # noqa: ANN001 (a wandb.Api factory for the report; tests fake it)
    p = argparse.ArgumentParser(
        prog="loopformer sweep",
        description="Create a W&B sweep from a file in sweeps/ and run an agent here, or run it offline. "
        "`loopformer sweep report SOURCE` turns a sweep's results into a report (see `loopformer sweep report -h`).",
    )
    p.add_argument("sweep_file")
    p.add_argument(
        "--count", type=int, default=None, help="trials in all; offline, a resumed sweep counts those done (default 10)"
    )
    p.add_argument("--project", default="loopformer")
    p.add_argument("--entity", default=None)
    p.add_argument("--offline", action="store_true", help="no W&B server: the `sweeps` engine proposes and stops runs")
    p.add_argument("--out", default=None, help="offline: results and state directory (default runs/sweeps/<file>)")
    p.add_argument(
        "--gpus",
        default=None,
        help="offline: one runner per listed GPU on the same sweep, e.g. 0,1,2,3 (several runners may also be "
        "started by hand on one --out directory)",
    )
    p.add_argument("--label", default="", help=argparse.SUPPRESS)  # set for the runners --gpus starts
    if argv[:1] == ["report"]:
        from loopformer.sweep.report import main as report_main

        return report_main(argv[1:], wandb_api)
    args = p.parse_args(argv)
    try:
        if not args.offline:
            if args.gpus:
                p.error("--gpus is for --offline sweeps; online, start one `wandb agent` per GPU")
            return run_online(args.sweep_file, args.count, args.project, args.entity)
        out = Path(args.out or Path("runs/sweeps") / Path(args.sweep_file).stem)
        if args.gpus:
            gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
            if not gpus:
                p.error(f"--gpus {args.gpus!r}: expected a comma-separated list of device numbers, e.g. 0,1,2,3")
            return run_offline_per_gpu(args.sweep_file, out, args.count or 10, gpus)
        return run_offline(args.sweep_file, out, args.count or 10, args.label)
    except SweepFileError as e:
        print(f"loopformer sweep: error: {e}", file=sys.stderr)
        return 2
