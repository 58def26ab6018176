"""Test-time depth curves: a checkpoint evaluated at several ACT depths (``halt_max_steps``), with and without
halting on the Q head (``act_inference``), from one run of the deepest depth per batch.

``loopformer validate --ckpt_path C --model.eval.depth_curve=[1,2,4,8,16,32]`` prints the table and writes
``depth_curve.csv`` and ``depth_curve.png`` to the run directory (and a table to W&B). Without halting, depth d's
outputs are those of ACT step d; with halting, each row stops at its first Q-halt step or at d, whichever comes
first, exactly as a run with ``halt_max_steps: d`` would.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from loopformer.batch import Batch
from loopformer.evaluation.evaluators import Evaluator, Outputs, real_rows
from loopformer.model import LoopTransformer
from loopformer.model.compute import compute_cost
from loopformer.model.losses import row_scores
from loopformer.runs.directory import run_directory

COLUMNS = ("depth", "act_inference", "exact_accuracy", "accuracy", "steps", "flops_per_puzzle")


@contextlib.contextmanager
def act_depth(net: LoopTransformer, depth: int, act_inference: bool) -> Iterator[None]:
    """The network halts as if configured with these (restored afterwards)."""
    halting = net.config.halting
    saved = halting.max_steps, halting.in_evaluation
    halting.max_steps, halting.in_evaluation = depth, act_inference
    try:
        yield
    finally:
        halting.max_steps, halting.in_evaluation = saved


class DepthCurve(Evaluator):
    def __init__(self, net: LoopTransformer, depths: list[int]) -> None:
        self.net, self.depths = net, sorted(set(depths))
        self.sums = torch.zeros(len(self.depths), 2, 4, dtype=torch.float64)  # [depth, act, (exact, acc, steps, n)]

    @torch.no_grad()
    def _run(self, batch: Batch, act_inference: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per step s (rows x steps): exact, accuracy; and each row's first halting step (deepest if none)."""
        deepest = self.depths[-1]
        exact, accuracy = [], []
        first_halt = torch.full_like(batch["labels"][:, 0], deepest, dtype=torch.long)
        with act_depth(self.net, deepest, act_inference):
            carry = self.net.initial_carry(batch)
            for step in range(1, deepest + 1):
                carry, outputs = self.net(carry, batch)
                e, a = row_scores(outputs["logits"], batch["labels"])
                exact.append(e)
                accuracy.append(a)
                first_halt = torch.where(carry.halted & (first_halt == deepest), step, first_halt)
        return torch.stack(exact, 1).cpu(), torch.stack(accuracy, 1).cpu(), first_halt.cpu()

    def add(self, batch: Batch, outputs: Outputs, steps: torch.Tensor, batch_idx: int) -> None:
        real = real_rows(batch).cpu()
        for a, act_inference in enumerate((False, True)):
            exact, accuracy, first_halt = self._run(batch, act_inference)
            for i, depth in enumerate(self.depths):
                used = first_halt.clamp(max=depth) if act_inference else torch.full_like(first_halt, depth)
                index = (used - 1).unsqueeze(1)
                e, acc = exact.gather(1, index).squeeze(1)[real], accuracy.gather(1, index).squeeze(1)[real]
                self.sums[i, a] += torch.tensor(
                    [e.sum().item(), acc.sum().item(), used[real].sum().item(), real.sum().item()], dtype=torch.float64
                )

    def rows(self) -> list[dict]:
        flops = compute_cost(self.net.config).flops_per_act_step
        out = []
        for i, depth in enumerate(self.depths):
            for a, act_inference in enumerate((False, True)):
                exact, accuracy, steps, n = (self.sums[i, a] / self.sums[i, a, 3].clamp_min(1)).tolist()
                out.append(dict(depth=depth, act_inference=act_inference, exact_accuracy=exact, accuracy=accuracy,
                                steps=steps, flops_per_puzzle=steps * flops))  # fmt: skip
        return out

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> dict[str, torch.Tensor]:
        self.sums = trainer.strategy.reduce(self.sums.to(pl_module.device), reduce_op="sum").cpu()
        root = Path(run_directory(trainer))  # a collective: every rank asks
        if not trainer.is_global_zero:
            return {}
        rows = self.rows()
        rank_zero_info(format_table(rows, prefix))
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "depth_curve.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        plot(rows, root / "depth_curve.png")
        rank_zero_info(f"depth curve: {root / 'depth_curve.csv'}, {root / 'depth_curve.png'}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                data = [[r[c] for c in COLUMNS] for r in rows]
                logger.log_table(key=f"{prefix}/depth_curve", columns=list(COLUMNS), data=data)
        return {}


def format_table(rows: list[dict], prefix: str) -> str:
    lines = [f"{prefix} depth curve:", "| depth | halting | exact_accuracy | accuracy | steps | MFLOPs/puzzle |",
             "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        halting = "Q head" if r["act_inference"] else "none"
        lines.append(
            f"| {r['depth']} | {halting} | {r['exact_accuracy']:.4f} | {r['accuracy']:.4f} | {r['steps']:.2f} | "
            f"{r['flops_per_puzzle'] / 1e6:.4g} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series = {a: [r for r in rows if r["act_inference"] == a] for a in (False, True)}
    same = [r["exact_accuracy"] for r in series[False]] == [r["exact_accuracy"] for r in series[True]]
    # Drawn so that one series never hides the other: filled circles under hollow squares, a note when they coincide
    # (a model whose Q head never halts before halt_max_steps gives the same numbers both ways).
    styles = {False: dict(marker="o", ms=6, ls="-"), True: dict(marker="s", ms=11, ls="--", mfc="none", mew=1.6)}
    for act_inference, part in series.items():
        label = "halting on the Q head" if act_inference else "fixed depth"
        if act_inference and same:
            label += " (the same at every depth)"
        depths, exact = [r["depth"] for r in part], [r["exact_accuracy"] for r in part]
        ax.plot(depths, exact, label=label, zorder=2 + act_inference, **styles[act_inference])
    depths = sorted({r["depth"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("halt_max_steps (ACT steps at test time)")
    ax.set_ylabel("exact accuracy")
    lowest = min(r["exact_accuracy"] for r in rows)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.005)  # zoomed to the curve, never past 1
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
