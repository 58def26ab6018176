"""The reliability figures in BENCHMARKS.md: kill, interrupt and crowd real runs, then count what was lost.

    python benchmarks/fault_script.py [--kills 5] [--write-kills 20] [--out DIR]

1. kill -9 of a training run at random moments (it writes last.ckpt after every step, so many kills land inside a
   checkpoint write; $TMPDIR on another filesystem where /dev/shm exists), then a resume from last.ckpt to the end:
   the final weights must equal those of an uninterrupted run bit for bit.
2. SIGTERM at a random moment: exit code 143, a checkpoint, and an exact resume.
3. kill -9 of a process writing 48 MB checkpoints in a loop through the atomic writer: the destination must always
   load whole; the next start removes the partial files.
4. A second run on a claimed run directory: refused at once; the first run goes on.
5. An offline sweep with two runners, one of them killed -9 mid-trial and replaced: every trial exactly once, none
   lost, no trial process outliving its runner.
Prints one markdown table (paste it into BENCHMARKS.md with the machine's name).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
TERM_STEPS = 600  # long enough for a SIGTERM 9-12 s after the start to land mid-training
SHM = Path("/dev/shm")


def fit_args(data: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "loopformer.cli", "fit", "--config", str(ROOT / "configs/quickstart.yaml"),
        f"--data.data_paths={data}", "--data.global_batch_size=32", "--model.arch.hidden_size=32",
        "--model.arch.puzzle_emb_ndim=32", "--model.train.act.halt_max_steps=3", f"--trainer.max_steps={STEPS}",
        "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
        f"--trainer.default_root_dir={root}", "--last_checkpoint.every_minutes=1e-9", *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    tmpdir = str(SHM) if SHM.is_dir() and os.access(SHM, os.W_OK) else tempfile.gettempdir()
    return {**os.environ, "WANDB_MODE": "disabled", "TMPDIR": tmpdir, "PYTHONPATH": str(ROOT)}


def run(args: list[str], log: Path) -> int:
    with open(log, "a") as f:
        return subprocess.call(args, env=env(), stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def loads(path: Path) -> bool:
    try:
        return isinstance(torch.load(path, weights_only=True).get("state_dict"), dict)
    except Exception:  # noqa: BLE001 - any failure to load is a corrupt file
        return False


def alive(pid: int) -> bool:
    """Running (a zombie has ended; this machine's init may be slow to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kills_during_training(data: Path, out: Path, reference: dict, kills: int, rng: random.Random) -> dict:
    found = {"kills": 0, "corrupt": 0, "resumed exactly": 0, "partial files removed at the next start": 0}
    for i in range(kills):
        root = out / f"kill-{i}"
        with open(out / "fit.log", "a") as log:
            proc = subprocess.Popen(fit_args(data, root), env=env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        last = root / "checkpoints" / "last.ckpt"
        deadline = time.time() + 120
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        found["kills"] += 1
        if not loads(last):
            found["corrupt"] += 1
            continue
        leftovers = len(list((root / "checkpoints").glob(".*.partial")))
        run(fit_args(data, root, f"--ckpt_path={last}"), out / "fit.log")
        found["partial files removed at the next start"] += leftovers - len(
            list((root / "checkpoints").glob(".*.partial"))
        )
        found["resumed exactly"] += same(weights(last), reference)
    return found


def sigterm_during_training(data: Path, out: Path, rounds: int, rng: random.Random) -> dict:
    """A longer run (so that the signal lands mid-training), stopped by SIGTERM, resumed to its end, compared with
    the same run uninterrupted."""
    steps = TERM_STEPS
    whole = out / "term-whole"
    run(fit_args(data, whole, f"--trainer.max_steps={steps}"), out / "fit.log")
    reference = weights(whole / "checkpoints" / "last.ckpt")
    found = {"SIGTERMs": 0, "exit 143": 0, "checkpoint written": 0, "resumed exactly": 0, "slowest exit (s)": 0.0}
    for i in range(rounds):
        root = out / f"term-{i}"
        args = fit_args(data, root, "--last_checkpoint.every_minutes=0", f"--trainer.max_steps={steps}")
        with open(out / "fit.log", "a") as log:
            proc = subprocess.Popen(args, env=env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        time.sleep(9 + rng.uniform(0, 3))
        start = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        found["slowest exit (s)"] = round(max(found["slowest exit (s)"], time.time() - start), 1)
        found["SIGTERMs"] += 1
        found["exit 143"] += code == 143
        last = root / "checkpoints" / "last.ckpt"
        if loads(last):
            found["checkpoint written"] += 1
            run(fit_args(data, root, f"--ckpt_path={last}", f"--trainer.max_steps={steps}"), out / "fit.log")
            found["resumed exactly"] += same(weights(last), reference)
    return found


def kills_during_writes(out: Path, kills: int, rng: random.Random) -> dict:
    dest = out / "writes" / "last.ckpt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    code = textwrap.dedent(f"""
        import torch
        from loopformer.checkpoint import atomic
        k = 0
        while True:
            k += 1
            atomic.save_torch({{"tag": k, "state_dict": {{"w": torch.full((12_000_000,), float(k))}}}}, {str(dest)!r})
        """)
    found = {"kills during writes": 0, "corrupt": 0, "partial files left, then removed": 0}
    from loopformer.checkpoint import atomic

    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", code], env=env(), cwd=ROOT)
        time.sleep(rng.uniform(0.5, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        found["kills during writes"] += 1
        if dest.exists():
            saved = torch.load(dest, weights_only=True)
            found["corrupt"] += not bool((saved["state_dict"]["w"] == float(saved["tag"])).all())
        found["partial files left, then removed"] += len(atomic.remove_stale_temporaries(dest.parent))
    return found


def concurrent_runs(data: Path, out: Path) -> dict:
    root = out / "shared"
    with open(out / "fit.log", "a") as log:
        first = subprocess.Popen(
            fit_args(data, root, f"--trainer.max_steps={STEPS * 50}"), env=env(), stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT,
        )  # fmt: skip
    while not (root / "run.lock").exists() or not (root / "run.lock").read_text():
        time.sleep(0.1)
    start = time.time()
    second = subprocess.run(fit_args(data, root), env=env(), capture_output=True, text=True, cwd=ROOT)
    refused = second.returncode == 2 and "is in use by another run" in second.stderr
    seconds = time.time() - start
    first_alive = first.poll() is None
    first.kill()
    first.wait()
    return {
        "second run refused": int(refused),
        "refusal (s)": round(seconds, 1),
        "first run unharmed": int(first_alive),
    }


FAKE_TRIAL = """
import json, sys, time
quality = float(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--quality=")))
path = json.loads(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--trainer.callbacks+=")))["init_args"]["path"]
for k in range(1, 6):
    with open(path, "a") as f:
        f.write(json.dumps({"_step": k, "val/exact_accuracy": quality * k / 5}) + "\\n")
    time.sleep(0.4)
"""


def sweep_runners(out: Path, rng: random.Random) -> dict:
    directory = out / "sweep"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fake_trial.py").write_text(FAKE_TRIAL)
    values = [round(0.05 * i, 2) for i in range(1, 13)]
    sweep_file = directory / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/exact_accuracy", "goal": "maximize"},
        "parameters": {"quality": {"values": values}},
        "command": [sys.executable, str(directory / "fake_trial.py"), "${args}"],
    }))  # fmt: skip
    state_dir = directory / "out"
    command = [sys.executable, "-m", "loopformer.cli", "sweep", str(sweep_file), "--offline", "--out", str(state_dir)]
    command += ["--count", str(len(values))]
    log = open(directory / "runners.log", "w")  # noqa: SIM115 - open for the runners' lifetime
    runners = [subprocess.Popen(command, env=env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT) for _ in range(2)]
    time.sleep(3 + rng.uniform(0, 2))
    victim = runners[0]
    trial_pids = [int(p) for p in Path(f"/proc/{victim.pid}/task/{victim.pid}/children").read_text().split()]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(1.0)
    orphans = sum(alive(pid) for pid in trial_pids)
    runners.append(subprocess.Popen(command, env=env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    codes = [r.wait() for r in runners[1:]]
    log.close()
    trials = json.loads((state_dir / "state.json").read_text())["trials"]
    finished = [t["config"]["quality"]["value"] for t in trials if t["state"] == "finished"]
    return {
        "runners (one killed -9, one started after)": 3,
        "trials": len(values),
        "lost": len(set(values) - set(finished)),
        "run twice to the end": len(finished) - len(set(finished)),
        "crashed attempts re-run": sum(len(t["attempts"]) for t in trials),
        "orphan trial processes": orphans,
        "runner exit codes": codes,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--sigterms", type=int, default=2)
    p.add_argument("--write-kills", type=int, default=20)
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="loopformer-faults-"))
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    from loopformer.data.generators.sudoku import build_sudoku_dataset

    data = out / "data"
    if not (data / "train" / "dataset.json").exists():
        build_sudoku_dataset(data, n=4, clues=6, num_train=512, num_test=40, seed=1)
    start = time.time()
    run(fit_args(data, out / "reference"), out / "fit.log")
    reference = weights(out / "reference" / "checkpoints" / "last.ckpt")
    results = {
        f"kill -9 during training ({STEPS} steps, last.ckpt every step)": kills_during_training(
            data, out, reference, args.kills, rng
        ),
        f"SIGTERM during training ({TERM_STEPS} steps)": sigterm_during_training(data, out, args.sigterms, rng),
        "kill -9 during 48 MB checkpoint writes": kills_during_writes(out, args.write_kills, rng),
        "two runs on one run directory": concurrent_runs(data, out),
        "offline sweep, 2 runners on one directory": sweep_runners(out, rng),
    }
    print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), {os.cpu_count()} cores; "
          f"TMPDIR {env()['TMPDIR']}; {time.time() - start:.0f} s; outputs in {out}\n")  # fmt: skip
    print("| fault | figures |\n|---|---|")
    for name, found in results.items():
        print(f"| {name} | {', '.join(f'{k}: {v}' for k, v in found.items())} |")


if __name__ == "__main__":
    main()
