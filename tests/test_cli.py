"""The `loopformer` command: configs, list-item overrides as wandb writes them, errors, fast_dev_run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loopformer.cli import LoopformerCLI, main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _cli(args, tmp_path):
    return LoopformerCLI(args=args + ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger=false"], run=False)


def test_list_item_overrides_reach_the_model(sudoku4_dir, tmp_path):
    cli = _cli(
        [
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_paths={sudoku4_dir}",
            "--model.arch.stages.0.repeat=3",
            "--model.arch.stages.1.include_inputs=False",
            "--model.arch.stages.2.repeat",
            "4",
            "--model.arch.stages.0.sources.0=z_M",
            "--model.optim.lr=1e-4",
        ],
        tmp_path,
    )
    stages = cli.model.hparams.arch["stages"]
    assert [s["repeat"] for s in stages] == [3, 2, 4]
    assert [s["include_inputs"] for s in stages] == [True, False, False]
    assert stages[0]["sources"] == ["z_M"]
    assert cli.model.optim.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--model.arch.stages.3.repeat=2", "index 3 is out of range: model.arch.stages has 3 item(s) (items 0-2)"),
        ("--model.arch.stages.0.repet=2", "model.arch.stages.0 has no field 'repet'; its fields are: target, sources"),
        ("--model.optim.lr.0=2", "model.optim.lr is float, not a list"),
        ("--model.arch.stages.0.repeat=-1", "model.arch.stages.0: repeat must be an integer >= 0"),
        ("--model.arch.stages.1.target=z_Q", "model.arch.stages.1: target 'z_Q' is not a state"),
        (
            "--model.stages.0.repeat=2",
            "no option 'model.stages' to index into; did you mean --model.arch.stages.0.repeat? `loopformer",
        ),
        ("--model.arch.stags.2.sources.0=z_L", "did you mean --model.arch.stages.2.sources.0 or --model.arch.states"),
        ("--nothing.like.it.0=1", "no option 'nothing.like.it' to index into. `loopformer"),
    ],
)
def test_bad_overrides_exit_with_a_clear_message(flag, message, sudoku4_dir, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}", flag])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_print_config_shows_the_overridden_list(capsys, sudoku4_dir):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/quickstart.yaml"),
                "--model.arch.stages.0.repeat=5",
                "--print_config",
            ]
        )
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "repeat: 5" in out and "outer_cycles: 3" in out


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                f"--data.data_paths={tmp_path / 'nope'}",
                "--trainer.accelerator=cpu",
                "--trainer.fast_dev_run=true",
            ]
        )
    assert e.value.code == 2
    assert "nope/train: dataset split not found" in capsys.readouterr().err


def test_a_split_given_as_the_dataset_names_the_dataset(sudoku4_dir, tmp_path, capsys):
    split = Path(sudoku4_dir) / "train"
    hint = f" {split} is the train split of the dataset {sudoku4_dir}: give that directory.\n"
    with pytest.raises(SystemExit) as e:
        main(["fit", f"--data.data_paths={split}", "--trainer.accelerator=cpu", "--trainer.fast_dev_run=true"])
    ending = "data.data_paths must hold train/ and test/ (or set data.generate to build a generated dataset there)."
    assert e.value.code == 2 and capsys.readouterr().err.endswith(ending + hint)
    with pytest.raises(SystemExit) as e:  # a config file's data.generate does not apply to a typed path
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/quickstart.yaml"),
                f"--data.data_paths={split}",
                "--trainer.fast_dev_run=true",
            ]
        )
    assert e.value.code == 2 and capsys.readouterr().err.endswith(hint)


@pytest.mark.parametrize("config", ["loop_transformer-3stage.yaml", "trm.yaml", "hrm.yaml"])
def test_a_recipe_without_its_dataset_says_how_to_build_it_as_the_readme_does(config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a clone without data/
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(ROOT / "configs" / config), "--trainer.logger=false"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    command = re.search(r"`(loopformer data build [^`]*)` builds it as the HRM/TRM recipes have it\.$", err.strip())
    assert command, err
    readme = " ".join((ROOT / "README.md").read_text().replace("\\\n", " ").split())
    assert " ".join(command.group(1).split()) in readme  # the README's own command for it


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_runs_fast_dev_run(config, sudoku4_dir, tmp_path):
    main(
        [
            "fit",
            "--config",
            str(config),
            f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=8",
            "--data.eval_batch_size=8",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.fast_dev_run=true",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )


def test_fit_logs_stable_val_metrics_once_per_evaluation(sudoku4_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    args = [
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        f"--data.data_paths={sudoku4_dir}",
        "--data.global_batch_size=16",
        "--data.eval_batch_size=16",
        "--model.arch.hidden_size=32",
        "--model.arch.puzzle_emb_ndim=32",
        "--model.train.act.halt_max_steps=3",
        "--trainer.max_steps=6",
        "--trainer.val_check_interval=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=true",
    ]
    cli = LoopformerCLI(args=["fit"] + args + [f"--trainer.default_root_dir={tmp_path}"])
    import csv

    metrics_file = next(Path(tmp_path).rglob("metrics.csv"))
    rows = list(csv.DictReader(metrics_file.open()))
    val_rows = [r for r in rows if r.get("val/exact_accuracy")]
    assert len(val_rows) == 2  # two evaluations, one report each
    for name in ("val/exact_accuracy", "val/accuracy", "val/q_halt_accuracy", "val/steps", "val/lm_loss"):
        assert name in rows[0]
    assert all(float(r["val/count"]) == 40 for r in val_rows)  # every test puzzle, no padding rows
    assert all(float(r["val/steps"]) == 3 for r in val_rows)
    # and one line per evaluation in the terminal, with the same numbers
    for step, row in zip((3, 6), val_rows, strict=True):
        line = f"val at step {step} (40 puzzles): exact_accuracy {float(row['val/exact_accuracy']):.4g} | accuracy"
        assert line in caplog.text
    assert caplog.text.count(" puzzles): exact_accuracy ") == 2
    assert cli.trainer.global_step == 6
    pictures = sorted(p.name for p in Path(tmp_path).rglob("predictions/*.png"))
    assert pictures == ["step0000003.png", "step0000006.png"]  # predictions next to labels, each evaluation

    ckpt = next(Path(tmp_path).rglob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 6
    assert "sampler" in state["datamodule_state_dict"] if "datamodule_state_dict" in state else True
    from loopformer.module import LoopformerModule

    restored = LoopformerModule.load_from_checkpoint(ckpt, weights_only=True)
    # Saved right after an evaluation, which starts training over with a fresh carry: none is stored.
    assert state["loopformer"]["act_carry"] is None and restored.carry is None
    assert restored.dataset_dims == {"vocab_size": 6, "seq_len": 16, "num_puzzle_identifiers": 1}


def test_runs_sharing_a_save_dir_keep_their_config_pictures_and_checkpoints_apart(sudoku4_dir, tmp_path, caplog):
    """A sweep's runs share the W&B logger's save_dir: each run's files go to <save_dir>/loopformer/<run id>/."""
    args = [
        "fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
        "--data.global_batch_size=16", "--data.eval_batch_size=16", "--model.arch.hidden_size=32",
        "--model.arch.puzzle_emb_ndim=32", "--model.train.act.halt_max_steps=2", "--trainer.max_steps=2",
        "--trainer.val_check_interval=2", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]  # fmt: skip
    caplog.set_level("INFO")
    import wandb

    for lr in ("1e-3", "2e-3"):
        LoopformerCLI(args=[*args, f"--model.optim.lr={lr}"]).trainer.logger.experiment.finish()  # as its process would
        wandb.teardown()  # and forget this process's W&B settings, as a new process starts without them
    runs = sorted(p for p in (tmp_path / "loopformer").iterdir())
    assert len(runs) == 2 and not (tmp_path / "config.yaml").exists() and not (tmp_path / "predictions").exists()
    by_time = sorted(runs, key=lambda r: (r / "config.yaml").stat().st_mtime)
    for run, lr in zip(by_time, ("1e-3", "2e-3"), strict=True):
        assert [p.name for p in (run / "predictions").iterdir()] == ["step0000002.png"]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
        assert f"lr: {float(lr)}" in (run / "config.yaml").read_text()
    assert all(f"run directory: {run} (checkpoints/, predictions/, config.yaml)" in caplog.text for run in runs)

    # validating a checkpoint reports (and draws) at the checkpoint's step, not the new trainer's 0
    caplog.clear()
    checked = LoopformerCLI(
        args=[
            "validate",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_paths={sudoku4_dir}",
            "--data.eval_batch_size=16",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--ckpt_path={runs[0] / 'checkpoints' / 'epoch=0-step=2.ckpt'}",
        ]  # fmt: skip
    )
    checked.trainer.logger.experiment.finish()
    wandb.teardown()
    assert "val at step 2 (40 puzzles)" in caplog.text
    # into a new subdirectory of the checkpoint's run, not a third run directory
    assert len(list(tmp_path.glob("loopformer/*/predictions/step0000002.png"))) == 2
    assert len(list(runs[0].glob("validate-*/predictions/step0000002.png"))) == 1


def test_with_a_progress_bar_each_evaluation_line_is_written_through_it(sudoku4_dir, tmp_path, capsys):
    args = [
        "fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
        "--data.global_batch_size=16", "--data.eval_batch_size=16", "--model.arch.hidden_size=32",
        "--model.arch.puzzle_emb_ndim=32", "--model.train.act.halt_max_steps=2", "--trainer.max_steps=2",
        "--trainer.val_check_interval=2", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip
    LoopformerCLI(args=args)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "val at step" in line]
    assert len(lines) == 1 and lines[0].endswith("| steps 2"), out[-2000:]
    assert "val at step 2 (40 puzzles): exact_accuracy " in lines[0]


def test_imported_checkpoint_validates_with_a_larger_halt_max_steps(sudoku4_dir, tmp_path, capsys, caplog, monkeypatch):
    """`import-checkpoint` output is accepted by `loopformer validate --ckpt_path`, and an explicit
    --model flag (test-time recursion) wins over the checkpoint's hyperparameters."""
    caplog.set_level("INFO")
    from tests.model.test_reference_equivalence import HEADS, _random_weights

    C = 64
    gen = torch.Generator().manual_seed(0)
    sd = _random_weights("_orig_mod.model.inner", {"L_level": 1}, ["H_init", "L_init"], "rope", 0, gen, ndim=0)
    sd["_orig_mod.model.inner.embed_tokens.embedding_weight"] = torch.randn(6, C) * C**-0.5  # vocab of the data
    sd["_orig_mod.model.inner.lm_head.weight"] = torch.randn(6, C) * C**-0.5
    torch.save(sd, tmp_path / "trm.pt")
    (tmp_path / "trm.yaml").write_text(
        f"H_cycles: 2\nL_cycles: 2\nL_layers: 1\nhidden_size: {C}\nnum_heads: {HEADS}\nexpansion: 4\n"
        "pos_encodings: rope\npuzzle_emb_ndim: 0\nhalt_max_steps: 2\nhalt_exploration_prob: 0.1\n"
        "forward_dtype: float32\n"
    )
    command = ["import-checkpoint", "--from", "trm", str(tmp_path / "trm.pt"), "--arch", str(tmp_path / "trm.yaml")]
    command.append(str(tmp_path / "out.ckpt"))
    with pytest.raises(SystemExit) as e:
        main(command)
    assert e.value.code == 2 and "--seq-len" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()
    with pytest.raises(SystemExit) as e:
        main(command + ["--seq-len", "16"])
    assert e.value.code == 0 and (tmp_path / "out.ckpt").is_file()
    out = capsys.readouterr().out
    # an existing DEST is replaced only with --overwrite (it was written over without a word)
    written = (tmp_path / "out.ckpt").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(command + ["--seq-len", "32"])
    assert e.value.code == 2 and capsys.readouterr().err == (
        f"loopformer import-checkpoint: error: {tmp_path / 'out.ckpt'} exists; expected the path of a checkpoint "
        "file to write (pass --overwrite to replace it).\n"
    )
    assert (tmp_path / "out.ckpt").read_bytes() == written
    with pytest.raises(SystemExit) as e:
        main(command + ["--seq-len", "16", "--overwrite"])
    assert e.value.code == 0 and capsys.readouterr().out == out
    assert f"wrote {tmp_path / 'out.ckpt'}: TRM weights, schedule z_L<-[z_H,x]x2  z_H<-[z_L]x1, 2 cycles" in out
    assert "note:" not in out  # the DIS note is for VRN's DIS models only
    cli = LoopformerCLI(
        args=[
            "validate",
            f"--data.data_paths={sudoku4_dir}",
            "--data.eval_batch_size=20",
            f"--ckpt_path={tmp_path / 'out.ckpt'}",
            "--model.train.act.halt_max_steps=5",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.arch.hidden_size == C  # from the checkpoint, not the CLI defaults
    assert cli.model.train_config.act.halt_max_steps == 5  # the explicit flag wins
    assert cli.trainer.callback_metrics["val/steps"].item() == 5
    assert cli.trainer.callback_metrics["val/count"].item() == 40
    assert f"validate: outputs in {tmp_path}" in caplog.messages  # no run of its own to name them
    # without --data.data_paths it reads the default data, and says so (it was the missing-split error alone)
    monkeypatch.chdir(tmp_path)  # where the default data is not
    with pytest.raises(SystemExit) as e:
        main(["validate", f"--ckpt_path={tmp_path / 'out.ckpt'}", "--trainer.logger=false"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith(
        f"loopformer: --ckpt_path {tmp_path / 'out.ckpt'} carries no data settings (an imported checkpoint, or an "
        "older one away from its run): validate reads data.data_paths data/sudoku-extreme-1k-aug-1000, the default; "
        "--data.data_paths DIR gives its data\nloopformer: error: data/sudoku-extreme-1k-aug-1000/train: dataset "
        "split not found;"
    )

    # fit cannot resume from weights alone: one line naming --model.init_from (it was Lightning's KeyError)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["fit", f"--data.data_paths={sudoku4_dir}", f"--ckpt_path={tmp_path / 'out.ckpt'}",
              "--trainer.accelerator=cpu", "--trainer.logger=false",
              f"--trainer.default_root_dir={tmp_path / 'fit'}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert "holds weights only (an imported checkpoint, or one saved with save_weights_only)" in err[0]
    assert f"pass --model.init_from {tmp_path / 'out.ckpt'} instead" in err[0]


def test_predict_returns_every_test_example_once(sudoku4_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    cli = LoopformerCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=16",
            "--data.eval_batch_size=16",
            "--model.arch.hidden_size=32",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.train.act.halt_max_steps=2",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    pred = LoopformerCLI(
        args=[
            "predict",
            f"--data.data_paths={sudoku4_dir}",
            "--data.eval_batch_size=16",
            f"--ckpt_path={ckpt}",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    batches = pred.trainer.predict_loop.predictions
    index = torch.cat([b["example_index"] for b in batches])
    assert sorted(index.tolist()) == list(range(40))  # padding rows dropped
    preds = torch.cat([b["preds"] for b in batches])
    assert preds.shape == (40, 16) and int(preds.min()) >= 0 and int(preds.max()) < 6
    assert torch.all(torch.cat([b["steps"] for b in batches]) == 2)
    # and on disk, for a command-line user: every example once, in dataset order, with the inputs and labels
    import numpy as np

    saved = np.load(tmp_path / "predictions.npz")
    assert saved["example_index"].tolist() == list(range(40))
    order = index.argsort()
    assert np.array_equal(saved["preds"], preds[order].numpy())
    assert np.array_equal(saved["inputs"], torch.cat([b["inputs"] for b in batches])[order].numpy())
    assert saved["labels"].shape == (40, 16) and saved["steps"].tolist() == [2] * 40
    # the token encoding travels with the file: 4x4 Sudoku is 0 padding, 1 blank, 2..5 the digits 1..4
    assert saved["vocab"].tolist() == ["<pad>", ".", "1", "2", "3", "4"]
    assert not saved["vocab"].dtype.hasobject  # readable with np.load's default allow_pickle=False
    assert (
        "predictions for 40 examples (exact_accuracy " in caplog.text
        and str(tmp_path / "predictions.npz") in caplog.text
    )


def test_non_finite_training_exits_non_zero_with_the_message(monkeypatch, capsys):
    from loopformer.cli import command as cli_module
    from loopformer.training.nonfinite import NonFiniteError

    def explode(args):
        raise NonFiniteError("training stopped at step 7: train/loss = nan is not finite.")

    monkeypatch.setattr(cli_module, "LoopformerCLI", explode)
    with pytest.raises(SystemExit) as e:
        main(["fit"])
    assert e.value.code == 1
    assert "step 7: train/loss = nan" in capsys.readouterr().err


@pytest.mark.parametrize("trainer_config", sorted((ROOT / "configs/trainer").glob("*.yaml")), ids=lambda p: p.name)
def test_trainer_configs_compose_with_the_recipe(trainer_config, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/loop_transformer-3stage.yaml"),
                "--config",
                str(trainer_config),
                "--print_config",
            ]
        )
    assert e.value.code == 0
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load(trainer_config.read_text())["trainer"]
    for key, value in expected.items():
        if isinstance(value, dict):  # a class: its path and the arguments the file gives
            assert printed["trainer"][key]["class_path"] == value["class_path"], key
            for arg, arg_value in value.get("init_args", {}).items():
                assert str(printed["trainer"][key]["init_args"][arg]) == str(arg_value), (key, arg)
        else:
            assert printed["trainer"][key] == value, key
    assert printed["model"]["ema"]["enabled"] is True and printed["data"]["global_batch_size"] == 768


def test_the_recipes_keep_the_best_and_the_last_checkpoint(sudoku4_dir, tmp_path):
    import json

    import yaml

    callbacks = yaml.safe_load((ROOT / "configs/loop_transformer-3stage.yaml").read_text())["trainer"]["callbacks"]
    assert callbacks == yaml.safe_load((ROOT / "configs/trm.yaml").read_text())["trainer"]["callbacks"]
    for cb in callbacks:
        cb["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    LoopformerCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=16",
            "--model.arch.hidden_size=32",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.train.act.halt_max_steps=2",
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            f"--trainer.callbacks={json.dumps(callbacks)}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    names = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert "last.ckpt" in names and any(n.startswith("best-step=") for n in names), names
    best = next(p for p in (tmp_path / "ckpt").glob("best-step=*.ckpt"))
    state = torch.load(best, weights_only=True)
    scores = [cb for key, cb in state["callbacks"].items() if "ModelCheckpoint" in key][0]
    assert scores["monitor"] == "val/exact_accuracy" and scores["best_model_path"].endswith(best.name)


def test_the_installed_command_prints_help_and_config_without_warnings(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "loopformer.cli"]
    top = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert top.returncode == 0, top.stderr
    help_text = " ".join(top.stdout.split())  # argparse wraps lines
    for tool in ("loopformer data {build,show}", "loopformer sweep", "loopformer import-checkpoint"):
        assert tool in help_text
    printed = subprocess.run(
        [
            *command,
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            "--model.arch.stages.0.repeat=4",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    assert "repeat: 4" in printed.stdout
    assert "Warning" not in printed.stderr and "args parameter" not in printed.stderr, printed.stderr


@pytest.mark.slow  # run by .ci/run; the default suite stays under 15 minutes
def test_a_run_prints_none_of_the_other_packages_noise(sudoku4_dir, tmp_path):
    """Lightning's tips, wandb's 'anonymous' and 'git root' warnings, a Lightning deprecation, its worker
    warning (our loaders deal batches out to workers) and its mid-epoch resume warning (the data module keeps
    the position) have nothing to do with the run: none is printed, in a first run or a resumed one."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    base = [
        *(sys.executable, "-m", "loopformer.cli", "fit", "--config", str(ROOT / "configs/quickstart.yaml")),
        *(f"--data.data_paths={sudoku4_dir}", "--data.global_batch_size=16", "--data.num_workers=1"),
        *("--model.arch.hidden_size=32", "--model.arch.puzzle_emb_ndim=32", "--trainer.val_check_interval=2"),
        *("--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"),
    ]
    # cwd has no runs/ yet: the logger's directory is created before wandb looks for it
    first = subprocess.run(
        [*base, "--trainer.max_steps=2"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    (ckpt,) = tmp_path.glob("runs/loopformer/*/checkpoints/last.ckpt")  # step 2 of 6 in the epoch
    resumed = subprocess.run(
        [*base, "--trainer.max_steps=4", f"--ckpt_path={ckpt}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for run, step in ((first, 2), (resumed, 4)):
        out = run.stdout + run.stderr
        assert f"val at step {step}" in out
        for noise in ("Tip:", "anonymous setting", "git root", "LeafSpec", "IterableDataset", "resuming from"):
            assert noise not in out, f"{noise!r} printed:\n{out[-3000:]}"


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_a_ckpt_path_that_is_not_a_file_is_a_clear_error(what, sudoku4_dir, tmp_path, capsys):
    path = tmp_path / "missing.ckpt" if what == "missing" else tmp_path
    with pytest.raises(SystemExit) as e:
        main(["validate", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
              "--trainer.logger=false", f"--ckpt_path={path}"])  # fmt: skip
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"--ckpt_path {path} {'does not exist' if what == 'missing' else 'is a directory'}" in err
    assert "Traceback" not in err


def test_validate_prints_each_metric_once_and_the_summary_has_no_flops_column(sudoku4_dir, tmp_path, capsys, caplog):
    from tests.helpers import tiny_fit_args

    extra = ["--model.train.act.halt_max_steps=2", "--trainer.max_steps=2", "--trainer.limit_val_batches=0"]
    with caplog.at_level("INFO"):
        fit = LoopformerCLI(args=tiny_fit_args(sudoku4_dir, tmp_path, *extra))
    assert "Trainable params" in caplog.text and "| FLOPs" not in caplog.text and "Total Flops" not in caplog.text
    ckpt = tmp_path / "model.ckpt"
    fit.trainer.save_checkpoint(ckpt)
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level("INFO"):
        main(
            [
                "validate",
                f"--data.data_paths={sudoku4_dir}",
                "--data.eval_batch_size=40",
                f"--ckpt_path={ckpt}",
                "--trainer.logger=false",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path / 'validate'}",
            ]
        )
    shown = capsys.readouterr().out + caplog.text
    assert shown.count("exact_accuracy") == 1, shown  # our one line, no Lightning results table
    assert "val at step 2 (40 puzzles): exact_accuracy" in shown
    assert "dirpath has changed" not in shown


def test_the_default_logger_saves_under_default_root_dir(tmp_path):
    cli = LoopformerCLI(args=[f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"], run=False)
    assert cli.trainer.logger.save_dir == str(tmp_path)
    elsewhere = LoopformerCLI(
        args=[f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'w'}"],
        run=False,
    )
    assert elsewhere.trainer.logger.save_dir == str(tmp_path / "w")  # an explicit save_dir stays


def test_a_batch_limit_of_1_is_one_batch_and_1_0_every_batch(sudoku4_dir, tmp_path, caplog):
    """Lightning reads an int as a number of batches and a float as a fraction; the Trainer's annotation came from
    typing's cache as Union[float, int], so "1" parsed as 1.0: every batch (Lightning-AI/pytorch-lightning#21259)."""
    from tests.helpers import tiny_fit_args

    config = tmp_path / "limits.yaml"
    config.write_text("trainer:\n  limit_test_batches: 1\n  limit_train_batches: 1.0\n")
    cli = LoopformerCLI(
        args=["--config", str(config), "--trainer.limit_val_batches=1", "--trainer.limit_predict_batches=1.0"],
        run=False,
    )
    limits = {k: getattr(cli.trainer, f"limit_{k}_batches") for k in ("train", "val", "test", "predict")}
    assert limits == {"train": 1.0, "val": 1, "test": 1, "predict": 1.0}
    assert [type(v) for v in limits.values()] == [float, int, int, float]
    caplog.set_level("INFO")
    validate = ["validate", *tiny_fit_args(sudoku4_dir, tmp_path)[1:]]
    main([*validate, "--data.eval_batch_size=16", "--trainer.limit_val_batches=1"])
    assert "val at step 0 (16 puzzles)" in caplog.text  # one batch of the 40 held-out puzzles


def test_every_published_build_named_in_a_hint_is_the_readmes_command():
    from loopformer.data.builders import PUBLISHED_BUILDS, how_to_build

    readme = " ".join((ROOT / "README.md").read_text().replace("\\\n", " ").split())
    for name in PUBLISHED_BUILDS:
        assert how_to_build(f"data/{name}") in readme
    assert how_to_build("data/my-own-set") == ""


def test_python_dash_m_loopformer_is_the_command():
    """Where the `loopformer` script is not on PATH (a cluster's module system, a bare venv)."""
    done = subprocess.run([sys.executable, "-m", "loopformer", "data", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: loopformer data")
