"""Where each model setting lives, and the flat names that map into it.

HRM, TRM and VirtualRecursiveNetwork keep the architecture, the training algorithm and the runtime in one flat
``arch`` section, and so did loopformer's ``model.arch`` until the ``train`` and ``runtime`` groups existed (and
``model.run`` held compilation, EMA and evaluation's reports, now ``runtime``, ``ema`` and ``eval``). ``group_settings`` splits such a flat section into ``{arch, train, runtime}`` (the
importer uses it for their files); ``migrate_model`` moves the old keys of a ``model`` section (a config file, a
checkpoint's hyperparameters); ``migrate_flags`` renames old command-line flags. The old names keep working for one
release, with a one-line notice.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, TypeVar

# flat key -> its place under ``model`` (dotted)
MOVED_FROM_ARCH = {
    "halt_max_steps": "train.act.halt_max_steps",
    "halt_exploration_prob": "train.act.halt_exploration_prob",
    "act_enabled": "train.act.act_enabled",
    "act_inference": "train.act.act_inference",
    "no_ACT_continue": "train.act.no_ACT_continue",
    "loss_head": "train.act.loss_head",
    "loss_type": "train.loss_type",
    "mask_penalty_weight": "train.dis.mask_penalty_weight",
    "dis_max_steps": "train.dis.max_steps",
    "dis_loss_method": "train.dis.loss_method",
    "dis_step_weighting": "train.dis.step_weighting",
    "forward_dtype": "runtime.forward_dtype",
    "gradient_checkpointing": "runtime.gradient_checkpointing",
    "attention_backend": "runtime.attention_backend",
}
DIS_SWITCH = "dis_enabled"  # true -> train.algorithm: dis, false -> act
ALGORITHM = "train.algorithm"
MOVED_FROM_RUN = {  # model.run is gone: EMA has its group, evaluation's reports theirs, compilation is runtime
    "compile": "runtime.compile",
    "compile_mode": "runtime.compile_mode",
    "ema": "ema.enabled",
    "ema_rate": "ema.rate",
    "num_pictures": "eval.num_pictures",
    "arc_pass_k": "eval.arc_pass_k",
    "depth_curve": "eval.depth_curve",
}
RELEASE_NOTE = "the old names work until the next release"


def _set(node: dict, dotted: str, value: Any, overwrite: bool = True) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if overwrite or leaf not in node:
        node[leaf] = value


def _algorithm(dis_enabled: Any) -> str:
    return "dis" if dis_enabled in (True, "true", "True", 1) else "act"


def group_settings(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A flat architecture section (theirs, or an old ``model.arch``) -> ``{arch, train, runtime}``: the keys that
    moved go to their group; the rest stay in ``arch``."""
    grouped: dict[str, Any] = {"arch": {}}
    for key, value in flat.items():
        if key in MOVED_FROM_ARCH:
            _set(grouped, MOVED_FROM_ARCH[key], value)
        elif key == DIS_SWITCH:
            _set(grouped, ALGORITHM, _algorithm(value))
        else:
            grouped["arch"][key] = value
    return grouped


def migrate_model(model: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A ``model`` section with keys in their old places -> the same settings in the current groups, and the old
    keys found (``model.arch.halt_max_steps``...). A key given in both places keeps the current one."""
    found: list[str] = []
    arch, run = model.get("arch"), model.get("run")
    moved_arch = isinstance(arch, dict) and any(k in MOVED_FROM_ARCH or k == DIS_SWITCH for k in arch)
    moved_run = isinstance(run, dict) and any(k in MOVED_FROM_RUN for k in run)
    if not (moved_arch or moved_run):
        return model, found
    out = copy.deepcopy(model)
    if moved_arch:
        grouped = group_settings(out.pop("arch"))
        out["arch"] = grouped.pop("arch")
        found += [f"model.arch.{k}" for k in arch if k in MOVED_FROM_ARCH or k == DIS_SWITCH]
        for group, values in grouped.items():
            _merge_missing(out.setdefault(group, {}), values)
    if moved_run:
        for key, place in MOVED_FROM_RUN.items():
            if key in out["run"]:
                _set(out, place, out["run"].pop(key), overwrite=False)
                found.append(f"model.run.{key}")
        if not out["run"]:
            del out["run"]
    return out, found


def _merge_missing(into: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_missing(into[key], value)
        else:
            into.setdefault(key, value)


def new_flag_name(key: str) -> str | None:
    """``model.arch.halt_max_steps`` -> ``model.train.act.halt_max_steps``; None for a key that did not move
    (``model.arch.dis_enabled`` -> ``model.train.algorithm``, whose value changes too: ``migrate_flags``)."""
    for prefix, moved in (("model.arch.", MOVED_FROM_ARCH), ("model.run.", MOVED_FROM_RUN)):
        if key.startswith(prefix) and key[len(prefix) :] in moved:
            return "model." + moved[key[len(prefix) :]]
    if key == f"model.arch.{DIS_SWITCH}":
        return f"model.{ALGORITHM}"
    return None


def migrate_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """Command-line flags with old names renamed (``--key=value`` and ``--key value``); returns (args, the old
    names found)."""
    out: list[str] = []
    found: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        new = new_flag_name(key) if key else None
        if new is None:
            out.append(arg)
            i += 1
            continue
        found.append(f"--{key}")
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, eq = args[i + 1], "="
            i += 1
        if key.endswith(DIS_SWITCH):
            value = _algorithm(value.strip().lower() == "true" if eq else True)
            eq = "="
        out.append(f"--{new}{eq}{value}" if eq else f"--{new}")
        i += 1
    return out, found


def notice(where: str, old_names: list[str]) -> str:
    """The one-line notice for settings found under their old names."""
    moved = ", ".join(f"{name} -> {_new_name(name)}" for name in old_names)
    return f"loopformer: notice: {where} uses old setting names ({moved}); {RELEASE_NOTE}."


def _new_name(name: str) -> str:
    key = name.lstrip("-")
    new = new_flag_name(key) or key
    return ("--" if name.startswith("--") else "") + new


def to_plain(value: Any) -> Any:
    """Namespaces, dataclasses and containers -> JSON-able dicts and lists."""
    if hasattr(value, "as_dict"):
        return to_plain(value.as_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


Config = TypeVar("Config")


def typed(cls: type[Config], value: Any) -> Config:
    """A config group as its own dataclass (a copy; ``load_from_checkpoint`` and jsonargparse hand over plain dicts or
    namespaces)."""
    return copy.deepcopy(value) if isinstance(value, cls) else cls(**to_plain(value))
