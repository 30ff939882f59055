"""`actors`: the vLLM generation actors, their sampling and the prompt sets they read."""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from core.config.base import CpuList, Section

# Tandem's prompt record fields (core/prompts/record.py KNOWN_FIELDS; not imported: core.prompts
# imports the config package).
PromptField = Literal["prompt_id", "prompt", "messages", "reference", "tests", "metadata"]


class ActorsConfig(Section):
    num_actors: int = Field(1, ge=1)
    """Number of generator actors (each owns one vLLM engine)."""

    n_samples: int = Field(4, ge=1)
    """Completions sampled per prompt; one prompt's completions form a group (>= 2 for every loss)."""

    prompts_per_batch: int = Field(16, ge=1)
    """Prompts an actor generates for at once before scoring and pushing their groups."""

    temperature: float = Field(1.0, ge=0)
    """Sampling temperature T. Behaviour log-probs are those of the distribution sampled from (logits / T);
    RLOO's score function and importance ratio use the learner's policy at T too (docs/algorithms.md)."""

    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass; below 1 the behaviour policy is a truncated distribution that the learner
    does not reproduce, so RLOO with importance sampling refuses it."""

    max_tokens: int = Field(16, ge=1)
    """Maximum completion length in tokens."""

    stop: list[str] = Field(default_factory=list)
    """Stop strings; generation ends before them (end-of-sequence always stops)."""

    train_prompts: Path = Path("models/tiny-arith/prompts/train.jsonl")
    """Training prompts: a JSONL file (one object per line), a Parquet file (`.parquet`, `.pq`) or a
    Hugging Face `datasets` folder (`Dataset.save_to_disk`), one record per line or row with `prompt`
    (text) or `messages` (a list of `{role, content}`, rendered by the policy's chat template),
    optional `prompt_id`, `reference`, `tests`, `metadata`; columns renamed by `prompt_fields`."""

    prompt_fields: dict[PromptField, str] = Field(default_factory=dict)
    """The prompt files' column for each of Tandem's record fields, e.g. `{prompt: question,
    reference: answer}`, for `train_prompts`, `eval_prompts` and `tandem prompts push`; fields not
    named keep their own names. Empty: every field by its own name, and any other field is an error;
    with a mapping the files' other columns are ignored."""

    prompt_source: Literal["file", "redis"] = "file"
    """Where training prompts come from: `file` reads `train_prompts` (epochs, seeded order, sharded);
    `redis` reads the stream `prompt_stream`, fed while the run goes (`tandem prompts push`), each
    prompt going to one actor."""

    prompt_redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis connection URL of the prompt stream (for `prompt_source: redis`)."""

    prompt_stream: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    """Redis stream key of the live prompts; None: `tandem:<run.name>:prompts`."""

    eval_prompts: Path | None = Path("models/tiny-arith/prompts/eval.jsonl")
    """Held-out prompts, in any format of `train_prompts`, scored at start and every
    `learner.eval_every` steps; None: no eval."""

    num_cpus: float = Field(1.0, gt=0)
    """CPUs Ray reserves for each actor."""

    num_gpus: float = Field(0.0, ge=0)
    """GPUs Ray reserves for each actor (0 on CPU machines)."""

    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each actor needs, e.g. `{generator_node: 1}` to place actors only on
    nodes started with `ray start --resources='{"generator_node": 8}'`."""

    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM tensor-parallel degree inside one actor."""

    engine_in_process: bool | None = None
    """Run vLLM's engine core and its one worker inside the actor's process (vLLM's
    `VLLM_ENABLE_V1_MULTIPROCESSING=0` with the `uni` executor) instead of two processes of their own.
    In process, nothing is spawned and vLLM and torch are imported once: on a CPU the engine starts in
    ~4 s instead of ~30 s, and the tiny demo model generates as fast or faster (no inter-process hop per
    step). A separate engine process overlaps scheduling with the model's compute, which pays on a GPU.
    None: in process when the actor has no GPU (`num_gpus: 0`) and `tensor_parallel_size` is 1 (tensor
    parallelism needs one process per worker)."""

    max_restarts: int = Field(3, ge=-1)
    """How often Ray restarts a dead actor (-1: without limit)."""

    reward_batch_size: int = Field(64, ge=1)
    """Items per `/v1/score` request from an actor's reward client."""

    reward_concurrency: int = Field(4, ge=1)
    """Scoring requests one actor keeps in flight at once."""

    reward_item_retries: int = Field(1, ge=0)
    """Times the items whose reward failed are scored again before their group is dead-lettered
    (`<run_dir>/dead_letter/<actor>.jsonl`) instead of pushed."""

    reward_outage_s: float = Field(300.0, ge=0)
    """How long an actor holds a batch whose reward calls all failed for lack of a server answer
    (unreachable, 5xx, deadline), retrying with growing pauses, before it dead-letters the batch."""

    pause_s: float = Field(0.5, gt=0)
    """The longest pause of an actor while the buffer's backlog is at its high-water mark or its
    weights are more than `buffer.max_staleness` versions behind the learner; it checks every 20 ms
    and goes on as soon as the backlog is below the mark or newer weights are published."""

    cpu_affinity: CpuList | Literal["auto"] | None = None
    """CPU ids each actor process (and the vLLM engine processes it starts) may run on, e.g. `[0]`;
    None: no pinning. Pinned, the process uses one thread per listed CPU (torch, OpenMP, MKL) and vLLM's
    CPU worker binds its OpenMP threads to exactly these CPUs (`VLLM_CPU_OMP_THREADS_BIND`), so actors
    and a learner pinned elsewhere do not compete for cores. An id this machine does not offer the
    actor is an error naming it, at actor start. `auto`: in an async run that starts its own Ray, the
    first half of this machine's CPUs (the rest go to an `auto` learner, or to whatever CPUs an
    explicit `learner.cpu_affinity` leaves); otherwise no pinning (core/affinity.py)."""

    @field_validator("prompt_fields")
    @classmethod
    def _columns_named(cls, fields: dict[str, str]) -> dict[str, str]:
        # pydantic checks the keys (PromptField); an empty column name would match no column.
        empty = sorted(name for name, column in fields.items() if not column)
        if empty:
            raise ValueError(f"the column of {empty} must be a non-empty string")
        return fields
