"""The optimizers HRM, TRM and VirtualRecursiveNetwork train with, in plain PyTorch.

``AdamAtan2``: Adam with ``atan2`` in place of the division by ``sqrt(v) + eps`` (Everett et al. 2024), as the
``adam-atan2`` CUDA package HRM and TRM use computes it, per element::

    p <- p * (1 - lr * wd)
    m <- m + (1 - beta1) (g - m)            v <- v + (1 - beta2) (g^2 - v)
    p <- p - lr / (1 - beta1^t) * atan2(m, sqrt(v) / sqrt(1 - beta2^t))

No epsilon, and the update is invariant to the gradient's scale.

``AdamAtan2VRN``: the Adam-atan2 VirtualRecursiveNetwork trains with by default (it imports the
``adam-atan2-pytorch`` package, whose defaults scale the update by 1.27 and correct the bias inside ``atan2``)::

    p <- p * (1 - lr * wd)
    p <- p - 1.27 lr * atan2(m / (1 - beta1^t), sqrt(v / (1 - beta2^t)))

``MuonWithAdamW``: Muon on the weights VirtualRecursiveNetwork gives it (``optimization.muon_parameters``) and Adam
on the rest (embeddings, heads, biases), as its ``MuonWithAuxAdam`` (the ``muon-optimizer`` package) updates them;
one optimizer for Lightning and the learning-rate schedule, whose param groups are the two inner optimizers' groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Optional

import torch

from loopformer.errors import ConfigError


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
            raise ValueError(f"{type(self).__name__}: invalid lr={lr}, betas={betas} or weight_decay={weight_decay}.")
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
                exp_avg, exp_avg_sq, t = _adam_moments(self.state[p], p, p.grad, beta1, beta2)
                p.mul_(1.0 - lr * weight_decay)
                self._descend(p, exp_avg, exp_avg_sq, lr, 1.0 - beta1**t, 1.0 - beta2**t)
        return loss

    @staticmethod
    def _descend(p: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lr: float, bias1: float, bias2: float) -> None:
        """HRM/TRM's (the adam-atan2 CUDA package's): the bias corrections outside ``atan2``."""
        p.add_(torch.atan2(m, v.sqrt() / math.sqrt(bias2)), alpha=-lr / bias1)


class AdamAtan2VRN(AdamAtan2):
    SCALE = 1.27  # adam-atan2-pytorch's default ``a``

    @staticmethod
    def _descend(p: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lr: float, bias1: float, bias2: float) -> None:
        """adam-atan2-pytorch's: the bias corrections inside ``atan2``, the update scaled by ``SCALE``."""
        p.add_(m.mul(1.0 / bias1).atan2_(v.mul(1.0 / bias2).sqrt_()), alpha=-lr * AdamAtan2VRN.SCALE)


def _adam_moments(
    state: dict, p: torch.Tensor, grad: torch.Tensor, beta1: float, beta2: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Adam's moving averages after this step's gradient (``lerp``, as the reference packages write them), and
    the step's number, from 1."""
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    state["exp_avg"].lerp_(grad, 1.0 - beta1)
    state["exp_avg_sq"].lerp_(grad.square(), 1.0 - beta2)
    return state["exp_avg"], state["exp_avg_sq"], float(state["step"])


def orthogonalised(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's Newton-Schulz iteration (the quintic with coefficients 3.4445, -4.7750, 2.0315), in bfloat16: about
    the nearest semi-orthogonal matrix to each matrix of the last two dimensions, with singular values in roughly
    [0.5, 1.5]."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update.bfloat16()
    tall = update.size(-2) > update.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon as the ``muon-optimizer`` package (Keller Jordan's, which VirtualRecursiveNetwork trains with) updates a
    weight: Nesterov momentum, the update orthogonalised (``orthogonalised``; a 4-D filter as a matrix per output
    channel, a 3-D weight as a stack of matrices) and scaled by ``sqrt(max(1, rows / columns))``, weight decay
    ``p * (1 - lr * wd)``."""

    def __init__(self, params: Iterable, lr: float = 0.02, weight_decay: float = 0.0, momentum: float = 0.95) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            beta = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                momentum = state["momentum_buffer"]
                momentum.lerp_(p.grad, 1 - beta)
                update = p.grad.lerp(momentum, beta)  # Nesterov
                if update.ndim == 4:
                    update = update.view(len(update), -1)
                update = orthogonalised(update) * max(1, p.grad.size(-2) / p.grad.size(-1)) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.reshape(p.shape), alpha=-group["lr"])
        return loss


class AuxAdam(torch.optim.Optimizer):
    """The Adam the ``muon-optimizer`` package runs beside Muon (``eps`` 1e-10 by default, added to the
    bias-corrected ``sqrt(v)``; weight decay ``p * (1 - lr * wd)``)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                exp_avg, exp_avg_sq, t = _adam_moments(self.state[p], p, p.grad, beta1, beta2)
                update = (exp_avg / (1 - beta1**t)) / ((exp_avg_sq / (1 - beta2**t)).sqrt() + group["eps"])
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    def __init__(self, muon_params: list, adamw_params: list, muon: dict[str, Any], adamw: dict[str, Any]) -> None:
        self.muon = Muon(muon_params, **muon) if muon_params else None
        self.adamw = AuxAdam(adamw_params, **adamw) if adamw_params else None
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
            saved = state_dict.get(name)
            if optimizer is None or saved is None:
                continue
            sizes = [len(g["params"]) for g in saved["param_groups"]]
            if sizes != [len(g["params"]) for g in optimizer.param_groups]:
                raise ConfigError(
                    f"the checkpoint's muon optimizer holds {sum(sizes)} weights in its {name} part, this network "
                    f"{sum(len(g['params']) for g in optimizer.param_groups)}: it was saved before loopformer split "
                    "the weights as VirtualRecursiveNetwork does (a convolution's filters and DIS's step embedding "
                    "now go to Muon). Start from its weights with a fresh optimizer instead: --model.init_from CKPT."
                )
            optimizer.load_state_dict(saved)  # (moves the state to each parameter's device)
        # Loading replaces the inner group dicts: share them again.
        self.param_groups = [g for o in (self.muon, self.adamw) if o is not None for g in o.param_groups]
