import pytest

from loopformer.model import ConfigError, StageSpec, StateSpec
from loopformer.training.config import network_config_from_flat


def make(**kw):
    base = dict(vocab_size=6, seq_len=16, hidden_size=32, num_heads=4)
    base.update(kw)
    return network_config_from_flat(**base)


def test_three_stage_defaults_and_depth():
    cfg = make().arch
    assert [s.name for s in cfg.states] == ["z_H", "z_M", "z_L"]
    assert cfg.resolved_no_grad_cycles == 2
    assert cfg.depth_per_cycle == 3 + 2 + 1
    assert cfg.effective_depth == 18 and cfg.grad_depth == 6
    assert cfg.resolved_halt_state == "z_H"


@pytest.mark.parametrize("outer,no_grad,expected", [(3, None, 2), (3, 2, 2), (3, 0, 0), (1, None, 0), (4, 1, 1)])
def test_no_grad_cycles_default_to_all_but_the_last(outer, no_grad, expected):
    assert make(outer_cycles=outer, no_grad_cycles=no_grad).arch.resolved_no_grad_cycles == expected


@pytest.mark.parametrize("outer,no_grad", [(3, 3), (2, 3), (3, -1)])
def test_no_grad_cycles_out_of_range_is_an_error_not_a_clamp(outer, no_grad):
    with pytest.raises(
        ConfigError, match=rf"model\.arch\.no_grad_cycles \({no_grad}\) must be between 0 and outer_cycles - 1"
    ):
        make(outer_cycles=outer, no_grad_cycles=no_grad)


def test_depth_counts_layers_of_the_shared_module():
    cfg = make(
        states=[StateSpec("z_H", 2), StateSpec("z_L", 1, share_weights_with="z_H")],
        stages=[StageSpec("z_L", ["z_H"], True, 6), StageSpec("z_H", ["z_L"], False, 1)],
    ).arch
    assert cfg.depth_per_cycle == 2 * 7  # z_L uses z_H's 2-layer module


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(stages=[StageSpec("z_Q", ["z_H"])]), r"model\.arch\.stages\.0: target 'z_Q' is not a state"),
        (dict(stages=[StageSpec("z_H", ["nope"])]), r"model\.arch\.stages\.0: source 'nope' is not a state"),
        (
            dict(stages=[StageSpec("z_H", [], repeat=1), StageSpec("z_L", [], repeat=-1)]),
            r"model\.arch\.stages\.1: repeat",
        ),
        (dict(stages=[]), "model.arch.stages is empty"),
        (dict(stages=[StageSpec("z_H", [], repeat=0)]), "every stage has repeat 0"),
        (
            dict(states=[StateSpec("a", 1, share_weights_with="b"), StateSpec("b", 1)]),
            r"model\.arch\.states\.0 .*earlier",
        ),
        (dict(states=[StateSpec("a", 1), StateSpec("a", 1)]), "defined twice"),
        (dict(readout_state="z_X"), "readout_state='z_X'"),
        (dict(hidden_size=30), "divisible"),
        (dict(pos_encodings="alibi"), "pos_encodings='alibi'"),
        (dict(puzzle_emb_len=4), "puzzle_emb_len=4 needs model.arch.puzzle_emb_ndim"),
        (dict(halt_max_steps=0), "halt_max_steps"),
    ],
)
def test_bad_configs_name_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        make(**kw)


def test_prefix_len():
    assert make(puzzle_emb_ndim=0).arch.prefix_len == 0
    assert make(puzzle_emb_ndim=70).arch.prefix_len == 3  # ceil(70 / 32)
    assert make(puzzle_emb_ndim=32, puzzle_emb_len=16).arch.prefix_len == 16
    assert make(puzzle_emb_ndim=32, puzzle_emb_len=16).total_seq_len == 32


def _two_stage(**stage0):
    return [StageSpec("z_L", ["z_H"], True, 3, **stage0), StageSpec("z_H", ["z_L"], False, 1)]


@pytest.mark.parametrize("grad_last, grad_depth", [(None, 4 + 4), (1, 4 + 2), (0, 4 + 1), (7, 4 + 4)])
def test_grad_last_counts_only_the_last_applications_of_the_last_cycle(grad_last, grad_depth):
    states = [StateSpec("z_H", 2), StateSpec("z_L", 2, "z_H")]
    cfg = make(states=states, stages=_two_stage(grad_last=grad_last), outer_cycles=3, no_grad_cycles=1).arch
    assert cfg.effective_depth == 3 * 4 * 2
    assert cfg.grad_depth == grad_depth * 2  # two layers per application; cycle 2 fully, cycle 3 as grad_last says


@pytest.mark.parametrize("bad", [-1, 1.5, True, "one"])
def test_grad_last_must_be_a_count(bad):
    with pytest.raises(ConfigError, match=r"model.arch.stages.0: grad_last must be an integer >= 0"):
        make(stages=_two_stage(grad_last=bad))


def test_a_window_without_any_gradient_is_an_error():
    stages = [StageSpec("z_L", ["z_H"], True, 3, grad_last=0), StageSpec("z_H", ["z_L"], False, 1, grad_last=0)]
    with pytest.raises(ConfigError, match="leaves no block application with gradient"):
        make(states=[StateSpec("z_H"), StateSpec("z_L", 1, "z_H")], stages=stages)
