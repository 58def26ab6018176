"""A callback for tests/kernels/test_selfcheck.py's DDP run: on one rank the kernel's self-check fails, and on every
rank the kernel counts as what the device would run (as `auto` on a GPU). Each rank writes what it resolved."""

from pathlib import Path

import lightning as L

from loopformer.kernels import dispatch, selfcheck


class FailOnRank(L.Callback):
    def __init__(self, rank: int, out: str) -> None:
        self.rank, self.out = rank, Path(out)

    def setup(self, trainer, pl_module, stage) -> None:
        failing = trainer.global_rank == self.rank
        dispatch.attention_implementation = lambda backend, device, head_dim, dropout=0.0: (
            "sdpa" if backend == "sdpa" else "triton"
        )
        verdict = selfcheck.Verdict(not failing, "wrong values (fake, rank 1)" if failing else "ok")
        selfcheck.check_kernel = lambda *args: verdict

    def on_fit_end(self, trainer, pl_module) -> None:
        (self.out / f"rank{trainer.global_rank}.txt").write_text(pl_module.net.attention.resolved)
