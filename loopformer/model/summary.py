"""The model in a few lines for the terminal: parameters, the schedule, the effective depth, the compute."""

from __future__ import annotations

from loopformer.model.act import LoopTransformer
from loopformer.model.compute import compute_cost


def describe(net: LoopTransformer) -> str:
    cfg = net.config.arch
    max_steps = net.config.halting.max_steps
    params = sum(p.numel() for p in net.parameters())  # a module shared by several states counts once
    table = net.puzzle_table
    emb = table.weights.numel() if table is not None else 0
    lines = [
        f"loopformer: {params:,} parameters + {emb:,} puzzle-embedding weights (sign-SGD), "
        f"{len(net.inner.state_modules)} distinct state module(s)",
        "schedule (per outer cycle):",
    ]
    for i, st in enumerate(cfg.stages):
        srcs = " + ".join(st.sources + (["x"] if st.include_inputs else [])) or "nothing"
        window = "" if st.grad_last is None else f", gradient through the last {st.grad_last} in the last cycle"
        lines.append(
            f"  {i}: {st.target} <- {st.target} + ({srcs})  x{st.repeat}  [{cfg.layers_of(st.target)} layer(s){window}]"
        )
    lines.append(
        f"outer_cycles {cfg.outer_cycles} (no-grad {cfg.resolved_no_grad_cycles}); effective depth per ACT step: "
        f"{cfg.effective_depth} blocks ({cfg.grad_depth} with gradient); up to {max_steps} ACT steps "
        f"= {cfg.effective_depth * max_steps} blocks per puzzle"
    )
    cost = compute_cost(net.config)
    lines.append(
        f"compute: {cost.block_flops / 1e6:.4g} MFLOPs per block, {cost.flops_per_act_step / 1e6:.4g} MFLOPs per ACT "
        "step (forward, per puzzle; counted as loopformer/model/compute.py says)"
    )
    return "\n".join(lines)
