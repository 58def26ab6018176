"""A stand-in for `loopformer fit` in offline-runner tests: reports `--quality * k / 10` for k = 1..`--reports` (10),
one every `--pause` seconds (0.15; FAKE_TRIAL_PAUSE in the environment wins); with `--which=FILE`, writes there the
`loopformer` its PATH finds; with `--refuse=MESSAGE`, stops as loopformer stops on bad input (its error line, exit
2; `{quality}` in it replaced)."""

import json
import os
import shutil
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
quality = float(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--quality=")))
pause = float(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--pause=")), 0.15))
pause = float(os.environ.get("FAKE_TRIAL_PAUSE", pause))  # a test's later runner, its sweep settings unchanged
reports = int(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--reports=")), 10))
callback = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--trainer.callbacks+="))
path = json.loads(callback)["init_args"]["path"]
which = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--which=")), None)
refuse = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--refuse=")), None)
if refuse:
    print("GPU available: False", file=sys.stderr)
    print(f"loopformer: error: {refuse.replace('{quality}', str(quality))}", file=sys.stderr)
    sys.exit(2)
if which:
    with open(which, "w") as f:
        f.write(str(shutil.which("loopformer")))
for k in range(1, reports + 1):
    with open(path, "a") as f:
        report = {"_step": k, "val/exact_accuracy": quality * k / 10, "val/flops_per_puzzle": 1e6 * quality + k}
        f.write(json.dumps(report) + "\n")
    time.sleep(pause)
