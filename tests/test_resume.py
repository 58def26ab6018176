"""Exact resume: N steps in one run equal N/2 steps, a checkpoint, and N/2 more steps, bit for bit
(weights, optimizer, learning-rate schedule, ACT carry, data order, random streams)."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from loopformer.cli import LoopformerCLI
from loopformer.ema import EMA

ROOT = Path(__file__).resolve().parents[1]


class StopAt(L.Callback):
    """Interrupts training after `step` optimizer steps (the schedule still plans for max_steps)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _ema(cli):
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, EMA)).average


def _fit(
    data_dir, root, max_steps, batch, ckpt_path=None, stop_at=None, ema=False, workers=0, prefetch=2, optimizer="adamw",
    model_file=None, extra=(), callbacks=(),
):  # fmt: skip
    callbacks = list(callbacks)
    if stop_at:
        ckpt = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=stop_at, save_top_k=-1)
        callbacks += [ckpt, StopAt(stop_at)]
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        *(["--model", str(model_file)] if model_file else []),
        f"--data.data_paths={data_dir}",
        f"--data.global_batch_size={batch}",
        f"--data.num_workers={workers}",
        f"--data.prefetch={prefetch}",
        f"--model.optim.optimizer={optimizer}",
        "--model.arch.hidden_size=32",
        "--model.arch.puzzle_emb_ndim=32",
        "--model.train.act.halt_max_steps=3",
        "--model.train.act.halt_exploration_prob=0.5",
        "--model.optim.lr_warmup_steps=2",
        f"--trainer.max_steps={max_steps}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.enable_checkpointing={bool(stop_at)}",
        f"--model.ema.enabled={ema}",
        f"--trainer.default_root_dir={root}",
    ]
    args += list(extra)
    if ckpt_path:
        args.append(f"--ckpt_path={ckpt_path}")
    return LoopformerCLI(args=args, trainer_defaults={"callbacks": callbacks})


@pytest.mark.parametrize(
    "batch,ema,workers,optimizer",
    [(16, False, 0, "adamw"), (32, False, 0, "adamw"), (16, True, 0, "adamw"), (16, False, 2, "adamw"),
     (16, False, 0, "muon"), (16, False, 0, "adam_atan2")],
    ids=["mid-epoch", "epoch-boundary", "mid-epoch-ema", "mid-epoch-loader-workers", "muon", "adam-atan2"],
)  # fmt: skip  # 6 or 3 batches per epoch; with loader workers, the interrupted run must still match one without
def test_resumed_run_matches_an_uninterrupted_one_bitwise(sudoku4_dir, tmp_path, batch, ema, workers, optimizer):
    # The uninterrupted run prepares each batch when asked; the others prefetch (the default): same batches.
    straight = _fit(sudoku4_dir, tmp_path / "straight", 6, batch, ema=ema, prefetch=0, optimizer=optimizer)
    first = _fit(sudoku4_dir, tmp_path / "first", 6, batch, stop_at=3, ema=ema, workers=workers, optimizer=optimizer)
    assert first.trainer.global_step == 3
    ckpt = next((tmp_path / "first" / "ckpt").glob("*.ckpt"))
    resumed = _fit(
        sudoku4_dir, tmp_path / "second", 6, batch, ckpt_path=ckpt, ema=ema, workers=workers, optimizer=optimizer
    )
    assert resumed.trainer.global_step == straight.trainer.global_step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if ema:
        for k, v in _ema(straight).shadow.items():
            assert torch.equal(v, _ema(resumed).shadow[k]), k
    assert torch.equal(straight.model.carry.steps, resumed.model.carry.steps)
    assert torch.equal(straight.model.carry.current_data["inputs"], resumed.model.carry.current_data["inputs"])


def test_dis_run_resumes_bitwise_with_its_optimizer_steps_counted():
    """DIS (VRN's mask method): 2 supervision steps and 2 optimizer steps per batch; 6 steps straight equal 2 (one
    batch), a checkpoint, and 4 more."""
    import tempfile

    model = ROOT / "configs/vrn/loop_transformer_dis.yaml"
    extra = ["--model.arch.puzzle_emb_len=1", "--model.arch.num_heads=2", "--model.train.dis.max_steps=2",
             "--model.runtime.forward_dtype=float32"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        from loopformer.data.generators.sudoku import build_sudoku_dataset

        data = tmp_path / "data"
        build_sudoku_dataset(data, n=4, clues=6, num_train=96, num_test=40, seed=1)
        straight = _fit(data, tmp_path / "straight", 6, 16, prefetch=0, model_file=model, extra=extra)
        assert straight.trainer.global_step == 6
        first = _fit(data, tmp_path / "first", 6, 16, stop_at=2, model_file=model, extra=extra)
        assert first.trainer.global_step == 2
        ckpt = next((tmp_path / "first" / "ckpt").glob("*.ckpt"))
        resumed = _fit(data, tmp_path / "second", 6, 16, ckpt_path=ckpt, model_file=model, extra=extra)
        assert resumed.trainer.global_step == 6
        a, b = straight.model.state_dict(), resumed.model.state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_a_compiled_run_with_deterministic_algorithms_resumes_bitwise(sudoku4_dir, tmp_path):
    """With ``trainer.deterministic`` the compiled step sums the token embedding's gradient without atomics, so a
    compiled run is reproducible and resumes exactly too (without it, two compiled CPU runs drift apart)."""
    extra = ["--model.runtime.compile=true", "--trainer.deterministic=true"]
    straight = _fit(sudoku4_dir, tmp_path / "straight", 6, 16, prefetch=0, extra=extra)
    _fit(sudoku4_dir, tmp_path / "first", 6, 16, stop_at=3, extra=extra)
    ckpt = next((tmp_path / "first" / "ckpt").glob("*.ckpt"))
    resumed = _fit(sudoku4_dir, tmp_path / "second", 6, 16, ckpt_path=ckpt, extra=extra)
    assert resumed.trainer.global_step == straight.trainer.global_step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class RecordLearningRates(L.Callback):
    def __init__(self):
        self.used = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.used[trainer.global_step] = optimizer.param_groups[0]["lr"]
        self.weight_decay = optimizer.param_groups[0]["weight_decay"]


def test_a_run_resumed_with_another_step_limit_follows_the_new_schedule_and_says_so(sudoku4_dir, tmp_path, caplog):
    """The schedule spans the new limit from the first resumed step (the optimizer's restored learning rate was the
    old schedule's for that step), and one line says what changed; resumed with the same limit, nothing is said."""
    from loopformer.training.optimization import warmup_cosine

    caplog.set_level("INFO")
    _fit(sudoku4_dir, tmp_path / "first", 6, 16, stop_at=3)
    ckpt = next((tmp_path / "first" / "ckpt").glob("*.ckpt"))
    record = RecordLearningRates()
    resumed = _fit(sudoku4_dir, tmp_path / "longer", 10, 16, ckpt_path=ckpt, callbacks=[record])
    lr = resumed.model.optim.lr
    assert record.used == pytest.approx({s: lr * warmup_cosine(s + 1, 2, 10.0, 0.1) for s in range(3, 10)})
    old, new = lr * warmup_cosine(4, 2, 6.0, 0.1), lr * warmup_cosine(4, 2, 10.0, 0.1)
    assert (f"learning-rate schedule: over 10 steps, where the checkpoint's run planned 6 steps: from step 3 it "
            f"follows the new one (learning rate {old:.3g} -> {new:.3g}).") in caplog.messages  # fmt: skip
    caplog.clear()
    _fit(sudoku4_dir, tmp_path / "same", 6, 16, ckpt_path=ckpt)
    assert not [m for m in caplog.messages if m.startswith("learning-rate schedule")]


def test_a_run_resumed_with_other_optimizer_settings_takes_them_and_says_so(sudoku4_dir, tmp_path, caplog, capsys):
    """The restored optimizer kept the checkpoint's learning rate and weight decay without a word (the run's config
    said the new ones); another optimizer is one line before the run."""
    from loopformer.cli import main
    from loopformer.training.optimization import warmup_cosine

    caplog.set_level("INFO")
    _fit(sudoku4_dir, tmp_path / "first", 6, 16, stop_at=3)
    ckpt = next((tmp_path / "first" / "ckpt").glob("*.ckpt"))
    record = RecordLearningRates()
    changed = ["--model.optim.lr=1e-4", "--model.optim.weight_decay=0.5"]
    _fit(sudoku4_dir, tmp_path / "lower", 6, 16, ckpt_path=ckpt, callbacks=[record], extra=changed)
    assert record.used == pytest.approx({s: 1e-4 * warmup_cosine(s + 1, 2, 6.0, 0.1) for s in range(3, 6)})
    assert record.weight_decay == 0.5
    assert ("model.optim: lr 0.003 -> 0.0001, weight_decay 0.1 -> 0.5 (the checkpoint's run had the first): from step 3 "
            "the optimizer follows them, its moment estimates carried over.") in caplog.messages  # fmt: skip
    caplog.clear()
    _fit(sudoku4_dir, tmp_path / "same", 6, 16, ckpt_path=ckpt, extra=["--model.optim.lr=3e-3"])  # the same value
    assert not [m for m in caplog.messages if m.startswith(("model.optim", "learning-rate schedule"))]
    args = ["fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
            "--model.arch.hidden_size=32", "--model.arch.puzzle_emb_ndim=32", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path / 'muon'}", f"--ckpt_path={ckpt}",
            "--model.optim.optimizer=muon"]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and capsys.readouterr().err == (
        f"loopformer: error: --ckpt_path {ckpt} was trained with model.optim.optimizer=adamw, and its state (moment "
        f"estimates) cannot continue as muon: resume with adamw, or start from its weights with --model.init_from "
        f"{ckpt} and a fresh optimizer.\n"
    )
    assert not (tmp_path / "muon").exists()


def test_a_run_resumed_with_another_batch_size_says_it_is_no_exact_continuation(sudoku4_dir, tmp_path, capsys):
    _fit(sudoku4_dir, tmp_path / "first", 6, 16, stop_at=3)
    ckpt = next((tmp_path / "first" / "ckpt").glob("*.ckpt"))
    capsys.readouterr()
    resumed = _fit(sudoku4_dir, tmp_path / "larger", 6, 32, ckpt_path=ckpt)
    assert resumed.trainer.global_step == 6
    assert (
        "loopformer: data.global_batch_size 16 -> 32: the resumed run cannot be the exact continuation of the "
        "checkpoint's (the ACT carry restarts; the epoch goes on at the same batch index, counted in batches of the "
        "new size)\n"
    ) in capsys.readouterr().err
    _fit(sudoku4_dir, tmp_path / "same", 6, 16, ckpt_path=ckpt)
    assert "data.global_batch_size" not in capsys.readouterr().err
