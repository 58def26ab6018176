"""A stand-in for `loopformer fit` that reports which GPU it was given (``CUDA_VISIBLE_DEVICES``) with each of its
3 evaluations, for the test of `loopformer sweep --offline --gpus`."""

import json
import os
import sys
import time

quality = float(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--quality=")))
callback = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--trainer.callbacks+="))
path = json.loads(callback)["init_args"]["path"]
for k in range(1, 4):
    with open(path, "a") as f:
        report = {"_step": k, "val/exact_accuracy": quality * k / 3, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
        f.write(json.dumps(report) + "\n")
    time.sleep(0.2)
