"""The root of the config tree, and the invariants that tie its sections together."""

from pydantic import Field, model_validator

from core.config.actors import ActorsConfig
from core.config.base import Section
from core.config.buffer import BufferConfig
from core.config.learner import AlgorithmConfig, LearnerConfig
from core.config.logs import LoggingConfig
from core.config.model import ModelConfig
from core.config.reward import RewardConfig
from core.config.run import RunConfig
from core.config.weight_sync import WeightSyncConfig

GREEDY_TEMPERATURE = 1e-5  # vLLM decodes greedily below this temperature (its _SAMPLING_EPS)


class TandemConfig(Section):
    """Everything a Tandem run is configured by; every process reads its own section of it."""

    run: RunConfig = Field(default_factory=RunConfig)
    """Run identity, output directory, seed, scheduling mode and time budget."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """Policy and reference model."""

    actors: ActorsConfig = Field(default_factory=ActorsConfig)
    """Generation actors and sampling."""

    reward: RewardConfig = Field(default_factory=RewardConfig)
    """Reward server and scorers."""

    buffer: BufferConfig = Field(default_factory=BufferConfig)
    """Experience buffer and mixing."""

    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """DeepSpeed learner."""

    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    """Loss function and its options."""

    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    """Learner-to-actor weight transport."""

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Logging, progress display and metrics exposure."""

    @model_validator(mode="after")
    def _check_cross_section_invariants(self) -> "TandemConfig":
        """The one place where sections are checked against each other (each message names the keys)."""
        problems: list[str] = []
        if self.actors.n_samples < 2:
            problems.append(
                f"actors.n_samples={self.actors.n_samples}: {self.algorithm.name} needs groups of at least "
                "2 completions per prompt (pairs or a leave-one-out baseline)"
            )
        on_policy_only = self.algorithm.name == "rloo" and self.algorithm.importance_sampling == "none"
        if on_policy_only and self.buffer.on_policy_fraction < 1.0:
            problems.append(
                f"algorithm.name=rloo with algorithm.importance_sampling=none is valid on-policy only, but "
                f"buffer.on_policy_fraction={self.buffer.on_policy_fraction}: set it to 1.0, or use "
                "importance_sampling: truncated, or an off-policy loss (copg, agro)"
            )
        if self.buffer.high_water < self.learner.batch_groups:
            problems.append(
                f"buffer.high_water={self.buffer.high_water} is below learner.batch_groups="
                f"{self.learner.batch_groups}: actors would pause before one batch of fresh groups exists"
            )
        if self.algorithm.importance_sampling != "none" and self.algorithm.name != "rloo":
            problems.append(
                f"algorithm.importance_sampling={self.algorithm.importance_sampling} applies to rloo only; "
                f"{self.algorithm.name} needs no importance weights"
            )
        if self.algorithm.name == "rloo" and self.algorithm.importance_sampling != "none":
            problems += self._importance_sampling_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _importance_sampling_problems(self) -> list[str]:
        """What rules out RLOO's importance weights pi_T(y) / mu(y): a behaviour distribution the learner
        cannot reproduce, or groups without mu(y) at all."""
        problems: list[str] = []
        mode = self.algorithm.importance_sampling
        if self.actors.top_p < 1.0:
            # vLLM's processed log-probs are then normalised over the nucleus; the learner would need
            # each position's nucleus to match them, and a ratio to the untruncated pi_T is biased.
            problems.append(
                f"algorithm.importance_sampling={mode} with actors.top_p={self.actors.top_p}: the actors "
                "sample from a top-p truncated distribution whose probabilities the learner does not "
                "reproduce, so the importance weights would be wrong; set actors.top_p: 1.0 (temperature "
                "is matched), or use importance_sampling: none with on-policy data, or copg/agro"
            )
        if self.actors.temperature < GREEDY_TEMPERATURE:
            problems.append(
                f"algorithm.importance_sampling={mode} with actors.temperature={self.actors.temperature}: "
                "greedy decoding has no sampling density to weight by; set a temperature > 0"
            )
        if self.buffer.offline_fraction > 0:
            problems.append(
                f"algorithm.importance_sampling={mode} with buffer.offline_fraction="
                f"{self.buffer.offline_fraction}: offline groups carry no behaviour log-probs, so they "
                "have no importance weight (a weight of 1 would treat them as on-policy); set "
                "buffer.offline_fraction: 0, or use copg/agro to learn from offline data"
            )
        return problems
