"""`reward`: the reward server (embedded or remote) and its named, weighted scorers.

Each scorer type has its own options model; `type` selects it, so a misspelt option of one scorer
is an error that names that scorer's key path.
"""

import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.config.base import Section
from core.redaction import redact_tree


class ScorerBase(Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Name reported in per-scorer scores, metrics and logs; unique within `reward.scorers`."""

    weight: float = 1.0
    """Weight of this scorer in the reward (the reward is the weighted sum of scorer outputs)."""

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("weight must be a finite number")
        return value


class ExactMatchScorerConfig(ScorerBase):
    type: Literal["exact_match"] = "exact_match"
    pattern: str = r"^\s*(\S+)"
    """Regex whose first group (or whole match) is the answer extracted from the completion."""

    numeric_tolerance: float | None = Field(None, ge=0)
    """Compare as numbers within this absolute tolerance; None compares strings exactly."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        return value


class UnitTestsScorerConfig(ScorerBase):
    type: Literal["unit_tests"] = "unit_tests"
    sandbox: Literal["bwrap", "none"] = "bwrap"
    """`bwrap`: bubblewrap isolation (no network, read-only root). `none` runs code unsandboxed and
    logs a loud warning; only for trusted code."""

    prepend_prompt: bool = True
    """Prepend the prompt to the completion before running (for prompts that start a function)."""

    timeout_s: float = Field(5.0, gt=0)
    """Wall-clock limit per test run."""

    cpu_seconds: int = Field(2, gt=0)
    """CPU-time limit per test run (RLIMIT_CPU)."""

    memory_mb: int = Field(256, gt=0)
    """Memory limit per test run: address space and private data (RLIMIT_AS, RLIMIT_DATA); the
    sandbox's /tmp can hold up to 64 MiB more, and nothing else in it is writable."""

    max_processes: int = Field(16, gt=0)
    """Processes and threads one run may have at once (RLIMIT_NPROC, counted for the run's own uid:
    as root each run drops to a random unprivileged uid, since the kernel never limits uid 0). The
    harness itself needs 4 (its thread and the completion's, the test's and the worker's): below that
    every item is reported as an error, never scored 0."""

    max_output_bytes: int = Field(65536, gt=0)
    """Output kept per test run; a run printing more is killed."""

    max_concurrency: int = Field(4, ge=1)
    """Sandboxed test runs at once (each test of each item is one sandbox process)."""

    python: Path | None = None
    """Interpreter run inside the sandbox; None: the server's own base interpreter (a venv's
    python resolved to the installation it links to). Completions get its standard library only:
    its site-packages is hidden in the sandbox."""


class ModelScorerConfig(ScorerBase):
    path: Path
    """Local Hugging Face sequence-classification model directory."""

    batch_size: int = Field(32, ge=1)
    """Items per forward pass."""

    max_length: int = Field(512, ge=8)
    """Inputs are truncated to this many tokens."""


class RewardModelScorerConfig(ModelScorerConfig):
    type: Literal["reward_model"] = "reward_model"


class EntailmentScorerConfig(ModelScorerConfig):
    type: Literal["entailment"] = "entailment"
    entailment_label: str = "entailment"
    """Label (case-insensitive, through the model's id2label) whose probability is the reward."""


class HttpScorerConfig(ScorerBase):
    type: Literal["http"] = "http"
    url: str
    """Endpoint URL of the external scorer."""

    format: Literal["tandem", "openrlhf", "template"] = "tandem"
    """`tandem`: POST /v1/score bodies; `openrlhf`: {query, prompts, labels} -> {rewards};
    `template`: one request per item from `request_template`, reward at `response_path`."""

    request_template: dict[str, object] | None = None
    """For `template`: JSON body whose string values may contain {prompt}, {completion}, {reference}."""

    response_path: str = "reward"
    """For `template`: dotted path to the reward in the JSON response (e.g. `data.0.score`)."""

    timeout_s: float = Field(10.0, gt=0)
    """Per-request timeout."""

    retries: int = Field(3, ge=0)
    """Retries on connection errors, timeouts and 5xx, with exponential backoff."""

    max_concurrency: int = Field(8, ge=1)
    """Requests in flight to this endpoint at once."""

    backoff_s: float = Field(0.2, ge=0)
    """Delay before the first retry; it doubles on each further retry."""

    batch_size: int = Field(64, ge=1)
    """Items per request in the `tandem` and `openrlhf` formats (`template` sends one item per request)."""

    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. `Authorization: Bearer ...` for an endpoint that needs a token."""

    circuit_failures: int = Field(5, ge=1)
    """Consecutive failed requests (retries exhausted) that open the circuit breaker."""

    circuit_cooldown_s: float = Field(30.0, gt=0)
    """How long an open circuit fails items at once, before one trial request (half-open) may close it."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _template_is_given(self) -> "HttpScorerConfig":
        if self.format == "template" and not self.request_template:
            raise ValueError("format: template needs request_template")
        return self


class PythonScorerConfig(ScorerBase):
    type: Literal["python"] = "python"
    function: str = Field(pattern=r"^[\w.]+:[\w]+$")
    """Import path `package.module:function` of `fn(prompt, completion, item) -> float`."""


ScorerConfig = Annotated[
    ExactMatchScorerConfig
    | UnitTestsScorerConfig
    | RewardModelScorerConfig
    | EntailmentScorerConfig
    | HttpScorerConfig
    | PythonScorerConfig,
    Field(discriminator="type"),
]


class RewardConfig(Section):
    url: str | None = None
    """URL of a running reward server; None starts one embedded on a free loopback port."""

    host: str = "127.0.0.1"
    """Bind address of `tandem reward-server`. Binding beyond loopback requires `auth_token`."""

    port: int = Field(8100, ge=0, le=65535)
    """Port of `tandem reward-server` (0: a free port)."""

    workers: int = Field(1, ge=1)
    """Uvicorn worker processes."""

    auth_token: str | None = Field(None, min_length=1)
    """Bearer token required on scoring routes when set. Empty is refused: an unset variable in
    `--set reward.auth_token=$VAR` must not leave a public server open."""

    scorers: list[ScorerConfig] = Field(
        default_factory=lambda: [ExactMatchScorerConfig(name="exact_match")], min_length=1
    )
    """Named, weighted scorers; the reward of an item is the weighted sum of their outputs."""

    max_items: int = Field(1024, ge=1)
    """Most items in one scoring request (more: HTTP 413)."""

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest request body accepted (more: HTTP 413)."""

    max_text_chars: int = Field(100_000, ge=1)
    """Longest prompt, completion, reference, label or test accepted, in characters (more: HTTP 422
    naming the field)."""

    max_tests: int = Field(100, ge=0)
    """Most unit tests on one item (more: HTTP 422 naming the field)."""

    max_json_depth: int = Field(32, ge=4)
    """Deepest nesting of arrays and objects in a scoring request body, the body itself counting as one
    (a /v1/score item's `metadata` sits at 4). Deeper is HTTP 422 naming the field: deep nesting
    exhausts the parsers' recursion without adding anything a scorer needs."""

    scorer_timeout_s: float = Field(300.0, gt=0)
    """Deadline of one scorer on one request; the items it has not scored by then are reported as
    `timeout`."""

    client_timeout_s: float = Field(60.0, gt=0)
    """Deadline of one scoring call from the actors' reward client."""

    client_retries: int = Field(3, ge=0)
    """Retries of a failed scoring call by the actors' reward client, with exponential backoff."""

    def redacted(self) -> dict[str, object]:
        """The section as JSON-ready data with secrets (the auth token, http scorer headers, URL
        passwords) masked by the one `redact_tree`: what `tandem reward-server` prints at launch and
        what the server's config hash is computed from."""
        return redact_tree(self.model_dump(mode="json"))  # type: ignore[no-any-return]

    @model_validator(mode="after")
    def _unique_scorer_names(self) -> "RewardConfig":
        names = [scorer.name for scorer in self.scorers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"scorer names must be unique, repeated: {duplicates}")
        return self
