"""Typed configuration of the looped transformer, validated at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional, get_args

from loopformer.errors import ConfigError
from loopformer.kernels.dispatch import check_attention_backend


@dataclass
class StateSpec:
    """One named latent state (``z_L``, ``z_M``, ``z_H``) and the stack of blocks that updates it."""

    name: str
    """Name used by stages, ``readout_state`` and ``halt_state``."""
    layers: int = 1
    """Transformer blocks in this state's module (ignored when ``share_weights_with`` is set)."""
    share_weights_with: Optional[str] = None
    """Reuse the module of this earlier state instead of owning one."""


@dataclass
class StageSpec:
    """One stage of the loop schedule: ``states[target] = module(target)(states[target] + injection)``."""

    target: str
    """State updated by this stage."""
    sources: list[str] = field(default_factory=list)
    """States summed into the injection."""
    include_inputs: bool = False
    """Also add the input embedding to the injection."""
    repeat: int = 1
    """How many times the stage runs in a row (0 skips it)."""
    grad_last: Optional[int] = None
    """Of this stage's applications in the last outer cycle, how many (the last ones) carry gradient; the
    earlier ones run without (HRM's one-step gradient: 1). null: all of them."""

    def grad_applications(self) -> int:
        """Applications with gradient in the last outer cycle."""
        return self.repeat if self.grad_last is None else min(self.grad_last, self.repeat)


PosEncoding = Literal["rope", "learned", "none"]
Mixer = Literal["attention", "mlp"]
ForwardDtype = Literal["bfloat16", "float16", "float32"]
AttentionBackend = Literal["auto", "triton", "sdpa"]
MlpType = Literal["swiglu", "conv_swiglu"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def default_three_stage_states() -> list[StateSpec]:
    return [
        StateSpec("z_H", layers=1),
        StateSpec("z_M", layers=1, share_weights_with="z_H"),
        StateSpec("z_L", layers=1, share_weights_with="z_H"),
    ]


def default_three_stage_stages() -> list[StageSpec]:
    return [
        StageSpec("z_L", ["z_H"], include_inputs=True, repeat=3),
        StageSpec("z_M", ["z_L"], include_inputs=True, repeat=2),
        StageSpec("z_H", ["z_M"], include_inputs=False, repeat=1),
    ]


@dataclass
class ArchConfig:
    """The network: states, loop schedule, widths, embeddings (how it is trained: ``training.config.TrainConfig``; how
    it runs on the device: ``RuntimeConfig``; the sizes that come from the dataset: ``LoopTransformerConfig``).

    ``--model.arch.<field>`` on the command line, ``model: arch:`` in a config file."""

    states: list[StateSpec] = field(default_factory=default_three_stage_states)
    """Latent states and their modules: ``{name, layers, share_weights_with}``."""
    stages: list[StageSpec] = field(default_factory=default_three_stage_stages)
    """The loop schedule: ``{target, sources, include_inputs, repeat}``, run in order."""
    outer_cycles: int = 3
    """Passes over the whole schedule per ACT step."""
    no_grad_cycles: Optional[int] = None
    """Leading passes run without gradient (default outer_cycles - 1)."""
    readout_state: str = "z_H"
    """State decoded by the LM head."""
    halt_state: Optional[str] = None
    """State whose first token feeds the Q head (default: readout_state)."""
    hidden_size: int = 512
    """Width of every state."""
    num_heads: int = 8
    """Attention heads."""
    expansion: float = 4.0
    """SwiGLU expansion (inner size rounded up to a multiple of 256)."""
    pos_encodings: PosEncoding = "rope"
    """rope, learned or none."""
    rope_theta: float = 10000.0
    """RoPE base."""
    rms_norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    puzzle_emb_ndim: int = 0
    """Puzzle-embedding width (0: no puzzle embedding)."""
    puzzle_emb_len: int = 0
    """Prefix tokens holding it (0: ceil(ndim / hidden))."""
    mixer: Mixer = "attention"
    """attention, or mlp across the sequence (TRM's mlp_t)."""
    mlp_type: MlpType = "swiglu"
    """swiglu, or conv_swiglu (VirtualRecursiveNetwork's: a depthwise 1-D convolution, kernel 2, between the gated
    product and the down projection)."""
    dropout: float = 0.0
    """Dropout on the attention weights and on both residual branches of every block, in training only (VRN)."""

    def __post_init__(self) -> None:
        self.states = [s if isinstance(s, StateSpec) else StateSpec(**s) for s in self.states]
        self.stages = [s if isinstance(s, StageSpec) else StageSpec(**s) for s in self.stages]
        self._validate()

    # ----------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        self._validate_sizes()
        names = self._validate_states()
        self._validate_stages(names)
        for key in ("readout_state", "halt_state"):
            value = getattr(self, key)
            if value is not None and value not in names:
                raise ConfigError(f"model.arch.{key}={value!r} is not a state (states: {', '.join(names)}).")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.arch.dropout must lie in [0, 1), got {self.dropout}.")
        for key in ("expansion", "rope_theta", "rms_norm_eps"):
            if not getattr(self, key) > 0:  # NaN fails too
                raise ConfigError(f"model.arch.{key} must be > 0, got {getattr(self, key)}.")
        self._validate_puzzle_embedding()
        check_choices("model.arch", self, {"pos_encodings": PosEncoding, "mixer": Mixer, "mlp_type": MlpType})

    def _validate_sizes(self) -> None:
        for key in ("hidden_size", "num_heads", "outer_cycles"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"model.arch.{key} must be a positive integer, got {getattr(self, key)!r}.")
        if self.no_grad_cycles is not None and not 0 <= self.no_grad_cycles < self.outer_cycles:
            raise ConfigError(
                f"model.arch.no_grad_cycles ({self.no_grad_cycles}) must be between 0 and outer_cycles - 1 "
                f"({self.outer_cycles - 1}): the last outer cycle runs with gradient, or nothing in the loop trains "
                "(null, the default, means outer_cycles - 1)."
            )
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model.arch.hidden_size ({self.hidden_size}) must be divisible by model.arch.num_heads ({self.num_heads})."
            )
        if self.pos_encodings == "rope" and (self.hidden_size // self.num_heads) % 2:
            raise ConfigError(f"RoPE needs an even head dimension; hidden_size/num_heads = {self.head_dim}.")

    def _validate_states(self) -> list[str]:
        """Checks the states; returns their names."""
        if not self.states:
            raise ConfigError("model.arch.states is empty: define at least one state, e.g. {name: z_H, layers: 2}.")
        seen: dict[str, StateSpec] = {}
        for i, state in enumerate(self.states):
            if state.name in seen:
                raise ConfigError(f"model.arch.states.{i}: state name {state.name!r} is defined twice.")
            if state.share_weights_with is not None and state.share_weights_with not in seen:
                known = ", ".join(seen) or "none"
                raise ConfigError(
                    f"model.arch.states.{i} ({state.name}): share_weights_with={state.share_weights_with!r} must name an "
                    f"earlier state (earlier states: {known})."
                )
            if state.share_weights_with is None and state.layers < 1:
                raise ConfigError(f"model.arch.states.{i} ({state.name}): layers must be >= 1, got {state.layers}.")
            seen[state.name] = state
        return list(seen)

    def _validate_stages(self, states: list[str]) -> None:
        names = ", ".join(states)
        if not self.stages:
            raise ConfigError("model.arch.stages is empty: the loop schedule needs at least one stage.")
        for i, stage in enumerate(self.stages):
            if stage.target not in states:
                raise ConfigError(f"model.arch.stages.{i}: target {stage.target!r} is not a state (states: {names}).")
            for src in stage.sources:
                if src not in states:
                    raise ConfigError(f"model.arch.stages.{i}: source {src!r} is not a state (states: {names}).")
            if isinstance(stage.repeat, bool) or int(stage.repeat) != stage.repeat or stage.repeat < 0:
                raise ConfigError(f"model.arch.stages.{i}: repeat must be an integer >= 0, got {stage.repeat!r}.")
            grad_last = stage.grad_last
            if grad_last is not None and (
                not isinstance(grad_last, int) or isinstance(grad_last, bool) or grad_last < 0
            ):
                raise ConfigError(
                    f"model.arch.stages.{i}: grad_last must be an integer >= 0 (how many of the stage's last applications "
                    f"in the last outer cycle carry gradient) or null for all of them, got {grad_last!r}."
                )
        if self.effective_depth == 0:
            raise ConfigError("model.arch.stages: every stage has repeat 0, so the schedule applies no block.")
        if self.grad_depth == 0:
            raise ConfigError(
                "model.arch.stages: grad_last leaves no block application with gradient in the last outer cycle, so "
                "nothing in the loop trains; give at least one stage grad_last >= 1 (or null)."
            )

    def _validate_puzzle_embedding(self) -> None:
        if self.puzzle_emb_ndim < 0 or self.puzzle_emb_len < 0:
            raise ConfigError("model.arch.puzzle_emb_ndim and model.arch.puzzle_emb_len must be >= 0.")
        if self.puzzle_emb_ndim == 0 and self.puzzle_emb_len > 0:
            raise ConfigError(
                f"model.arch.puzzle_emb_len={self.puzzle_emb_len} needs model.arch.puzzle_emb_ndim > 0: the prefix tokens hold "
                "the puzzle embedding (set puzzle_emb_ndim, e.g. to hidden_size, or puzzle_emb_len to 0)."
            )
        if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            raise ConfigError(
                f"model.arch.puzzle_emb_ndim={self.puzzle_emb_ndim} does not fit in puzzle_emb_len={self.puzzle_emb_len} "
                f"prefix tokens of hidden_size={self.hidden_size}."
            )

    # ----------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def prefix_len(self) -> int:
        """Puzzle-embedding prefix tokens: ``puzzle_emb_len``, or ceil(ndim / hidden) when that is 0."""
        if self.puzzle_emb_ndim == 0:
            return 0
        return self.puzzle_emb_len or math.ceil(self.puzzle_emb_ndim / self.hidden_size)

    @property
    def resolved_no_grad_cycles(self) -> int:
        return self.outer_cycles - 1 if self.no_grad_cycles is None else self.no_grad_cycles

    @property
    def resolved_halt_state(self) -> str:
        return self.halt_state or self.readout_state

    def layers_of(self, name: str) -> int:
        by_name = {s.name: s for s in self.states}
        state = by_name[name]
        while state.share_weights_with is not None:
            state = by_name[state.share_weights_with]
        return state.layers

    @property
    def depth_per_cycle(self) -> int:
        """Blocks applied by one pass of the schedule."""
        return sum(stage.repeat * self.layers_of(stage.target) for stage in self.stages)

    @property
    def effective_depth(self) -> int:
        """Blocks applied per ACT step (all outer cycles)."""
        return self.outer_cycles * self.depth_per_cycle

    @property
    def grad_depth(self) -> int:
        """Blocks applied per ACT step with gradient: the cycles after ``no_grad_cycles``, the last one as far as
        each stage's ``grad_last`` says."""
        last = sum(stage.grad_applications() * self.layers_of(stage.target) for stage in self.stages)
        return (self.outer_cycles - self.resolved_no_grad_cycles - 1) * self.depth_per_cycle + last


def check_choices(group: str, config: object, choices: dict[str, object]) -> None:
    """Each ``field: Literal[...]`` of ``choices`` holds one of its values, or a ConfigError naming the key."""
    for key, kind in choices.items():
        if getattr(config, key) not in get_args(kind):
            raise ConfigError(f"{group}.{key}={getattr(config, key)!r}; expected one of {', '.join(get_args(kind))}.")


@dataclass
class RuntimeConfig:
    """How the network runs on the device, not what it computes (up to rounding): ``--model.runtime.<field>``."""

    attention_backend: AttentionBackend = "auto"
    """auto (Triton kernel on CUDA, SDPA elsewhere), triton, or sdpa."""
    forward_dtype: ForwardDtype = "bfloat16"
    """Activation dtype of the forward pass."""
    gradient_checkpointing: bool = False
    """Recompute block activations in backward to save memory."""
    compile: bool = False
    """Compile the whole ACT step (core, heads, carry update, and in training the loss) with torch.compile, one
    graph without breaks; the weights stay in place, so checkpoints keep their keys."""
    compile_mode: CompileMode = "default"
    """torch.compile's mode with ``compile``: ``reduce-overhead`` replays the step as CUDA graphs (on a CUDA device;
    launch overhead is most of a small model's step), ``max-autotune`` also tunes the matrix products (and uses CUDA
    graphs), ``max-autotune-no-cudagraphs`` tunes without them."""

    def __post_init__(self) -> None:
        check_choices(
            "model.runtime",
            self,
            {"attention_backend": AttentionBackend, "forward_dtype": ForwardDtype, "compile_mode": CompileMode},
        )

    def check(self, arch: ArchConfig) -> None:
        """The attention backend can run this architecture (Triton: a supported head dimension)."""
        check_attention_backend(self.attention_backend, arch.head_dim if arch.mixer == "attention" else None)


@dataclass
class Halting:
    """ACT halting as the network runs it, set by the training algorithm (``training.config.TrainConfig.halting``)."""

    max_steps: int = 16
    """ACT steps before a row is forced to halt."""
    exploration_prob: float = 0.1
    """Training: probability of a random minimum number of steps."""
    in_training: bool = True
    """A row may halt on its Q head in training."""
    in_evaluation: bool = False
    """A row may halt on its Q head in evaluation."""
    no_ACT_continue: bool = True
    """Halt when q_halt > 0 (TRM); else when q_halt > q_continue."""


DATASET_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")


@dataclass
class LoopTransformerConfig:
    """What a LoopTransformer is built from: the architecture, the halting its training algorithm runs, how it runs,
    and the sizes the dataset gives it."""

    arch: ArchConfig
    vocab_size: int
    """Tokens in the vocabulary (from the dataset)."""
    seq_len: int
    """Tokens per puzzle, without the puzzle-embedding prefix (from the dataset)."""
    num_puzzle_identifiers: int = 1
    """Rows of the puzzle-embedding table (from the dataset)."""
    halting: Halting = field(default_factory=Halting)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    supervision_steps: int = 0
    """DIS: a learned embedding per supervision step, and a mask token after the dataset's vocabulary (0: none)."""
    eval_step_embedding: bool = True
    """DIS: whether evaluation adds the step embeddings too (false: as VRN evaluates)."""

    def __post_init__(self) -> None:
        for key in DATASET_FIELDS:
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"the dataset's {key} must be a positive integer, got {getattr(self, key)!r}.")
        if self.halting.max_steps < 1:
            raise ConfigError(f"ACT's halt_max_steps must be >= 1, got {self.halting.max_steps}.")
        self.runtime.check(self.arch)

    @property
    def total_seq_len(self) -> int:
        """Positions of a state: the puzzle-embedding prefix and the puzzle's tokens."""
        return self.arch.prefix_len + self.seq_len

    @property
    def model_vocab_size(self) -> int:
        """Rows of the token embedding and the LM head: the dataset's vocabulary, plus DIS's mask token."""
        return self.vocab_size + (1 if self.supervision_steps else 0)

    @property
    def mask_token_id(self) -> int:
        """DIS: the token its intermediate targets hold where a label is still hidden (the last row)."""
        return self.vocab_size
