"""``model.runtime.compile_mode: reduce-overhead``: the compiled ACT step replayed as CUDA graphs.

On the CPU: what the wrapper does around a graph replay (a new graph step per call, outputs copied out of the
graph's memory, which the next replay overwrites). On a GPU (``-m gpu``, run by benchmarks/gpu_check.sh): the
recipe's step in bfloat16 under CUDA graphs, with none skipped, agrees with the eager step for 20 steps, and
neither makes a device-to-host synchronisation (``torch.cuda.set_sync_debug_mode("error")``) after compiling.
Imports only torch and loopformer (not Lightning), as the lent GPU machines have no Lightning.
"""

from contextlib import contextmanager

import pytest
import torch

from loopformer.model import LoopTransformer, act
from loopformer.model.training_step import ACTTrainingStep
from loopformer.training.config import network_config_from_flat
from loopformer.training.optimization import OptimConfig, configure_optimizers, puzzle_embedding_step


def _net(device: str, **over) -> LoopTransformer:
    torch.manual_seed(0)
    config = network_config_from_flat(vocab_size=11, seq_len=81, num_puzzle_identifiers=1, **over)
    return LoopTransformer(config).to(device).train()


def _batch(seed: int, rows: int, device: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, 11, (rows, 81), generator=gen)
    inputs = torch.where(torch.rand(rows, 81, generator=gen) < 0.4, labels, 1)
    batch = {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(rows, dtype=torch.int32)}
    return {k: v.to(device) for k, v in batch.items()}


def test_reduce_overhead_starts_a_graph_step_per_call_and_returns_copies(monkeypatch):
    compiled_with, marks, returned = {}, [], {}

    def fake_compile(fn, **kwargs):  # the step as it is, keeping what it returned
        compiled_with.update(kwargs)
        return lambda *args: returned.setdefault("value", fn(*args))

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    net = _net("cpu", hidden_size=32, num_heads=2, forward_dtype="float32", puzzle_emb_ndim=32, halt_max_steps=2)
    step = ACTTrainingStep(net, "stablemax_cross_entropy", "act")
    step.compile("reduce-overhead")
    batch = _batch(0, 4, "cpu")
    carry, loss, sums = step(net.initial_carry(batch), batch)
    assert compiled_with == {"backend": act.COMPILE_BACKEND, "mode": "reduce-overhead"} and marks == [1]
    inner_carry, inner_loss, inner_sums = returned["value"]
    assert torch.equal(loss, inner_loss) and loss.data_ptr() != inner_loss.data_ptr()
    for name, z in carry.states.items():
        assert torch.equal(z, inner_carry.states[name]) and z.data_ptr() != inner_carry.states[name].data_ptr()
    assert sums["count"].data_ptr() != inner_sums["count"].data_ptr()
    loss.backward()  # the copy still carries the gradient
    assert net.inner.lm_head.weight.grad is not None


def test_default_mode_neither_marks_steps_nor_copies(monkeypatch):
    marks = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    net = _net("cpu", hidden_size=32, num_heads=2, forward_dtype="float32", halt_max_steps=2).eval()
    net.compile_step("default")
    batch = _batch(0, 4, "cpu")
    with torch.no_grad():
        net(net.initial_carry(batch), batch)
    assert marks == []


def test_a_failed_capture_goes_on_compiled_without_graphs_with_one_warning(monkeypatch):
    """Injected: the CUDA-graph compilation raises at its first call (as a capture failure does); the step is compiled
    again without graphs, computes the same loss as eager, warns once naming the reason and records it."""
    compiled = []

    def fake_compile(fn, mode=None, **kwargs):
        compiled.append(mode)
        if mode == "reduce-overhead":

            def capture(*args):
                raise RuntimeError("CUDA error: operation not permitted when stream is capturing (injected)")

            return capture
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    net = _net("cpu", hidden_size=32, num_heads=2, forward_dtype="float32", puzzle_emb_ndim=32, halt_max_steps=2)
    eager = ACTTrainingStep(net, "stablemax_cross_entropy", "act")
    step = ACTTrainingStep(net, "stablemax_cross_entropy", "act")
    step.compile("reduce-overhead")
    batch = _batch(0, 4, "cpu")
    with pytest.warns(
        UserWarning,
        match=r"CUDA graphs could not be captured \(RuntimeError: CUDA error: operation "
        r"not permitted when stream is capturing \(injected\)\); the step runs compiled without them",
    ):
        _, loss, _ = step(net.initial_carry(batch), batch)
    assert compiled == ["reduce-overhead", None]  # compiled again, in the default mode
    assert step._fn.graphs_failed.startswith("RuntimeError: CUDA error") and not step._fn.cudagraphs
    assert torch.equal(loss, eager(net.initial_carry(batch), batch)[1])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next steps: no second warning
        step(net.initial_carry(batch), batch)


def test_an_error_after_graphs_ran_is_not_taken_for_a_capture_failure(monkeypatch):
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("a real bug")
        return torch.zeros(1)

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: flaky)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    step = act.CompiledStep(lambda: None, "reduce-overhead")
    step()
    with pytest.raises(ValueError, match="a real bug"):
        step()
    assert step.graphs_failed is None


@contextmanager
def no_sync_after(step: int, warmup: int):
    """From step ``warmup`` on (compilation done), any device-to-host synchronisation raises."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error" if step >= warmup else previous)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_training_steps_agree_with_eager_ones_and_none_is_skipped():
    from torch._dynamo.utils import counters

    net = _net("cuda", hidden_size=256, num_heads=4, puzzle_emb_ndim=256, puzzle_emb_len=16, forward_dtype="bfloat16")
    eager, graphs = (ACTTrainingStep(net, "stablemax_cross_entropy", "act") for _ in range(2))
    graphs.compile("reduce-overhead")
    optim = OptimConfig(lr=1e-4, lr_warmup_steps=0, weight_decay=1.0, puzzle_emb_lr=1e-2, puzzle_emb_weight_decay=0.1)
    optimizer = configure_optimizers(net, optim, total_steps=20)["optimizer"]
    counters.clear()
    carry = net.initial_carry(_batch(0, 64, "cuda"))
    for i in range(20):
        batch = _batch(i, 64, "cuda")
        rng = torch.cuda.get_rng_state()
        with no_sync_after(i, warmup=2), torch.autocast("cuda", dtype=torch.bfloat16):
            got, loss, _ = graphs(carry, batch)
            (loss / 64).backward()
        got_grad = net.inner.lm_head.weight.grad.clone()
        net.zero_grad(set_to_none=True)
        net.inner.puzzle_emb.used.pop()
        torch.cuda.set_rng_state(rng)
        with no_sync_after(i, warmup=2), torch.autocast("cuda", dtype=torch.bfloat16):
            carry, expected, _ = eager(carry, batch)
            (expected / 64).backward()
        torch.testing.assert_close(loss, expected, rtol=2e-2, atol=1e-3, msg=f"step {i}")
        assert torch.equal(got.steps, carry.steps), f"step {i}"
        torch.testing.assert_close(got_grad, net.inner.lm_head.weight.grad, rtol=5e-2, atol=1e-3, msg=f"step {i}")
        with no_sync_after(i, warmup=2):
            optimizer.step()
            puzzle_embedding_step(net, optimizer, optim, None)
            optimizer.zero_grad(set_to_none=True)
    assert counters["inductor"]["cudagraph_skips"] == 0


def test_max_autotune_uses_cuda_graphs_too_and_a_bad_mode_is_named():
    from loopformer.errors import ConfigError
    from loopformer.model import RuntimeConfig

    assert act.CompiledStep(lambda: None, "max-autotune").cudagraphs
    assert not act.CompiledStep(lambda: None, "max-autotune-no-cudagraphs").cudagraphs
    with pytest.raises(
        ConfigError, match=r"model.runtime.compile_mode='fast'; expected one of default, reduce-overhead, max-autotune"
    ):
        RuntimeConfig(compile_mode="fast")
