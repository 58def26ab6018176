"""The models whose checkpoints loopformer imports (HRM, TRM and VirtualRecursiveNetwork, VRN), in loopformer's
terms: their architecture YAML read and mapped to a loop schedule, and where their weights go (``Variant``).

Their pretrain scripts save ``model.state_dict()`` of the loss head around the ACT model, often through
``torch.compile`` (hence ``_orig_mod.``): HRM and TRM keys live under ``model.inner.`` (HRM: ``H_level`` and
``L_level``; TRM: one shared ``L_level``) with ``H_init``/``L_init``; VRN keys under ``model.core.`` with
``state_modules.<state>`` and ``<state>_init``. All keep the puzzle embedding table in a buffer
``puzzle_emb.weights``. Their architecture YAML (``config/arch/*.yaml`` or the ``all_config.yaml`` a run
writes, OmegaConf interpolations allowed) says how the loop is wired; TRM's ``name`` field says which of its
models (``trm``, ``trm_singlez``, ``trm_hier6``, ``hrm``) saved the weights.

Each model becomes a loopformer schedule:

==============  ====================================================================================
HRM             z_L <- z_H + x (L_cycles), z_H <- z_L; H_cycles outer cycles, separate H and L modules;
                gradient through the last application of each (``grad_last: 1``); Q-continue bootstrapping
TRM             z_L <- z_H + x (L_cycles), z_H <- z_L; one shared module; gradient through the last cycle
trm_singlez     z_L <- z_L + x (L_cycles), then z_L <- z_L once; one state
trm_hier6       z_Li <- (z_L1 + ... + z_L6) + z_H + x for i = 1..L_cycles, z_H <- z_H + (z_L1 + ... + z_L6)
VRN looper      its states and stages, one to one
==============  ====================================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopformer.files import load_yaml

SOURCES = ("trm", "vrn", "hrm")
# the VirtualRecursiveNetwork code the notes below on its options that do not run were checked on
VRN_COMMIT = "maxwell-gao/VirtualRecursiveNetwork at 9909a38, 2025-12-22"
_INTERP = re.compile(r"^\$\{(\.*)([\w.]+)\}$")


class CheckpointImportError(ValueError):
    """A checkpoint or architecture file that cannot be converted (named in the message)."""


# ---------------------------------------------------------------------------------------------------
def load_arch_yaml(path: str | Path) -> dict[str, Any]:
    """Read an architecture YAML; accepts a run's ``all_config.yaml`` (uses its ``arch`` section)."""
    path = Path(path)
    raw = load_yaml(path, CheckpointImportError, "an architecture YAML (config/arch/*.yaml or a run's all_config.yaml)")
    if not isinstance(raw, dict):
        raise CheckpointImportError(f"{path}: expected a mapping of architecture fields, got {type(raw).__name__}.")
    root = raw
    if "arch" in raw and isinstance(raw["arch"], dict):
        raw = raw["arch"]
        prefix = ["arch"]
    else:
        prefix = []
    return _resolve(raw, root, prefix, path)


def _resolve(node: Any, root: dict, where: list[str], path: Path) -> Any:
    """Resolve whole-value OmegaConf interpolations: ``${.key}`` (relative) and ``${a.b}`` (absolute)."""
    if isinstance(node, dict):
        return {k: _resolve(v, root, where + [k], path) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, where, path) for v in node]
    if isinstance(node, str) and node.startswith("${"):
        m = _INTERP.match(node)
        if not m:
            raise CheckpointImportError(f"{path}: {'.'.join(where)}: unsupported interpolation {node!r}.")
        dots, key = m.groups()
        # A value at a.b.c with "${.x}" refers to a.b.x; each extra dot goes one level up.
        base = where[: len(where) - len(dots)] if dots else []
        target: Any = root
        for part in base + key.split("."):
            if not isinstance(target, dict) or part not in target:
                raise CheckpointImportError(f"{path}: {'.'.join(where)}: interpolation {node!r} points to nothing.")
            target = target[part]
        return _resolve(target, root, base + key.split(".")[:-1], path)
    return node


# ---------------------------------------------------------------------------------------------------
COMMON_FIELDS = (
    "hidden_size",
    "num_heads",
    "expansion",
    "pos_encodings",
    "rope_theta",
    "rms_norm_eps",
    "forward_dtype",
    "halt_max_steps",
    "halt_exploration_prob",
    "no_ACT_continue",
)


def _require(arch: dict[str, Any], model: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in arch:
            raise CheckpointImportError(f"{model} architecture is missing {key!r} (keys: {', '.join(sorted(arch))}).")


def _refuse_trm_dis(arch: dict[str, Any], model: str) -> None:
    """VRN's copy of TRM adds DIS switches (its ``trm_dis``) that TRM and HRM do not have: refused with the reason,
    never imported as plain ACT weights."""
    for key in ("dis_enabled", "use_step_embedding"):
        if arch.get(key):
            raise CheckpointImportError(
                f"{model} architecture sets {key}: true, VRN's trm_dis (config/arch/trm_dis.yaml), which does not run "
                f"in VRN as published ({VRN_COMMIT}): its TRM adds a step embedding it never creates (AttributeError "
                "'step_emb' at the first step), so no checkpoint of it exists. loopformer's DIS is VRN's looper's: "
                "--from vrn, configs/vrn/loop_transformer_dis.yaml."
            )
    loss = arch.get("loss") or {}
    name = str(loss.get("name", "")) if isinstance(loss, dict) else ""
    if name and "ACTLossHead" not in name:
        raise CheckpointImportError(
            f"{model} architecture's loss is {name!r}; {model} trains with its ACT loss head (losses@ACTLossHead), "
            "the one loopformer imports it with."
        )


def arch_from_trm(arch: dict[str, Any]) -> dict[str, Any]:
    """TRM: ``z_L <- z_H + x`` (L_cycles times), ``z_H <- z_L``; H_cycles outer cycles; one shared module."""
    _require(arch, "TRM", ("H_cycles", "L_cycles", "L_layers", "hidden_size", "num_heads", "expansion"))
    _refuse_trm_dis(arch, "TRM")
    out = {k: arch[k] for k in COMMON_FIELDS if k in arch}
    ndim = int(arch.get("puzzle_emb_ndim", 0) or 0)
    out.update(
        states=[
            {"name": "z_H", "layers": int(arch["L_layers"]), "share_weights_with": None},
            {"name": "z_L", "layers": int(arch["L_layers"]), "share_weights_with": "z_H"},
        ],
        stages=[
            {"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": int(arch["L_cycles"])},
            {"target": "z_H", "sources": ["z_L"], "include_inputs": False, "repeat": 1},
        ],
        outer_cycles=int(arch["H_cycles"]),
        no_grad_cycles=int(arch["H_cycles"]) - 1,
        readout_state="z_H",
        halt_state=None,
        puzzle_emb_ndim=ndim,
        puzzle_emb_len=int(arch.get("puzzle_emb_len", 16) or 0) if ndim > 0 else 0,
        mixer="mlp" if arch.get("mlp_t", False) else "attention",
    )
    return _with_loss(out, arch)


def arch_from_hrm(arch: dict[str, Any]) -> dict[str, Any]:
    """HRM (sapientinc/HRM ``hrm_act_v1``, and TRM's ``recursive_reasoning.hrm``): separate H and L modules, only
    the last application of each carries gradient, halting on ``q_halt > q_continue`` with the bootstrapped
    Q-continue target."""
    _require(arch, "HRM", ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads", "expansion"))
    _refuse_trm_dis(arch, "HRM")
    out = {k: arch[k] for k in COMMON_FIELDS if k in arch}
    ndim = int(arch.get("puzzle_emb_ndim", 0) or 0)
    out.update(
        states=[
            {"name": "z_H", "layers": int(arch["H_layers"]), "share_weights_with": None},
            {"name": "z_L", "layers": int(arch["L_layers"]), "share_weights_with": None},
        ],
        stages=[
            {
                "target": "z_L",
                "sources": ["z_H"],
                "include_inputs": True,
                "repeat": int(arch["L_cycles"]),
                "grad_last": 1,
            },
            {"target": "z_H", "sources": ["z_L"], "include_inputs": False, "repeat": 1, "grad_last": 1},
        ],
        outer_cycles=int(arch["H_cycles"]),
        no_grad_cycles=int(arch["H_cycles"]) - 1,
        readout_state="z_H",
        halt_state=None,
        puzzle_emb_ndim=ndim,
        puzzle_emb_len=int(arch.get("puzzle_emb_len", 0) or 0) if ndim > 0 else 0,  # 0: ceil(ndim / hidden)
        mixer="mlp" if arch.get("mlp_t", False) else "attention",
        no_ACT_continue=bool(arch.get("no_ACT_continue", False)),
    )
    return _with_loss(out, arch)


def arch_from_trm_singlez(arch: dict[str, Any]) -> dict[str, Any]:
    """TRM's single-state variant: ``z_L <- L(z_L + x)`` L_cycles times, then ``z_L <- L(z_L)``."""
    out = arch_from_trm(arch)
    out.update(
        states=[{"name": "z_L", "layers": int(arch["L_layers"]), "share_weights_with": None}],
        stages=[
            {"target": "z_L", "sources": [], "include_inputs": True, "repeat": int(arch["L_cycles"])},
            {"target": "z_L", "sources": [], "include_inputs": False, "repeat": 1},
        ],
        readout_state="z_L",
    )
    return out


HIER6_STATES = 6


def arch_from_trm_hier6(arch: dict[str, Any]) -> dict[str, Any]:
    """TRM's six-latent variant: step i writes ``z_Li <- L(z_L1 + ... + z_L6 + z_H + x)``; then
    ``z_H <- L(z_H + z_L1 + ... + z_L6)``; one shared module."""
    out = arch_from_trm(arch)
    cycles = int(arch["L_cycles"])
    if not 1 <= cycles <= HIER6_STATES:
        raise CheckpointImportError(
            f"trm_hier6 writes one of its {HIER6_STATES} z_L states per L cycle: L_cycles must be 1..6, got {cycles}."
        )
    lows = [f"z_L{i}" for i in range(1, HIER6_STATES + 1)]
    out.update(
        states=[{"name": "z_H", "layers": int(arch["L_layers"]), "share_weights_with": None}]
        + [{"name": name, "layers": int(arch["L_layers"]), "share_weights_with": "z_H"} for name in lows],
        stages=[
            {"target": low, "sources": [o for o in lows if o != low] + ["z_H"], "include_inputs": True, "repeat": 1}
            for low in lows[:cycles]
        ]
        + [{"target": "z_H", "sources": lows, "include_inputs": False, "repeat": 1}],
    )
    return out


def arch_from_vrn(arch: dict[str, Any]) -> dict[str, Any]:
    """VRN's looper: states and stages map one to one (``repeat_key`` resolved from the same YAML); ``mlp_type``
    (swiglu, conv_swiglu), ``dropout`` and ``act_enabled`` carry over.

    DIS (``dis_enabled``) and the cross-entropy loss head carry over as well (``dis_max_steps``, ``dis_loss_method``,
    ``dis_step_weighting``, ``mask_penalty_weight``); the token table then has one more row, the mask token.

    With ``no_ACT_continue: false`` VRN bootstraps the Q-continue target from the states *before* the step (the
    step's own Q, recomputed); loopformer bootstraps as HRM does, from the states after it. The forward pass and
    evaluation are the same; only that training target differs."""
    _require(arch, "VRN", ("states", "stages", "outer_cycles", "readout_state", "hidden_size", "num_heads"))
    if arch.get("mlp_type") == "metric_conv":
        raise CheckpointImportError(
            f"VRN option mlp_type='metric_conv' (MetricSwiGLU) does not run in VRN as published ({VRN_COMMIT}): it "
            "calls torchvision's deform_conv2d with a `groups` argument that no torchvision release has (TypeError "
            "at the first forward), so no checkpoint of it exists; loopformer imports mlp_type swiglu and conv_swiglu."
        )
    if arch.get("dis_schedule", "linear") != "linear":
        raise CheckpointImportError(f"VRN dis_schedule={arch['dis_schedule']!r}: loopformer has VRN's linear schedule.")
    loss = arch.get("loss") or {}
    cross_entropy = isinstance(loss, dict) and "CrossEntropyLossHead" in str(loss.get("name", ""))
    stages = []
    for i, st in enumerate(arch["stages"]):
        repeat = st.get("repeat", 1)
        if st.get("repeat_key"):
            if st["repeat_key"] not in arch:
                raise CheckpointImportError(
                    f"VRN stages.{i}: repeat_key {st['repeat_key']!r} is not in the architecture."
                )
            repeat = arch[st["repeat_key"]]
        stages.append(
            {
                "target": st["target"],
                "sources": list(st.get("sources", [])),
                "include_inputs": bool(st.get("include_inputs", False)),
                "repeat": int(repeat),
            }
        )
    out = {k: arch[k] for k in COMMON_FIELDS if k in arch}
    ndim = int(arch.get("puzzle_emb_ndim", 0) or 0)
    out.update(
        states=[
            {"name": s["name"], "layers": int(s.get("layers", 1)), "share_weights_with": s.get("share_weights_with")}
            for s in arch["states"]
        ],
        stages=stages,
        outer_cycles=int(arch["outer_cycles"]),
        no_grad_cycles=arch.get("no_grad_cycles"),
        readout_state=arch["readout_state"],
        halt_state=arch.get("halt_state"),
        puzzle_emb_ndim=ndim,
        puzzle_emb_len=int(arch.get("puzzle_emb_len") or 0) if ndim > 0 else 0,
        act_inference=bool(arch.get("act_inference", False)),
        act_enabled=bool(arch.get("act_enabled", True)),
        mlp_type=arch.get("mlp_type") or "swiglu",
        dropout=float(arch.get("dropout") or 0.0),
        loss_head="cross_entropy" if cross_entropy else "act",
        mask_penalty_weight=float(loss.get("mask_penalty_weight", 0.0) or 0.0) if cross_entropy else 0.0,
        dis_enabled=bool(arch.get("dis_enabled", False)),
        dis_max_steps=int(arch.get("dis_max_steps", 6)),
        dis_loss_method=arch.get("dis_loss_method", "mask"),
        dis_step_weighting=bool(arch.get("dis_step_weighting", False)),
        gradient_checkpointing=bool(arch.get("gradient_checkpointing", False)),
    )
    return _with_loss(out, arch)


def _with_loss(out: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
    loss = arch.get("loss") or {}
    if isinstance(loss, dict) and loss.get("loss_type"):
        out["loss_type"] = loss["loss_type"]
    return out


# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One upstream model: how its architecture maps to ours and where its weights go."""

    label: str
    core: str  # the prefix of the core module's keys once the wrappers are stripped
    arch: Callable[[dict[str, Any]], dict[str, Any]]
    modules: dict[str, str]  # their module -> the state whose module it becomes ({}: VRN's names are ours)
    inits: dict[str, str]  # their initial-state buffer -> our state ({}: VRN's ``<state>_init``)


VARIANTS = {
    "hrm": Variant(
        "HRM", "inner.", arch_from_hrm, {"H_level": "z_H", "L_level": "z_L"}, {"H_init": "z_H", "L_init": "z_L"}
    ),
    "trm": Variant("TRM", "inner.", arch_from_trm, {"L_level": "z_H"}, {"H_init": "z_H", "L_init": "z_L"}),
    "trm_singlez": Variant("TRM trm_singlez", "inner.", arch_from_trm_singlez, {"L_level": "z_L"}, {"L_init": "z_L"}),
    "trm_hier6": Variant(
        "TRM trm_hier6",
        "inner.",
        arch_from_trm_hier6,
        {"L_level": "z_H"},
        {"H_init": "z_H", **{f"L{i}_init": f"z_L{i}" for i in range(1, HIER6_STATES + 1)}},
    ),
    "vrn": Variant("VRN", "core.", arch_from_vrn, {}, {}),
}
# TRM's `name: recursive_reasoning.<module>@<class>` -> the variant; HRM's own repository names `hrm.hrm_act_v1@...`.
TRM_MODULES = {"trm": "trm", "trm_singlez": "trm_singlez", "trm_hier6": "trm_hier6", "hrm": "hrm"}
HRM_MODULES = {"hrm_act_v1": "hrm", "hrm": "hrm"}


def variant_for(source: str, arch: dict[str, Any]) -> Variant:
    """The upstream model that saved the weights: the source, and for TRM the architecture's ``name``."""
    if source not in SOURCES:
        raise CheckpointImportError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}.")
    name = arch.get("name")
    module = str(name).split("@", 1)[0].rsplit(".", 1)[-1] if name else ""
    if source == "vrn":
        if module in TRM_MODULES or module in HRM_MODULES:  # VRN keeps copies of TRM's models beside its looper
            raise CheckpointImportError(
                f"architecture name {name!r} is VRN's copy of a TRM/HRM model, not its looper: import it with --from "
                "trm (--from vrn imports VRN's looper, looper@LoopTransformer)."
            )
        if name and module != "looper":
            raise CheckpointImportError(
                f"architecture name {name!r} is not a model loopformer imports with --from vrn; it imports VRN's "
                "looper (looper@LoopTransformer), and with --from trm VRN's copies of TRM's and HRM's models "
                "(transformers_baseline and other models have no loop to map)."
            )
        return VARIANTS["vrn"]
    if not name:  # an architecture file without a name: the source's main model
        return VARIANTS[source]
    known = TRM_MODULES if source == "trm" else HRM_MODULES
    if module not in known:
        raise CheckpointImportError(
            f"architecture name {name!r} is not a model loopformer imports with --from {source}; it imports "
            f"{', '.join(sorted(known))} (TRM's transformers_baseline and other models have no loop to map)."
        )
    return VARIANTS[known[module]]
