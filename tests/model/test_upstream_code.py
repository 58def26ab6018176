"""Opt-in (tests/upstream_code.py says how): an imported checkpoint computes what the upstream code computes.

The other equivalence tests compare with reference_trm.py, written from the published semantics; these run the
published code. Each model test builds their model from their own architecture file (sizes made small, float32),
gives it random weights, saves its state dict as their pretrain script does, imports it with ``import_checkpoint``
and compares three ACT steps' outputs and the fourth step's gradient for every weight (DIS models: training's
supervision steps, from the initial states); ACT training over several batches (halting, exploration, new puzzles);
their loss heads (``models/losses.py``) against ``loopformer.model.losses`` on the same step outputs (loss, metrics,
gradient); the puzzle table's sparse sign-SGD against their optimizer; DIS's intermediate targets; VRN's split
of the weights between Muon and Adam; the learning-rate schedule; TRM's weight average (EMA); evaluation that
halts on the Q head (VRN's act_inference).
"""

from __future__ import annotations

import importlib
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

from loopformer.checkpoint.importer import convert_state_dict, import_checkpoint
from loopformer.checkpoint.upstream import load_arch_yaml, variant_for
from loopformer.module import LoopformerModule
from tests.upstream_code import checkout, their_code

V, L, C, HEADS, PUZZLES, B = 11, 16, 64, 4, 5, 8

# (source, their architecture file): every model of theirs that loopformer imports and that runs as published
CASES = [
    ("hrm", "config/arch/hrm_v1.yaml"),
    ("trm", "config/arch/trm.yaml"),
    ("trm", "config/arch/trm_singlez.yaml"),
    ("trm", "config/arch/trm_hier6.yaml"),
    ("trm", "config/arch/hrm.yaml"),
    ("vrn", "config/arch/loop_transformer.yaml"),
    ("vrn", "config/arch/loop_transformer-3stage.yaml"),
    ("vrn", "config/arch/loop_transformer_conv.yaml"),
    ("vrn", "config/arch/loop_transformer_baseline.yaml"),
    ("vrn", "config/arch/loop_transformer_dis.yaml"),
    ("vrn", "config/arch/loop_transformer_dis_3s.yaml"),
    ("vrn", "config/arch/loop_transformer_dis_loss.yaml"),
]


def _small(arch: dict[str, Any]) -> dict[str, Any]:
    """Their architecture at test size, in float32."""
    out = dict(arch, hidden_size=C, num_heads=HEADS, forward_dtype="float32")
    if int(arch.get("puzzle_emb_ndim", 0) or 0) > 0:
        out["puzzle_emb_ndim"] = C
    return out


def _their_model(arch: dict[str, Any]) -> torch.nn.Module:
    """Built as their pretrain script builds it: ``models.<module>@<class>`` with the dataset's sizes."""
    module_path, class_name = arch["name"].split("@")
    model_class = getattr(importlib.import_module(f"models.{module_path}"), class_name)
    settings = {k: v for k, v in arch.items() if k not in ("name", "loss")}
    return model_class(
        dict(settings, batch_size=B, seq_len=L, vocab_size=V, num_puzzle_identifiers=PUZZLES, causal=False)
    )


def _randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights away from their initialisation where it is special (zero Q head, zero puzzle table); the blocks at half
    their initial scale, so that the recursion contracts (random full-scale blocks amplify float32 rounding)."""
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("q_head.weight"):
                t.copy_(torch.randn(t.shape, generator=gen) * C**-0.5)
            elif name.endswith("q_head.bias"):
                t.copy_(torch.tensor([0.0, 0.2]))  # q_halt around 0: some rows halt on it
            elif name.endswith("puzzle_emb.weights"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
            elif "layers." in name and t.ndim == 2:
                t.mul_(0.5)


def _batch(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "inputs": torch.randint(0, V, (B, L), generator=gen, dtype=torch.int32),
        "labels": torch.randint(1, V, (B, L), generator=gen),
        "puzzle_identifiers": torch.randint(0, PUZZLES, (B,), generator=gen, dtype=torch.int32),
    }


def _probe(out: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """A fixed random linear function of a step's outputs: its gradient reaches every weight the step trains."""
    return sum((out[k].float() * w).sum() for k, w in weights.items())


def _imported(source: str, arch: dict[str, Any], theirs: torch.nn.Module, tmp_path: Path) -> torch.nn.Module:
    arch_file, weights, dest = tmp_path / "arch.yaml", tmp_path / "theirs.pt", tmp_path / "imported.ckpt"
    arch_file.write_text(yaml.safe_dump(arch, sort_keys=False))
    torch.save({f"_orig_mod.model.{k}": v for k, v in theirs.state_dict().items()}, weights)  # their pretrain's keys
    import_checkpoint(source, weights, arch_file, dest, seq_len=L)
    return LoopformerModule.load_from_checkpoint(dest, weights_only=True).net


@contextmanager
def _both(source: str, arch_file: str, tmp_path: Path, **over: Any):
    """Their model from their architecture file (``over`` changing its settings), with random weights, and ours
    imported from it; both in eval mode. Their code stays importable for the block."""
    repo = checkout(source)
    arch = {**_small(load_arch_yaml(repo / arch_file)), **over}
    gen = torch.Generator().manual_seed(0)
    with their_code(repo):
        torch.manual_seed(0)
        theirs = _their_model(arch)
        _randomize(theirs, gen)
        ours = _imported(source, arch, theirs, tmp_path)
        yield arch, theirs.eval(), ours.eval(), _batch(gen), gen


def _assert_same_outputs(out_ours, out_theirs, step: int) -> list[str]:
    keys = [k for k in ("logits", "q_halt_logits", "q_continue_logits") if k in out_theirs]
    close = dict(atol=1e-5, rtol=1e-5) if step == 1 else dict(atol=1e-4, rtol=1e-4)
    for key in keys:
        torch.testing.assert_close(out_ours[key].float(), out_theirs[key].float(), **close, msg=f"step {step}: {key}")
    return keys


def _training_steps(arch: dict[str, Any], theirs: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """Their first carry and their step as training takes it: DIS (VRN's loop) passes the supervision step s (in
    loopformer, the ACT step count) and starts from ``torch.empty`` states it never resets, loopformer from the
    initial states, so theirs are reset here."""
    carry = theirs.initial_carry(batch)
    if not arch.get("dis_enabled"):
        return carry, lambda carry, step: theirs(carry=carry, batch=batch)
    carry.core_carry = theirs.core.reset_carry(torch.ones(B, dtype=torch.bool), carry.core_carry)
    return carry, lambda carry, step: theirs(carry=carry, batch=batch, step=torch.tensor(step))


@pytest.mark.parametrize("source,arch_file", CASES, ids=[Path(f).stem for _, f in CASES])
def test_an_imported_checkpoint_computes_what_their_code_computes(source, arch_file, tmp_path):
    with _both(source, arch_file, tmp_path) as (arch, theirs, ours, batch, gen):
        carry_theirs, their_step = _training_steps(arch, theirs, batch)
        carry_ours = ours.initial_carry(batch)
        with torch.no_grad():
            for step in range(1, 4):
                carry_theirs, out_theirs = their_step(carry_theirs, step - 1)
                carry_ours, out_ours = ours(carry_ours, batch)
                outputs = _assert_same_outputs(out_ours, out_theirs, step)

        # the gradient of the next step, from the states the three steps reached
        weights = {k: torch.randn(out_theirs[k].shape, generator=gen) for k in outputs}
        _, out_theirs = their_step(carry_theirs, 3)
        _probe(out_theirs, weights).backward()
        _, out_ours = ours(carry_ours, batch)
        _probe(out_ours, weights).backward()

    their_grads = {f"model.{n}": p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    expected = convert_state_dict(their_grads, variant_for(source, arch))
    got = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert set(got) == set(expected) and len(got) >= 7, (sorted(got), sorted(expected))
    for name, grad in expected.items():
        scale = grad.abs().max().item()
        torch.testing.assert_close(got[name], grad, atol=1e-5 * scale, rtol=1e-4, msg=name)


DIS_CASES = [f for source, f in CASES if "_dis" in f]


@pytest.mark.parametrize("arch_file", DIS_CASES, ids=[Path(f).stem for f in DIS_CASES])
def test_a_dis_checkpoint_evaluates_as_vrn_evaluates_with_eval_step_embedding_false(arch_file, tmp_path):
    """VRN's evaluate runs a DIS model through its ACT path (no step argument): no step embeddings,
    halt_max_steps steps from the initial states."""
    with _both("vrn", arch_file, tmp_path) as (arch, theirs, ours, batch, _):
        ours.config.eval_step_embedding = False  # as --model.train.dis.eval_step_embedding=false builds it
        carry_theirs, carry_ours = theirs.initial_carry(batch), ours.initial_carry(batch)
        with torch.no_grad():
            for step in range(1, int(arch["halt_max_steps"]) + 1):
                carry_theirs, out_theirs = theirs(carry=carry_theirs, batch=batch)
                carry_ours, out_ours = ours(carry_ours, batch)
                _assert_same_outputs(out_ours, out_theirs, step)
                assert carry_ours.halted.tolist() == carry_theirs.halted.tolist()
        assert carry_ours.halted.all()


LOSS_CASES = [  # (source, their head, loss_type, with a bootstrapped Q-continue target, DIS's mask penalty)
    ("hrm", "ACTLossHead", "softmax_cross_entropy", True, 0.0),
    ("trm", "ACTLossHead", "stablemax_cross_entropy", False, 0.0),
    ("trm", "ACTLossHead", "stablemax_cross_entropy", True, 0.0),  # TRM's softmax one fails in TRM (no valid_mask)
    ("vrn", "ACTLossHead", "stablemax_cross_entropy", False, 0.0),
    ("vrn", "CrossEntropyLossHead", "softmax_cross_entropy", False, 0.0),
    ("vrn", "CrossEntropyLossHead", "stablemax_cross_entropy", False, 0.0),
    ("vrn", "CrossEntropyLossHead", "softmax_cross_entropy", False, 0.5),
]


def _step_outputs(gen: torch.Generator, target_q: bool):
    """One ACT step's outputs, labels (some ignored, one row without any) and carry fields; rows 0-2 predicted
    exactly, so that exact accuracy and the Q-halt target are not all zero."""
    labels = torch.randint(0, V, (B, L), generator=gen)
    labels[torch.rand(B, L, generator=gen) < 0.2] = -100
    labels[3] = -100
    logits = torch.randn(B, L, V, generator=gen) * 3
    logits[:3] += 20 * F.one_hot(labels[:3].clamp_min(0), V)
    outputs = {"logits": logits, "q_halt_logits": torch.randn(B, generator=gen) * 2}
    outputs["q_continue_logits"] = torch.randn(B, generator=gen) * 2
    if target_q:
        outputs["target_q_continue"] = torch.sigmoid(torch.randn(B, generator=gen))
    halted = torch.rand(B, generator=gen) < 0.6
    halted[:2] = True
    steps = torch.randint(1, 9, (B,), generator=gen, dtype=torch.int32)
    return outputs, labels, halted, steps


@pytest.mark.parametrize("source,head,loss_type,target_q,penalty", LOSS_CASES)
def test_the_loss_heads_compute_what_theirs_compute(source, head, loss_type, target_q, penalty):
    from loopformer.model.losses import act_loss, cross_entropy_loss

    repo = checkout(source)
    outputs, labels, halted, steps = _step_outputs(torch.Generator().manual_seed(1), target_q)
    carry = types.SimpleNamespace(current_data={"labels": labels}, halted=halted, steps=steps)
    with their_code(repo):
        losses = importlib.import_module("models.losses")

        def loss_of(fn):
            leaf = outputs["logits"].clone().requires_grad_()
            loss, metrics = fn({**outputs, "logits": leaf})
            loss.backward()
            return loss.detach(), metrics, leaf.grad

        def theirs(out):
            model = lambda **_: (carry, out)  # noqa: E731 - their head calls its model, here the fixed step
            settings = {"mask_penalty_weight": penalty} if penalty else {}
            _, loss, metrics, _, _ = getattr(losses, head)(model, loss_type=loss_type, **settings)(return_keys=[])
            return loss, metrics

        def ours(out):
            if head == "ACTLossHead":
                return act_loss(out, labels, halted, steps, loss_type)
            return cross_entropy_loss(out, labels, loss_type, penalty, V - 1)  # the mask token: the last row

        loss_t, metrics_t, grad_t = loss_of(theirs)
        loss_o, metrics_o, grad_o = loss_of(ours)
    torch.testing.assert_close(loss_o.double(), loss_t.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_o, grad_t, rtol=1e-5, atol=1e-7)
    assert metrics_t["exact_accuracy"] > 0 and (metrics_t.get("mask_penalty", 0) > 0) == (penalty > 0)
    for key in set(metrics_t) & set(metrics_o):
        torch.testing.assert_close(metrics_o[key].double(), metrics_t[key].double(), rtol=1e-6, atol=0, msg=key)
    assert set(metrics_t) - {"steps"} <= set(metrics_o), sorted(set(metrics_t) - set(metrics_o))


@pytest.mark.parametrize("source", ["hrm", "trm", "vrn"])
def test_the_puzzle_table_update_is_their_sparse_sign_sgd(source):
    from loopformer.model.puzzle_embedding import SparsePuzzleEmbedding

    repo = checkout(source)
    gen = torch.Generator().manual_seed(2)
    ids = torch.tensor([2, 0, 2, 4, 1, 4, 4, 0], dtype=torch.int32)  # repeated puzzles: their gradients add up
    table, probe = torch.randn(PUZZLES + 2, C, generator=gen), torch.randn(B, C, generator=gen)
    probe[5] = 0  # a row whose gradient is partly zero: sign(0) leaves it to the decay
    with their_code(repo):
        sparse = importlib.import_module("models.embed.sparse" if source == "vrn" else "models.sparse_embedding")
        theirs = sparse.CastedSparseEmbedding(PUZZLES + 2, C, batch_size=B, init_std=0, cast_to=torch.float32)
        with torch.no_grad():
            theirs.weights.copy_(table)
        theirs.train()
        (theirs(ids) * probe).sum().backward()
        optimizer = sparse.CastedSparseEmbeddingSignSGD_Distributed(
            theirs.buffers(), world_size=1, lr=0.1, weight_decay=0.5
        )
        optimizer.step()
    ours = SparsePuzzleEmbedding(PUZZLES + 2, C)
    ours.weights.copy_(table)
    ours.train()
    (ours.rows(ids) * probe).sum().backward()
    ours.sign_sgd_step(lr=0.1, weight_decay=0.5)
    assert not torch.equal(theirs.weights, table)
    torch.testing.assert_close(ours.weights, theirs.weights, atol=0, rtol=0)


ACT_CASES = [(source, f) for source, f in CASES if "_dis" not in f and "baseline" not in f]


@pytest.mark.parametrize("source,arch_file", ACT_CASES, ids=[Path(f).stem for _, f in ACT_CASES])
def test_act_training_halts_explores_and_takes_new_puzzles_as_theirs_does(source, arch_file, tmp_path):
    """Training mode over several batches: rows halt on the Q head or at halt_max_steps, exploration's draws (the
    same random numbers) hold some back, halted rows take the next batch's puzzle; HRM's bootstrapped target."""
    with _both(source, arch_file, tmp_path, halt_max_steps=3, halt_exploration_prob=0.5) as (
        arch,
        theirs,
        ours,
        _,
        gen,
    ):
        theirs.train()
        ours.train()
        first = _batch(gen)
        carry_theirs, carry_ours = theirs.initial_carry(first), ours.initial_carry(first)
        halts = 0
        with torch.no_grad():
            for step in range(1, 7):
                batch = _batch(gen)
                torch.manual_seed(step)
                carry_theirs, out_theirs = theirs(carry=carry_theirs, batch=batch)
                torch.manual_seed(step)
                carry_ours, out_ours = ours(carry_ours, batch)
                _assert_same_outputs(out_ours, out_theirs, step)
                assert ("target_q_continue" in out_ours) == ("target_q_continue" in out_theirs)
                if "target_q_continue" in out_theirs:
                    torch.testing.assert_close(out_ours["target_q_continue"], out_theirs["target_q_continue"])
                assert carry_ours.halted.tolist() == carry_theirs.halted.tolist(), f"step {step}"
                assert carry_ours.steps.tolist() == carry_theirs.steps.tolist(), f"step {step}"
                halts += int(carry_theirs.halted.sum())
        assert 0 < halts < 6 * B  # some rows halted and took new puzzles, not all at every step


def test_dis_targets_are_vrns():
    """VRN's ``utils/dis.get_dis_target`` with one noise draw per batch, then its loop's clue protection (a label
    that equals the input is never masked: ``train/loops.py``), against ``dis_target``, at every step."""
    from loopformer.model.losses import dis_target

    repo = checkout("vrn")
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(1, V - 1, (B, L), generator=gen)
    labels[:, :3] = -100
    inputs = torch.where(torch.rand(B, L, generator=gen) < 0.3, labels.clamp_min(0), 1)
    noise = torch.rand(B, L, generator=gen)
    with their_code(repo):
        get_dis_target = importlib.import_module("utils.dis").get_dis_target
        for step in range(6):
            theirs = get_dis_target(labels, step, 6, V, V - 1, noise=noise)
            theirs = torch.where(inputs == labels, labels, theirs)
            ours = dis_target(labels, inputs, step, 6, V - 1, noise)
            assert torch.equal(ours, theirs), step
            assert (ours == V - 1).any() == (step < 5)


def _vrn_training_packages() -> None:
    """VRN's ``train`` package imports the optimizers' packages (the test extras)."""
    pytest.importorskip("adam_atan2_pytorch")
    pytest.importorskip("muon")


@pytest.mark.parametrize(
    "arch_file", ["config/arch/loop_transformer_conv.yaml", "config/arch/loop_transformer_dis.yaml"]
)
def test_muon_gets_the_weights_vrns_muon_gets(arch_file, tmp_path):
    """VRN's ``train/state.get_muon_param_groups`` on its model against ``muon_parameters`` on the imported one (a
    convolution's filters and DIS's step embedding included)."""
    from loopformer.training.optimization import muon_parameters

    _vrn_training_packages()
    with _both("vrn", arch_file, tmp_path) as (arch, theirs, ours, _, _):
        state = importlib.import_module("train.state")
        settings = types.SimpleNamespace(muon_lr=0.02, muon_weight_decay=0.01, muon_momentum=0.95, lr=1e-4,
                                         beta1=0.9, beta2=0.95, weight_decay=0.1)  # fmt: skip
        wrapped = types.SimpleNamespace(model=theirs, parameters=theirs.parameters)  # their loss head around it
        their_muon, _ = state.get_muon_param_groups(wrapped, settings)
    their_names = {id(p): f"model.{n}" for n, p in theirs.named_parameters()}
    expected = convert_state_dict({their_names[id(p)]: p for p in their_muon["params"]}, variant_for("vrn", arch))
    our_names = {id(p): n for n, p in ours.named_parameters()}
    got = {our_names[id(p)] for p in muon_parameters(ours)[0]}
    assert got == set(expected)
    assert any("dwconv.weight" in n or "step_emb" in n for n in got)


@pytest.mark.parametrize("min_ratio", [0.0, 0.1, 1.0])
def test_the_learning_rate_schedule_is_vrns(min_ratio):
    """VRN's ``train/schedulers.cosine_schedule_with_warmup`` (TRM's pretrain.py has the same function) at the t-th
    optimizer step (theirs count from 1), against the multiplier loopformer's schedule gives that step."""
    from loopformer.training.optimization import OptimConfig, configure_optimizers

    repo = checkout("vrn")
    _vrn_training_packages()
    with their_code(repo):
        schedule = importlib.import_module("train.schedulers").cosine_schedule_with_warmup
    net = torch.nn.Linear(2, 2)
    config = OptimConfig(lr=1e-3, lr_warmup_steps=10, lr_min_ratio=min_ratio)
    scheduler = configure_optimizers(net, config, total_steps=60)["lr_scheduler"]["scheduler"]
    optimizer = scheduler.optimizer
    for t in range(1, 61):
        expected = schedule(t, base_lr=1e-3, num_warmup_steps=10, num_training_steps=60, min_ratio=min_ratio)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-18), t
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("source,arch_file", CASES, ids=[Path(f).stem for _, f in CASES])
def test_in_bfloat16_the_forward_is_theirs_but_for_vrns_float32_promotions(source, arch_file, tmp_path):
    """Their recipes' forward dtype. VRN's ConvSwiGLU and DIS step embedding are float32 and promote the rest of its
    step to float32; loopformer stays in the forward dtype there (rounding differences). trm_hier6 sums in another
    order."""
    with _both(source, arch_file, tmp_path, forward_dtype="bfloat16") as (arch, theirs, ours, batch, _):
        carry_theirs, their_step = _training_steps(arch, theirs, batch)
        carry_ours = ours.initial_carry(batch)
        promoted = arch.get("dis_enabled") or arch.get("mlp_type") == "conv_swiglu"
        with torch.no_grad():
            for step in range(3):
                carry_theirs, out_theirs = their_step(carry_theirs, step)
                carry_ours, out_ours = ours(carry_ours, batch)
                assert out_ours["logits"].dtype == torch.bfloat16
                assert out_theirs["logits"].dtype == (torch.float32 if promoted else torch.bfloat16)
                difference = (out_ours["logits"].float() - out_theirs["logits"].float()).abs().max().item()
                if promoted or "hier6" in arch_file:
                    assert difference < 0.1, step
                else:
                    assert difference == 0, step


def test_the_weight_average_is_trms():
    """TRM's ``models/ema.EMAHelper`` (register, update after each step) against ``WeightEMA`` over a few steps."""
    from loopformer.ema import WeightEMA

    repo = checkout("trm")
    gen = torch.Generator().manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 3))
    with their_code(repo):
        theirs = importlib.import_module("models.ema").EMAHelper(mu=0.99)
    theirs.register(net)
    ours = WeightEMA(net, rate=0.99)
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        theirs.update(net)
        ours.update()
    assert set(ours.shadow) == set(theirs.shadow)
    for name, value in theirs.shadow.items():
        torch.testing.assert_close(ours.shadow[name], value, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.equal(value, dict(net.named_parameters())[name])


@pytest.mark.parametrize("arch_file", ["config/arch/loop_transformer.yaml", "config/arch/loop_transformer-3stage.yaml"])
def test_evaluation_halts_on_the_q_head_as_vrns_with_act_inference(arch_file, tmp_path):
    """VRN's ``act_inference: true``: evaluation halts a row when its Q head says so (no exploration), not only at
    halt_max_steps."""
    with _both("vrn", arch_file, tmp_path, act_inference=True, halt_max_steps=4) as (arch, theirs, ours, batch, _):
        carry_theirs, carry_ours = theirs.initial_carry(batch), ours.initial_carry(batch)
        early = False
        with torch.no_grad():
            for step in range(1, 4):
                carry_theirs, out_theirs = theirs(carry=carry_theirs, batch=batch)
                carry_ours, out_ours = ours(carry_ours, batch)
                _assert_same_outputs(out_ours, out_theirs, step)
                assert carry_ours.halted.tolist() == carry_theirs.halted.tolist(), step
                early |= bool(carry_theirs.halted.any()) and step < 4
        assert early  # some row halted before halt_max_steps
