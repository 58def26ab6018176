"""The optimizers HRM, TRM and VirtualRecursiveNetwork train with, in plain PyTorch.

``AdamAtan2``: Adam with ``atan2`` in place of the division by ``sqrt(v) + eps`` (Everett et al. 2024), as the
``adam-atan2`` CUDA package HRM and TRM use computes it, per element::

    p <- p * (1 - lr * wd)
    m <- m + (1 - beta1) (g - m)            v <- v + (1 - beta2) (g^2 - v)
    p <- p - lr / (1 - beta1^t) * atan2(m, sqrt(v) / sqrt(1 - beta2^t))

No epsilon, and the update is invariant to the gradient's scale.

``MuonWithAdamW``: ``torch.optim.Muon`` on the blocks' 2-D weight matrices and AdamW on everything else
(embeddings, heads, biases), as VirtualRecursiveNetwork's ``MuonWithAuxAdam``; one optimizer for Lightning and
the learning-rate schedule, whose param groups are the two inner optimizers' groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Optional

import torch


def _evaluate(closure: Optional[Callable[[], Any]]) -> Any:
    """The loss of an optimizer's closure (forward and backward, with gradients on), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class AdamAtan2(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamAtan2: invalid lr={lr}, betas={betas} or weight_decay={weight_decay}.")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, weight_decay = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
                p.mul_(1.0 - lr * weight_decay)
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.lerp_(grad * grad, 1.0 - beta2)
                denom = exp_avg_sq.sqrt() / math.sqrt(1.0 - beta2**t)
                p.add_(torch.atan2(exp_avg, denom), alpha=-lr / (1.0 - beta1**t))
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    def __init__(self, muon_params: list, adamw_params: list, muon: dict[str, Any], adamw: dict[str, Any]) -> None:
        self.muon = torch.optim.Muon(muon_params, **muon) if muon_params else None
        self.adamw = torch.optim.AdamW(adamw_params, **adamw) if adamw_params else None
        inner = [o for o in (self.muon, self.adamw) if o is not None]
        # The same group dicts: the schedule's lr changes reach the inner optimizers.
        super().__init__([g for o in inner for g in o.param_groups], {})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = _evaluate(closure)
        for optimizer in (self.muon, self.adamw):
            if optimizer is not None:
                optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {
            "muon": self.muon.state_dict() if self.muon else None,
            "adamw": self.adamw.state_dict() if self.adamw else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name in ("muon", "adamw"):
            optimizer = getattr(self, name)
            if optimizer is not None and state_dict.get(name) is not None:
                optimizer.load_state_dict(state_dict[name])  # (moves the state to each parameter's device)
        # Loading replaces the inner group dicts: share them again.
        self.param_groups = [g for o in (self.muon, self.adamw) if o is not None for g in o.param_groups]
