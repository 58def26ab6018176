"""Adam-atan2 and Muon (+ AdamW) against hand-computed updates, the parameter split, and their checkpoint state."""

import copy
import math

import pytest
import torch

from loopformer.errors import ConfigError
from loopformer.model import LoopTransformer
from loopformer.training.config import network_config_from_flat
from loopformer.training.optimization import OptimConfig, build_optimizer, configure_optimizers, muon_parameters
from loopformer.training.optimizers import AdamAtan2, MuonWithAdamW


def test_adam_atan2_first_step_is_atan_of_one_minus_beta1_per_sign():
    p0 = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])
    g = torch.tensor([[1e-3, -2.0, 5e4], [-7.0, 1e-8, 0.5]])  # any scale: the update depends only on the sign
    lr, wd, b1, b2 = 0.1, 0.5, 0.9, 0.95
    p = p0.clone().requires_grad_(True)
    opt = AdamAtan2([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    p.grad = g.clone()
    opt.step()
    # m = (1-b1) g, v = (1-b2) g^2, sqrt(v)/sqrt(1-b2) = |g|: atan2((1-b1) g, |g|) = sign(g) atan(1-b1)
    expected = p0 * (1 - lr * wd) - lr / (1 - b1) * math.atan(1 - b1) * torch.sign(g)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)


def test_adam_atan2_follows_its_formula_over_steps_in_float64():
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    grads = [torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    lr, wd, b1, b2 = 0.01, 0.1, 0.9, 0.95
    p = p0.clone().requires_grad_(True)
    opt = AdamAtan2([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    ref, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        ref = ref * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref = ref - lr / (1 - b1**t) * torch.atan2(m, v.sqrt() / math.sqrt(1 - b2**t))
    torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-12)


def _newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    a, b, c = 3.4445, -4.775, 2.0315
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def test_muon_first_step_is_the_orthogonalised_nesterov_gradient():
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(6, 3, generator=gen)
    g = torch.randn(6, 3, generator=gen)
    lr, wd, mu = 0.02, 0.01, 0.95
    p = p0.clone().requires_grad_(True)
    bias = torch.zeros(3, requires_grad=True)
    opt = MuonWithAdamW([p], [bias], dict(lr=lr, weight_decay=wd, momentum=mu), dict(lr=0.1, weight_decay=0.0))
    p.grad, bias.grad = g.clone(), torch.ones(3)
    opt.step()
    buffer = (1 - mu) * g.double()  # momentum buffer after one step
    nesterov = g.double() + mu * (buffer - g.double())
    update = _newton_schulz(nesterov) * math.sqrt(max(1.0, 6 / 3))
    expected = p0.double() * (1 - lr * wd) - lr * update
    # torch's Muon orthogonalises in bfloat16 (5 iterations): agreement to a few percent of the update
    torch.testing.assert_close(p.detach().double(), expected, rtol=0, atol=0.05 * lr * update.abs().max().item())
    assert not torch.allclose(p.detach().double(), p0.double() * (1 - lr * wd) - lr * nesterov, atol=1e-4)
    torch.testing.assert_close(bias.detach(), torch.full((3,), -0.1), rtol=0, atol=1e-6)  # AdamW's first step


def _net():
    config = network_config_from_flat(vocab_size=6, seq_len=8, hidden_size=32, num_heads=4, puzzle_emb_ndim=32,
                                   forward_dtype="float32", num_puzzle_identifiers=3)  # fmt: skip
    return LoopTransformer(config)


def test_muon_takes_the_blocks_weight_matrices_and_adamw_the_rest():
    net = _net()
    muon, other = muon_parameters(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert muon and all(p.ndim == 2 and ".state_modules." in "." + names[id(p)] for p in muon)
    other_names = {names[id(p)] for p in other}
    assert {
        "inner.embed_tokens.weight",
        "inner.lm_head.weight",
        "inner.q_head.weight",
        "inner.q_head.bias",
    } <= other_names
    assert len(muon) + len(other) == len(list(net.parameters()))


def test_the_schedule_reaches_both_parts_and_a_saved_state_resumes_exactly():
    torch.manual_seed(0)
    net = _net()
    config = OptimConfig(optimizer="muon", lr=1e-3, muon_lr=0.02, lr_warmup_steps=2, lr_min_ratio=0.1)
    setup = configure_optimizers(net, config, total_steps=10)
    opt, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert isinstance(opt, MuonWithAdamW)
    lrs = lambda: [g["lr"] for g in opt.param_groups]  # noqa: E731
    assert lrs() == pytest.approx([0.02 * 0.5, 1e-3 * 0.5])  # the first warmup step, both parts
    assert [g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups] == lrs()

    def step():
        for p in net.parameters():
            p.grad = torch.ones_like(p) * 0.01 + p.detach() * 0.1
        opt.step()
        scheduler.step()

    step()
    saved_opt, saved_sched = copy.deepcopy(opt.state_dict()), scheduler.state_dict()  # the moments change in place
    saved_net = {k: v.clone() for k, v in net.state_dict().items()}
    step()
    after = {k: v.clone() for k, v in net.state_dict().items()}

    net.load_state_dict(saved_net)
    fresh = configure_optimizers(net, config, total_steps=10)
    opt, scheduler = fresh["optimizer"], fresh["lr_scheduler"]["scheduler"]
    opt.load_state_dict(saved_opt)
    scheduler.load_state_dict(saved_sched)
    assert [g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups] == lrs()
    step()
    for k, v in net.state_dict().items():
        assert torch.equal(v, after[k]), k


def test_each_optimizer_trains_and_a_bad_name_is_a_config_error():
    for name, kind in (("adamw", torch.optim.AdamW), ("adam_atan2", AdamAtan2), ("muon", MuonWithAdamW)):
        net = _net()
        assert isinstance(build_optimizer(net, OptimConfig(optimizer=name)), kind)
    with pytest.raises(ConfigError, match=r"model.optim.optimizer='sgd'; expected one of adamw, adam_atan2, muon"):
        OptimConfig(optimizer="sgd")
