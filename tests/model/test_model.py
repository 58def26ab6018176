import pytest
import torch

from loopformer.model import LoopTransformer, StageSpec, StateSpec, act_loss
from loopformer.model.layers import rms_norm, swiglu_inner_size, trunc_normal_
from loopformer.model.losses import stablemax_cross_entropy
from loopformer.training.config import network_config_from_flat


def tiny(**kw):
    base = dict(vocab_size=7, seq_len=9, hidden_size=32, num_heads=4, forward_dtype="float32", halt_max_steps=4)
    base.update(kw)
    return LoopTransformer(network_config_from_flat(**base))


def batch(B=5, L=9, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(0, V, (B, L), generator=g, dtype=torch.int32),
        "labels": torch.randint(0, V, (B, L), generator=g),
        "puzzle_identifiers": torch.zeros(B, dtype=torch.int32),
    }


def test_trunc_normal_has_the_requested_std_and_bounds():
    x = trunc_normal_(torch.empty(200_000), std=0.5)
    assert abs(x.std().item() - 0.5) < 0.01
    assert x.abs().max().item() <= 2 * 0.5 / 0.87  # bounds are +-2 in units of the compensated scale


def test_swiglu_size_rounds_up_to_256():
    assert swiglu_inner_size(512, 4) == 1536  # round(1365.3) = 1365 -> 1536
    assert swiglu_inner_size(64, 2) == 256


def test_rms_norm_keeps_dtype_and_normalises():
    x = torch.randn(3, 5, 16, dtype=torch.bfloat16) * 7
    y = rms_norm(x, 1e-5)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float().square().mean(-1), torch.ones(3, 5), atol=2e-2, rtol=0)


def test_shared_states_use_one_module_and_q_head_starts_at_minus_five():
    net = tiny()
    assert list(net.inner.state_modules) == ["z_H"]
    assert net.inner.module_for("z_L") is net.inner.module_for("z_H")
    assert torch.all(net.inner.q_head.weight == 0) and torch.all(net.inner.q_head.bias == -5)
    b = batch()
    _, out = net(net.initial_carry(b), b)
    torch.testing.assert_close(out["q_halt_logits"], torch.full((5,), -5.0))


def test_schedule_applies_stages_in_order_with_repeats():
    net = tiny(
        states=[StateSpec("a", 1), StateSpec("b", 1, share_weights_with="a")],
        stages=[StageSpec("a", ["b"], True, 2), StageSpec("b", ["a"], False, 3)],
        outer_cycles=2,
        readout_state="b",
    )
    calls = []
    module = net.inner.module_for("a")
    handle = module.register_forward_hook(lambda m, args, out: calls.append(len(calls)))
    b = batch()
    net(net.initial_carry(b), b)
    handle.remove()
    assert len(calls) == 2 * (2 + 3)


def test_only_the_last_cycles_get_gradient():
    net = tiny(outer_cycles=3, no_grad_cycles=2)
    b = batch()
    carry = net.initial_carry(b)
    states = net.inner.reset_states(carry.halted, carry.states)
    grad_calls = []
    module = net.inner.module_for("z_H")
    module.register_forward_hook(lambda m, args, out: grad_calls.append(out.requires_grad))
    net.inner(states, b["inputs"], b["puzzle_identifiers"])
    assert grad_calls == [False] * 12 + [True] * 6


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = tiny()
    b_net = tiny(gradient_checkpointing=True)
    b_net.load_state_dict(a.state_dict())
    a.train(), b_net.train()
    grads = []
    for net in (a, b_net):
        b = batch()
        carry = net.initial_carry(b)
        carry.halted.fill_(True)
        states = net.inner.reset_states(carry.halted, carry.states)
        _, logits, qh, _ = net.inner(states, b["inputs"], b["puzzle_identifiers"])
        (logits.square().mean() + qh.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)


def test_eval_runs_halt_max_steps_and_carry_is_detached():
    net = tiny(halt_max_steps=3).eval()
    b = batch()
    carry = net.initial_carry(b)
    for step in range(1, 4):
        carry, _ = net(carry, b)
        assert torch.all(carry.steps == step)
        assert all(not z.requires_grad for z in carry.states.values())
    assert carry.halted.all()


def test_training_halts_on_q_and_restarts_halted_rows_with_new_data():
    net = tiny(halt_max_steps=8, halt_exploration_prob=0.0).train()
    with torch.no_grad():
        net.inner.q_head.bias.copy_(torch.tensor([5.0, 0.0]))  # q_halt > 0: halt after one step
    b1, b2 = batch(seed=1), batch(seed=2)
    carry, _ = net(net.initial_carry(b1), b1)
    assert carry.halted.all() and torch.all(carry.steps == 1)
    carry, _ = net(carry, b2)
    assert torch.equal(carry.current_data["inputs"], b2["inputs"])
    assert torch.all(carry.steps == 1)


def test_exploration_delays_halting():
    torch.manual_seed(0)
    net = tiny(halt_max_steps=8, halt_exploration_prob=1.0).train()
    with torch.no_grad():
        net.inner.q_head.bias.copy_(torch.tensor([5.0, 0.0]))
    b = batch(B=64)
    carry, _ = net(net.initial_carry(b), b)
    assert not carry.halted.any()  # every row drew a minimum of >= 2 steps


def test_q_continue_target_when_act_continue_is_on():
    net = tiny(no_ACT_continue=False).train()
    b = batch()
    carry, out = net(net.initial_carry(b), b)
    assert "target_q_continue" in out and out["target_q_continue"].shape == (5,)
    loss, metrics = act_loss(out, carry.current_data["labels"], carry.halted, carry.steps, "softmax_cross_entropy")
    assert "q_continue_loss" in metrics


def test_stablemax_matches_its_definition():
    logits = torch.tensor([[[-2.0, 0.0, 3.0]]])
    s = torch.tensor([1 / 3, 1.0, 4.0], dtype=torch.float64)
    expected = -torch.log(s[2] / s.sum())
    got = stablemax_cross_entropy(logits, torch.tensor([[2]]), torch.tensor([[True]]))
    torch.testing.assert_close(got[0, 0], expected)


def test_act_loss_metrics_on_a_constructed_case():
    V = 3
    labels = torch.tensor([[1, 2, -100], [0, 0, 0], [-100, -100, -100]])
    logits = torch.full((3, 3, V), -5.0)
    logits[0, 0, 1] = logits[0, 1, 2] = 5.0  # row 0 entirely right
    logits[1, :, 0] = 5.0
    logits[1, 2, 0], logits[1, 2, 1] = -5.0, 5.0  # row 1: 2 of 3 right
    out = {"logits": logits, "q_halt_logits": torch.tensor([1.0, 1.0, 0.0]), "q_continue_logits": torch.zeros(3)}
    halted = torch.tensor([True, True, True])
    loss, m = act_loss(out, labels, halted, torch.tensor([2, 4, 9]), "softmax_cross_entropy")
    assert m["count"] == 2  # row 2 has no labels
    assert m["exact_accuracy"] == 1
    assert m["accuracy"].item() == pytest.approx(1 + 2 / 3)
    assert m["q_halt_accuracy"] == 1  # row 0: says halt & correct; row 1: says halt but wrong
    assert m["steps"] == 6
    assert torch.isfinite(loss)


def test_rows_summed_by_id_equal_unique_and_index_add_without_a_sync():
    from loopformer.model.puzzle_embedding import sum_rows_by_id
    from tests.helpers import recorded_syncs

    gen = torch.Generator().manual_seed(0)
    for ids in ([3, 1, 3, 0, 1, 3], [5], [2, 2, 2], list(torch.randint(0, 40, (97,), generator=gen))):
        ids_B = torch.tensor(ids, dtype=torch.long)
        grad_BE = torch.randn(len(ids), 7, generator=gen)
        rows, inverse = ids_B.unique(return_inverse=True)
        expected = torch.zeros(rows.shape[0], 7).index_add_(0, inverse, grad_BE)
        with recorded_syncs() as syncs:
            got_rows, got = sum_rows_by_id(ids_B, grad_BE)
        assert syncs == []
        n = rows.shape[0]
        assert torch.equal(got_rows[:n], rows) and torch.equal(got[:n], expected)  # bitwise: same summation order
        assert torch.equal(got_rows[n:], rows[-1:].expand(len(ids) - n)) and torch.equal(
            got[n:], expected[-1:].expand(len(ids) - n, 7)
        )
