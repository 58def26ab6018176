"""`loopformer doctor`: versions, devices, the checks a run makes at its start, a verdict and its exit code."""

import pytest
import torch

from loopformer.cli import doctor
from loopformer.kernels.selfcheck import Verdict


def test_on_a_cpu_machine_it_checks_the_kernel_in_the_interpreter_and_says_what_it_cannot(capsys):
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    for name in ("python 3.", "torch ", "lightning ", "jsonargparse ", "wandb ", "numpy "):
        assert name in out, name
    assert "0 GPU(s)" in out and "kernel self-check in Triton's interpreter (float32, head dim 64): passed" in out
    assert "not checked here (no GPU): the kernel on a device, auto's timing of kernel against SDPA, CUDA graphs" in out
    assert out.rstrip().splitlines()[-1].startswith("verdict: ready for CPU runs (attention: sdpa)")


def test_a_kernel_that_fails_its_check_makes_the_verdict_not_ready(monkeypatch, capsys):
    from loopformer.kernels import selfcheck

    monkeypatch.setattr(selfcheck, "run_check", lambda *a, **k: Verdict(False, "wrong values: output max error 3"))
    assert doctor.main([]) == 1
    assert "verdict: NOT READY: the fused kernel computes wrong values" in capsys.readouterr().out


@pytest.mark.parametrize("ready", [True, False])
def test_every_gpu_is_checked_and_one_that_fails_fails_the_verdict(monkeypatch, capsys, ready):
    checked = []

    def fake_check(index, dtype, head_dim, seq_len, compile_step):
        checked.append((index, dtype, head_dim, seq_len, compile_step))
        ok = ready or index == 0
        return ok, [f"cuda:{index} fake", f"  compiled step: {'compiles' if ok else 'FAILED'}"]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(doctor, "check_gpu", fake_check)
    monkeypatch.setattr(doctor, "_driver", lambda: "999.1")
    assert doctor.main(["--no-compile"]) == (0 if ready else 1)
    out = capsys.readouterr().out
    assert checked == [(0, "bfloat16", 64, 97, False), (1, "bfloat16", 64, 97, False)]  # the recipe's shape
    assert "driver 999.1); 2 GPU(s)" in out and "cuda:1 fake" in out
    assert out.rstrip().splitlines()[-1] == ("verdict: ready: every GPU passed" if ready else
                                             "verdict: NOT READY: see the lines above")  # fmt: skip


@pytest.mark.parametrize("absent", ["jsonargparse", "wandb"])
def test_a_missing_package_is_named_with_what_it_costs_and_one_runs_need_fails_the_verdict(monkeypatch, capsys, absent):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: None if name == absent else real(name))
    code = doctor.main([])
    lines = capsys.readouterr().out.rstrip().splitlines()
    if absent == "jsonargparse":  # runs cannot start
        assert "jsonargparse: not installed (fit/validate/test/predict cannot start; `pip install -e .`)" in lines
        assert code == 1 and lines[-1] == (
            "verdict: NOT READY: jsonargparse not installed: runs cannot start (`pip install -e .`)"
        )
    else:  # runs start, without the default logger
        assert (
            "wandb: not installed (the default logger: runs need `--trainer.logger=false`; `pip install wandb`)"
            in lines
        )
        assert code == 0 and lines[-1].startswith("verdict: ready for CPU runs")
