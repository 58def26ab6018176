"""``model.runtime.compile``: the whole ACT step is one graph (no break), compiled once per run (no recompilation as
rows halt, puzzles change, evaluation's last batch is partial, or evaluation changes ``halt_max_steps``), and
trains as eager does."""

import lightning as L
import pytest
import torch
import yaml
from torch._dynamo.utils import counters

from loopformer.cli import LoopformerCLI
from loopformer.evaluation.evaluators import run_to_halt
from loopformer.model import LoopTransformer, act
from loopformer.model.training_step import ACTTrainingStep
from loopformer.training.config import network_config, network_config_from_flat, typed_groups
from loopformer.training.optimization import OptimConfig, configure_optimizers, puzzle_embedding_step
from tests.helpers import ROOT, tiny_fit_args

STEPS = 50


class GraphCounter(L.Callback):
    """Dynamo's graph count after each training step."""

    def __init__(self) -> None:
        self.graphs: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.graphs.append(counters["stats"]["unique_graphs"])


VARIANTS = {
    "quickstart": [],
    "dis": ["--model", str(ROOT / "configs/vrn/loop_transformer_dis.yaml"), "--model.arch.puzzle_emb_len=1",
            "--model.arch.num_heads=2", "--model.train.dis.max_steps=2", "--model.runtime.forward_dtype=float32"],
}  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_compiled_fit_has_one_graph_per_mode_and_no_break(sudoku4_dir, tmp_path, monkeypatch, variant):
    monkeypatch.setattr(act, "COMPILE_BACKEND", "aot_eager")  # dynamo's verdicts only: no kernel generation
    torch._dynamo.reset()
    counters.clear()
    counter = GraphCounter()
    steps = 24 if variant == "dis" else 12  # DIS: 2 optimizer steps per batch
    args = tiny_fit_args(sudoku4_dir, tmp_path, f"--trainer.max_steps={steps}", "--trainer.val_check_interval=5",
                         "--data.eval_batch_size=16", "--trainer.enable_checkpointing=false",
                         "--model.runtime.compile=true", *VARIANTS[variant])  # fmt: skip
    LoopformerCLI(args=args, trainer_defaults={"callbacks": [counter]})
    assert dict(counters["graph_break"]) == {}
    # The training step's graph at the first step; the evaluation's at the first validation (40 puzzles in batches
    # of 16: the last one partial), and nothing new after that, though rows halt, puzzles change, and training
    # resumes after each evaluation.
    first_eval = counter.graphs.index(2)
    assert counter.graphs[:first_eval] == [1] * first_eval and counter.graphs[first_eval:].count(2) >= 5
    assert set(counter.graphs) == {1, 2} and counters["frames"]["total"] == 2


def _quickstart_net(hidden: int = 32) -> LoopTransformer:
    model = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())["model"]
    model["arch"].update(hidden_size=hidden, puzzle_emb_ndim=hidden)
    groups = typed_groups(model)
    torch.manual_seed(0)
    dims = {"vocab_size": 6, "seq_len": 16, "num_puzzle_identifiers": 1}
    return LoopTransformer(network_config(groups["arch"], groups["train"], groups["runtime"], dims))


def _gradients(net: LoopTransformer) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    grads["puzzle table rows"] = net.inner.puzzle_emb.used[-1][0].grad.clone()
    return grads


def test_fifty_compiled_training_steps_compute_what_eager_ones_do():
    """Each of 50 quickstart steps (rows halting, puzzles replaced) computed both ways from the same weights and
    carry: loss, halting and every gradient agree to float32 tolerance. Training then goes on with the eager step's
    update, so the comparison stays one of arithmetic (two runs left to themselves drift apart at lr 3e-3 from any
    rounding difference, compiled or not: a 1e-7 nudge to one weight changes the loss by 3% within 50 steps)."""
    torch._dynamo.reset()  # a fresh cache: never past dynamo's recompile limit, which would fall back to eager
    counters.clear()
    net = _quickstart_net().train()
    eager, compiled = (ACTTrainingStep(net, "softmax_cross_entropy", "act") for _ in range(2))
    compiled.compile()
    optim = OptimConfig(lr=3e-3, lr_warmup_steps=0, weight_decay=0.1, puzzle_emb_lr=3e-3, puzzle_emb_weight_decay=0.1)
    optimizer = configure_optimizers(net, optim, total_steps=STEPS)["optimizer"]
    carry, halted_rows = net.initial_carry(_batch(0, rows=16, width=16)), 0
    for i in range(STEPS):
        batch = _batch(i, rows=16, width=16)
        rng = torch.get_rng_state()
        got, loss, sums = compiled(carry, batch)
        (loss / 16).backward()
        got_grads = _gradients(net)
        net.zero_grad(set_to_none=True)
        net.inner.puzzle_emb.used.pop()  # only the eager step's rows update the table
        torch.set_rng_state(rng)  # the same exploration draws
        carry, expected_loss, expected_sums = eager(carry, batch)
        (expected_loss / 16).backward()
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6, msg=f"step {i}")
        assert torch.equal(got.halted, carry.halted) and torch.equal(got.steps, carry.steps), f"step {i}"
        for key in ("count", "exact_accuracy", "q_halt_accuracy"):
            assert sums[key] == expected_sums[key], f"step {i}: {key}"
        for name, grad in _gradients(net).items():
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=f"step {i}: {name}")
        optimizer.step()
        puzzle_embedding_step(net, optimizer, optim, None)
        optimizer.zero_grad(set_to_none=True)
        halted_rows += int(carry.halted.sum())
    assert halted_rows > 16  # rows halted and new puzzles came in
    assert counters["stats"]["unique_graphs"] == 1  # the compiled side ran compiled, every step


def _net(**over) -> LoopTransformer:
    torch.manual_seed(0)
    config = network_config_from_flat(vocab_size=6, seq_len=8, hidden_size=32, num_heads=4, forward_dtype="float32",
                                   puzzle_emb_ndim=32, num_puzzle_identifiers=3, halt_max_steps=3, **over)  # fmt: skip
    return LoopTransformer(config)


def _batch(seed: int, rows: int = 6, width: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(0, 6, (rows, width), generator=gen, dtype=torch.int32),
        "labels": torch.randint(1, 6, (rows, width), generator=gen),
        "puzzle_identifiers": torch.randint(0, 3, (rows,), generator=gen, dtype=torch.int32),
    }


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"loss_head": "cross_entropy", "act_enabled": False},
        {"no_ACT_continue": False, "gradient_checkpointing": True},
    ],
    ids=["act-rope", "cross-entropy-no-act", "q-bootstrap-checkpointing"],
)
def test_twenty_training_steps_with_halting_rows_compile_once_without_breaks(variant):
    net = _net(halt_exploration_prob=0.5, **variant).train()
    step = ACTTrainingStep(net, "stablemax_cross_entropy", variant.get("loss_head", "act"))
    step.compile(backend="aot_eager")  # dynamo's verdicts do not depend on the backend; this one compiles fast
    torch._dynamo.reset()
    counters.clear()
    carry, halted = net.initial_carry(_batch(0)), []
    for i in range(20):
        carry, loss, _ = step(carry, _batch(i))
        loss.backward()
        net.inner.puzzle_emb.sign_sgd_step(lr=1e-2, weight_decay=0.1)
        halted.append(carry.halted.clone())
    halted = torch.stack(halted)
    assert halted.any() and not halted.all()  # some rows halted and took new puzzles, others went on
    if not variant.get("no_ACT_continue", True):
        assert "target_q_continue" in step.net.act_step(carry, _batch(0), net.step_controls(carry, _batch(0)))[1]
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1 and counters["frames"]["total"] == 1


def test_evaluation_at_other_depths_and_halting_modes_reuses_its_graph():
    net = _net().eval()
    eager = {}
    with torch.no_grad():
        for depth in (1, 3, 5):
            for adaptive in (False, True):
                net.config.halting.max_steps, net.config.halting.in_evaluation = depth, adaptive
                eager[depth, adaptive] = run_to_halt(net, _batch(depth))
    net.compile_step(backend="aot_eager")
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        for (depth, adaptive), (outputs, steps) in eager.items():
            net.config.halting.max_steps, net.config.halting.in_evaluation = depth, adaptive
            got, got_steps = run_to_halt(net, _batch(depth))
            assert torch.equal(got_steps, steps)
            torch.testing.assert_close(got["logits"], outputs["logits"])
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1


def test_the_compiled_step_computes_what_the_eager_one_does_forward_and_gradient():
    net = _net(halt_exploration_prob=0.0).train()
    batch = _batch(3)
    results = []
    for compile_ in (False, True):
        step = ACTTrainingStep(net, "stablemax_cross_entropy", "act")
        if compile_:
            step.compile(backend="aot_eager")
        net.zero_grad()
        torch.manual_seed(5)
        carry, loss, sums = step(net.initial_carry(batch), batch)
        loss.backward()
        table_grad = net.inner.puzzle_emb.local.grad.clone()
        net.inner.puzzle_emb.used.clear()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        results.append((carry, loss.detach(), sums, grads, table_grad))
    (c0, l0, s0, g0, t0), (c1, l1, s1, g1, t1) = results
    torch.testing.assert_close(l1, l0)
    assert torch.equal(c1.halted, c0.halted) and torch.equal(c1.steps, c0.steps)
    assert s1.keys() == s0.keys() and all(torch.allclose(s1[k].float(), s0[k].float()) for k in s0)
    assert g1.keys() == g0.keys() and len(g0) > 5
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=name)
    torch.testing.assert_close(t1, t0)
