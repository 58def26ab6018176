import pytest

from loopformer.runs.loggers import WandbLogger, wandb_credentials_found
from loopformer.sweep.metrics_file import EvalMetricsFile


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_SWEEP_ID", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_offline_with_one_line_when_not_logged_in_and_not_in_a_sweep(no_wandb_env, caplog, monkeypatch):
    from types import SimpleNamespace

    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    caplog.set_level("INFO")
    logger = WandbLogger(save_dir=str(no_wandb_env))
    assert logger._offline is True
    assert "logs offline" not in caplog.text  # not yet: a run its checks stop before it starts does not say so

    def start_run(self):  # noqa: ANN001, ANN202 (what Lightning's property does, without wandb)
        self._experiment = self._experiment or SimpleNamespace(dir=None)
        return self._experiment

    monkeypatch.setattr(LightningWandbLogger, "experiment", property(start_run))
    for _ in range(2):
        assert logger.experiment.dir is None  # the stand-in run
    assert caplog.text.count(f"logs offline to {no_wandb_env}/wandb") == 1  # once, when the run starts


def test_online_inside_a_sweep_or_with_a_key(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert WandbLogger(save_dir=str(no_wandb_env))._offline is False
    monkeypatch.delenv("WANDB_SWEEP_ID")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_credentials_found()
    assert WandbLogger(save_dir=str(no_wandb_env))._offline is False


def test_netrc_login_counts(no_wandb_env):
    (no_wandb_env / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (no_wandb_env / ".netrc").chmod(0o600)
    assert wandb_credentials_found()


def test_eval_metrics_file_appends_one_line_per_evaluation_from_rank_zero(tmp_path):
    from types import SimpleNamespace

    import torch

    path = tmp_path / "m.jsonl"
    callback = EvalMetricsFile(str(path))
    metrics = {"val/exact_accuracy": torch.tensor(0.5), "val/exact": torch.tensor(0.5), "train/loss": torch.tensor(1.0)}
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, global_step=7, callback_metrics=metrics)
    callback.on_validation_end(trainer, None)
    trainer.global_step, metrics["val/exact_accuracy"] = 9, torch.tensor(0.75)
    callback.on_validation_end(trainer, None)
    callback.on_validation_end(SimpleNamespace(**{**vars(trainer), "is_global_zero": False}), None)
    callback.on_validation_end(SimpleNamespace(**{**vars(trainer), "sanity_checking": True}), None)
    assert path.read_text().splitlines() == [
        '{"_step": 7, "val/exact_accuracy": 0.5}',
        '{"_step": 9, "val/exact_accuracy": 0.75}',
    ]


def test_the_run_config_holds_the_fully_resolved_config(sudoku4_dir, tmp_path, monkeypatch):
    from pathlib import Path

    from loopformer.cli import LoopformerCLI

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    cli = LoopformerCLI(
        args=[
            "fit",
            "--config",
            str(root / "configs/quickstart.yaml"),
            f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=16",
            "--model.arch.hidden_size=32",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.arch.stages.0.repeat=2",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    run = cli.trainer.logger.experiment
    config = dict(run.config)
    assert config["model"]["arch"]["stages"][0]["repeat"] == 2 and config["model"]["arch"]["hidden_size"] == 32
    assert config["trainer"]["max_steps"] == 1 and config["data"]["global_batch_size"] == 16
    assert run.settings.mode in ("offline", "dryrun")  # wandb names its offline mode "dryrun" internally
    run.finish()


@pytest.mark.parametrize("mode", ["disabled", "offline"])
def test_the_line_saying_where_the_run_is_names_what_happens_to_it(no_wandb_env, monkeypatch, caplog, mode):
    import wandb

    wandb.teardown()  # wandb keeps the settings of its first run in this process (WANDB_MODE among them)
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.chdir(no_wandb_env)
    caplog.set_level("INFO")
    logger = WandbLogger(save_dir=str(no_wandb_env / "runs"))
    try:
        run = logger.experiment
    finally:
        logger.experiment.finish()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("W&B: disabled", "W&B: offline"))]
    if mode == "disabled":
        assert lines == ["W&B: disabled (WANDB_MODE=disabled): this run sends nothing to W&B"]
    else:
        where = f"{no_wandb_env}/runs/wandb/offline-run-"
        assert len(lines) == 1 and lines[0].startswith(f"W&B: offline run {run.id} in {where}"), lines
    assert "None" not in lines[0]


def test_an_online_run_wandb_cannot_start_is_one_line_naming_offline(no_wandb_env, sudoku4_dir, monkeypatch, capsys):
    """Logged in on a machine without network (a compute node): wandb waited 90 s, then its CommError traceback."""
    import wandb

    from loopformer.cli import main
    from tests.helpers import tiny_fit_args

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)

    def unreachable(*args, **kwargs):
        raise wandb.errors.CommError(
            'Timed out while retrying: Post "https://api.wandb.ai/graphql": dial tcp: lookup api.wandb.ai: no such '
            "host\nConsider increasing the init_timeout setting:\n  wandb.init(settings=wandb.Settings(init_timeout=...))"
        )

    monkeypatch.setattr(wandb, "init", unreachable)
    args = [a for a in tiny_fit_args(sudoku4_dir, no_wandb_env / "runs", "--trainer.max_steps=1") if "logger" not in a]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "loopformer: error: W&B could not start this run online (CommError: Timed out while retrying: Post "
        '"https://api.wandb.ai/graphql": dial tcp: lookup api.wandb.ai: no such host). Where this machine cannot reach '
        "W&B, log offline and upload later: WANDB_MODE=offline (then `wandb sync <run dir>`), or "
        "--trainer.logger.init_args.offline=true."
    )
