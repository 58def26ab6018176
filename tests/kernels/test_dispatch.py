"""The one decision of which attention implementation runs: configured backend + device + Triton + head dim."""

import pytest
import torch

from loopformer.errors import ConfigError
from loopformer.kernels import attention as attn
from loopformer.kernels import dispatch

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(
    "backend,device,head_dim,have_triton,interpret,expected",
    [
        ("sdpa", CUDA, 64, True, False, "sdpa"),
        ("auto", CUDA, 64, True, False, "triton"),
        ("auto", CUDA, 16, True, False, "sdpa"),  # unsupported head dim
        ("auto", CUDA, 64, False, False, "sdpa"),  # no triton installed
        ("auto", CPU, 64, True, True, "sdpa"),  # auto never takes the interpreter
        ("triton", CUDA, 64, True, False, "triton"),
        ("triton", CPU, 64, True, True, "triton"),  # the interpreter, on request
    ],
)
def test_attention_implementation(monkeypatch, backend, device, head_dim, have_triton, interpret, expected):
    monkeypatch.setattr(dispatch, "HAVE_TRITON", have_triton)
    monkeypatch.setattr(attn, "HAVE_TRITON", have_triton)
    monkeypatch.setattr(attn, "interpreter_enabled", lambda: interpret)
    assert dispatch.attention_implementation(backend, device, head_dim) == expected


def test_forced_triton_where_it_cannot_run(monkeypatch):
    monkeypatch.setattr(attn, "interpreter_enabled", lambda: False)
    with pytest.raises(RuntimeError, match="attention_backend=triton cannot run on cpu"):
        dispatch.attention_implementation("triton", CPU, 64)
    monkeypatch.setattr(dispatch, "HAVE_TRITON", False)
    with pytest.raises(ConfigError, match="`triton` package is not installed"):
        dispatch.check_attention_backend("triton", None)  # even without attention layers: the value is wrong here
    dispatch.check_attention_backend("auto", 16)  # auto and sdpa always configure
    dispatch.check_attention_backend("sdpa", 16)


def test_attention_dropout_runs_the_pytorch_path_and_the_choice_is_shared(monkeypatch):
    """The kernel has no dropout: a training call with attention dropout takes SDPA whatever the backend; a
    network keeps one AttentionChoice, which every attention layer reads (configured, then resolved)."""
    monkeypatch.setattr(dispatch, "HAVE_TRITON", True)
    monkeypatch.setattr(attn, "HAVE_TRITON", True)
    monkeypatch.setattr(attn, "interpreter_enabled", lambda: True)
    assert dispatch.attention_implementation("triton", CPU, 64, dropout=0.1) == "sdpa"
    assert dispatch.attention_implementation("auto", CUDA, 64, dropout=0.1) == "sdpa"
    assert dispatch.attention_implementation("triton", CPU, 64, dropout=0.0) == "triton"

    from loopformer.model import LoopTransformer
    from loopformer.training.config import network_config_from_flat

    net = LoopTransformer(network_config_from_flat(6, 8, hidden_size=64, num_heads=1, attention_backend="triton"))
    layers = [m for m in net.modules() if type(m).__name__ == "Attention"]
    assert len(layers) == 1 and layers[0].choice is net.attention and net.attention.configured == "triton"
    net.attention.resolved = "sdpa"  # what ResolveAttention does after a failed self-check: every layer follows
    assert layers[0].choice.implementation(CPU, 64, 0.0) == "sdpa"
