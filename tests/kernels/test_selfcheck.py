"""The fused kernel is trusted on a device only after checking itself there: the check, the decision, the messages.

On the CPU the real kernel runs in Triton's interpreter; failures are injected as kernels that return wrong
values, NaN or raise, and as checks that fail on one rank of a 2-process DDP run.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loopformer.errors import ConfigError
from loopformer.kernels import attention as attn
from loopformer.kernels import dispatch, selfcheck
from loopformer.kernels.selfcheck import Verdict

pytestmark = pytest.mark.skipif(not attn.HAVE_TRITON, reason="triton is not installed")
ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def _shifted_forward(qkv, cos, sin, H):
    o, lse = attn.attention_forward(qkv, cos, sin, H)
    return o + 0.05, lse


def _nan_backward(grad_o, qkv, cos, sin, o, lse, H):
    return torch.full_like(qkv, float("nan"))


def _out_of_resources(qkv, cos, sin, H):
    raise RuntimeError("out of resource: shared memory, Required: 233472, Hardware limit: 232448\nmore lines")


@pytest.mark.parametrize("dtype,S", [(torch.float32, 17), (torch.bfloat16, 97)], ids=["fp32-17", "bf16-97"])
def test_the_real_kernel_passes_in_the_interpreter(dtype, S):
    verdict = selfcheck.run_check(CPU, dtype, 32, S)
    assert verdict.ok, verdict.detail
    assert verdict.detail.startswith("output max error") and "dqkv max error" in verdict.detail


@pytest.mark.parametrize(
    "kernel,expected",
    [
        ((_shifted_forward, attn.attention_backward), "wrong values: output max error"),
        ((attn.attention_forward, _nan_backward), "dqkv max error nan"),
        (
            (_out_of_resources, attn.attention_backward),
            "RuntimeError: out of resource: shared memory, Required: 233472",
        ),
    ],
    ids=["wrong-values", "nan", "raises"],
)
def test_a_bad_kernel_fails_the_check_with_what_went_wrong(kernel, expected):
    verdict = selfcheck.run_check(CPU, torch.float32, 32, 17, kernel=kernel)
    assert not verdict.ok
    assert expected in verdict.detail
    assert "\n" not in verdict.detail  # one line, whatever the exception printed


def test_verdicts_are_kept_per_shape_family(monkeypatch):
    calls = []
    monkeypatch.setattr(selfcheck, "run_check", lambda *a, **k: calls.append(a) or Verdict(True, "ok"))
    monkeypatch.setattr(selfcheck, "VERDICTS", {})
    for S in (97, 81, 97):  # one bucket: the one-kernel backward
        selfcheck.check_kernel(CPU, torch.bfloat16, 64, S)
    selfcheck.check_kernel(CPU, torch.bfloat16, 64, 916)  # three kernels: checked again
    selfcheck.check_kernel(CPU, torch.float16, 64, 97)  # another dtype
    assert [(a[1], a[3]) for a in calls] == [(torch.bfloat16, 97), (torch.bfloat16, 916), (torch.float16, 97)]
    assert selfcheck.shape_key(CPU, torch.bfloat16, 64, 97)[-1] == "one_pass"
    assert selfcheck.shape_key(CPU, torch.bfloat16, 64, 916)[-1] == "three_kernels"


@pytest.fixture
def eligible(monkeypatch):
    """Pretend the kernel is what this device would run (auto on a CUDA GPU)."""
    monkeypatch.setattr(
        dispatch,
        "attention_implementation",
        lambda backend, device, head_dim, dropout=0.0: "sdpa" if backend == "sdpa" else "triton",
    )


def _failing(*args):
    return Verdict(False, "wrong values: output max error 0.5 (bound 0.02)")


def test_auto_falls_back_to_sdpa_with_one_line_naming_device_shape_and_failure(eligible):
    res = dispatch.resolve_attention("auto", CPU, torch.bfloat16, 64, 97, check=_failing)
    assert res.implementation == "sdpa" and res.failed_here
    assert res.warning == (
        "the fused Triton attention kernel failed its self-check on cpu (Triton interpreter) (dtype bfloat16, "
        "head dim 64, sequence length 97): wrong values: output max error 0.5 (bound 0.02); this run uses PyTorch "
        "SDPA instead (attention_backend_resolved: sdpa)."
    )
    passing = dispatch.resolve_attention(
        "auto", CPU, torch.bfloat16, 64, 97, check=lambda *a: Verdict(True, "ok"), timer=_timings(1.0, 2.0)
    )
    assert passing.implementation == "triton" and not passing.warning


def _timings(triton, sdpa, calls=None):
    def timer(device, dtype, head_dim, seq_len):
        if calls is not None:
            calls.append((str(dtype), head_dim, seq_len))
        return {"triton": triton * 1e-3, "sdpa": sdpa * 1e-3}

    return timer


@pytest.fixture(autouse=True)
def _fresh_timings(monkeypatch):
    from loopformer.kernels import timing

    monkeypatch.setattr(timing, "CHOICES", {})


def test_auto_takes_the_faster_of_kernel_and_sdpa_after_the_check_and_keeps_the_choice(eligible):
    ok = lambda *a: Verdict(True, "ok")  # noqa: E731
    calls = []
    faster = dispatch.resolve_attention("auto", CPU, torch.bfloat16, 64, 97, check=ok, timer=_timings(0.4, 0.9, calls))
    assert faster.implementation == "triton"
    assert faster.reason == (
        "auto timed forward + backward of one attention segment: sdpa 0.9 ms, triton 0.4 ms; triton is faster"
    )
    again = dispatch.resolve_attention("auto", CPU, torch.bfloat16, 64, 120, check=ok, timer=_timings(9, 1, calls))
    assert again.implementation == "triton" and len(calls) == 1  # 120 shares 97's length bucket (128): kept
    slower = dispatch.resolve_attention("auto", CPU, torch.bfloat16, 64, 916, check=ok, timer=_timings(2, 1, calls))
    assert slower.implementation == "sdpa" and slower.reason.endswith("sdpa is faster") and len(calls) == 2
    other_dtype = dispatch.resolve_attention("auto", CPU, torch.float16, 64, 97, check=ok, timer=_timings(2, 1, calls))
    assert other_dtype.implementation == "sdpa" and len(calls) == 3
    forced = dispatch.resolve_attention("triton", CPU, torch.bfloat16, 64, 916, check=ok, timer=_timings(2, 1, calls))
    assert forced.implementation == "triton" and len(calls) == 3  # triton insists: no timing


def test_every_rank_takes_the_kernel_only_where_it_is_faster_on_all(eligible):
    answers = iter([True, False])  # the check passed on every rank; the kernel is faster here, not on every rank
    res = dispatch.resolve_attention("auto", CPU, torch.bfloat16, 64, 97, check=lambda *a: Verdict(True, "ok"),
                                     agree=lambda mine: next(answers), timer=_timings(0.4, 0.9))  # fmt: skip
    assert res.implementation == "sdpa" and res.reason.endswith("sdpa, since the kernel is not faster on every rank")


def test_forced_triton_fails_with_the_same_message(eligible):
    with pytest.raises(dispatch.KernelSelfCheckError, match=r"self-check on cpu .*: wrong values") as info:
        dispatch.resolve_attention("triton", CPU, torch.bfloat16, 64, 97, check=_failing)
    assert isinstance(info.value, ConfigError)  # the CLI prints it as one paragraph, exit 2
    assert "attention_backend=triton insists on the kernel: use auto" in str(info.value)


def test_every_rank_decides_as_the_worst_one(eligible):
    ok = lambda *a: Verdict(True, "ok")  # noqa: E731
    res = dispatch.resolve_attention("auto", CPU, torch.bfloat16, 64, 97, check=ok, agree=lambda passed: False)
    assert res.implementation == "sdpa" and not res.failed_here
    assert "it passed here, but failed on another rank" in res.warning
    with pytest.raises(dispatch.KernelSelfCheckError, match="failed on another rank"):
        dispatch.resolve_attention("triton", CPU, torch.bfloat16, 64, 97, check=ok, agree=lambda passed: False)


def test_sdpa_and_ineligible_devices_run_no_check():
    never = lambda *a: pytest.fail("no check expected")  # noqa: E731
    assert dispatch.resolve_attention("sdpa", CPU, torch.float32, 64, 97, check=never).implementation == "sdpa"
    assert dispatch.resolve_attention("auto", CPU, torch.float32, 64, 97, check=never).implementation == "sdpa"


def test_a_run_records_the_resolved_backend_and_warns_once(sudoku4_dir, tmp_path, monkeypatch, eligible, caplog):
    import yaml

    from loopformer.cli import LoopformerCLI
    from tests.helpers import tiny_fit_args

    monkeypatch.setattr(selfcheck, "check_kernel", _failing)
    args = tiny_fit_args(
        sudoku4_dir, tmp_path, "--model.arch.num_heads=1", "--trainer.max_steps=2", "--trainer.limit_val_batches=0"
    )
    args = [a for a in args if a != "--trainer.logger=false"]
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}
    with caplog.at_level("WARNING", logger="loopformer.attention"):
        cli = LoopformerCLI(args=args, trainer_defaults={"logger": logger})
    lines = [r.getMessage() for r in caplog.records if r.name == "loopformer.attention"]
    assert len(lines) == 1 and lines[0].startswith("loopformer: warning: the fused Triton attention kernel failed")
    choice = cli.model.net.attention  # the one place the choice is kept, shared by every attention layer
    assert choice.resolved == "sdpa"
    layers = [m for m in cli.model.net.modules() if type(m).__name__ == "Attention"]
    assert layers and all(m.choice is choice for m in layers)
    hparams = yaml.safe_load(next(tmp_path.glob("lightning_logs/version_*/hparams.yaml")).read_text())
    assert hparams["attention_backend_resolved"] == "sdpa"
    assert hparams["attention_backend_reason"] == "auto: the kernel failed its self-check"
    # and in the run directory's config, which W&B-less runs keep: a comment, so the file stays a usable --config
    config = next(tmp_path.glob("lightning_logs/version_*/config.yaml")).read_text()
    assert config.endswith("\n# attention: sdpa (auto: the kernel failed its self-check)\n")
    assert yaml.safe_load(config)["model"]["runtime"]["attention_backend"] == "auto"


def test_forced_triton_that_fails_its_check_exits_2_in_one_paragraph(sudoku4_dir, tmp_path, monkeypatch, capsys):
    from loopformer.cli import main
    from tests.helpers import tiny_fit_args

    monkeypatch.setattr(selfcheck, "check_kernel", _failing)  # the interpreter is on: triton is usable here
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--model.arch.num_heads=1", "--model.runtime.attention_backend=triton")
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--trainer.max_steps=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("loopformer: error: the fused Triton attention kernel failed its self-check on cpu")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_two_ranks_agree_when_only_one_fails(sudoku4_dir, tmp_path):
    """2-process DDP (gloo): rank 1's check fails, rank 0's passes; both ranks run SDPA; rank 1 says why, rank 0
    that another rank failed."""
    fake = {"class_path": "tests.kernels.fake_selfcheck.FailOnRank", "init_args": {"rank": 1, "out": str(tmp_path)}}
    import json

    from tests.helpers import tiny_fit_args

    cmd = [
        sys.executable,
        "-m",
        "loopformer.cli",
        *tiny_fit_args(sudoku4_dir, tmp_path, "--model.arch.num_heads=1", "--trainer.max_steps=2"),
        "--trainer.limit_val_batches=0",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        f"--trainer.callbacks+={json.dumps(fake)}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "rank0.txt").read_text() == (tmp_path / "rank1.txt").read_text() == "sdpa"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("loopformer: warning: the fused Triton")]
    assert len(warnings) == 2, proc.stderr[-3000:]
    assert sum("wrong values (fake, rank 1)" in w for w in warnings) == 1
    assert sum("it passed here, but failed on another rank" in w for w in warnings) == 1
