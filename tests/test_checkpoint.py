"""The checkpoint format: hyperparameters grouped as arch/train/runtime/optim/run, and checkpoints from before the groups."""

import dataclasses
from pathlib import Path

import pytest
import torch

from loopformer.checkpoint.format import migrate_hyperparameters, read_hyperparameters
from loopformer.cli import LoopformerCLI
from loopformer.module import LoopformerModule
from tests.helpers import tiny_fit_args


def test_flat_hyperparameters_are_grouped_and_grouped_ones_kept():
    flat = {"hidden_size": 32, "stages": [{"target": "z_H"}], "lr": 0.5, "ema": True, "_instantiator": "x"}
    grouped, migrated = migrate_hyperparameters(flat)
    assert migrated
    assert grouped == {
        "arch": {"hidden_size": 32, "stages": [{"target": "z_H"}]},
        "optim": {"lr": 0.5},
        "run": {"ema": True},
        "_instantiator": "x",
    }
    assert migrate_hyperparameters(grouped) == (grouped, False)


def _as_before_train_and_runtime(hp: dict) -> dict:
    """Hyperparameters as checkpoints held them before the train, runtime, ema and eval groups: the training and
    runtime settings in ``arch`` under their flat names, EMA, evaluation and compilation in ``run``."""
    from loopformer.config_groups import MOVED_FROM_ARCH, MOVED_FROM_RUN

    def at(dotted: str):
        node = hp
        for part in dotted.split("."):
            node = node[part]
        return node

    arch = {**hp["arch"], **{old: at(new) for old, new in MOVED_FROM_ARCH.items()}}
    arch["dis_enabled"] = hp["train"]["algorithm"] == "dis"
    run = {old: at(new) for old, new in MOVED_FROM_RUN.items()}
    return {"arch": arch, "optim": hp["optim"], "run": run, "init_from": None, "freeze": None}


def _old_style_checkpoint(sudoku4_dir, tmp_path, flat: bool = True) -> Path:
    """A checkpoint of this version with its hyperparameters rewritten as older versions wrote them: flat (before
    the groups), or ``flat=False``: in arch/optim/run (before the train and runtime groups)."""
    extra = ["--model.train.act.halt_max_steps=3", "--model.optim.lr=0.002", "--trainer.max_steps=2"]
    cli = LoopformerCLI(args=tiny_fit_args(sudoku4_dir, tmp_path, *extra, "--trainer.limit_val_batches=0"))
    path = tmp_path / "new.ckpt"
    cli.trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    hp = _as_before_train_and_runtime(state["hyper_parameters"])
    if flat:
        hp = {**hp["arch"], **hp["optim"], **hp["run"]}
    state["hyper_parameters"] = {**hp, "_instantiator": state["hyper_parameters"]["_instantiator"]}
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    return old


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "before-train-and-runtime"])
def test_a_checkpoint_with_older_hyperparameters_still_loads(sudoku4_dir, tmp_path, caplog, flat):
    old = _old_style_checkpoint(sudoku4_dir, tmp_path, flat)
    with caplog.at_level("INFO"):
        hparams = read_hyperparameters(old)
    assert hparams["arch"]["hidden_size"] == 32 and hparams["optim"]["lr"] == pytest.approx(0.002)
    assert "read into those groups" in caplog.text

    module = LoopformerModule.load_from_checkpoint(old, weights_only=True)
    assert module.arch.hidden_size == 32 and module.train_config.act.halt_max_steps == 3
    assert module.runtime.forward_dtype == "float32" and module.train_config.algorithm == "act"
    assert module.ema_config.enabled is False and module.eval_options.arc_pass_k == [1, 2, 5, 10, 100, 1000]
    assert module.optim.lr == pytest.approx(0.002)
    assert module.net is not None and module.net.config.seq_len == 16

    cli = LoopformerCLI(
        args=[
            "validate",
            f"--data.data_paths={sudoku4_dir}",
            "--data.eval_batch_size=40",
            f"--ckpt_path={old}",
            "--model.train.act.halt_max_steps=2",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.arch.hidden_size == 32  # from the old checkpoint
    assert cli.model.train_config.act.halt_max_steps == 2  # the explicit flag still wins
    assert cli.trainer.callback_metrics["val/steps"].item() == 2


def test_each_rank_resumes_its_own_carry_and_a_changed_world_size_starts_the_others_fresh():
    from loopformer.checkpoint.format import read_rank_state, write_training_state

    states = [{"act_carry": {"rank": r}, "torch_rng": f"rng{r}", "cuda_rng": None} for r in range(2)]
    ckpt: dict = {}
    write_training_state(ckpt, {"vocab_size": 5}, states)
    assert ckpt["loopformer"]["act_carry"] == {"rank": 0}  # rank 0's at the top, as a single process writes it
    assert [read_rank_state(ckpt, r, 2)["act_carry"] for r in range(2)] == [{"rank": 0}, {"rank": 1}]
    assert read_rank_state(ckpt, 0, 1)["act_carry"] == {"rank": 0}  # resumed on one process: rank 0's carry
    assert read_rank_state(ckpt, 2, 4) == {"act_carry": None, "torch_rng": None, "cuda_rng": None}
    single: dict = {}
    write_training_state(single, None, states[:1])
    assert single["loopformer"]["per_rank"] is None
    assert read_rank_state(single, 0, 1)["torch_rng"] == "rng0"
    assert read_rank_state(single, 1, 2)["act_carry"] is None  # kept rank 0's only: never another rank's rows


def test_reading_hyperparameters_maps_the_weights_and_reads_old_format_files_whole(tmp_path, monkeypatch):
    """``--ckpt_path`` reads a checkpoint's hyperparameters before Lightning restores it: the weights (2 GB of puzzle
    table at ARC scale) are mapped, not read twice; a file torch cannot map (the pre-zip format) is read whole."""
    checkpoint = {"state_dict": {"w": torch.ones(3, 2)}, "hyper_parameters": {"arch": {"hidden_size": 48}}}
    torch.save(checkpoint, tmp_path / "zip.ckpt")
    torch.save(checkpoint, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        try:
            result = original(*args, **kwargs)
        except Exception:
            calls.append((kwargs.get("mmap", False), "failed"))
            raise
        calls.append((kwargs.get("mmap", False), "read"))
        return result

    monkeypatch.setattr(torch, "load", spy)
    assert read_hyperparameters(tmp_path / "zip.ckpt") == {"arch": {"hidden_size": 48}}
    assert calls == [(True, "read")]
    calls.clear()
    assert read_hyperparameters(tmp_path / "legacy.ckpt") == {"arch": {"hidden_size": 48}}
    assert calls == [(True, "failed"), (False, "read")]


def test_checkpoints_made_without_a_module_store_what_the_module_would():
    """The importer writes hyperparameters and weights without building a LoopformerModule (checkpoint/ imports
    nothing above it): they must be exactly the module's."""
    from loopformer.checkpoint import format as ckpt_format
    from loopformer.model import ArchConfig
    from loopformer.module import LoopformerModule
    from loopformer.training.config import TrainConfig

    arch = ArchConfig(hidden_size=32, num_heads=2, puzzle_emb_ndim=32)
    train = TrainConfig(algorithm="dis", dis={"max_steps": 3})
    module = LoopformerModule(arch=dataclasses.replace(arch, no_grad_cycles=0), train=train)
    groups = {"arch": dataclasses.replace(arch, no_grad_cycles=0), "train": train}
    assert ckpt_format.module_hyperparameters(groups) == dict(module.hparams)
    module.build({"vocab_size": 11, "seq_len": 16, "num_puzzle_identifiers": 3})
    net_keys = {ckpt_format.NET_PREFIX + k for k in module.net.state_dict()}
    assert net_keys == set(module.state_dict())
