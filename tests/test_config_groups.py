"""Settings that moved out of ``model.arch`` (into ``model.train`` and ``model.runtime``) and out of ``model.run`` (into
``model.ema``, ``model.eval`` and ``model.runtime``) keep working for one release: as flags, in config files, in architecture files, with a one-line notice."""

import pytest
import yaml

from loopformer.cli import main
from loopformer.config_groups import group_settings, migrate_flags, migrate_model


def test_old_flags_are_renamed_in_both_spellings():
    args = ["fit", "--model.arch.halt_max_steps=8", "--model.arch.forward_dtype", "float32",
            "--model.arch.hidden_size=32", "--model.arch.dis_enabled=true", "--model.run.compile", "true",
            "--model.run.ema=true", "--model.arch.dis_enabled", "false"]  # fmt: skip
    new, old = migrate_flags(args)
    assert new == ["fit", "--model.train.act.halt_max_steps=8", "--model.runtime.forward_dtype=float32",
                   "--model.arch.hidden_size=32", "--model.train.algorithm=dis", "--model.runtime.compile=true",
                   "--model.ema.enabled=true", "--model.train.algorithm=act"]  # fmt: skip
    assert old == ["--model.arch.halt_max_steps", "--model.arch.forward_dtype", "--model.arch.dis_enabled",
                   "--model.run.compile", "--model.run.ema", "--model.arch.dis_enabled"]  # fmt: skip


def test_a_flat_section_splits_into_groups_and_unknown_keys_stay_in_arch():
    grouped = group_settings({"hidden_size": 32, "halt_max_steps": 4, "loss_type": "softmax_cross_entropy",
                              "dis_enabled": True, "dis_max_steps": 3, "attention_backend": "sdpa", "typo": 1})  # fmt: skip
    assert grouped == {
        "arch": {"hidden_size": 32, "typo": 1},
        "train": {"act": {"halt_max_steps": 4}, "loss_type": "softmax_cross_entropy", "algorithm": "dis",
                  "dis": {"max_steps": 3}},
        "runtime": {"attention_backend": "sdpa"},
    }  # fmt: skip


def test_a_model_section_keeps_a_setting_given_in_its_current_place():
    model = {"arch": {"halt_max_steps": 4, "hidden_size": 32}, "train": {"act": {"halt_max_steps": 9}},
             "run": {"compile": True, "ema": True}, "ema": {"rate": 0.9}}  # fmt: skip
    migrated, old = migrate_model(model)
    assert migrated == {"arch": {"hidden_size": 32}, "train": {"act": {"halt_max_steps": 9}},
                        "ema": {"rate": 0.9, "enabled": True}, "runtime": {"compile": True}}  # fmt: skip
    assert old == ["model.arch.halt_max_steps", "model.run.compile", "model.run.ema"]
    assert migrate_model(migrated) == (migrated, [])


def _print_config(capsys, *args) -> tuple[dict, str]:
    with pytest.raises(SystemExit) as done:
        main(["fit", *args, "--print_config"])
    assert done.value.code in (0, None)
    out, err = capsys.readouterr()
    return yaml.safe_load(out)["model"], err


def test_old_flags_reach_their_new_places_with_one_notice(capsys):
    model, err = _print_config(capsys, "--model.arch.halt_max_steps=5", "--model.arch.dis_enabled=true",
                               "--model.arch.no_grad_cycles=0", "--model.run.compile_mode", "reduce-overhead")  # fmt: skip
    assert model["train"]["act"]["halt_max_steps"] == 5 and model["train"]["algorithm"] == "dis"
    assert model["runtime"]["compile_mode"] == "reduce-overhead" and "run" not in model
    notices = [line for line in err.splitlines() if "notice" in line]
    assert len(notices) == 1
    assert "--model.arch.halt_max_steps -> --model.train.act.halt_max_steps" in notices[0]
    assert "--model.arch.dis_enabled -> --model.train.algorithm" in notices[0] and "next release" in notices[0]


def test_an_old_config_file_and_an_old_architecture_file_still_work(capsys, tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({"model": {"arch": {"hidden_size": 64, "num_heads": 4, "forward_dtype": "float32",
                                                         "halt_max_steps": 6}, "run": {"compile": True}}}))  # fmt: skip
    arch = tmp_path / "arch.yaml"
    arch.write_text(yaml.safe_dump({"hidden_size": 32, "outer_cycles": 1, "loss_head": "cross_entropy",
                                    "gradient_checkpointing": True}))  # fmt: skip
    model, err = _print_config(capsys, "--config", str(config))
    assert model["arch"]["hidden_size"] == 64 and model["runtime"]["forward_dtype"] == "float32"
    assert model["train"]["act"]["halt_max_steps"] == 6 and model["runtime"]["compile"] is True
    assert f"{config} uses old setting names (model.arch.forward_dtype -> model.runtime.forward_dtype" in err

    # an architecture file replaces the recipe's architecture; its moved keys follow it, and later flags still win
    model, err = _print_config(capsys, "--config", str(config), "--model.arch", str(arch),
                               "--model.runtime.gradient_checkpointing=false")  # fmt: skip
    assert model["arch"]["hidden_size"] == 32 and model["arch"]["outer_cycles"] == 1
    assert model["train"]["act"]["loss_head"] == "cross_entropy"
    assert model["runtime"]["gradient_checkpointing"] is False
    assert f"{arch} uses old setting names" in err and "model.arch.loss_head -> model.train.act.loss_head" in err


def test_a_current_config_prints_no_notice(capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    _, err = _print_config(capsys, "--config", str(root / "configs/quickstart.yaml"))
    assert "notice" not in err


def test_an_old_model_file_still_works(capsys, tmp_path):
    model_file = tmp_path / "model.yaml"
    model_file.write_text(yaml.safe_dump({"arch": {"hidden_size": 32, "halt_max_steps": 5}, "run": {"ema": True}}))
    model, err = _print_config(capsys, "--model", str(model_file))
    assert model["arch"]["hidden_size"] == 32 and model["train"]["act"]["halt_max_steps"] == 5
    assert model["ema"]["enabled"] is True
    assert f"{model_file} uses old setting names (model.arch.halt_max_steps -> model.train.act.halt_max_steps" in err


def test_an_old_config_file_still_finds_the_files_it_names_relative_to_itself(capsys, tmp_path, monkeypatch):
    """Migrated, the file is passed on as text; the architecture file it names beside itself is still that one."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "arch.yaml").write_text("hidden_size: 32\nouter_cycles: 1\n")
    (tmp_path / "sub" / "old.yaml").write_text("model:\n  arch: arch.yaml\n  run:\n    compile: true\n")
    (tmp_path / "arch.yaml").write_text("hidden_size: 48\n")  # the same name where the command runs: not this one
    monkeypatch.chdir(tmp_path)
    model, err = _print_config(capsys, "--config", "sub/old.yaml")
    assert model["arch"]["hidden_size"] == 32 and model["arch"]["outer_cycles"] == 1
    assert model["runtime"]["compile"] is True and "sub/old.yaml uses old setting names" in err
