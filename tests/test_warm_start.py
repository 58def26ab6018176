"""--model.init_from (weights only, fresh optimizer and step) and --model.freeze (patterns kept fixed)."""

import pytest
import torch

from loopformer.cli import LoopformerCLI, main
from tests.helpers import tiny_fit_args


def _fit(data_dir, root, *extra):
    return LoopformerCLI(
        args=tiny_fit_args(data_dir, root, "--trainer.max_steps=2", "--trainer.limit_val_batches=0", *extra)
    )


def _weights(cli):
    return {k: v.clone() for k, v in cli.model.net.state_dict().items()}


@pytest.fixture(scope="module")
def trained(sudoku4_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    cli = _fit(sudoku4_dir, root)
    cli.trainer.save_checkpoint(root / "trained.ckpt")
    return root / "trained.ckpt", _weights(cli)


def test_init_from_starts_with_the_checkpoints_weights_and_a_fresh_step(sudoku4_dir, tmp_path, trained):
    ckpt, weights = trained
    # lr 0 (and so no weight decay) and a frozen puzzle table: the weights after fit are those it started from
    cli = _fit(
        sudoku4_dir, tmp_path, f"--model.init_from={ckpt}", "--model.optim.lr=0", "--model.optim.puzzle_emb_lr=0"
    )
    assert cli.trainer.global_step == 2  # counted from 0, not from the checkpoint's step
    after = _weights(cli)
    for k, v in weights.items():
        assert torch.equal(after[k], v), k
    fresh = _fit(sudoku4_dir, tmp_path / "fresh", "--model.optim.lr=0", "--model.optim.puzzle_emb_lr=0")
    assert not torch.equal(_weights(fresh)["inner.lm_head.weight"], weights["inner.lm_head.weight"])


def test_freeze_keeps_the_matched_parameters_and_the_puzzle_table_fixed(sudoku4_dir, tmp_path, trained):
    ckpt, weights = trained
    patterns = "[inner.embed_tokens.*, inner.state_modules.*.mlp.*, inner.puzzle_emb.weights]"
    cli = _fit(
        sudoku4_dir, tmp_path, f"--model.init_from={ckpt}", f"--model.freeze={patterns}", "--model.optim.lr=1e-2"
    )
    after = _weights(cli)
    frozen = [k for k in weights if k.startswith(("inner.embed_tokens.", "inner.puzzle_emb.")) or ".mlp." in k]
    assert len(frozen) >= 3
    for k in frozen:
        assert torch.equal(after[k], weights[k]), k
    assert not torch.equal(after["inner.lm_head.weight"], weights["inner.lm_head.weight"])
    assert not torch.equal(
        after["inner.state_modules.z_H.layers.0.self_attn.qkv_proj.weight"],
        weights["inner.state_modules.z_H.layers.0.self_attn.qkv_proj.weight"],
    )


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--model.freeze=[inner.nothing.*]", "model.freeze pattern 'inner.nothing.*' matches no parameter"),
        ('--model.freeze=["*"]', "freezes every parameter and the puzzle embeddings: nothing trains"),
        ("--model.init_from=MISSING", "MISSING"),
    ],
)
def test_bad_warm_start_settings_are_one_line_and_exit_2(sudoku4_dir, tmp_path, capsys, flag, message):
    with pytest.raises(SystemExit) as exit_info:
        main(tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", flag))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.iterdir())  # before the run: its directory (config.yaml, run.lock) was made first


def test_init_from_weights_that_do_not_fit_name_the_mismatch(sudoku4_dir, tmp_path, trained, capsys):
    ckpt, _ = trained
    with pytest.raises(SystemExit) as exit_info:
        main(tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", f"--model.init_from={ckpt}",
                           "--model.arch.hidden_size=64", "--model.arch.puzzle_emb_ndim=64"))  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its weights do not fit this model.arch" in err[0] and "is (32,), here (64,)" in err[0]
    assert not list(tmp_path.iterdir())  # before the run
