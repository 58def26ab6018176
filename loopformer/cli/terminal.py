"""What the terminal shows besides the run's own lines: Lightning's model summary without its FLOPs column (it
counts FLOPs only through an example input, which a looped model with a carry has not: it printed 0), and none
of other packages' tips or deprecation notices a user cannot act on."""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")


class ParameterSummary(ModelSummary):
    """Lightning's summary table (modules, parameters, train/eval mode) without the FLOPs column and total."""

    @staticmethod
    def summarize(
        summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs
    ) -> None:  # noqa: ANN001, E501 (Lightning's signature)
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        log.info("\n" + "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops")))


class _DropLightningTips(logging.Filter):
    """Lightning's advertisements for its cloud products ("💡 Tip: ... try installing litlogger"), and its notice
    that our ParameterSummary replaces its default summary."""

    DROPPED = ("💡 Tip:", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


def quiet_third_party_noise() -> None:
    """Keep the terminal for what concerns the run: drop other packages' tips and their own deprecations."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropLightningTips())
    # Lightning's own use of a torch API that torch deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # The same for its all_gather (which the puzzle table's DDP step uses): once per rank in a DDP run.
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    # An evaluation's metrics are computed over every rank's examples (gathered) before they are logged, the same on
    # every rank: Lightning's advice to sync them (a line per metric in a DDP run) does not apply to them.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val|test|compute)/")
    # Every run has its own directory, so a resumed run's checkpoint directory always differs from the one its
    # checkpoint was written in; Lightning's notice about it (with a site-packages path) says nothing to act on.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # Lightning counts the logging interval in training steps over the whole run, not in an epoch's batches: an epoch
    # shorter than log_every_n_steps (a small dataset) still logs training every log_every_n_steps steps, so its
    # warning that it would not does not apply (tests/test_log_output.py).
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
