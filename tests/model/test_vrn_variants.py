"""VirtualRecursiveNetwork's looper variants: ConvSwiGLU, dropout, act_enabled: false; imported and exact, and
the configs/vrn/ files equal to what the importer makes of VRN's own architecture files."""

from pathlib import Path

import pytest
import torch
import yaml

from loopformer.checkpoint.importer import CheckpointImportError, import_checkpoint
from loopformer.checkpoint.upstream import arch_from_vrn
from loopformer.model import LoopTransformer
from loopformer.model.config import ArchConfig
from loopformer.model.layers import swiglu_inner_size
from loopformer.module import LoopformerModule
from loopformer.training.config import groups_from_flat, network_config_from_flat, typed_groups
from tests.model import reference_trm as ref
from tests.model.test_reference_equivalence import (
    HEADS,
    THREE_STAGE,
    C,
    _assert_close_steps,
    _batch,
    _random_weights,
)

ROOT = Path(__file__).resolve().parents[2]
CORE = "_orig_mod.model.core"


def _vrn_yaml(**over) -> dict:
    arch = dict(
        name="looper@LoopTransformer", loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
        halt_exploration_prob=0.1, halt_max_steps=16, act_enabled=True, act_inference=False, no_ACT_continue=True,
        hidden_size=C, num_heads=HEADS, expansion=4, puzzle_emb_ndim=C, puzzle_emb_len=2, pos_encodings="rope",
        forward_dtype="float32", dropout=0.0, outer_cycles=3, no_grad_cycles=2, readout_state="z_H", halt_state="z_H",
        **THREE_STAGE,
    )  # fmt: skip
    arch.update(over)
    return arch


def test_conv_swiglu_checkpoint_matches_the_reference(tmp_path):
    gen = torch.Generator().manual_seed(11)
    arch = _vrn_yaml(mlp_type="conv_swiglu", dropout=0.1, act_enabled=False)
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch))
    sd = _random_weights(CORE, {"state_modules.z_H": 1}, ["z_H_init", "z_M_init", "z_L_init"], "rope", 2, gen)
    inner = swiglu_inner_size(C, 4.0)
    sd[f"{CORE}.state_modules.z_H.layers.0.mlp.dwconv.weight"] = torch.randn(inner, 1, 2, generator=gen) * 0.5
    sd[f"{CORE}.state_modules.z_H.layers.0.mlp.dwconv.bias"] = torch.randn(inner, generator=gen) * 0.1
    torch.save(sd, tmp_path / "vrn.pt")
    import_checkpoint("vrn", tmp_path / "vrn.pt", tmp_path / "arch.yaml", tmp_path / "ours.ckpt", seq_len=16)
    module = LoopformerModule.load_from_checkpoint(tmp_path / "ours.ckpt", weights_only=True)
    hp = module.hparams
    assert (
        hp.arch["mlp_type"] == "conv_swiglu" and hp.arch["dropout"] == 0.1 and hp.train["act"]["act_enabled"] is False
    )
    batch = _batch(gen, 2)
    states = {n: sd[f"{CORE}.{n}_init"].expand(32, 18, C) for n in ("z_H", "z_M", "z_L")}
    steps = []
    for _ in range(4):
        states, outs = ref.vrn_step(sd, arch, states, batch["inputs"].long(), batch["puzzle_identifiers"].long(), 2)
        steps.append(outs)
    _assert_close_steps(module.net, batch, steps)  # eval mode: dropout off


def _net(**over) -> LoopTransformer:
    torch.manual_seed(0)
    config = network_config_from_flat(vocab_size=6, seq_len=8, hidden_size=32, num_heads=4, forward_dtype="float32",
                                   halt_max_steps=4, **over)  # fmt: skip
    return LoopTransformer(config)


def _batch_small():
    gen = torch.Generator().manual_seed(3)
    return {
        "inputs": torch.randint(0, 6, (16, 8), generator=gen, dtype=torch.int32),
        "labels": torch.randint(1, 6, (16, 8), generator=gen),
        "puzzle_identifiers": torch.zeros(16, dtype=torch.int32),
    }


def test_dropout_acts_in_training_only():
    net, batch = _net(dropout=0.3), _batch_small()
    plain = _net()
    plain.load_state_dict(net.state_dict())
    for m in (net, plain):
        m.eval()
    with torch.no_grad():
        a = net(net.initial_carry(batch), batch)[1]["logits"]
        b = plain(plain.initial_carry(batch), batch)[1]["logits"]
    assert torch.equal(a, b)  # evaluation: no dropout
    net.train()
    first = net(net.initial_carry(batch), batch)[1]["logits"]
    second = net(net.initial_carry(batch), batch)[1]["logits"]
    assert not torch.allclose(first, second)  # training: a fresh mask each call


def test_act_disabled_trains_every_row_to_halt_max_steps():
    batch = _batch_small()
    for enabled in (True, False):
        net = _net(act_enabled=enabled, halt_exploration_prob=0.0, no_ACT_continue=False)
        with torch.no_grad():
            net.inner.q_head.bias.copy_(torch.tensor([10.0, -10.0]))  # the Q head says "halt now" everywhere
        net.train()
        carry, out = net(net.initial_carry(batch), batch)
        if enabled:
            assert carry.halted.all() and "target_q_continue" in out
        else:
            assert not carry.halted.any() and "target_q_continue" not in out
            for _ in range(3):
                carry, out = net(carry, batch)
            assert carry.halted.all() and (carry.steps == 4).all()


def test_import_refuses_what_it_cannot_build_with_the_reason():
    with pytest.raises(CheckpointImportError, match=r"not run in VRN as published .*`groups`"):
        arch_from_vrn(_vrn_yaml(mlp_type="metric_conv"))
    with pytest.raises(CheckpointImportError, match="dis_schedule='cosine'"):
        arch_from_vrn(_vrn_yaml(dis_enabled=True, dis_schedule="cosine"))


# VRN's config/arch/trm_dis.yaml: its copy of TRM with DIS switches TRM does not have
VRN_TRM_DIS = dict(
    name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1", loss={"name": "losses@CrossEntropyLossHead"},
    halt_exploration_prob=0.0, halt_max_steps=6, H_cycles=1, L_cycles=2, H_layers=0, L_layers=2, hidden_size=C,
    num_heads=HEADS, expansion=4, puzzle_emb_ndim=C, pos_encodings="rope", mlp_t=False, puzzle_emb_len=16,
    dis_enabled=True, dis_max_steps=6, dis_schedule="linear", use_step_embedding=True,
)  # fmt: skip


@pytest.mark.parametrize(
    "source,over,message",
    [
        ("trm", {}, r"TRM architecture sets dis_enabled: true, VRN's trm_dis .*'step_emb'.*--from vrn"),
        ("trm", {"dis_enabled": False}, r"sets use_step_embedding: true, VRN's trm_dis"),
        ("trm", {"dis_enabled": False, "use_step_embedding": False}, r"loss is 'losses@CrossEntropyLossHead'"),
        ("vrn", {}, r"VRN's copy of a TRM/HRM model, not its looper: import it with --from trm"),
    ],
)
def test_vrns_trm_dis_is_refused_never_imported_as_plain_trm(source, over, message):
    from loopformer.checkpoint.upstream import variant_for

    arch = {**VRN_TRM_DIS, **over}
    with pytest.raises(CheckpointImportError, match=message):
        variant_for(source, arch).arch(arch)
    plain = {**arch, "dis_enabled": False, "use_step_embedding": False, "loss": {"name": "losses@ACTLossHead"}}
    if source == "trm":  # the same file without DIS is VRN's copy of TRM: it imports
        assert variant_for("trm", plain).arch(plain)["stages"][0]["repeat"] == 2


def test_a_vrn_model_without_a_loop_is_refused_by_its_name():
    """VRN's config/arch/transformers_baseline.yaml: it was "VRN architecture is missing 'states'"."""
    from loopformer.checkpoint.upstream import variant_for

    arch = {"name": "recursive_reasoning.transformers_baseline@Model_ACTV2", "H_layers": 8, "hidden_size": C}
    for source in ("vrn", "trm"):
        with pytest.raises(CheckpointImportError, match=r"'recursive_reasoning.transformers_baseline@Model_ACTV2' is "
                           f"not a model loopformer imports with --from {source}.*no loop to map"):  # fmt: skip
            variant_for(source, arch)
    assert variant_for("vrn", {"name": "looper@LoopTransformer"}).label == "VRN"


VRN_ARCH_FILES = {
    # configs/vrn/<name>.yaml -> the fields of VRN's config/arch/<name>.yaml that differ from the 3-stage looper
    "loop_transformer": dict(
        states=[{"name": "z_H", "layers": 1}, {"name": "z_L", "layers": 1, "share_weights_with": "z_H"}],
        stages=[
            {"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": 6},
            {"target": "z_H", "sources": ["z_L"], "repeat": 3},
        ],
    ),  # fmt: skip
    "loop_transformer-3stage": dict(gradient_checkpointing=True),
    "loop_transformer_conv": dict(mlp_type="conv_swiglu", gradient_checkpointing=True),
}
_CE = {"name": "losses@CrossEntropyLossHead", "loss_type": "softmax_cross_entropy", "mask_penalty_weight": 0.0}
_DIS = dict(halt_exploration_prob=0.0, act_enabled=False, dis_enabled=True, dis_schedule="linear", outer_cycles=1,
            no_grad_cycles=0, gradient_checkpointing=False)  # fmt: skip
_ONE_STATE = dict(states=[{"name": "z", "layers": 1}], stages=[{"target": "z", "include_inputs": True, "repeat": 2}],
                  readout_state="z", halt_state="z")  # fmt: skip
DIS_FILES = {
    # configs/vrn/<name>.yaml -> what VRN's config/arch/<name>.yaml sets beyond the 3-stage looper's fields
    "loop_transformer_dis": dict(loss=_CE, halt_max_steps=6, dis_max_steps=6, dis_loss_method="mask",
                                 dis_step_weighting=True, **_DIS, **_ONE_STATE),
    "loop_transformer_dis_3s": dict(
        loss=_CE, halt_max_steps=6, dis_max_steps=6, dis_loss_method="mask", dis_step_weighting=False, **_DIS,
        stages=[{"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": 3},
                {"target": "z_M", "sources": ["z_L"], "repeat": 2}, {"target": "z_H", "sources": ["z_M"], "repeat": 1}],
    ),
    "loop_transformer_dis_loss": dict(
        loss={"name": "losses@CrossEntropyLossHead", "mask_penalty_weight": 0}, halt_max_steps=16, dis_max_steps=16,
        dis_loss_method="loss", dis_step_weighting=False, **{**_DIS, "gradient_checkpointing": True}, **_ONE_STATE,
    ),
    "loop_transformer_baseline": dict(
        loss={**_CE, "loss_type": "stablemax_cross_entropy"}, halt_exploration_prob=0.0, halt_max_steps=1,
        act_enabled=False, no_ACT_continue=False, dis_enabled=False, no_grad_cycles=0,
        states=[{"name": "z_H", "layers": 1}, {"name": "z_L", "layers": 1, "share_weights_with": "z_H"}],
        stages=[{"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": 6},
                {"target": "z_H", "sources": ["z_L"], "repeat": 3}],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(VRN_ARCH_FILES))
def test_configs_vrn_files_are_what_the_importer_makes_of_vrns_own(name):
    theirs = _vrn_yaml(hidden_size=512, num_heads=8, puzzle_emb_ndim=512, puzzle_emb_len=16, forward_dtype="bfloat16")
    theirs.update(VRN_ARCH_FILES[name])
    _assert_same_model(name, theirs)


def _assert_same_model(name: str, theirs: dict) -> None:
    """configs/vrn/<name>.yaml (a model file: arch, train, runtime) is what the importer makes of VRN's file: the
    same network, runtime and training (with DIS, the ACT settings VRN's file also holds are not used)."""
    ours = typed_groups(yaml.safe_load((ROOT / "configs" / "vrn" / f"{name}.yaml").read_text()))
    imported = groups_from_flat(arch_from_vrn(theirs))
    assert ours["arch"] == imported["arch"] and ours["runtime"] == imported["runtime"]
    train, expected = ours["train"], imported["train"]
    assert (train.algorithm, train.loss_type, train.loss_head) == (
        expected.algorithm,
        expected.loss_type,
        expected.loss_head,
    )
    assert train.halting() == expected.halting()
    assert train.act == expected.act if train.algorithm == "act" else train.dis == expected.dis


@pytest.mark.parametrize("name", list(DIS_FILES))
def test_configs_vrn_dis_files_are_what_the_importer_makes_of_vrns_own(name):
    theirs = _vrn_yaml(hidden_size=512, num_heads=8, puzzle_emb_ndim=512, puzzle_emb_len=16, forward_dtype="bfloat16")
    theirs.update(DIS_FILES[name])
    _assert_same_model(name, theirs)


# conv and DIS in the default run; the others (the same blocks and stages as configs already run) under -m slow
QUICK = {"loop_transformer_conv", "loop_transformer_dis"}


@pytest.mark.parametrize(
    "name",
    [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in list(VRN_ARCH_FILES) + list(DIS_FILES)],
)
def test_every_vrn_architecture_trains_fast_dev_run(name, sudoku4_dir, tmp_path):
    from loopformer.cli import LoopformerCLI
    from tests.helpers import tiny_fit_args

    cli = LoopformerCLI(
        args=tiny_fit_args(
            sudoku4_dir,
            tmp_path,
            "--model",
            str(ROOT / "configs" / "vrn" / f"{name}.yaml"),
            "--model.arch.hidden_size=32",
            "--model.arch.num_heads=2",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.arch.puzzle_emb_len=1",
            "--model.runtime.forward_dtype=float32",
            "--model.train.act.halt_max_steps=2",
            "--trainer.fast_dev_run=true",
        )  # fmt: skip
    )
    train = cli.model.train_config
    # one batch: DIS's mask method takes an optimizer step per supervision step, its loss method one
    per_batch = train.dis.max_steps if train.algorithm == "dis" and train.dis.loss_method == "mask" else 1
    assert cli.trainer.global_step == per_batch and torch.isfinite(cli.trainer.callback_metrics["train/loss"])


# -- Deep Improvement Supervision ------------------------------------------------------------------------------------
def test_dis_targets_reveal_monotonically_keep_clues_and_end_at_the_labels():
    from loopformer.model.losses import dis_target

    labels = torch.tensor([[3, 4, 5, 6, -100]])
    inputs = torch.tensor([[3, 1, 1, 1, 0]])  # position 0 is a clue (input = label)
    noise = torch.tensor([[0.1, 0.5, 0.9, 0.3, 0.2]])
    M = 9
    expected = [  # rate 1 - (s+1)/4: 0.75, 0.5, 0.25, 0
        [[3, M, 5, M, -100]],  # noise < 0.75 hidden: positions 1, 3 (0 is a clue, 4 is ignored)
        [[3, 4, 5, M, -100]],  # noise < 0.5: position 3
        [[3, 4, 5, 6, -100]],  # noise < 0.25: none left but position 0 (a clue)
        [[3, 4, 5, 6, -100]],
    ]
    for s, want in enumerate(expected):
        assert dis_target(labels, inputs, s, 4, M, noise).tolist() == want, s


def test_cross_entropy_head_and_the_improvement_loss_by_hand():
    from loopformer.model.losses import cross_entropy_loss, dis_improvement_loss

    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # 1 row, 2 tokens, vocabulary 2 + mask token (id 2)
    labels = torch.tensor([[0, 2]])  # the second target is the mask token
    loss, metrics = cross_entropy_loss({"logits": logits}, labels, "softmax_cross_entropy", 0.5, mask_token_id=2)
    ce0 = -torch.log_softmax(logits[0, 0], -1)[0]
    ce1 = -torch.log_softmax(logits[0, 1], -1)[2]
    penalty = 0.5 * torch.softmax(logits[0, 0], -1)[2]  # only where the target is a real token
    assert loss.item() == pytest.approx(((ce0 + ce1 + penalty) / 2).item(), rel=1e-6)
    assert metrics["count"].item() == 1 and metrics["exact_accuracy"].item() == 0  # argmax of token 1 is 1, not 2
    steps = [torch.tensor(3.0), torch.tensor(2.0), torch.tensor(2.5), torch.tensor(1.0)]
    assert dis_improvement_loss(steps).item() == pytest.approx(1.0 + 0.5)  # the last, plus the one step that rose


def test_dis_checkpoint_matches_the_reference_with_step_embeddings(tmp_path, capsys):
    gen = torch.Generator().manual_seed(5)
    arch = _vrn_yaml(
        loss={"name": "losses@CrossEntropyLossHead", "loss_type": "softmax_cross_entropy", "mask_penalty_weight": 0.1},
        halt_exploration_prob=0.0, halt_max_steps=4, act_enabled=False, dis_enabled=True, dis_max_steps=4,
        dis_loss_method="mask", dis_step_weighting=True, outer_cycles=1, no_grad_cycles=0,
    )  # fmt: skip
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch))
    sd = _random_weights(CORE, {"state_modules.z_H": 1}, ["z_H_init", "z_M_init", "z_L_init"], "rope", 2, gen)
    V = sd[f"{CORE}.embed_tokens.embedding_weight"].shape[0]
    sd[f"{CORE}.embed_tokens.embedding_weight"] = torch.cat(
        [sd[f"{CORE}.embed_tokens.embedding_weight"], torch.randn(1, C, generator=gen) * C**-0.5]
    )
    sd[f"{CORE}.lm_head.weight"] = torch.cat([sd[f"{CORE}.lm_head.weight"], torch.randn(1, C, generator=gen) * C**-0.5])
    sd[f"{CORE}.step_emb.weight"] = torch.randn(4, C, generator=gen)
    torch.save(sd, tmp_path / "vrn.pt")
    from loopformer.cli.tools import _import_checkpoint

    command = ["--from", "vrn", str(tmp_path / "vrn.pt"), "--arch", str(tmp_path / "arch.yaml")]
    assert _import_checkpoint([*command, str(tmp_path / "ours.ckpt"), "--seq-len", "16"]) == 0
    assert "--model.train.dis.eval_step_embedding=false to evaluate as VRN does" in capsys.readouterr().out
    module = LoopformerModule.load_from_checkpoint(tmp_path / "ours.ckpt", weights_only=True)
    assert module.net.config.vocab_size == V and module.net.config.mask_token_id == V  # the last row is the mask
    hp = module.hparams.train
    assert hp["algorithm"] == "dis" and hp["dis"]["mask_penalty_weight"] == 0.1
    assert module.train_config.loss_head == "cross_entropy"
    batch = _batch(gen, 2)
    states = {n: sd[f"{CORE}.{n}_init"].expand(32, 18, C) for n in ("z_H", "z_M", "z_L")}
    steps = []
    for s in range(4):  # DIS step s = the ACT step count, from the initial states
        states, outs = ref.vrn_step(
            sd, {**arch, "outer_cycles": 1}, states, batch["inputs"].long(), batch["puzzle_identifiers"].long(), 2, s
        )
        steps.append(outs)
    _assert_close_steps(module.net, batch, steps)


def test_dis_needs_every_cycle_with_gradient_and_sets_the_halting_and_the_head():
    from loopformer.errors import ConfigError
    from loopformer.training.config import TrainConfig

    dis = TrainConfig(algorithm="dis", dis={"max_steps": 4}, act={"halt_max_steps": 16, "halt_exploration_prob": 0.5})
    with pytest.raises(ConfigError, match=r"algorithm: dis needs model\.arch\.no_grad_cycles: 0 .*got 1"):
        dis.check(ArchConfig(outer_cycles=2))
    dis.check(ArchConfig(outer_cycles=2, no_grad_cycles=0))
    halting = dis.halting()  # one ACT step per supervision step, never halting early, no exploration
    assert (halting.max_steps, halting.exploration_prob, halting.in_training, halting.in_evaluation) == (
        4,
        0.0,
        False,
        False,
    )
    assert dis.loss_head == "cross_entropy" and dis.supervision_steps == 4
    act = TrainConfig(act={"halt_max_steps": 16, "loss_head": "act"})
    assert act.halting().max_steps == 16 and act.loss_head == "act" and act.supervision_steps == 0
    with pytest.raises(ConfigError, match=r"model\.train\.algorithm='dls'; expected one of act, dis"):
        TrainConfig(algorithm="dls")


def test_one_dis_training_batch_logs_the_hand_computed_loss(sudoku4_dir, tmp_path, monkeypatch):
    """With lr 0 the weights stay put, so each supervision step's loss can be recomputed by hand: the network from
    the initial states, step s's target from the batch's noise, the token-mean cross-entropy, averaged over steps."""
    import lightning as L

    from loopformer.cli import LoopformerCLI
    from loopformer.model.losses import dis_target
    from tests.helpers import tiny_fit_args

    noise = {}
    real_rand = torch.rand

    def recording_rand(*shape, **kwargs):
        out = real_rand(*shape, **kwargs)
        noise.setdefault("first", out.clone())
        return out

    class KeepBatch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batch = {k: v.clone() for k, v in batch.items()}
            monkeypatch.setattr(torch, "rand", recording_rand)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            monkeypatch.setattr(torch, "rand", real_rand)
            self.logged = float(trainer.callback_metrics["train/loss"])

    keep = KeepBatch()
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--model", str(ROOT / "configs/vrn/loop_transformer_dis.yaml"),
                         "--model.arch.hidden_size=32", "--model.arch.num_heads=2", "--model.arch.puzzle_emb_ndim=32",
                         "--model.arch.puzzle_emb_len=1", "--model.runtime.forward_dtype=float32",
                         "--model.train.dis.max_steps=3", "--model.optim.lr=0", "--model.optim.puzzle_emb_lr=0",
                         "--trainer.max_steps=3", "--trainer.limit_val_batches=0")  # fmt: skip
    cli = LoopformerCLI(args=args, trainer_defaults={"callbacks": [keep]})
    assert cli.trainer.global_step == 3  # one batch, one optimizer step per supervision step
    net, batch = cli.model.net.train(), keep.batch
    cfg = net.config
    carry, losses = net.initial_carry(batch), []
    with torch.no_grad():
        for s in range(3):
            target = dis_target(batch["labels"], batch["inputs"], s, 3, cfg.mask_token_id, noise["first"])
            carry, out = net(carry, batch)
            valid = target != -100
            logits = out["logits"][valid].float()
            losses.append(torch.nn.functional.cross_entropy(logits, target[valid]).item())  # softmax, token mean
    assert keep.logged == pytest.approx(sum(losses) / 3, rel=1e-5)


def test_a_dis_model_evaluated_deeper_than_it_trained_reuses_the_last_step_embedding():
    from loopformer.evaluation.evaluators import run_to_halt

    net = _net(dis_enabled=True, dis_max_steps=2, act_enabled=False, outer_cycles=1, loss_head="cross_entropy").eval()
    batch = _batch_small()
    net.config.halting.max_steps = 5  # as the depth curve sets it
    with torch.no_grad():
        outputs, steps = run_to_halt(net, batch)
    assert steps.tolist() == [5] * 16 and torch.isfinite(outputs["logits"]).all()


def test_dis_evaluates_with_its_step_embeddings_unless_told_to_evaluate_as_vrn_does():
    from loopformer.training.config import TrainConfig, network_config

    groups = groups_from_flat(dict(hidden_size=32, num_heads=4, outer_cycles=1, no_grad_cycles=0))
    train = TrainConfig(algorithm="dis", dis={"max_steps": 3, "eval_step_embedding": False})
    dims = {"vocab_size": 6, "seq_len": 8}
    config = network_config(groups["arch"], train, groups["runtime"], dims)
    assert config.eval_step_embedding is False  # the setting reaches the network

    def logits(net):
        carry, batch, out = net.initial_carry(_batch_small()), _batch_small(), []
        with torch.no_grad():
            for _ in range(3):
                carry, step = net(carry, batch)
                out.append(step["logits"])
        return torch.stack(out)

    net = _net(dis_enabled=True, dis_max_steps=3, act_enabled=False, outer_cycles=1, loss_head="cross_entropy")
    with torch.no_grad():
        net.inner.step_emb.weight.normal_()
    without = _net(dis_enabled=True, dis_max_steps=3, act_enabled=False, outer_cycles=1, loss_head="cross_entropy")
    without.load_state_dict(net.state_dict())
    without.config.eval_step_embedding = False
    zeroed = _net(dis_enabled=True, dis_max_steps=3, act_enabled=False, outer_cycles=1, loss_head="cross_entropy")
    zeroed.load_state_dict(net.state_dict())
    with torch.no_grad():
        zeroed.inner.step_emb.weight.zero_()
    for model in (net, without, zeroed):
        model.eval()
    assert not torch.allclose(logits(net), logits(without))
    torch.testing.assert_close(logits(without), logits(zeroed), atol=0, rtol=0)  # no step embedding at all
    for model in (net, without):
        model.train()
    torch.testing.assert_close(logits(net), logits(without), atol=0, rtol=0)  # training keeps them either way


def test_vrns_varc_files_import_as_the_loopers_they_are():
    # VRN's looper (9909a38) never builds a patch embedding: config/arch/varc_*.yaml run as plain loopers
    varc = _vrn_yaml(patch_embed_type="metric", patch_size=3, metric_eps_w=0.5)
    assert arch_from_vrn(varc) == arch_from_vrn(_vrn_yaml())
