"""How the network is trained: ``--model.train.<field>``, the algorithm and its own group (``model.train.act.*`` or
``model.train.dis.*``). The algorithm also decides how the network halts (``TrainConfig.halting``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from loopformer.config_groups import group_settings
from loopformer.errors import ConfigError
from loopformer.model.config import ArchConfig, Halting, LoopTransformerConfig, RuntimeConfig, check_choices

Algorithm = Literal["act", "dis"]
LossType = Literal["stablemax_cross_entropy", "softmax_cross_entropy"]
LossHead = Literal["act", "cross_entropy"]
DisLossMethod = Literal["mask", "loss"]


@dataclass
class ACTConfig:
    """ACT with deep supervision (HRM, TRM): one ACT step per batch, carried across batches until a row halts."""

    halt_max_steps: int = 16
    """ACT steps before a sequence is forced to halt (in evaluation too)."""
    halt_exploration_prob: float = 0.1
    """Probability of a random minimum number of steps in training."""
    act_enabled: bool = True
    """Halt on the Q head in training (false: every row runs halt_max_steps, without exploration; the Q head is
    still trained to predict correctness, as in VRN)."""
    act_inference: bool = False
    """Halt on the Q head during evaluation too (otherwise run halt_max_steps)."""
    no_ACT_continue: bool = True
    """Halt when q_halt > 0 and skip the Q-continue loss (TRM); else q_halt > q_continue."""
    loss_head: LossHead = "act"
    """act (the LM loss per sequence plus the halting losses, HRM/TRM's ACTLossHead) or cross_entropy (VRN's
    CrossEntropyLossHead: the token-mean LM loss, no Q loss)."""

    def __post_init__(self) -> None:
        check_choices("model.train.act", self, {"loss_head": LossHead})
        if self.halt_max_steps < 1:
            raise ConfigError(f"model.train.act.halt_max_steps must be >= 1, got {self.halt_max_steps}.")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ConfigError(
                f"model.train.act.halt_exploration_prob must lie in [0, 1], got {self.halt_exploration_prob}."
            )


@dataclass
class DISConfig:
    """Deep Improvement Supervision (VirtualRecursiveNetwork): ``max_steps`` supervision steps per batch from the
    initial states, step s adding a learned step embedding and trained toward the labels with a fraction
    1 - (s+1)/N masked; the token-mean cross-entropy head; no halting (evaluation runs ``max_steps`` steps)."""

    max_steps: int = 6
    """Supervision steps per batch (VRN's dis_max_steps)."""
    loss_method: DisLossMethod = "mask"
    """mask: an optimizer step after every supervision step, toward its masked target; loss: one optimizer step on
    the last step's loss plus the penalties relu(L_s - L_(s-1)) toward the full labels."""
    step_weighting: bool = False
    """mask method: weight step s's loss by (s+1)/N."""
    mask_penalty_weight: float = 0.0
    """Penalty on the probability of the mask token where the target is a token."""
    eval_step_embedding: bool = True
    """Evaluation adds ACT step s's step embedding, as training does. false: evaluate as VRN's evaluate does, without
    them (VRN runs a DIS model through its ACT path there): to reproduce the numbers VRN reports for its checkpoint."""

    def __post_init__(self) -> None:
        check_choices("model.train.dis", self, {"loss_method": DisLossMethod})
        if self.max_steps < 1:
            raise ConfigError(f"model.train.dis.max_steps must be >= 1, got {self.max_steps}.")


@dataclass
class TrainConfig:
    """The training algorithm (``training.training_algorithm`` builds it) and its settings."""

    algorithm: Algorithm = "act"
    """act (HRM/TRM: deep supervision across batches, ``model.train.act.*``) or dis (VRN's Deep Improvement
    Supervision, ``model.train.dis.*``)."""
    loss_type: LossType = "stablemax_cross_entropy"
    """stablemax_cross_entropy or softmax_cross_entropy."""
    act: ACTConfig = field(default_factory=ACTConfig)
    """ACT settings, used with algorithm act: the halting (in training and evaluation) and the loss head."""
    dis: DISConfig = field(default_factory=DISConfig)
    """DIS settings (with algorithm dis)."""

    def __post_init__(self) -> None:
        if isinstance(self.act, dict):
            self.act = ACTConfig(**self.act)
        if isinstance(self.dis, dict):
            self.dis = DISConfig(**self.dis)
        check_choices("model.train", self, {"algorithm": Algorithm, "loss_type": LossType})

    def check(self, arch: ArchConfig) -> None:
        """What the algorithm needs of the architecture."""
        if self.algorithm == "dis" and arch.resolved_no_grad_cycles != 0:
            raise ConfigError(
                "model.train.algorithm: dis needs model.arch.no_grad_cycles: 0 (every cycle of a supervision step "
                f"trains; got {arch.resolved_no_grad_cycles})."
            )

    @property
    def loss_head(self) -> LossHead:
        """DIS's targets hold mask tokens and it has no halting to learn: always the cross-entropy head."""
        return "cross_entropy" if self.algorithm == "dis" else self.act.loss_head

    @property
    def supervision_steps(self) -> int:
        """DIS's supervision steps (the network's step embeddings), 0 without DIS."""
        return self.dis.max_steps if self.algorithm == "dis" else 0

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimizer steps (``trainer.global_step``) a training batch makes: DIS's ``mask`` method steps after every
        supervision step; 1 otherwise. Lightning counts ``val_check_interval`` in batches, ``max_steps`` in these."""
        return self.dis.max_steps if self.algorithm == "dis" and self.dis.loss_method == "mask" else 1

    def halting(self) -> Halting:
        """How the network halts: ACT's settings, or with DIS exactly one ACT step per supervision step."""
        if self.algorithm == "dis":
            return Halting(max_steps=self.dis.max_steps, exploration_prob=0.0, in_training=False, in_evaluation=False)
        act = self.act
        return Halting(
            max_steps=act.halt_max_steps,
            exploration_prob=act.halt_exploration_prob,
            in_training=act.act_enabled,
            in_evaluation=act.act_inference,
            no_ACT_continue=act.no_ACT_continue,
        )


@dataclass
class EMAConfig:
    """An exponential moving average of the weights (``--model.ema.*``), with which validation runs and checkpoints
    are written (``ema.EMA``); resuming continues from the raw weights."""

    enabled: bool = False
    """Keep the average; validate and checkpoint with it (false when evaluating such a checkpoint: its raw
    weights)."""
    rate: float = 0.999
    """Decay per optimizer step (per batch with DIS, whose batches make several, as VirtualRecursiveNetwork
    updates its average)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ConfigError(f"model.ema.rate must lie in (0, 1), got {self.rate}.")


def network_config(
    arch: ArchConfig, train: TrainConfig, runtime: RuntimeConfig, dims: dict[str, int]
) -> LoopTransformerConfig:
    """The network a run builds: its architecture, the halting and step embeddings of its training algorithm, its
    runtime, and the dataset's sizes (``vocab_size``, ``seq_len``, ``num_puzzle_identifiers``)."""
    return LoopTransformerConfig(
        arch,
        **dims,
        halting=train.halting(),
        runtime=runtime,
        supervision_steps=train.supervision_steps,
        eval_step_embedding=train.dis.eval_step_embedding,
    )


def groups_from_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat settings (HRM/TRM/VRN's names, an old ``model.arch``) as the typed ``{arch, train, runtime}``."""
    return typed_groups(group_settings(flat))


def typed_groups(grouped: dict[str, Any]) -> dict[str, Any]:
    """A config's ``model`` section (plain dicts) as the typed ``{arch, train, runtime}``; absent ones at their
    defaults."""
    return {
        "arch": ArchConfig(**grouped.get("arch", {})),
        "train": TrainConfig(**grouped.get("train", {})),
        "runtime": RuntimeConfig(**grouped.get("runtime", {})),
    }


def network_config_from_flat(
    vocab_size: int, seq_len: int, num_puzzle_identifiers: int = 1, **flat: Any
) -> LoopTransformerConfig:
    """``network_config`` from flat settings (``hidden_size=32, halt_max_steps=4, forward_dtype="float32"``)."""
    groups = groups_from_flat(flat)
    dims = {"vocab_size": vocab_size, "seq_len": seq_len, "num_puzzle_identifiers": num_puzzle_identifiers}
    return network_config(groups["arch"], groups["train"], groups["runtime"], dims)
