"""The fused packed-QKV attention kernel against a float64 PyTorch reference.

On the CPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1); the
`gpu` tests run the same checks compiled on CUDA. Tolerances follow flash-attention's rule: the kernel's
error against float64 may be at most twice the error of PyTorch computing the same thing in the kernel's
own dtype, plus a small per-dtype floor.
"""

import pytest
import torch

from loopformer.kernels import attention as attn
from loopformer.kernels.attention import (
    attention_backward,
    attention_forward,
    packed_attention,
)
from loopformer.kernels.selfcheck import TOLERANCE_FLOOR, max_errors
from loopformer.model.layers import RotaryEmbedding

pytestmark = pytest.mark.skipif(not attn.HAVE_TRITON, reason="triton is not installed")

# The self-check's per-dtype floor (its comment says where the numbers come from): one rule for tests and devices.
FLOOR = TOLERANCE_FLOOR
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _inputs(B, S, H, D, dtype, rope, device="cpu", seed=None):
    g = torch.Generator(device="cpu")
    g.seed() if seed is None else g.manual_seed(seed)  # fresh random inputs each run unless pinned
    qkv = torch.randn(B, S, 3 * H, D, generator=g).to(device=device, dtype=dtype)
    cos, sin = RotaryEmbedding(D, S + 5, 10000.0)() if rope else (None, None)  # tables longer than S
    if rope:
        cos, sin = cos.to(device), sin.to(device)
    grad_o = torch.randn(B, S, H, D, generator=g).to(device=device, dtype=dtype)
    return qkv, cos, sin, grad_o


def _check_against_reference(qkv, cos, sin, grad_o, H, o, dqkv):
    """The self-check's rule (kernels/selfcheck.py), with the references computed on the CPU."""
    cos, sin = (None, None) if cos is None else (cos.cpu(), sin.cpu())
    for name, err, bound in max_errors(qkv.cpu(), cos, sin, grad_o.cpu(), H, o.cpu(), dqkv.cpu()):
        assert err <= bound, f"{name}: max error {err:.3g} > {bound:.3g} ({qkv.dtype})"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rope", [True, False], ids=["rope", "no_rope"])
@pytest.mark.parametrize("S,D", [(1, 64), (17, 32), (97, 64), (130, 128)])
def test_forward_and_backward_match_float64(S, D, rope, dtype):
    B, H = 2, 3
    qkv, cos, sin, grad_o = _inputs(B, S, H, D, dtype, rope)
    # Poison every output first: each element must be written by the kernels.
    o = torch.full((B, S, H, D), float("nan"), dtype=dtype)
    lse = torch.full((B, H, S), float("nan"))
    attention_forward(qkv, cos, sin, H, out=o, lse=lse)
    dqkv = torch.full_like(qkv, float("nan"))
    attention_backward(grad_o, qkv, cos, sin, o, lse, H, out=dqkv)
    assert not o.isnan().any() and not lse.isnan().any() and not dqkv.isnan().any()
    _check_against_reference(qkv, cos, sin, grad_o, H, o, dqkv)
    # the log-sum-exp is that of the scaled scores
    q, k, _ = _reference_qk(qkv, cos, sin, H)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1), atol=FLOOR[dtype] * 10, rtol=0)


@pytest.mark.parametrize("S,D,dtype", [(916, 64, torch.bfloat16), (2048, 32, torch.float16)], ids=["maze-916", "2048"])
def test_long_sequences_match_float64(S, D, dtype):
    """The maze/ARC length (916: no tile multiple, masked tails) and 2048 (tile multiples, no tail), several
    key and query blocks each; one head keeps the interpreter quick (about 10 and 20 s)."""
    qkv, cos, sin, grad_o = _inputs(1, S, 1, D, dtype, True)
    o = torch.full((1, S, 1, D), float("nan"), dtype=dtype)
    lse = torch.full((1, 1, S), float("nan"))
    attention_forward(qkv, cos, sin, 1, out=o, lse=lse)
    dqkv = torch.full_like(qkv, float("nan"))
    attention_backward(grad_o, qkv, cos, sin, o, lse, 1, out=dqkv)
    assert not o.isnan().any() and not dqkv.isnan().any()
    _check_against_reference(qkv, cos, sin, grad_o, 1, o, dqkv)


DISTINCT_TILES = sorted(
    {(name == "one_pass", t) for entry in attn.TILES.values() for name, t in entry.items()}, key=repr
)


@pytest.mark.parametrize(
    "one_pass,tiles",
    DISTINCT_TILES,
    ids=[
        f"{'one_pass' if one else 'three'}-{t.block_m}x{t.block_n}w{t.num_warps}s{t.num_stages}"
        for one, t in DISTINCT_TILES
    ],
)
def test_every_tile_shape_in_the_table_is_correct(one_pass, tiles):
    """The GPU tables use tile shapes the CPU default does not: each one, for every kernel it serves."""
    B, S, H, D, dtype = 1, 97, 2, 64, torch.float16
    qkv, cos, sin, grad_o = _inputs(B, S, H, D, dtype, True)
    override = {"one_pass": tiles} if one_pass else {"fwd": tiles, "dkdv": tiles, "dq": tiles}
    o = torch.full((B, S, H, D), float("nan"), dtype=dtype)
    lse = torch.full((B, H, S), float("nan"))
    attention_forward(qkv, cos, sin, H, out=o, lse=lse, tiles=override)
    dqkv = torch.full_like(qkv, float("nan"))
    attention_backward(grad_o, qkv, cos, sin, o, lse, H, out=dqkv, tiles=override, one_pass=one_pass)
    assert not o.isnan().any() and not dqkv.isnan().any()
    _check_against_reference(qkv, cos, sin, grad_o, H, o, dqkv)


ONE_PASS_128 = {"one_pass": attn.Tiles(16, 128, 8, 2)}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("S,D", [(1, 64), (17, 32), (97, 64), (128, 128)])
def test_one_pass_and_three_kernel_backward_agree_with_float64(S, D, dtype):
    """Both backward paths at odd lengths; the one-pass kernel takes delta from P and dP, not from O."""
    B, H = 2, 3
    qkv, cos, sin, grad_o = _inputs(B, S, H, D, dtype, True)
    o, lse = attention_forward(qkv, cos, sin, H)
    grads = {}
    for one_pass in (True, False):
        dqkv = torch.full_like(qkv, float("nan"))
        attention_backward(grad_o, qkv, cos, sin, o, lse, H, out=dqkv, tiles=ONE_PASS_128, one_pass=one_pass)
        assert not dqkv.isnan().any(), f"one_pass={one_pass}: element not written"
        _check_against_reference(qkv, cos, sin, grad_o, H, o, dqkv)
        grads[one_pass] = dqkv.double()
    # the two paths differ only in the order of float32 sums (and delta's source): a few ulps of the dtype
    scale = grads[False].abs().max().item()
    assert (grads[True] - grads[False]).abs().max().item() <= 4 * FLOOR[dtype] * max(scale, 1.0)


def _backward_kernel_names(S, D, dtype, tiles=None, one_pass=None):
    qkv = torch.zeros(1, S, 6, D, dtype=dtype)
    o, lse = torch.zeros(1, S, 2, D, dtype=dtype), torch.zeros(1, 2, S)
    launches = attn.backward_launches(o, qkv, None, None, o, lse, 2, qkv, tiles, "sm80", one_pass=one_pass)
    return [launch.name for launch in launches]


def test_one_pass_serves_the_lengths_its_tile_covers():
    assert _backward_kernel_names(97, 64, torch.bfloat16, ONE_PASS_128) == ["one_pass"]
    assert _backward_kernel_names(128, 64, torch.bfloat16, ONE_PASS_128) == ["one_pass"]
    assert _backward_kernel_names(129, 64, torch.bfloat16, ONE_PASS_128) == ["delta", "dkdv", "dq"]
    assert _backward_kernel_names(97, 64, torch.bfloat16, ONE_PASS_128, one_pass=False) == ["delta", "dkdv", "dq"]
    with pytest.raises(ValueError, match="needs a tile of at least S=129 keys; it has 128"):
        _backward_kernel_names(129, 64, torch.bfloat16, ONE_PASS_128, one_pass=True)
    # the tables: the Sudoku shape (S=97, D=64, bf16) takes one pass on A100 and H100; float32 never does
    for family in ("sm80", "sm90"):
        assert attn.one_pass_tiles(97, 64, torch.bfloat16, family) is not None, family
        assert attn.one_pass_tiles(916, 64, torch.bfloat16, family) is None, family
        assert attn.one_pass_tiles(97, 64, torch.float32, family) is None, family
    assert _backward_kernel_names(97, 64, torch.bfloat16) == ["one_pass"]
    assert _backward_kernel_names(97, 64, torch.float32) == ["delta", "dkdv", "dq"]


def test_tiles_follow_the_device_family():
    assert attn.gpu_family(torch.device("cpu")) == "sm80"
    for family in ("sm80", "sm90"):
        for D in attn.SUPPORTED_HEAD_DIMS:
            for dtype in DTYPES:
                t = attn.tiles_for("dkdv", D, dtype, family)
                assert t.block_m in (32, 64, 128) and t.block_n in (32, 64, 128) and t.num_warps in (4, 8)


def _reference_qk(qkv, cos, sin, H):
    x = qkv.double()
    q, k, v = x.split(H, dim=2)
    if cos is None:
        return q, k, v
    S = x.shape[1]
    c, s = cos[:S].double().unsqueeze(-2), sin[:S].double().unsqueeze(-2)

    def rot(t):
        t = t.to(qkv.dtype).double()  # kernel rounds the rotated values to the input dtype
        lo, hi = t.chunk(2, -1)
        return t * c + torch.cat((-hi, lo), -1) * s

    return rot(q).to(qkv.dtype).double(), rot(k).to(qkv.dtype).double(), v


@pytest.mark.parametrize(
    "D,dtype,kernels",
    [(32, torch.float32, ["delta", "dkdv", "dq"]), (64, torch.float16, ["one_pass"])],
    ids=["three_kernels", "one_pass"],
)
def test_autograd_op_matches_launchers_and_passes_opcheck(D, dtype, kernels):
    qkv, cos, sin, grad_o = _inputs(2, 17, 2, D, dtype, True, seed=0)
    assert _backward_kernel_names(17, D, dtype) == kernels  # the backward path this case goes through
    x = qkv.clone().requires_grad_()
    o = packed_attention(x, cos, sin, 2)
    (o * grad_o).sum().backward()
    o2, lse = attention_forward(qkv, cos, sin, 2)
    torch.testing.assert_close(o, o2, atol=0, rtol=0)
    torch.testing.assert_close(x.grad, attention_backward(grad_o, qkv, cos, sin, o2, lse, 2), atol=0, rtol=0)
    torch.library.opcheck(torch.ops.loopformer.packed_attention.default, (x, cos[:17], sin[:17], 2))
    torch.library.opcheck(torch.ops.loopformer.packed_attention.default, (x, None, None, 2))


def test_backward_saves_only_qkv_o_and_lse():
    """O(L) extra memory per row: autograd keeps the op's inputs, its output and a float32 lse per row and head."""
    B, S, H, D = 2, 33, 2, 32
    qkv, cos, sin, _ = _inputs(B, S, H, D, torch.float32, True, seed=0)
    x = qkv.clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        packed_attention(x, cos, sin, H)
    shapes = sorted(tuple(t.shape) for t in saved)
    assert shapes == sorted([(B, S, 3 * H, D), (S, D), (S, D), (B, S, H, D), (B, H, S)]), shapes


def _tiny_net(backend, **kw):
    from loopformer.model import LoopTransformer
    from loopformer.training.config import network_config_from_flat

    torch.manual_seed(0)
    args = dict(vocab_size=7, seq_len=13, hidden_size=64, num_heads=2, forward_dtype="float32", halt_max_steps=2)
    args.update(puzzle_emb_ndim=64, attention_backend=backend, **kw)
    return LoopTransformer(network_config_from_flat(**args))


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_model_with_triton_backend_matches_sdpa(pos):
    nets = {b: _tiny_net(b, pos_encodings=pos) for b in ("sdpa", "triton")}
    nets["triton"].load_state_dict(nets["sdpa"].state_dict())
    g = torch.Generator().manual_seed(1)
    batch = {
        "inputs": torch.randint(0, 7, (4, 13), generator=g),
        "labels": torch.randint(0, 7, (4, 13), generator=g),
        "puzzle_identifiers": torch.zeros(4, dtype=torch.int32),
    }
    results = {}
    for name, net in nets.items():
        net.train()
        carry = net.initial_carry(batch)
        carry.halted.fill_(True)
        states = net.inner.reset_states(carry.halted, carry.states)
        _, logits, q_halt, _ = net.inner(states, batch["inputs"], batch["puzzle_identifiers"])
        (logits.square().mean() + q_halt.sum()).backward()
        results[name] = (logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    torch.testing.assert_close(results["triton"][0], results["sdpa"][0], atol=2e-5, rtol=1e-4)
    for n, grad in results["sdpa"][1].items():
        torch.testing.assert_close(results["triton"][1][n], grad, atol=2e-5, rtol=1e-4, msg=n)


def test_compiled_block_keeps_the_op_and_matches_eager():
    from loopformer.model.blocks import Block

    net = _tiny_net("triton")
    block = net.inner.module_for("z_H").layers[0]
    assert isinstance(block, Block)
    x = torch.randn(2, 14, 64)
    cos_sin = net.inner.rotary_emb()
    eager = block(x, cos_sin)
    compiled = torch.compile(block, fullgraph=True)  # fullgraph: any graph break is an error
    torch.testing.assert_close(compiled(x, cos_sin), eager, atol=1e-5, rtol=1e-5)


def test_triton_backend_without_a_gpu_or_interpreter_is_a_clear_error(monkeypatch):
    net = _tiny_net("triton")
    monkeypatch.setattr(attn, "interpreter_enabled", lambda: False)
    batch = {"inputs": torch.zeros(1, 13, dtype=torch.long), "puzzle_identifiers": torch.zeros(1, dtype=torch.int32)}
    carry = net.initial_carry({**batch, "labels": batch["inputs"]})
    with pytest.raises(RuntimeError, match="attention_backend=triton cannot run on cpu"):
        net.inner(net.inner.reset_states(carry.halted, carry.states), batch["inputs"], batch["puzzle_identifiers"])


def test_unsupported_head_dim_is_a_config_error():
    from loopformer.model import ConfigError

    with pytest.raises(ConfigError, match="supports head dims"):
        _tiny_net("triton", num_heads=4)  # head dim 16
    assert _tiny_net("auto", num_heads=4) is not None  # auto falls back to SDPA


# -- compiled on a GPU -------------------------------------------------------------------------------
gpu = pytest.mark.gpu


# the one-pass backward serves S <= 128 only: beyond, both settings take the same three kernels
GPU_CASES = [(S, D, one) for S, D in [(1, 64), (17, 32), (97, 64), (916, 64), (2048, 128)] for one in (None, False)]


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "S,D,one_pass",
    [c for c in GPU_CASES if c[0] <= 128 or c[2] is None],
    ids=lambda v: str(v) if v is not None else "auto",
)
def test_gpu_forward_and_backward_match_float64(S, D, dtype, one_pass):
    B, H = 2, 4
    qkv, cos, sin, grad_o = _inputs(B, S, H, D, dtype, True, device="cuda")
    o = torch.full((B, S, H, D), float("nan"), dtype=dtype, device="cuda")
    lse = torch.full((B, H, S), float("nan"), device="cuda")
    attention_forward(qkv, cos, sin, H, out=o, lse=lse)
    dqkv = torch.full_like(qkv, float("nan"))
    attention_backward(grad_o, qkv, cos, sin, o, lse, H, out=dqkv, one_pass=one_pass)
    assert not o.isnan().any() and not dqkv.isnan().any()
    _check_against_reference(qkv, cos, sin, grad_o, H, o, dqkv)


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", attn.SUPPORTED_HEAD_DIMS)
def test_gpu_tiles_of_this_gpu_run_without_register_spills(D, dtype):
    B, S, H = 1, 97, 2
    qkv, cos, sin, grad_o = _inputs(B, S, H, D, dtype, True, device="cuda", seed=0)
    o = torch.empty(B, S, H, D, dtype=dtype, device="cuda")
    lse = torch.empty(B, H, S, device="cuda")
    dqkv = torch.empty_like(qkv)
    launches = attn.forward_launches(qkv, cos, sin, H, o, lse)
    launches += attn.backward_launches(grad_o, qkv, cos, sin, o, lse, H, dqkv, one_pass=False)
    if attn.one_pass_tiles(S, D, dtype, attn.gpu_family(qkv.device)) is not None:
        launches += attn.backward_launches(grad_o, qkv, cos, sin, o, lse, H, dqkv, one_pass=True)
    for launch in launches:
        compiled = launch.run()
        assert compiled.n_spills == 0, f"{launch.name} spills {compiled.n_spills} registers ({launch.meta})"


@gpu
def test_gpu_opcheck_and_cuda_graphs():
    qkv, cos, sin, _ = _inputs(2, 97, 8, 64, torch.bfloat16, True, device="cuda", seed=0)
    x = qkv.clone().requires_grad_()
    torch.library.opcheck(torch.ops.loopformer.packed_attention.default, (x, cos[:97], sin[:97], 8))
    f = torch.compile(lambda t: packed_attention(t, cos, sin, 8), mode="reduce-overhead", fullgraph=True)
    for _ in range(3):
        out = f(qkv)
    torch.testing.assert_close(out, packed_attention(qkv, cos, sin, 8), atol=0, rtol=0)


@gpu
def test_gpu_memory_of_forward_and_backward_grows_linearly_with_length():
    """At L=2048 one head's L x L bf16 scores would be 8 MiB; fused forward+backward must stay near the inputs."""
    B, S, H, D = 1, 2048, 8, 64
    qkv, cos, sin, grad_o = _inputs(B, S, H, D, torch.bfloat16, True, device="cuda", seed=0)
    x = qkv.clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    packed_attention(x, cos, sin, H).backward(grad_o)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    # o, lse, dqkv and the backward's float32 delta and dq scratch: a few times qkv, no S x S term
    assert extra <= 4 * qkv.numel() * qkv.element_size(), f"{extra / 2**20:.1f} MiB extra"
    assert extra < B * H * S * S * 2, f"{extra / 2**20:.1f} MiB extra: as large as the L x L scores"
