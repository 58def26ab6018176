"""LightningModule behaviour: the ACT carry across steps and resumes, the optimizer groups, the summary."""

import dataclasses
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from loopformer.cli import LoopformerCLI
from loopformer.training.config import groups_from_flat
from tests.helpers import tiny_fit_args


def _args(data_dir, tmp_path, max_steps, extra=()):
    return tiny_fit_args(
        data_dir,
        tmp_path,
        "--data.eval_batch_size=40",
        "--model.train.act.halt_max_steps=4",
        "--model.optim.lr_warmup_steps=2",
        f"--trainer.max_steps={max_steps}",
        "--trainer.val_check_interval=1000",
        "--trainer.limit_val_batches=0",
        *extra,
    )


class CarrySpy(L.Callback):
    def __init__(self):
        self.seen = False
        self.first_steps = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.seen:
            self.seen = True
            carry = pl_module.carry
            self.first_steps = None if carry is None else carry.steps.clone()


def test_carry_persists_across_steps_and_is_restored_on_resume(sudoku4_dir, tmp_path):
    every_3 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    cli = LoopformerCLI(args=_args(sudoku4_dir, tmp_path, 3), trainer_defaults={"callbacks": [every_3]})
    steps_after_3 = cli.model.carry.steps.clone()
    assert steps_after_3.max() == 3  # rows kept their puzzle for 3 ACT steps (no halting yet)
    ckpt = next(Path(tmp_path / "ckpt").glob("*.ckpt"))

    spy = CarrySpy()
    LoopformerCLI(
        args=_args(sudoku4_dir, tmp_path / "resumed", 5, [f"--ckpt_path={ckpt}"]), trainer_defaults={"callbacks": [spy]}
    )
    assert spy.first_steps is not None and torch.equal(spy.first_steps, steps_after_3)

    fresh = CarrySpy()
    LoopformerCLI(args=_args(sudoku4_dir, tmp_path / "fresh", 2), trainer_defaults={"callbacks": [fresh]})
    assert fresh.first_steps is None  # a new fit starts with no carry


def test_adamw_for_the_network_and_sign_sgd_for_the_puzzle_table(sudoku4_dir, tmp_path):
    cli = LoopformerCLI(
        args=_args(
            sudoku4_dir,
            tmp_path,
            1,
            ["--model.optim.lr=0.01", "--model.optim.puzzle_emb_lr=0.5", "--model.optim.puzzle_emb_weight_decay=0.25"],
        )
    )
    opt = cli.trainer.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    table = cli.model.net.inner.puzzle_emb.weights
    assert all(p is not table for group in opt.param_groups for p in group["params"])  # not an AdamW parameter
    assert "net.inner.puzzle_emb.weights" in cli.model.state_dict()
    assert cli.trainer.global_step == 1  # one count per step, although two update rules ran
    # all puzzles share identifier 0: after one step from zero, row 0 = -puzzle_emb_lr * multiplier * sign(g),
    # with the schedule's multiplier for the first step of a 2-step warmup (1/2); decay acts on zeros
    assert torch.all(table[0].abs() == 0.5 * 0.5)


def test_sign_sgd_update_gathers_rows_and_decays():
    from loopformer.model.puzzle_embedding import SparsePuzzleEmbedding

    emb = SparsePuzzleEmbedding(4, 3)
    emb.weights.fill_(1.0)
    emb.train()
    out = emb.rows(torch.tensor([2, 0, 2]))
    (out * torch.tensor([[1.0, -1.0, 0.0], [2.0, 2.0, 2.0], [1.0, 3.0, 0.0]])).sum().backward()
    emb.sign_sgd_step(lr=0.1, weight_decay=0.5)
    # row 2: gradients of its two uses summed (2, 2, 0); row 0: (2, 2, 2); rows 1 and 3 untouched
    decayed = 1.0 * (1 - 0.1 * 0.5)
    torch.testing.assert_close(emb.weights[2], torch.tensor([decayed - 0.1, decayed - 0.1, decayed]))
    torch.testing.assert_close(emb.weights[0], torch.full((3,), decayed - 0.1))
    assert torch.equal(emb.weights[1], torch.ones(3)) and torch.equal(emb.weights[3], torch.ones(3))
    assert emb.local is None  # consumed


def test_summary_names_the_schedule_and_effective_depth(sudoku4_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    LoopformerCLI(args=_args(sudoku4_dir, tmp_path, 1))
    text = caplog.text
    assert "z_L <- z_L + (z_H + x)  x3" in text
    assert "effective depth per ACT step: 18 blocks (6 with gradient)" in text


class PoisonWeights(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:  # after two good steps (and their checkpoints)
            with torch.no_grad():
                pl_module.net.inner.lm_head.weight.fill_(float("nan"))


def test_a_non_finite_loss_stops_training_at_that_step_naming_it(sudoku4_dir, tmp_path):
    import pytest

    from loopformer.training.nonfinite import NonFiniteError

    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(NonFiniteError, match=r"step 2: train/loss = nan is not finite"):
        LoopformerCLI(args=_args(sudoku4_dir, tmp_path, 10), trainer_defaults={"callbacks": [every, PoisonWeights()]})
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]  # nothing written after the bad step
    state = torch.load(tmp_path / "ckpt" / "epoch=0-step=2.ckpt", weights_only=True)
    assert torch.isfinite(state["state_dict"]["net.inner.lm_head.weight"]).all()


@pytest.mark.slow  # inductor's evaluation graph (~30 s to compile on 2 cores); tests/test_compiled_step.py checks
# the training graph's numerics with inductor and the evaluation graph's with aot_eager in the default suite
def test_compile_true_gives_the_same_outputs_as_eager(sudoku4_dir):
    from loopformer.module import LoopformerModule

    torch.manual_seed(0)
    groups = groups_from_flat(
        dict(hidden_size=32, num_heads=1, forward_dtype="float32", halt_max_steps=2, puzzle_emb_ndim=32)
    )
    dims = {"vocab_size": 6, "seq_len": 16, "num_puzzle_identifiers": 1}
    eager = LoopformerModule(**groups)
    eager.build(dims)
    compiled = LoopformerModule(**{**groups, "runtime": dataclasses.replace(groups["runtime"], compile=True)})
    compiled.build(dims)
    compiled.load_state_dict(eager.state_dict())  # same keys: compiled in place
    g = torch.Generator().manual_seed(1)
    batch = {
        "inputs": torch.randint(1, 6, (4, 16), generator=g),
        "labels": torch.randint(2, 6, (4, 16), generator=g),
        "puzzle_identifiers": torch.zeros(4, dtype=torch.int32),
    }
    outs = []
    for m in (eager, compiled):
        m.net.eval()
        with torch.no_grad():
            _, out = m.net(m.net.initial_carry(batch), batch)
        outs.append(out)
    torch.testing.assert_close(outs[1]["logits"], outs[0]["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1]["q_halt_logits"], outs[0]["q_halt_logits"], atol=1e-5, rtol=1e-5)


def test_an_unwritable_or_full_checkpoint_directory_fails_at_the_start(sudoku4_dir, tmp_path, monkeypatch):
    from loopformer.checkpoint.format import CheckpointDirError, checkpoint_dir_problem

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory should be")  # root ignores permissions; this still fails
    spy = CarrySpy()
    checkpoints = ModelCheckpoint(dirpath=blocked / "ckpt")
    with pytest.raises(CheckpointDirError, match=r"checkpoint directory .*blocked/ckpt is not writable"):
        LoopformerCLI(args=_args(sudoku4_dir, tmp_path, 5), trainer_defaults={"callbacks": [checkpoints, spy]})
    assert not spy.seen  # before the first training step

    monkeypatch.setattr("shutil.disk_usage", lambda p: type("usage", (), {"free": 1000})())
    problem = checkpoint_dir_problem(str(tmp_path / "ok"), needed_bytes=10_000_000)
    assert "has 0.0 MB free" in problem and "needs about 10.0 MB" in problem


def test_a_table_with_other_rows_restarts_from_the_mean_row(sudoku4_dir, tmp_path):
    from loopformer.module import LoopformerModule

    groups = groups_from_flat(
        dict(hidden_size=32, num_heads=1, forward_dtype="float32", halt_max_steps=2, puzzle_emb_ndim=32)
    )
    old = LoopformerModule(**groups)
    old.build({"vocab_size": 6, "seq_len": 16, "num_puzzle_identifiers": 5})
    with torch.no_grad():
        old.net.inner.puzzle_emb.weights.copy_(torch.arange(5.0)[:, None].expand(5, 32))
    checkpoint = {"state_dict": old.state_dict(), "loopformer": {"dataset_dims": old.dataset_dims}}
    new = LoopformerModule(**groups)
    new.build({"vocab_size": 6, "seq_len": 16, "num_puzzle_identifiers": 3})  # a rebuilt dataset
    with pytest.warns(UserWarning, match="has 5 rows, the data has 3 puzzle identifiers"):
        new.on_load_checkpoint(checkpoint)
    new.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(new.net.inner.puzzle_emb.weights, torch.full((3, 32), 2.0))  # mean of rows 0..4

    new.net.eval()
    batch = {
        "inputs": torch.ones(2, 16, dtype=torch.long),
        "labels": torch.ones(2, 16, dtype=torch.long),
        "puzzle_identifiers": torch.tensor([1, 7]),
    }
    with pytest.warns(UserWarning, match=r"puzzle identifiers \[7\] are not in the 3-row embedding table"):
        new.net(new.net.initial_carry(batch), batch)


def test_checkpoints_are_written_atomically(sudoku4_dir, tmp_path, monkeypatch):
    """Lightning's checkpoints go through the atomic writer (AtomicCheckpointIO, installed by the CLI): a write that
    fails half-way (a full disk) leaves the previous checkpoint intact, no partial file behind, and one line."""
    import errno

    from loopformer.checkpoint import atomic
    from loopformer.checkpoint.lightning_io import AtomicCheckpointIO

    cli = LoopformerCLI(args=_args(sudoku4_dir, tmp_path, 1))
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    path = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(path)
    before = path.read_bytes()

    def disk_full(stage, dest):
        if stage == "written":
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "fault_point", disk_full)
    with pytest.raises(atomic.WriteError, match=f"no space left on device writing {path} "):
        cli.trainer.save_checkpoint(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    expected = ("model.ckpt", "config.yaml", "run.lock")
    leftovers = [p.name for p in tmp_path.iterdir() if p.is_file() and p.name not in expected]
    assert leftovers == []
