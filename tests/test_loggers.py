import pytest

from loopformer.loggers import WandbLogger, append_eval_metrics, wandb_credentials_found


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_SWEEP_ID", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_offline_with_one_line_when_not_logged_in_and_not_in_a_sweep(no_wandb_env, caplog):
    caplog.set_level("INFO")
    logger = WandbLogger(save_dir=str(no_wandb_env))
    assert logger._offline is True
    assert "logs offline to ./wandb" in caplog.text


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


def test_eval_metrics_file(monkeypatch, tmp_path):
    path = tmp_path / "m.jsonl"
    monkeypatch.setenv("LOOPFORMER_METRICS_JSONL", str(path))
    append_eval_metrics({"val/exact_accuracy": 0.5}, step=7)
    append_eval_metrics({"val/exact_accuracy": 0.75}, step=9)
    assert path.read_text().splitlines() == [
        '{"_step": 7, "val/exact_accuracy": 0.5}',
        '{"_step": 9, "val/exact_accuracy": 0.75}',
    ]
