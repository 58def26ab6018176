"""The default logger: Weights & Biases, offline when nothing says where to send the run."""

from __future__ import annotations

import netrc
import os
import sys
from typing import Optional
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info

from loopformer.files import is_a_terminal

WANDB_DEFAULT_BASE_URL = "https://api.wandb.ai"


def wandb_credentials_found() -> bool:
    """An API key in the environment, or a login saved in ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_BASE_URL)).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def in_wandb_sweep() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger with ``offline=None`` meaning: online when logged in or inside a sweep,
    otherwise offline (runs land in ./wandb, to ``wandb sync`` later) with one line saying so when the run starts
    (a run stopped by its checks before does not print it), never a prompt. Only rank 0 creates the run, as in
    Lightning's logger."""

    def __init__(self, project: str = "loopformer", offline: Optional[bool] = None, **kwargs) -> None:
        self._offline_notice = None
        if offline is None:
            offline = not (in_wandb_sweep() or wandb_credentials_found()) and os.environ.get("WANDB_MODE") != "disabled"
            if offline:
                where = os.path.join(kwargs.get("save_dir") or ".", "wandb")
                self._offline_notice = (
                    f"W&B: no login or API key found and not in a sweep, so this run logs offline to {where} "
                    "(`wandb login` to log online, `wandb sync` to upload this run later)."
                )
        # In a log file wandb's own lines end in ANSI colour codes (its service process writes them whatever the
        # output is): it stays silent there, and this logger says in one plain line where the run is.
        self._says_where = (
            kwargs.get("settings") is None and "WANDB_SILENT" not in os.environ and not is_a_terminal(sys.stderr)
        )
        if self._says_where:
            import wandb

            kwargs["settings"] = wandb.Settings(silent=True)
        super().__init__(project=project, offline=offline, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]  # wandb warns that the setting is gone whenever it is passed

    @property
    def experiment(self):  # noqa: ANN201 (Lightning's: a wandb Run, or a dummy on ranks other than 0)
        first = self._experiment is None
        if first and self._offline_notice:
            rank_zero_info(self._offline_notice)
        if first and self._save_dir:
            # Made here, not earlier: a run that fails before it starts leaves no directory behind. Before wandb
            # starts: it warns "git root runs does not exist" otherwise.
            os.makedirs(self._save_dir, exist_ok=True)
        run = _LightningWandbLogger.experiment.fget(self)
        if first and self._says_where and getattr(run, "dir", None):
            rank_zero_info(where_the_run_is(run))
        return run


def where_the_run_is(run) -> str:  # noqa: ANN001 (a wandb Run)
    """One line saying where a started W&B run's data goes."""
    if getattr(run.settings, "mode", None) == "disabled":
        return "W&B: disabled (WANDB_MODE=disabled): this run sends nothing to W&B"
    if getattr(run.settings, "_offline", False):
        where = os.path.dirname(run.dir.rstrip(os.sep))
        return f"W&B: offline run {run.id} in {where} (`wandb sync {where}` uploads it)"
    return f"W&B: run {run.id} at {run.url}"
