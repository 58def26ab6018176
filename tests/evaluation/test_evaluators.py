"""Evaluation to halting: a fixed number of ACT steps needs no device-to-host sync; adaptive halting still works."""

import torch

from loopformer.evaluation.evaluators import run_to_halt
from loopformer.model import LoopTransformer
from loopformer.training.config import network_config_from_flat
from tests.helpers import recorded_syncs


def _net(**over):
    torch.manual_seed(0)
    config = network_config_from_flat(vocab_size=6, seq_len=8, hidden_size=32, num_heads=4, forward_dtype="float32",
                                   halt_max_steps=3, **over)  # fmt: skip
    return LoopTransformer(config).eval()


def _batch():
    gen = torch.Generator().manual_seed(1)
    return {
        "inputs": torch.randint(0, 6, (5, 8), generator=gen, dtype=torch.int32),
        "labels": torch.randint(1, 6, (5, 8), generator=gen),
        "puzzle_identifiers": torch.zeros(5, dtype=torch.int32),
    }


def test_a_fixed_number_of_steps_runs_without_syncs_and_gives_the_last_steps_outputs():
    net, batch = _net(), _batch()
    with torch.no_grad():
        carry = net.initial_carry(batch)
        for _ in range(3):
            carry, expected = net(carry, batch)
        with recorded_syncs() as syncs:
            outputs, steps = run_to_halt(net, batch)
    assert syncs == []
    assert torch.equal(outputs["logits"], expected["logits"]) and steps.tolist() == [3] * 5


def test_adaptive_halting_keeps_each_rows_halting_step():
    net, batch = _net(act_inference=True), _batch()
    with torch.no_grad():
        net.inner.q_head.bias.copy_(torch.tensor([10.0, -10.0]))  # every row halts at once
        outputs, steps = run_to_halt(net, batch)
    assert steps.tolist() == [1] * 5 and outputs["logits"].shape == (5, 8, 6)
