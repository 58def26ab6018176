"""bfloat16 runs (``forward_dtype: bfloat16``, with or without ``precision: bf16-mixed``'s autocast): activations and
matrix products in bfloat16; RMSNorm, RoPE and the Q head's outputs in float32; the LM loss in float32 (softmax) or
float64 (stablemax, as the reference computes it). Checked on the CPU at each boundary."""

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from loopformer.kernels.attention import apply_rope
from loopformer.model import LoopTransformer, act_loss
from loopformer.model.layers import RotaryEmbedding, rms_norm
from loopformer.training.config import network_config_from_flat

MATMULS = {"mm", "addmm", "bmm", "baddbmm"}


class OpDtypes(TorchDispatchMode):
    """Every aten op run, with the dtypes of its tensor inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, set]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = {t.dtype for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        self.ops.append((func.overloadpacket.__name__, dtypes))
        return func(*args, **(kwargs or {}))

    def dtypes_of(self, names: set) -> set:
        return {d for name, dtypes in self.ops if name in names for d in dtypes}


def test_rms_norm_and_rope_compute_in_float32_and_return_the_input_dtype():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 9, 64, generator=g) * 3).to(torch.bfloat16)
    got = rms_norm(x, 1e-5)
    x32 = x.float()
    in_float32 = (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    in_bfloat16 = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-5)
    assert got.dtype == torch.bfloat16 and torch.equal(got, in_float32)
    assert not torch.equal(got, in_bfloat16)  # the float32 path is what makes it exact

    cos, sin = RotaryEmbedding(16, 9, 10000.0)()
    q = torch.randn(2, 9, 4, 16, generator=g).to(torch.bfloat16)
    rotated = apply_rope(q, cos, sin)
    half = torch.cat((-q.float()[..., 8:], q.float()[..., :8]), -1)
    expected = (q.float() * cos.unsqueeze(-2) + half * sin.unsqueeze(-2)).to(torch.bfloat16)
    assert rotated.dtype == torch.bfloat16 and torch.equal(rotated, expected)


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16", "bf16-mixed"])
@pytest.mark.parametrize("loss_type", ["softmax_cross_entropy", "stablemax_cross_entropy"])
def test_a_bfloat16_training_step_keeps_each_boundary_in_its_dtype(autocast, loss_type):
    torch.manual_seed(0)
    config = network_config_from_flat(
        vocab_size=7, seq_len=12, hidden_size=64, num_heads=2, puzzle_emb_ndim=64, halt_max_steps=2,
        forward_dtype="bfloat16", attention_backend="sdpa", loss_type=loss_type,
    )  # fmt: skip
    net = LoopTransformer(config).train()
    g = torch.Generator().manual_seed(1)
    batch = {
        "inputs": torch.randint(1, 7, (3, 12), generator=g),
        "labels": torch.randint(1, 7, (3, 12), generator=g),
        "puzzle_identifiers": torch.zeros(3, dtype=torch.int32),
    }
    mode = OpDtypes()
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context, mode:
        carry, outputs = net(net.initial_carry(batch), batch)
        loss, _ = act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps, loss_type)
    assert mode.dtypes_of(MATMULS) == {torch.bfloat16}  # every matrix product on bfloat16 activations
    assert mode.dtypes_of({"rsqrt"}) == {torch.float32}  # RMSNorm's statistics
    assert all(s.dtype == torch.bfloat16 for s in carry.states.values())
    assert outputs["logits"].dtype == torch.bfloat16
    assert outputs["q_halt_logits"].dtype == outputs["q_continue_logits"].dtype == torch.float32
    if loss_type == "softmax_cross_entropy":
        assert loss.dtype == torch.float32 and torch.bfloat16 not in mode.dtypes_of({"_log_softmax"})
    else:
        assert loss.dtype == torch.float64 and mode.dtypes_of({"log"}) == {torch.float64}
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in net.parameters())  # float32 master weights
