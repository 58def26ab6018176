"""HRM and TRM's variants (trm_singlez, trm_hier6, TRM's copy of HRM), imported: forward over 4 ACT steps and, in
training, the gradient of one ACT step for every parameter, against the independent reference (reference_trm.py)
with their gradient windows. The gradient check is what proves HRM's one-step gradient (``grad_last: 1``)."""

import pytest
import torch

from loopformer.checkpoint.importer import CheckpointImportError, _our_key, import_checkpoint
from loopformer.checkpoint.upstream import variant_for
from loopformer.module import LoopformerModule
from tests.model import reference_trm as ref
from tests.model.test_reference_equivalence import HEADS, PUZZLES, C, L, _assert_close_steps, _batch, _random_weights

CORE = "_orig_mod.model.inner"
HIER6 = [f"L{i}_init" for i in range(1, 7)]
CASES = {
    "hrm": dict(
        source="hrm",
        name="hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
        fields=dict(H_cycles=2, L_cycles=3, H_layers=2, L_layers=1),
        modules={"H_level": 2, "L_level": 1},
        inits=["H_init", "L_init"],
        prefix_len=1,  # HRM: ceil(puzzle_emb_ndim / hidden_size)
    ),
    "trm-copy-of-hrm": dict(
        source="trm",
        name="recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1",
        fields=dict(H_cycles=3, L_cycles=2, H_layers=1, L_layers=2),
        modules={"H_level": 1, "L_level": 2},
        inits=["H_init", "L_init"],
        prefix_len=1,
    ),
    "trm": dict(
        source="trm",
        name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        fields=dict(H_cycles=3, L_cycles=2, H_layers=0, L_layers=2, puzzle_emb_len=2, no_ACT_continue=True),
        modules={"L_level": 2},
        inits=["H_init", "L_init"],
        prefix_len=2,
    ),
    "trm_singlez": dict(
        source="trm",
        name="recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1",
        fields=dict(H_cycles=2, L_cycles=3, H_layers=0, L_layers=2, puzzle_emb_len=2, no_ACT_continue=True),
        modules={"L_level": 2},
        inits=["L_init"],
        prefix_len=2,
    ),
    "trm_hier6": dict(
        source="trm",
        name="recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1",
        fields=dict(H_cycles=2, L_cycles=4, H_layers=0, L_layers=1, puzzle_emb_len=2, no_ACT_continue=True),
        modules={"L_level": 1},
        inits=["H_init", *HIER6],
        prefix_len=2,
    ),
}


def _import(tmp_path, case, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lines = [f"name: {case['name']}", "loss: {name: losses@ACTLossHead, loss_type: stablemax_cross_entropy}"]
    fields = dict(
        halt_exploration_prob=0.1, halt_max_steps=16, hidden_size=C, num_heads=HEADS, expansion=4,
        puzzle_emb_ndim="${.hidden_size}", pos_encodings="rope", forward_dtype="float32", **case["fields"],
    )  # fmt: skip
    lines += [f"{k}: {v}" for k, v in fields.items()]
    (tmp_path / "arch.yaml").write_text("\n".join(lines) + "\n")
    sd = _random_weights(CORE, case["modules"], case["inits"], "rope", case["prefix_len"], gen)
    torch.save(sd, tmp_path / "theirs.pt")
    import_checkpoint(case["source"], tmp_path / "theirs.pt", tmp_path / "arch.yaml", tmp_path / "ours.ckpt", seq_len=L)
    module = LoopformerModule.load_from_checkpoint(tmp_path / "ours.ckpt", weights_only=True)
    arch = {"hidden_size": C, "num_heads": HEADS, "pos_encodings": "rope", **case["fields"]}
    return module.net, sd, arch, _batch(gen, case["prefix_len"])


def _reference_step(key, sd, arch, states, batch, prefix_len):
    inputs, ids = batch["inputs"].long(), batch["puzzle_identifiers"].long()
    if key in ("hrm", "trm-copy-of-hrm"):
        return ref.hrm_step(sd, arch, *states, inputs, ids, prefix_len)
    if key == "trm":
        return ref.trm_step(sd, arch, *states, inputs, ids, prefix_len)
    if key == "trm_singlez":
        return ref.singlez_step(sd, arch, states, inputs, ids, prefix_len)
    return ref.hier6_step(sd, arch, *states, inputs, ids, prefix_len)


def _initial_states(key, sd, prefix_len):
    def init(name):
        return sd[f"{CORE}.{name}"].expand(32, L + prefix_len, C)

    if key == "trm_singlez":
        return init("L_init")
    if key == "trm_hier6":
        return init("H_init"), [init(n) for n in HIER6]
    return init("H_init"), init("L_init")


@pytest.mark.parametrize("key", [k for k in CASES if k != "trm"])
def test_imported_model_computes_the_reference_forward(tmp_path, key):
    case = CASES[key]
    net, sd, arch, batch = _import(tmp_path, case)
    states, steps = _initial_states(key, sd, case["prefix_len"]), []
    for _ in range(4):
        states, outs = _reference_step(key, sd, arch, states, batch, case["prefix_len"])
        steps.append(outs)
    _assert_close_steps(net, batch, steps)


@pytest.mark.parametrize("key", list(CASES))
def test_one_training_step_has_the_reference_gradient_for_every_parameter(tmp_path, key):
    case = CASES[key]
    net, sd, arch, batch = _import(tmp_path, case, seed=1)
    prefix_len = case["prefix_len"]
    gen = torch.Generator().manual_seed(2)
    weight_logits = torch.randn(32, L, 11, generator=gen)
    weight_halt, weight_continue = torch.randn(32, generator=gen), torch.randn(32, generator=gen)

    def loss(logits, q_halt, q_continue):
        return (logits * weight_logits).sum() + (q_halt * weight_halt).sum() + (q_continue * weight_continue).sum()

    leaves = {k: v.clone().requires_grad_(not k.endswith("_init") and "local_weights" not in k) for k, v in sd.items()}
    _, outs = _reference_step(key, leaves, arch, _initial_states(key, leaves, prefix_len), batch, prefix_len)
    loss(*outs).backward()

    net.train()
    carry, out = net(net.initial_carry(batch), batch)
    loss(out["logits"], out["q_halt_logits"], out["q_continue_logits"]).backward()

    variant = variant_for(case["source"], {"name": case["name"]})
    theirs_by_ours = {"inner." + _our_key(k[len(CORE) + 1 :], variant): k for k in sd if "local_weights" not in k}
    checked = 0
    for name, p in net.named_parameters():
        expected = leaves[theirs_by_ours[name]].grad
        assert p.grad is not None and expected is not None, name
        scale = expected.abs().max().item()
        assert scale > 0, name  # every parameter takes part in the window
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-4 * scale, msg=name)
        checked += 1
    assert checked == len(list(net.parameters()))
    # The puzzle embedding (a table updated by sign-SGD): the batch rows' gradients, summed per puzzle.
    table = net.inner.puzzle_emb
    rows = torch.zeros(PUZZLES, C).index_add_(0, table.local_ids.long(), table.local.grad)
    expected = leaves[f"{CORE}.puzzle_emb.weights"].grad
    torch.testing.assert_close(rows, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_hrm_window_differs_from_the_whole_last_cycle():
    """The gradient window is not a no-op: with TRM's window (all of the last cycle) HRM's gradient changes."""
    from loopformer.checkpoint.upstream import arch_from_hrm
    from loopformer.training.config import groups_from_flat

    arch = arch_from_hrm(
        dict(H_cycles=2, L_cycles=3, H_layers=1, L_layers=1, hidden_size=C, num_heads=HEADS, expansion=4)
    )
    hrm = groups_from_flat(arch)["arch"]
    assert [s.grad_last for s in hrm.stages] == [1, 1] and hrm.grad_depth == 2 and hrm.effective_depth == 8
    whole = groups_from_flat({**arch, "stages": [{**s, "grad_last": None} for s in arch["stages"]]})["arch"]
    assert whole.grad_depth == 4


def test_other_names_are_refused_with_the_models_loopformer_imports(tmp_path):
    with pytest.raises(CheckpointImportError, match=r"transformers_baseline.*imports hrm, trm, trm_hier6, trm_singlez"):
        variant_for("trm", {"name": "recursive_reasoning.transformers_baseline@Model_ACTV2"})
    with pytest.raises(CheckpointImportError, match="with --from hrm"):
        variant_for("hrm", {"name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"})
    assert variant_for("trm", {}).label == "TRM" and variant_for("hrm", {}).label == "HRM"


def test_configs_hrm_yaml_is_what_the_importer_makes_of_hrm_v1():
    """configs/hrm.yaml and `import-checkpoint --from hrm` of HRM's own config/arch/hrm_v1.yaml agree."""
    from pathlib import Path

    import yaml

    from loopformer.checkpoint.upstream import arch_from_hrm
    from loopformer.model.config import ArchConfig
    from loopformer.training.config import TrainConfig, groups_from_flat

    hrm_v1 = dict(
        halt_exploration_prob=0.1, halt_max_steps=16, H_cycles=2, L_cycles=2, H_layers=4, L_layers=4, hidden_size=512,
        num_heads=8, expansion=4, puzzle_emb_ndim=512, pos_encodings="rope",
        loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
    )  # fmt: skip
    imported = groups_from_flat(arch_from_hrm(hrm_v1))
    model = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/hrm.yaml").read_text())["model"]
    ours = ArchConfig(**model["arch"])
    for field in ("states", "stages", "outer_cycles", "no_grad_cycles", "readout_state", "hidden_size", "num_heads",
                  "expansion", "pos_encodings", "puzzle_emb_ndim", "prefix_len", "grad_depth", "effective_depth"):  # fmt: skip
        assert getattr(ours, field) == getattr(imported["arch"], field), field
    assert TrainConfig(**model["train"]) == imported["train"]


@pytest.mark.parametrize("variant", ["trm_singlez", "trm_hier6"])
def test_configs_arch_files_are_what_the_importer_makes_of_trms_own(variant):
    """configs/arch/<variant>.yaml equals `import-checkpoint --from trm` of TRM's config/arch/<variant>.yaml."""
    from pathlib import Path

    import yaml

    from loopformer.checkpoint.upstream import VARIANTS
    from loopformer.model.config import ArchConfig, RuntimeConfig
    from loopformer.training.config import TrainConfig, groups_from_flat

    theirs = dict(
        name=f"recursive_reasoning.{variant}@TinyRecursiveReasoningModel_ACTV1", H_cycles=3, L_cycles=6, H_layers=0,
        L_layers=2, hidden_size=512, num_heads=8, expansion=4, puzzle_emb_ndim=512, pos_encodings="rope",
        forward_dtype="bfloat16", halt_max_steps=16, halt_exploration_prob=0.1, mlp_t=False, puzzle_emb_len=16,
        no_ACT_continue=True, loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
    )  # fmt: skip
    imported = groups_from_flat(VARIANTS[variant].arch(theirs))
    root = Path(__file__).resolve().parents[2]
    assert ArchConfig(**yaml.safe_load((root / "configs" / "arch" / f"{variant}.yaml").read_text())) == imported["arch"]
    # the file replaces the architecture of configs/trm.yaml, whose training and runtime settings are TRM's too
    recipe = yaml.safe_load((root / "configs" / "trm.yaml").read_text())["model"]
    assert TrainConfig(**recipe["train"]) == imported["train"]
    assert RuntimeConfig(**recipe["runtime"]) == imported["runtime"]


def test_an_arch_file_replaces_a_recipes_architecture_on_the_command_line(capsys):
    from pathlib import Path

    import yaml

    from loopformer.cli import main

    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(root / "configs/trm.yaml"), "--model.arch", str(root / "configs/arch/trm_hier6.yaml"),
              "--model.arch.hidden_size=64", "--print_config"])  # fmt: skip
    assert done.value.code in (0, None)
    arch = yaml.safe_load(capsys.readouterr().out)["model"]["arch"]
    assert len(arch["states"]) == 7 and arch["stages"][6]["target"] == "z_H" and arch["hidden_size"] == 64
