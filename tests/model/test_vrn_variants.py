"""VirtualRecursiveNetwork's looper variants: ConvSwiGLU, dropout, act_enabled: false; imported and exact, and
the configs/vrn/ files equal to what the importer makes of VRN's own architecture files."""

from pathlib import Path

import pytest
import torch
import yaml

from loopformer.convert import CheckpointImportError, arch_from_vrn, import_checkpoint
from loopformer.model import LoopTransformer, LoopTransformerConfig
from loopformer.model.config import ArchConfig
from loopformer.model.layers import swiglu_inner_size
from loopformer.module import LoopformerModule
from tests.model import reference_trm as ref
from tests.model.test_reference_equivalence import HEADS, C, _assert_close_steps, _batch, _random_weights

ROOT = Path(__file__).resolve().parents[2]
CORE = "_orig_mod.model.core"
THREE_STAGE = {
    "states": [
        {"name": "z_H", "layers": 1},
        {"name": "z_M", "layers": 1, "share_weights_with": "z_H"},
        {"name": "z_L", "layers": 1, "share_weights_with": "z_H"},
    ],
    "stages": [
        {"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": 3},
        {"target": "z_M", "sources": ["z_L"], "include_inputs": True, "repeat": 2},
        {"target": "z_H", "sources": ["z_M"], "repeat": 1},
    ],
}


def _vrn_yaml(**over) -> dict:
    arch = dict(
        name="looper@LoopTransformer", loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
        halt_exploration_prob=0.1, halt_max_steps=16, act_enabled=True, act_inference=False, no_ACT_continue=True,
        hidden_size=C, num_heads=HEADS, expansion=4, puzzle_emb_ndim=C, puzzle_emb_len=2, pos_encodings="rope",
        forward_dtype="float32", dropout=0.0, outer_cycles=3, no_grad_cycles=2, readout_state="z_H", halt_state="z_H",
        **THREE_STAGE,
    )  # fmt: skip
    arch.update(over)
    return arch


def test_conv_swiglu_checkpoint_matches_the_reference(tmp_path):
    gen = torch.Generator().manual_seed(11)
    arch = _vrn_yaml(mlp_type="conv_swiglu", dropout=0.1, act_enabled=False)
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch))
    sd = _random_weights(CORE, {"state_modules.z_H": 1}, ["z_H_init", "z_M_init", "z_L_init"], "rope", 2, gen)
    inner = swiglu_inner_size(C, 4.0)
    sd[f"{CORE}.state_modules.z_H.layers.0.mlp.dwconv.weight"] = torch.randn(inner, 1, 2, generator=gen) * 0.5
    sd[f"{CORE}.state_modules.z_H.layers.0.mlp.dwconv.bias"] = torch.randn(inner, generator=gen) * 0.1
    torch.save(sd, tmp_path / "vrn.pt")
    import_checkpoint("vrn", tmp_path / "vrn.pt", tmp_path / "arch.yaml", tmp_path / "ours.ckpt", seq_len=16)
    module = LoopformerModule.load_from_checkpoint(tmp_path / "ours.ckpt", weights_only=True)
    hp = module.hparams.arch
    assert hp["mlp_type"] == "conv_swiglu" and hp["dropout"] == 0.1 and hp["act_enabled"] is False
    batch = _batch(gen, 2)
    states = {n: sd[f"{CORE}.{n}_init"].expand(32, 18, C) for n in ("z_H", "z_M", "z_L")}
    steps = []
    for _ in range(4):
        states, outs = ref.vrn_step(sd, arch, states, batch["inputs"].long(), batch["puzzle_identifiers"].long(), 2)
        steps.append(outs)
    _assert_close_steps(module.net, batch, steps)  # eval mode: dropout off


def _net(**over) -> LoopTransformer:
    torch.manual_seed(0)
    config = LoopTransformerConfig(vocab_size=6, seq_len=8, hidden_size=32, num_heads=4, forward_dtype="float32",
                                   halt_max_steps=4, **over)  # fmt: skip
    return LoopTransformer(config)


def _batch_small():
    gen = torch.Generator().manual_seed(3)
    return {
        "inputs": torch.randint(0, 6, (16, 8), generator=gen, dtype=torch.int32),
        "labels": torch.randint(1, 6, (16, 8), generator=gen),
        "puzzle_identifiers": torch.zeros(16, dtype=torch.int32),
    }


def test_dropout_acts_in_training_only():
    net, batch = _net(dropout=0.3), _batch_small()
    plain = _net()
    plain.load_state_dict(net.state_dict())
    for m in (net, plain):
        m.eval()
    with torch.no_grad():
        a = net(net.initial_carry(batch), batch)[1]["logits"]
        b = plain(plain.initial_carry(batch), batch)[1]["logits"]
    assert torch.equal(a, b)  # evaluation: no dropout
    net.train()
    first = net(net.initial_carry(batch), batch)[1]["logits"]
    second = net(net.initial_carry(batch), batch)[1]["logits"]
    assert not torch.allclose(first, second)  # training: a fresh mask each call


def test_act_disabled_trains_every_row_to_halt_max_steps():
    batch = _batch_small()
    for enabled in (True, False):
        net = _net(act_enabled=enabled, halt_exploration_prob=0.0, no_ACT_continue=False)
        with torch.no_grad():
            net.inner.q_head.bias.copy_(torch.tensor([10.0, -10.0]))  # the Q head says "halt now" everywhere
        net.train()
        carry, out = net(net.initial_carry(batch), batch)
        if enabled:
            assert carry.halted.all() and "target_q_continue" in out
        else:
            assert not carry.halted.any() and "target_q_continue" not in out
            for _ in range(3):
                carry, out = net(carry, batch)
            assert carry.halted.all() and (carry.steps == 4).all()


def test_import_refuses_what_it_cannot_build_with_the_reason():
    with pytest.raises(CheckpointImportError, match="deform_conv2d"):
        arch_from_vrn(_vrn_yaml(mlp_type="metric_conv"))
    with pytest.raises(CheckpointImportError, match="Deep Improvement Supervision"):
        arch_from_vrn(_vrn_yaml(dis_enabled=True))
    with pytest.raises(CheckpointImportError, match="CrossEntropyLossHead"):
        arch_from_vrn(_vrn_yaml(loss={"name": "losses@CrossEntropyLossHead", "loss_type": "stablemax_cross_entropy"}))


VRN_ARCH_FILES = {
    # configs/vrn/<name>.yaml -> the fields of VRN's config/arch/<name>.yaml that differ from the 3-stage looper
    "loop_transformer": dict(
        states=[{"name": "z_H", "layers": 1}, {"name": "z_L", "layers": 1, "share_weights_with": "z_H"}],
        stages=[
            {"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": 6},
            {"target": "z_H", "sources": ["z_L"], "repeat": 3},
        ],
    ),  # fmt: skip
    "loop_transformer-3stage": dict(gradient_checkpointing=True),
    "loop_transformer_conv": dict(mlp_type="conv_swiglu", gradient_checkpointing=True),
}


@pytest.mark.parametrize("name", list(VRN_ARCH_FILES))
def test_configs_vrn_files_are_what_the_importer_makes_of_vrns_own(name):
    theirs = _vrn_yaml(hidden_size=512, num_heads=8, puzzle_emb_ndim=512, puzzle_emb_len=16, forward_dtype="bfloat16")
    theirs.update(VRN_ARCH_FILES[name])
    ours = ArchConfig(**yaml.safe_load((ROOT / "configs" / "vrn" / f"{name}.yaml").read_text()))
    assert ours == ArchConfig(**arch_from_vrn(theirs))


@pytest.mark.parametrize("name", list(VRN_ARCH_FILES))
def test_every_vrn_architecture_trains_fast_dev_run(name, sudoku4_dir, tmp_path):
    from loopformer.cli import LoopformerCLI
    from tests.helpers import tiny_fit_args

    cli = LoopformerCLI(
        args=tiny_fit_args(
            sudoku4_dir,
            tmp_path,
            "--model.arch",
            str(ROOT / "configs" / "vrn" / f"{name}.yaml"),
            "--model.arch.hidden_size=32",
            "--model.arch.num_heads=2",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.arch.puzzle_emb_len=1",
            "--model.arch.forward_dtype=float32",
            "--model.arch.halt_max_steps=2",
            "--trainer.fast_dev_run=true",
        )  # fmt: skip
    )
    assert cli.trainer.global_step == 1 and torch.isfinite(cli.trainer.callback_metrics["train/loss"])
