"""An independent float32 implementation of one HRM / TRM (and its variants) / VRN-looper ACT step, written from
the published semantics and working directly on *their* state-dict names, with their gradient windows (the
applications they run under ``torch.no_grad``). Attention is computed explicitly (softmax(q k^T / sqrt(d)) v)
rather than through SDPA, so it is a genuinely different operation order."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F


def rms(x, eps=1e-5):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)


def rope_tables(head_dim, length, theta=10000.0):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    f = torch.outer(torch.arange(length, dtype=torch.float32), inv)
    emb = torch.cat((f, f), -1)
    return emb.cos(), emb.sin()


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), -1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def swiglu(sd, prefix, x):
    gate, up = (x @ sd[f"{prefix}.gate_up_proj.weight"].T).chunk(2, -1)
    return (F.silu(gate) * up) @ sd[f"{prefix}.down_proj.weight"].T


def conv_swiglu(sd, prefix, x):
    """VRN's ConvSwiGLU: the gated product, a depthwise convolution along the sequence (kernel 2, padding 1, cut
    back to the length), SiLU, then the down projection."""
    gate, up = (x @ sd[f"{prefix}.gate_up_proj.weight"].T).chunk(2, -1)
    h = (F.silu(gate) * up).transpose(1, 2)
    weight, bias = sd[f"{prefix}.dwconv.weight"], sd[f"{prefix}.dwconv.bias"]
    h = F.conv1d(h, weight, bias, padding=1, groups=h.shape[1])[..., : x.shape[1]]
    return F.silu(h).transpose(1, 2) @ sd[f"{prefix}.down_proj.weight"].T


def block(sd, prefix, x, heads, cos_sin, eps, mlp=swiglu):
    B, S, C = x.shape
    d = C // heads
    qkv = x @ sd[f"{prefix}.self_attn.qkv_proj.weight"].T
    q, k, v = qkv.view(B, S, 3, heads, d).unbind(2)
    if cos_sin is not None:
        q, k = rotate(q, *cos_sin), rotate(k, *cos_sin)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    attn = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, S, C)
    x = rms(x + attn @ sd[f"{prefix}.self_attn.o_proj.weight"].T, eps)
    return rms(x + mlp(sd, f"{prefix}.mlp", x), eps)


def module(sd, prefix, layers, x, heads, cos_sin, eps, mlp=swiglu):
    for i in range(layers):
        x = block(sd, f"{prefix}.layers.{i}", x, heads, cos_sin, eps, mlp)
    return x


def embed(sd, core, inputs, puzzle_ids, hidden, prefix_len, pos):
    emb = sd[f"{core}.embed_tokens.embedding_weight"][inputs]
    if prefix_len:
        p = sd[f"{core}.puzzle_emb.weights"][puzzle_ids]
        p = F.pad(p, (0, prefix_len * hidden - p.shape[-1])).view(-1, prefix_len, hidden)
        emb = torch.cat((p, emb), 1)
    if pos == "learned":
        emb = 0.707106781 * (emb + sd[f"{core}.embed_pos.embedding_weight"])
    return math.sqrt(hidden) * emb


def heads_out(sd, core, z, prefix_len):
    logits = (z @ sd[f"{core}.lm_head.weight"].T)[:, prefix_len:]
    q = z[:, 0] @ sd[f"{core}.q_head.weight"].T + sd[f"{core}.q_head.bias"]
    return logits, q[:, 0], q[:, 1]


def trm_step(sd, arch, z_H, z_L, inputs, puzzle_ids, prefix_len):
    """One TRM inner step from (z_H, z_L); returns new states and outputs."""
    core = "_orig_mod.model.inner"
    C, heads = arch["hidden_size"], arch["num_heads"]
    S = inputs.shape[1] + prefix_len
    cos_sin = rope_tables(C // heads, S) if arch["pos_encodings"] == "rope" else None
    x = embed(sd, core, inputs, puzzle_ids, C, prefix_len, arch["pos_encodings"])
    L = arch["L_layers"]
    for h in range(arch["H_cycles"]):
        with torch.no_grad() if h < arch["H_cycles"] - 1 else nullcontext():  # gradient: the last cycle
            for _ in range(arch["L_cycles"]):
                z_L = module(sd, f"{core}.L_level", L, z_L + (z_H + x), heads, cos_sin, 1e-5)
            z_H = module(sd, f"{core}.L_level", L, z_H + z_L, heads, cos_sin, 1e-5)
    return (z_H, z_L), heads_out(sd, core, z_H, prefix_len)


def _setup(sd, arch, inputs, puzzle_ids, prefix_len, core="_orig_mod.model.inner"):
    C, heads = arch["hidden_size"], arch["num_heads"]
    S = inputs.shape[1] + prefix_len
    cos_sin = rope_tables(C // heads, S) if arch["pos_encodings"] == "rope" else None
    return embed(sd, core, inputs, puzzle_ids, C, prefix_len, arch["pos_encodings"]), cos_sin, heads


def hrm_step(sd, arch, z_H, z_L, inputs, puzzle_ids, prefix_len):
    """HRM: everything without gradient but the last L application and the last H application."""
    core = "_orig_mod.model.inner"
    x, cos_sin, heads = _setup(sd, arch, inputs, puzzle_ids, prefix_len)
    H_cycles, L_cycles, H, L = arch["H_cycles"], arch["L_cycles"], arch["H_layers"], arch["L_layers"]
    with torch.no_grad():
        for h in range(H_cycles):
            for i in range(L_cycles):
                if not (h == H_cycles - 1 and i == L_cycles - 1):
                    z_L = module(sd, f"{core}.L_level", L, z_L + (z_H + x), heads, cos_sin, 1e-5)
            if h != H_cycles - 1:
                z_H = module(sd, f"{core}.H_level", H, z_H + z_L, heads, cos_sin, 1e-5)
    z_L = module(sd, f"{core}.L_level", L, z_L + (z_H + x), heads, cos_sin, 1e-5)
    z_H = module(sd, f"{core}.H_level", H, z_H + z_L, heads, cos_sin, 1e-5)
    return (z_H, z_L), heads_out(sd, core, z_H, prefix_len)


def singlez_step(sd, arch, z_L, inputs, puzzle_ids, prefix_len):
    """TRM trm_singlez: one state; L_cycles updates with the input, one without; gradient: the last cycle."""
    core = "_orig_mod.model.inner"
    x, cos_sin, heads = _setup(sd, arch, inputs, puzzle_ids, prefix_len)
    L = arch["L_layers"]
    for h in range(arch["H_cycles"]):
        with torch.no_grad() if h < arch["H_cycles"] - 1 else nullcontext():
            for _ in range(arch["L_cycles"]):
                z_L = module(sd, f"{core}.L_level", L, z_L + x, heads, cos_sin, 1e-5)
            z_L = module(sd, f"{core}.L_level", L, z_L, heads, cos_sin, 1e-5)
    return z_L, heads_out(sd, core, z_L, prefix_len)


def hier6_step(sd, arch, z_H, z_Ls, inputs, puzzle_ids, prefix_len):
    """TRM trm_hier6: step i writes z_L[i] from the sum of all six; z_H from that sum; gradient: the last cycle."""
    core = "_orig_mod.model.inner"
    x, cos_sin, heads = _setup(sd, arch, inputs, puzzle_ids, prefix_len)
    L = arch["L_layers"]
    z_Ls = list(z_Ls)
    for h in range(arch["H_cycles"]):
        with torch.no_grad() if h < arch["H_cycles"] - 1 else nullcontext():
            for i in range(arch["L_cycles"]):
                total = z_Ls[0] + z_Ls[1] + z_Ls[2] + z_Ls[3] + z_Ls[4] + z_Ls[5]
                z_Ls[i] = module(sd, f"{core}.L_level", L, total + (z_H + x), heads, cos_sin, 1e-5)
            total = z_Ls[0] + z_Ls[1] + z_Ls[2] + z_Ls[3] + z_Ls[4] + z_Ls[5]
            z_H = module(sd, f"{core}.L_level", L, z_H + total, heads, cos_sin, 1e-5)
    return (z_H, z_Ls), heads_out(sd, core, z_H, prefix_len)


def vrn_step(sd, arch, states, inputs, puzzle_ids, prefix_len, dis_step=None):
    """One VRN looper step from a dict of states (DIS: ``dis_step`` adds that step's embedding to the input)."""
    core = "_orig_mod.model.core"
    C, heads = arch["hidden_size"], arch["num_heads"]
    S = inputs.shape[1] + prefix_len
    cos_sin = rope_tables(C // heads, S) if arch["pos_encodings"] == "rope" else None
    x = embed(sd, core, inputs, puzzle_ids, C, prefix_len, arch["pos_encodings"])
    if dis_step is not None:
        x = x + sd[f"{core}.step_emb.weight"][dis_step]
    owner, layers = {}, {}
    for st in arch["states"]:
        owner[st["name"]] = owner[st["share_weights_with"]] if st.get("share_weights_with") else st["name"]
        layers[st["name"]] = layers[owner[st["name"]]] if st.get("share_weights_with") else st["layers"]
    states = dict(states)
    for _ in range(arch["outer_cycles"]):
        for stage in arch["stages"]:
            for _ in range(stage["repeat"]):
                inj = torch.zeros_like(states[stage["target"]])
                if stage.get("include_inputs"):
                    inj = inj + x
                for s in stage.get("sources", []):
                    inj = inj + states[s]
                t = stage["target"]
                mlp = conv_swiglu if arch.get("mlp_type") == "conv_swiglu" else swiglu
                states[t] = module(
                    sd, f"{core}.state_modules.{owner[t]}", layers[t], states[t] + inj, heads, cos_sin, 1e-5, mlp
                )
    return states, heads_out(sd, core, states[arch["readout_state"]], prefix_len)
