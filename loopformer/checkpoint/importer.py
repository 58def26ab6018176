"""Import checkpoints saved by the HRM, TRM and VirtualRecursiveNetwork (VRN) pretrain scripts: their state dict
renamed to loopformer's, checked against the network their architecture builds, written as a loopformer checkpoint.
What each upstream model is and how its loop maps to a schedule: ``checkpoint/upstream.py``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import torch

from loopformer.checkpoint import atomic
from loopformer.checkpoint import format as ckpt_format
from loopformer.checkpoint.fitting import misfit
from loopformer.checkpoint.upstream import CheckpointImportError, Variant, load_arch_yaml, variant_for
from loopformer.files import load_torch
from loopformer.model.act import PUZZLE_TABLE_KEY
from loopformer.model.config import ArchConfig
from loopformer.training.config import TrainConfig, groups_from_flat, network_config


def _strip(state_dict: dict[str, torch.Tensor], variant: Variant) -> dict[str, torch.Tensor]:
    """Drop the ``_orig_mod.``/``model.`` wrappers and the core prefix: keys relative to the core module."""
    out = {}
    for key, value in state_dict.items():
        k = key.replace("_orig_mod.", "")
        if k.startswith("model."):
            k = k[len("model.") :]
        if not k.startswith(variant.core):
            continue
        out[k[len(variant.core) :]] = value
    if not out:
        sample = ", ".join(list(state_dict)[:3])
        raise CheckpointImportError(
            f"no {variant.label} weights found: expected keys like '_orig_mod.model.{variant.core}...', got {sample} ..."
        )
    return out


_LEAF_RENAMES = (
    (re.compile(r"^embed_tokens\.embedding_weight$"), "embed_tokens.weight"),
    (re.compile(r"^embed_pos\.embedding_weight$"), "embed_pos.weight"),
    (re.compile(r"^puzzle_emb\.weights$"), "puzzle_emb.weights"),
    (re.compile(r"^(lm_head|q_head)\.(weight|bias)$"), r"\1.\2"),
    (re.compile(r"^step_emb\.weight$"), "step_emb.weight"),  # VRN's DIS step embedding
)
_SKIP = re.compile(r"(^|\.)(local_weights|local_ids|cos_cached|sin_cached)$")


def _our_key(key: str, variant: Variant) -> Optional[str]:
    for pattern, repl in _LEAF_RENAMES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    if not variant.modules:  # VRN: state_modules.<state>... and <state>_init are already our names
        if key.startswith("state_modules."):
            return key
        return f"init_{key[: -len('_init')]}" if key.endswith("_init") else None
    module, _, rest = key.partition(".")
    if module in variant.modules and rest:
        return f"state_modules.{variant.modules[module]}.{rest}"
    return f"init_{variant.inits[key]}" if key in variant.inits else None


def convert_state_dict(state_dict: dict[str, torch.Tensor], variant: Variant) -> dict:
    """Their state dict -> the state dict of ``LoopTransformer`` (keys under ``inner.``)."""
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in _strip(state_dict, variant).items():
        if _SKIP.search(key):
            continue
        new = _our_key(key, variant)
        if new is None:
            unknown.append(key)
            continue
        ours["inner." + new] = value
    if unknown:
        raise CheckpointImportError(
            f"{variant.label} checkpoint has keys loopformer cannot place: {', '.join(unknown[:8])}."
        )
    return ours


def _model_groups(flat: dict[str, Any], arch_yaml: str | Path) -> dict[str, Any]:
    """Their flat settings as our typed groups ``{arch, train, runtime}``."""
    try:
        return groups_from_flat(flat)
    except ValueError as e:
        raise CheckpointImportError(f"{arch_yaml}: the architecture cannot be built ({e})") from None


def dims_from_state_dict(
    sd: dict[str, torch.Tensor], arch: ArchConfig, train: TrainConfig, seq_len: Optional[int]
) -> dict:
    vocab = sd["inner.embed_tokens.weight"].shape[0] - (1 if train.supervision_steps else 0)  # DIS: + the mask token
    puzzles = sd[PUZZLE_TABLE_KEY].shape[0] if PUZZLE_TABLE_KEY in sd else 1
    if seq_len is None and "inner.embed_pos.weight" in sd:
        prefix = arch.prefix_len
        seq_len = sd["inner.embed_pos.weight"].shape[0] - prefix
    if seq_len is None:
        raise CheckpointImportError(
            "the sequence length is not stored in a RoPE checkpoint: pass --seq-len (81 for Sudoku, 900 for "
            "ARC and 30x30 mazes)."
        )
    return {"vocab_size": int(vocab), "seq_len": int(seq_len), "num_puzzle_identifiers": int(puzzles)}


def import_checkpoint(
    source: str, src: str | Path, arch_yaml: str | Path, dest: str | Path, seq_len: Optional[int] = None
) -> dict:
    """Convert ``src`` into a loopformer checkpoint at ``dest``; returns the module's hyperparameters
    (``{arch, train, runtime, optim, run}``)."""
    from loopformer.model import LoopTransformer

    arch_raw = load_arch_yaml(arch_yaml)
    try:
        variant = variant_for(source, arch_raw)
        arch = variant.arch(arch_raw)
    except CheckpointImportError as e:
        raise CheckpointImportError(f"{arch_yaml}: {e}") from None
    loaded = load_torch(src, CheckpointImportError, f"a state dict saved by the {variant.label} pretrain script")
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise CheckpointImportError(
            f"{src}: a PyTorch file holding a {type(loaded).__name__}; expected the state dict (a mapping of parameter "
            f"names to tensors) that the {variant.label} pretrain script saves."
        )
    groups = _model_groups(arch, arch_yaml)
    sd = convert_state_dict(loaded, variant)
    dims = dims_from_state_dict(sd, groups["arch"], groups["train"], seq_len)
    net = LoopTransformer(network_config(groups["arch"], groups["train"], groups["runtime"], dims))
    expected = net.state_dict()
    details = misfit(sd, expected, limit=6)
    if details:
        raise CheckpointImportError(f"{src}: the weights do not fit the architecture in {arch_yaml}: {details}.")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()})

    state_dict = {ckpt_format.NET_PREFIX + k: v for k, v in net.state_dict().items()}
    hparams = ckpt_format.module_hyperparameters(groups)
    checkpoint = ckpt_format.imported_checkpoint(state_dict, hparams, dims, imported_from=f"{source}:{Path(src).name}")
    atomic.save_torch(checkpoint, dest)
    return checkpoint["hyper_parameters"]
