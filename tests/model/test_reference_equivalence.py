"""An imported TRM / VRN checkpoint computes what those codebases compute (float32).

The reference (reference_trm.py) is an independent implementation of their published forward pass that
reads their state-dict names directly; here we write random weights in their layout, import them with
``loopformer import-checkpoint``, and compare ACT steps.
"""

import math

import pytest
import torch

from loopformer.checkpoint.importer import import_checkpoint
from loopformer.model.layers import swiglu_inner_size
from loopformer.module import LoopformerModule
from tests.model import reference_trm as ref

V, L, C, HEADS, PUZZLES = 11, 16, 64, 4, 5


THREE_STAGE = {  # the 3-stage schedule: z_L from z_H and the input (x3), z_M from z_L and the input (x2), z_H from z_M
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


def _random_weights(core, module_names, init_names, pos, prefix_len, gen, ndim=C):
    def w(*shape, std=None):
        std = std if std is not None else shape[-1] ** -0.5
        return torch.randn(*shape, generator=gen) * std

    inner = swiglu_inner_size(C, 4.0)
    # Block weights at half the LeCun scale: trained recursions are contractive (they settle on a fixed
    # point), while full-scale random blocks are chaotic and amplify float32 rounding ~10x per ACT step.
    block_std = 0.5
    sd = {
        f"{core}.embed_tokens.embedding_weight": w(V, C, std=C**-0.5),
        f"{core}.lm_head.weight": w(V, C),
        f"{core}.q_head.weight": w(2, C),
        f"{core}.q_head.bias": torch.tensor([-0.3, 0.2]),
    }
    if prefix_len:
        sd[f"{core}.puzzle_emb.weights"] = w(PUZZLES, ndim, std=0.5)
        sd[f"{core}.puzzle_emb.local_weights"] = torch.zeros(3, C)  # non-persistent in theirs; must be skipped
    if pos == "learned":
        sd[f"{core}.embed_pos.embedding_weight"] = w(L + prefix_len, C, std=C**-0.5)
    for mod, layers in module_names.items():
        for i in range(layers):
            p = f"{core}.{mod}.layers.{i}"
            sd[f"{p}.self_attn.qkv_proj.weight"] = w(3 * C, C, std=block_std * C**-0.5)
            sd[f"{p}.self_attn.o_proj.weight"] = w(C, C, std=block_std * C**-0.5)
            sd[f"{p}.mlp.gate_up_proj.weight"] = w(2 * inner, C, std=block_std * C**-0.5)
            sd[f"{p}.mlp.down_proj.weight"] = w(C, inner, std=block_std * inner**-0.5)
    for name in init_names:
        sd[f"{core}.{name}"] = torch.randn(C, generator=gen)
    return sd


def _batch(gen, prefix_len):
    B = 32
    return {
        "inputs": torch.randint(0, V, (B, L), generator=gen, dtype=torch.int32),
        "labels": torch.randint(1, V, (B, L), generator=gen),
        "puzzle_identifiers": torch.randint(0, PUZZLES if prefix_len else 1, (B,), generator=gen, dtype=torch.int32),
    }


def _assert_close_steps(net, batch, reference_steps):
    """Step 1 tight; steps 2..4 agree on >= 99.5% of predicted tokens and within 5e-2."""
    net.eval()
    carry = net.initial_carry(batch)
    with torch.no_grad():
        for step, (logits_ref, qh_ref, qc_ref) in enumerate(reference_steps, start=1):
            carry, out = net(carry, batch)
            if step == 1:
                torch.testing.assert_close(out["logits"], logits_ref, atol=1e-4, rtol=0)
                torch.testing.assert_close(out["q_halt_logits"], qh_ref, atol=1e-5, rtol=0)
                torch.testing.assert_close(out["q_continue_logits"], qc_ref, atol=1e-5, rtol=0)
            else:
                agree = (out["logits"].argmax(-1) == logits_ref.argmax(-1)).float().mean().item()
                assert agree >= 0.995, f"step {step}: predictions agree on {agree:.4f} of tokens"
                assert (out["logits"] - logits_ref).abs().max().item() < 5e-2
                assert (out["q_halt_logits"] - qh_ref).abs().max().item() < 5e-2


@pytest.mark.parametrize("pos,ndim_expr", [("rope", "${.hidden_size}"), ("learned", "32"), ("none", "0")])
def test_trm_checkpoint_matches_reference(tmp_path, pos, ndim_expr):
    gen = torch.Generator().manual_seed(hash(pos) % 1000)
    ndim = C if ndim_expr.startswith("$") else int(ndim_expr)
    prefix_len = 3 if ndim else 0
    arch_yaml = tmp_path / "trm.yaml"
    arch_yaml.write_text(
        f"""name: recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1
loss:
  name: losses@ACTLossHead
  loss_type: stablemax_cross_entropy
halt_exploration_prob: 0.1
halt_max_steps: 16
H_cycles: 3
L_cycles: 4
H_layers: 0
L_layers: 2
hidden_size: {C}
num_heads: {HEADS}
expansion: 4
puzzle_emb_ndim: {ndim_expr}
pos_encodings: {pos}
forward_dtype: float32
mlp_t: False
puzzle_emb_len: {prefix_len if ndim else 16}
no_ACT_continue: True
"""
    )
    arch = {"hidden_size": C, "num_heads": HEADS, "pos_encodings": pos, "H_cycles": 3, "L_cycles": 4, "L_layers": 2}
    sd = _random_weights("_orig_mod.model.inner", {"L_level": 2}, ["H_init", "L_init"], pos, prefix_len, gen, ndim)
    src, dest = tmp_path / "trm.pt", tmp_path / "imported.ckpt"
    torch.save(sd, src)
    import_checkpoint("trm", src, arch_yaml, dest, seq_len=L)
    module = LoopformerModule.load_from_checkpoint(dest, weights_only=True)
    batch = _batch(gen, prefix_len)

    core = "_orig_mod.model.inner"
    S = L + prefix_len
    z_H = sd[f"{core}.H_init"].expand(32, S, C)
    z_L = sd[f"{core}.L_init"].expand(32, S, C)
    steps = []
    for _ in range(4):
        (z_H, z_L), outs = ref.trm_step(
            sd, arch, z_H, z_L, batch["inputs"].long(), batch["puzzle_identifiers"].long(), prefix_len
        )
        steps.append(outs)
    _assert_close_steps(module.net, batch, steps)


def test_vrn_three_stage_checkpoint_matches_reference(tmp_path):
    gen = torch.Generator().manual_seed(7)
    prefix_len = 2
    arch_yaml = tmp_path / "all_config.yaml"
    # A run's all_config.yaml: the architecture sits under `arch`, with an OmegaConf interpolation.
    arch_yaml.write_text(
        f"""arch:
  name: looper@LoopTransformer
  loss: {{name: losses@ACTLossHead, loss_type: stablemax_cross_entropy}}
  halt_exploration_prob: 0.1
  halt_max_steps: 16
  act_enabled: true
  act_inference: false
  no_ACT_continue: true
  hidden_size: {C}
  num_heads: {HEADS}
  expansion: 4
  puzzle_emb_ndim: ${{.hidden_size}}
  puzzle_emb_len: {prefix_len}
  pos_encodings: rope
  forward_dtype: float32
  dropout: 0.0
  outer_cycles: 3
  no_grad_cycles: 2
  inner_repeat: 3
  states:
    - {{name: z_H, layers: 1}}
    - {{name: z_M, layers: 1, share_weights_with: z_H}}
    - {{name: z_L, layers: 1, share_weights_with: z_H}}
  stages:
    - {{target: z_L, sources: [z_H], include_inputs: true, repeat_key: inner_repeat}}
    - {{target: z_M, sources: [z_L], include_inputs: true, repeat: 2}}
    - {{target: z_H, sources: [z_M], repeat: 1}}
  readout_state: z_H
  halt_state: z_H
global_batch_size: 768
lr: 1e-4
"""
    )
    sd = _random_weights(
        "_orig_mod.model.core", {"state_modules.z_H": 1}, ["z_H_init", "z_M_init", "z_L_init"], "rope", prefix_len, gen
    )
    src, dest = tmp_path / "vrn.pt", tmp_path / "imported.ckpt"
    torch.save(sd, src)
    import_checkpoint("vrn", src, arch_yaml, dest, seq_len=L)
    module = LoopformerModule.load_from_checkpoint(dest, weights_only=True)
    assert [s["repeat"] for s in module.hparams.arch["stages"]] == [3, 2, 1]
    batch = _batch(gen, prefix_len)

    arch = {
        "hidden_size": C,
        "num_heads": HEADS,
        "pos_encodings": "rope",
        "outer_cycles": 3,
        "readout_state": "z_H",
        **THREE_STAGE,
    }
    S = L + prefix_len
    states = {n: sd[f"_orig_mod.model.core.{n}_init"].expand(32, S, C) for n in ("z_H", "z_M", "z_L")}
    steps = []
    for _ in range(4):
        states, outs = ref.vrn_step(
            sd, arch, states, batch["inputs"].long(), batch["puzzle_identifiers"].long(), prefix_len
        )
        steps.append(outs)
    _assert_close_steps(module.net, batch, steps)


def test_import_rejects_weights_that_do_not_fit(tmp_path):
    from loopformer.checkpoint.importer import CheckpointImportError

    gen = torch.Generator().manual_seed(0)
    sd = _random_weights("_orig_mod.model.inner", {"L_level": 1}, ["H_init", "L_init"], "rope", 0, gen)
    src = tmp_path / "trm.pt"
    torch.save(sd, src)
    arch_yaml = tmp_path / "trm.yaml"
    arch_yaml.write_text(
        f"H_cycles: 2\nL_cycles: 2\nL_layers: 2\nhidden_size: {C}\nnum_heads: {HEADS}\nexpansion: 4\n"
        "pos_encodings: rope\npuzzle_emb_ndim: 0\nhalt_max_steps: 4\nhalt_exploration_prob: 0.1\n"
    )
    with pytest.raises(CheckpointImportError, match="missing"):
        import_checkpoint("trm", src, arch_yaml, tmp_path / "out.ckpt", seq_len=L)
    with pytest.raises(CheckpointImportError, match="--seq-len"):
        arch_yaml.write_text(arch_yaml.read_text().replace("L_layers: 2", "L_layers: 1"))
        import_checkpoint("trm", src, arch_yaml, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()
    assert math.isfinite(1.0)
