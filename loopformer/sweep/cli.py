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

from loopformer.argtypes import at_least
from loopformer.runs.parent import die_with_parent
from loopformer.sweep.spec import SweepFileError, load_sweep, this_installation_first


def run_online(path: str, count: Optional[int], project: str, entity: Optional[str]) -> int:
    """Creates the sweep on the W&B server and runs one agent here; without a server to reach (no login, WANDB_MODE
    offline or disabled, no network) one line says so and how to run it offline instead."""
    from loopformer.files import first_line
    from loopformer.runs.loggers import wandb_credentials_found

    config = load_sweep(path)
    offline_instead = f"or run it without a server: loopformer sweep {path} --offline"
    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "disabled", "dryrun"):
        print(
            f"loopformer sweep: error: WANDB_MODE={mode} is set, and a W&B sweep needs the W&B server to propose its "
            f"runs: unset it, {offline_instead}.",
            file=sys.stderr,
        )
        return 2
    if not wandb_credentials_found():
        print(
            "loopformer sweep: error: no W&B login or API key found, and a W&B sweep needs the W&B server: run "
            f"`wandb login` or set WANDB_API_KEY, {offline_instead}.",
            file=sys.stderr,
        )
        return 2
    import wandb

    try:
        sweep_id = wandb.sweep(config, project=project, entity=entity)
    except wandb.errors.Error as e:
        print(
            f"loopformer sweep: error: W&B could not create the sweep ({first_line(e)}): check the login and the "
            f"network, {offline_instead}.",
            file=sys.stderr,
        )
        return 2
    target = "/".join(p for p in (entity, project, sweep_id) if p)
    print(f"sweep id: {sweep_id}\nrun more agents (e.g. on other machines) with:\n  wandb agent {target}")
    command = ["wandb", "agent", target] + (["--count", str(count)] if count else [])
    return subprocess.call(command, env=this_installation_first(dict(os.environ)))


def run_offline(sweep_file: str, out: Path, count: int, label: str = "", overrides: Optional[list[str]] = None) -> int:
    from loopformer.sweep.report.records import counted
    from loopformer.sweep.runner import OfflineSweep

    sweep = OfflineSweep(sweep_file, out, label=label, overrides=overrides)
    if not label:  # a runner started by --gpus: its parent checked
        problem = sweep.check_command()
        if problem:
            print(
                f"loopformer sweep: error: {sweep_file}: its trials would not start: {problem} (checked with the "
                "command of a proposed run and the overrides given here; nothing was run).",
                file=sys.stderr,
            )
            return 2
    sweep.run(count)
    written = [p for p in sweep.written if p.exists()]
    files = ", ".join(str(p) for p in written)
    if sweep.stop_signal is not None:
        print(f"sweep runner stopped by {signal.Signals(sweep.stop_signal).name}; results so far: {files or 'none'}")
        return 128 + sweep.stop_signal
    if sweep.gave_up:
        print(f"loopformer sweep: error: {sweep_file}: {sweep.gave_up}.", file=sys.stderr)
        return 2
    running = [t for t in sweep.trials if t.state == "running"]
    if not sweep.ran and running and not sweep.finished_trials():
        print(
            f"{sweep.prefix} nothing left to run: the sweep holds its {len(sweep.trials)} of --count {count} trials, "
            f"{len(running)} of them running in other runners"
        )
        return 0
    if not sweep.finished_trials():
        logs = sorted(out.glob("*.log"))
        where = f"; their logs: {out}/*.log" if logs else ""
        print(f"loopformer sweep: error: no trial finished ({len(sweep.trials)} run){where}.", file=sys.stderr)
        return 1
    if not sweep.ran:
        held = counted(len(sweep.trials), "trial")
        why = (
            f"the sweep already holds {held} (--count {count}; a larger --count runs more)"
            if len(sweep.trials) >= count
            else f"the sweep file proposes no more trials than the {held} it holds (a grid run through)"
        )
        print(f"{sweep.prefix} nothing new ran: {why}")
    print(f"results: {files}")
    print(f"compare the schedules at equal compute: loopformer sweep report {out}")
    return 0


def run_offline_per_gpu(
    sweep_file: str, out: Path, count: int, gpus: list[str], overrides: Optional[list[str]] = None
) -> int:
    """One runner per GPU (``CUDA_VISIBLE_DEVICES`` set to it), all on one sweep directory, as one W&B agent per GPU
    on one sweep. Signals are passed on to the runners; they die with this process."""
    from loopformer.sweep.runner import OfflineSweep

    problem = OfflineSweep(sweep_file, out, overrides=overrides).check_command()  # once here, not once per runner
    if problem:
        print(f"loopformer sweep: error: {sweep_file}: its trials would not start: {problem}", file=sys.stderr)
        return 2
    parent = os.getpid()
    procs = []
    for gpu in gpus:
        command = [sys.executable, "-m", "loopformer.cli", "sweep", sweep_file, "--offline", "--out", str(out)]
        command += ["--count", str(count), "--label", f"gpu {gpu}", *(overrides or [])]
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
        "--count",
        type=at_least(1),
        default=None,
        help="trials in all; offline, a resumed sweep counts those done (default 10)",
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
    p.epilog = (
        "offline, any further --key=value flags are appended to every trial's command, e.g. "
        "`loopformer sweep sweeps/quickstart_stages.yaml --offline --trainer.max_steps=60 "
        "--trainer.val_check_interval=20` to try a sweep quickly"
    )
    if argv[:1] == ["report"]:
        from loopformer.sweep.report import main as report_main

        return report_main(argv[1:], wandb_api)
    args, rest = p.parse_known_args(argv)
    overrides = [a for a in rest if a.startswith("--") and "=" in a]
    if len(overrides) != len(rest):
        stray = [a for a in rest if a not in overrides]
        p.error(f"unrecognized arguments: {' '.join(stray)} (trial overrides are written --key=value)")
    if overrides and not args.offline:
        p.error("--key=value trial overrides are for --offline sweeps; online, put them in the sweep file's command")
    try:
        if not args.offline:
            if args.gpus:
                p.error("--gpus is for --offline sweeps; online, start one `wandb agent` per GPU")
            return run_online(args.sweep_file, args.count, args.project, args.entity)
        out = Path(args.out or Path("runs/sweeps") / Path(args.sweep_file).stem)
        if args.gpus:
            gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
            if not gpus or not all(g.isdigit() or g.startswith(("GPU-", "MIG-")) for g in gpus):
                p.error(
                    f"--gpus {args.gpus!r}: expected a comma-separated list of device numbers, e.g. 0,1,2,3 (or the "
                    "GPU-/MIG- UUIDs CUDA_VISIBLE_DEVICES takes)"
                )
            return run_offline_per_gpu(args.sweep_file, out, args.count or 10, gpus, overrides)
        return run_offline(args.sweep_file, out, args.count or 10, args.label, overrides)
    except SweepFileError as e:
        print(f"loopformer sweep: error: {e}", file=sys.stderr)
        return 2
