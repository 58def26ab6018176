"""Adam-atan2 (HRM/TRM's and VirtualRecursiveNetwork's) and Muon (+ Adam) against hand-computed updates and the
packages the reference code imports, the parameter split, and their checkpoint state."""

import copy
import math

import pytest
import torch

from loopformer.errors import ConfigError
from loopformer.model import LoopTransformer
from loopformer.training.config import network_config_from_flat
from loopformer.training.optimization import OptimConfig, build_optimizer, configure_optimizers, muon_parameters
from loopformer.training.optimizers import AdamAtan2, AdamAtan2VRN, Muon, MuonWithAdamW, orthogonalised


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


def _hrm_trm_update(m, v, t, b1, b2):  # the bias corrections outside atan2 (the adam-atan2 CUDA package)
    return torch.atan2(m, v.sqrt() / math.sqrt(1 - b2**t)) / (1 - b1**t)


def _vrn_update(m, v, t, b1, b2):  # inside atan2, scaled by 1.27 (adam-atan2-pytorch)
    return 1.27 * torch.atan2(m / (1 - b1**t), (v / (1 - b2**t)).sqrt())


@pytest.mark.parametrize("optimizer,update", [(AdamAtan2, _hrm_trm_update), (AdamAtan2VRN, _vrn_update)])
def test_adam_atan2_follows_its_formula_over_steps_in_float64(optimizer, update):
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    grads = [torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    lr, wd, b1, b2 = 0.01, 0.1, 0.9, 0.95
    p = p0.clone().requires_grad_(True)
    opt = optimizer([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    ref, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref = ref * (1 - lr * wd) - lr * update(m, v, t, b1, b2)
    torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-12)


def _reference_package(name: str, attribute: str):
    """The package a reference codebase imports (test extras), or skip; ``muon`` is also a bioinformatics package."""
    module = pytest.importorskip(name)
    if not hasattr(module, attribute):
        pytest.skip(f"the installed {name!r} is not the one the reference code imports (no {attribute})")
    return getattr(module, attribute)


def test_vrns_adam_atan2_is_adam_atan2_pytorchs_to_the_bit():
    reference = _reference_package("adam_atan2_pytorch", "AdamAtan2")
    gen = torch.Generator().manual_seed(1)
    ours, theirs = (torch.randn(6, 5, generator=gen).requires_grad_(True) for _ in range(2))
    with torch.no_grad():
        theirs.copy_(ours)
    settings = dict(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    opt_ours, opt_theirs = AdamAtan2VRN([ours], **settings), reference([theirs], **settings)
    for _ in range(5):
        grad = torch.randn(6, 5, generator=gen) * 10 ** torch.randint(-4, 3, (6, 5), generator=gen)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_theirs.step()
    assert not torch.equal(ours, torch.randn(6, 5, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(ours, theirs)


def test_muon_with_adam_is_the_muon_optimizer_packages_to_the_bit():
    """VirtualRecursiveNetwork's ``MuonWithAuxAdam`` (the ``muon-optimizer`` package; the single-process variant
    does the same arithmetic) with its parameter groups, on a matrix, a tall matrix, a 3-D weight (a depthwise
    convolution's) and a bias. (PyPI's release predates the GitHub code VRN pins, which also reshapes a 4-D update
    back to its filter: ``test_muon_orthogonalises_each_matrix_of_a_stack``.)"""
    reference = _reference_package("muon", "SingleDeviceMuonWithAuxAdam")
    gen = torch.Generator().manual_seed(2)
    shapes = [(8, 5), (5, 12), (6, 1, 2), (7,)]
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    muon = dict(lr=0.02, weight_decay=0.01, momentum=0.95)
    adam = dict(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    opt_ours = MuonWithAdamW(ours[:3], ours[3:], muon, adam)
    opt_theirs = reference(
        [dict(params=theirs[:3], use_muon=True, **muon), dict(params=theirs[3:], use_muon=False, **adam)]
    )
    for _ in range(4):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        opt_ours.step()
        opt_theirs.step()
    for a, b, s in zip(ours, theirs, shapes, strict=True):
        assert torch.equal(a, b), s


def test_muon_orthogonalises_each_matrix_of_a_stack():
    gen = torch.Generator().manual_seed(3)
    stack = torch.randn(4, 2, 7, generator=gen)
    together = orthogonalised(stack)
    for i in range(4):
        assert torch.equal(together[i], orthogonalised(stack[i]))
        singular = torch.linalg.svdvals(together[i].float())
        assert singular.min() > 0.5 and singular.max() < 1.5  # Newton-Schulz's band, not exactly 1
    p = torch.nn.Parameter(torch.zeros(3, 1, 2))
    p.grad = torch.randn(3, 1, 2, generator=gen)
    Muon([p], lr=0.1, momentum=0.0).step()  # a depthwise filter (1 x 2 per channel): each row to about unit norm
    assert torch.all((p.detach().norm(dim=-1) - 0.1).abs() < 0.05)
    conv = torch.nn.Parameter(torch.zeros(4, 3, 3, 3))  # a 4-D filter: one matrix, a row per output channel
    conv.grad = torch.randn(4, 3, 3, 3, generator=gen)
    Muon([conv], lr=1.0, momentum=0.0).step()
    assert torch.equal(conv.detach(), -orthogonalised(conv.grad.view(4, -1)).reshape(4, 3, 3, 3).float())


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
    # Muon orthogonalises in bfloat16 (5 iterations): agreement to a few percent of the update
    torch.testing.assert_close(p.detach().double(), expected, rtol=0, atol=0.05 * lr * update.abs().max().item())
    assert not torch.allclose(p.detach().double(), p0.double() * (1 - lr * wd) - lr * nesterov, atol=1e-4)
    torch.testing.assert_close(bias.detach(), torch.full((3,), -0.1), rtol=0, atol=1e-6)  # AdamW's first step


def _net():
    config = network_config_from_flat(vocab_size=6, seq_len=8, hidden_size=32, num_heads=4, puzzle_emb_ndim=32,
                                   forward_dtype="float32", num_puzzle_identifiers=3)  # fmt: skip
    return LoopTransformer(config)


def test_muon_takes_the_weights_vrn_gives_it_and_adam_the_rest():
    net = _net()
    muon, other = muon_parameters(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert muon and all(p.ndim == 2 and ".state_modules." in "." + names[id(p)] for p in muon)
    conv_dis = LoopTransformer(network_config_from_flat(
        vocab_size=6, seq_len=8, hidden_size=32, num_heads=4, forward_dtype="float32", mlp_type="conv_swiglu",
        dis_enabled=True, dis_max_steps=3, act_enabled=False, outer_cycles=1, no_grad_cycles=0,
    ))  # fmt: skip
    conv_muon, conv_other = muon_parameters(conv_dis)
    conv_names = {id(p): n for n, p in conv_dis.named_parameters()}
    assert {"inner.step_emb.weight", "inner.state_modules.z_H.layers.0.mlp.dwconv.weight"} <= {
        conv_names[id(p)] for p in conv_muon
    }  # as VRN's get_muon_param_groups: every weight of 2+ dimensions but the embeddings and heads
    assert "inner.state_modules.z_H.layers.0.mlp.dwconv.bias" in {conv_names[id(p)] for p in conv_other}
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
    kinds = {"adamw": torch.optim.AdamW, "adam_atan2": AdamAtan2, "adam_atan2_vrn": AdamAtan2VRN, "muon": MuonWithAdamW}
    for name, kind in kinds.items():
        net = _net()
        assert isinstance(build_optimizer(net, OptimConfig(optimizer=name)), kind)
    with pytest.raises(ConfigError, match=r"optimizer='sgd'; expected one of adamw, adam_atan2, adam_atan2_vrn, muon"):
        OptimConfig(optimizer="sgd")


def test_a_muon_state_saved_before_loopformer_had_its_own_muon_resumes():
    """Checkpoints written while MuonWithAdamW held torch.optim.Muon and torch.optim.AdamW: same state keys."""
    gen = torch.Generator().manual_seed(4)
    old_params = [
        torch.nn.Parameter(torch.randn(6, 4, generator=gen)),
        torch.nn.Parameter(torch.randn(4, generator=gen)),
    ]
    old_muon = torch.optim.Muon(old_params[:1], lr=0.02, weight_decay=0.01, momentum=0.95)
    old_adamw = torch.optim.AdamW(old_params[1:], lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    for p in old_params:
        p.grad = torch.randn(p.shape, generator=gen)
    old_muon.step()
    old_adamw.step()
    saved = {"muon": old_muon.state_dict(), "adamw": old_adamw.state_dict()}

    params = [torch.nn.Parameter(p.detach().clone()) for p in old_params]
    opt = MuonWithAdamW(params[:1], params[1:], dict(lr=0.02, weight_decay=0.01, momentum=0.95), dict(lr=1e-3))
    opt.load_state_dict(copy.deepcopy(saved))
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    assert float(opt.adamw.state[params[1]]["step"]) == 2  # Adam continued from the saved step
    assert opt.adamw.param_groups[0]["eps"] == 1e-8  # the old run's epsilon, from its state
    assert torch.equal(
        opt.muon.state[params[0]]["momentum_buffer"],
        saved["muon"]["state"][0]["momentum_buffer"].lerp(params[0].grad, 0.05),
    )


def test_a_muon_state_split_otherwise_is_a_clear_error():
    """Before loopformer split the weights as VRN does, a convolution's filters went to AdamW."""
    gen = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(6, 4, generator=gen)), torch.nn.Parameter(torch.randn(3, 1, 2))]
    old = MuonWithAdamW(params[:1], params[1:], dict(lr=0.02), dict(lr=1e-3))
    new = MuonWithAdamW(params, [torch.nn.Parameter(torch.zeros(2))], dict(lr=0.02), dict(lr=1e-3))
    with pytest.raises(ConfigError, match=r"holds 1 weights in its muon part, this network 2: .* --model.init_from"):
        new.load_state_dict(old.state_dict())
