"""Sweep files: reading and checking one (with W&B's own sweep engine, the `sweeps` package), the command line
`wandb agent` runs for a sampled run, and the PATH it runs with."""

from __future__ import annotations

import copy
import os
import platform
import sysconfig
import warnings
from pathlib import Path
from typing import Any

from loopformer.evaluation import HEADLINE_METRIC
from loopformer.files import load_yaml


class SweepFileError(ValueError):
    """A sweep file that W&B would refuse, or an offline sweep's state that cannot be read (the message names the
    file and the problem)."""


DEFAULT_METRIC = {"name": HEADLINE_METRIC, "goal": "maximize"}
"""The metric a sweep file without ``metric`` is ranked by."""


SWEEPS_MISSING = (
    "checking and running sweep files needs W&B's sweep engine, the `sweeps` package, which the plain install leaves "
    "out: pip install -e '.[sweep]' (from a checkout; it pins numpy<2, so numpy 2.x is replaced by 1.26)."
)


def sweeps_engine():  # noqa: ANN201 (the `sweeps` module)
    """W&B's sweep engine (the `sweeps` package), imported without the pydantic-v1 warning it prints on import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Valid config keys have changed in V2", category=UserWarning)
        try:
            import sweeps
        except ImportError:
            raise SweepFileError(SWEEPS_MISSING) from None
    return sweeps


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    config = load_yaml(path, SweepFileError, "a W&B sweep file (method, metric, parameters, command)")
    if not isinstance(config, dict):
        raise SweepFileError(f"{path}: expected a mapping (method, metric, parameters, command), got {config!r}.")
    problems = sweeps_engine().schema_violations_from_proposed_config(config)
    if problems:
        raise SweepFileError(f"{path}: not a valid sweep configuration: " + "; ".join(problems))
    if "command" not in config:
        raise SweepFileError(f"{path}: has no `command`; loopformer sweeps run `loopformer fit ... ${{args}}`.")
    return config


def agent_command(sweep_config: dict, run_config: dict[str, dict]) -> list[str]:
    """The command line `wandb agent` runs for a sampled run (``{param: {"value": v}}``), built as it does."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(copy.deepcopy(sweep_config.get("command")))
    sweep_vars: dict[str, Any] = sweep_utils.create_sweep_command_args({"args": run_config})
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [sweep_config.get("program", "")]
    if platform.system() != "Windows":
        sweep_vars["env"] = ["/usr/bin/env"]
    out: list[str] = []
    for chunk in command:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            out += sweep_vars.get(chunk[2:-1]) or []
        else:
            out.append(chunk)
    return out


def this_installation_first(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the directory of this installation's scripts (``loopformer``, ``wandb``) first on PATH: a trial's
    ``loopformer`` (``${env} loopformer fit ...``) and the agent's ``wandb`` are those of the ``loopformer sweep``
    that starts them, whether or not its environment is activated, never another installation's on PATH. Unchanged
    where this interpreter has no ``loopformer`` script (run from a source tree without installing)."""
    for scripts in (sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user")):
        if scripts and (Path(scripts) / "loopformer").is_file():
            path = env.get("PATH", "")
            if path.split(os.pathsep)[0] == scripts:
                return env
            return {**env, "PATH": os.pathsep.join([scripts, path]) if path else scripts}
    return env
