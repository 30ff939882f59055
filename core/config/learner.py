"""`learner` and `algorithm`: the DeepSpeed training process and the loss it minimises."""

from typing import Literal

from pydantic import Field

from core.config.base import CpuList, Section


class LearnerConfig(Section):
    max_steps: int = Field(200, ge=1)
    """Optimizer steps before the run ends."""

    batch_groups: int = Field(16, ge=1)
    """Groups (prompts with all their samples) per optimizer step."""

    lr: float = Field(1e-4, gt=0)
    """Peak learning rate of AdamW."""

    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps from 0 to `lr`."""

    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""

    grad_clip: float | None = Field(1.0, gt=0)
    """Global gradient-norm clip; None disables clipping."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage."""

    micro_batch_tokens: int = Field(8192, ge=1)
    """Token budget of one micro-batch; a step accumulates gradients over as many as it needs."""

    precision: Literal["fp32", "bf16"] = "fp32"
    """Training precision of the policy. `fp32`: weights, activations and gradients in float32 (as
    `model.dtype` loads them). `bf16`: DeepSpeed's bf16 mode: the engine casts the policy's weights to
    bfloat16, so forward and backward run in bfloat16, while the optimizer keeps float32 master weights
    and Adam state (DeepSpeed's ZeRO or, at stage 0, its mixed-precision optimizer wrapper) and steps them.
    Log-softmax and sequence sums stay in float32 either way (core/logprobs.py). Meant for GPUs with
    bf16 units (A100, H100, H200); the learner refuses to start on an accelerator DeepSpeed reports
    without bf16 support. The engine casts the weights before it makes the master copies, so these
    start from the bf16-rounded weights whatever `model.dtype` loaded."""

    attention: Literal["eager", "sdpa"] = "sdpa"
    """Attention kernel of the policy (transformers' `attn_implementation`): `sdpa` is PyTorch's
    scaled_dot_product_attention (flash or memory-efficient kernels on CUDA), `eager` the plain matmul
    + softmax. Both give the same log-probs to float round-off."""

    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (transformers' gradient checkpointing): about one more forward pass of compute for much less
    activation memory, so larger `micro_batch_tokens` fit. Gradients are unchanged."""

    num_ranks: int = Field(1, ge=1)
    """Data-parallel learner ranks (gloo on CPU, NCCL on GPU). Above 1 the ranks are Ray actors; rank 0
    samples each batch and shares it, and every rank trains on whole groups of it."""

    rank_cpus: float = Field(1.0, ge=0)
    """CPUs Ray reserves for each learner rank (with `num_ranks` > 1)."""

    rank_gpus: float = Field(0.0, ge=0)
    """GPUs Ray reserves for each learner rank (with `num_ranks` > 1); 0 trains on the CPU over gloo."""

    sync_every: int = Field(1, ge=1)
    """Publish weights to the actors (policy version + 1) every this many steps."""

    checkpoint_every: int = Field(50, ge=1)
    """Write a checkpoint (DeepSpeed state, step, version, prompt cursor, HF export) this often. The
    fresh groups trained since the previous checkpoint are acknowledged to the buffer only once this
    one is on disk (until then they stay pending, and a crash hands them out again), so they join the
    replay pool up to this many steps late."""

    keep_checkpoints: int = Field(3, ge=1)
    """Complete checkpoints to keep: after a new one is written (and fsynced), older ones beyond this
    many are deleted. Keep at least 2 so a resume can fall back to the previous checkpoint when the
    newest does not load. `best/` is a copy, so it survives the deletion of its checkpoint."""

    eval_every: int = Field(10, ge=1)
    """Score the held-out prompts every this many steps (and at the start)."""

    wait_for_fresh: bool = True
    """Wait before each step until the buffer holds the batch's on-policy share of fresh groups
    (`buffer.on_policy_fraction * batch_groups`). False: replayed and offline groups fill in at once,
    so the learner never waits, but when it outpaces the actors it trains mostly on replay."""

    bad_data: Literal["skip", "error"] = "skip"
    """On an empty completion, a group of size 1 or a non-finite reward: skip the group (counted
    with its reason) or stop with an error."""

    cpu_affinity: CpuList | Literal["auto"] | None = None
    """CPU ids the learner process may run on, e.g. `[1]`; None: no pinning. Pinned, it trains with
    one torch/OpenMP/MKL thread per listed CPU. With one rank the learner runs in the driver process
    of `tandem train`, so the driver and an embedded reward server share these CPUs; Ray's own
    processes stay unpinned (the driver starts the Ray-served buffer on the actors' CPUs when those
    are a list). An id this machine does not offer is
    an error naming it, at learner start. `auto`: in an async run that starts its own Ray, the second
    half of this machine's CPUs (or what an explicit `actors.cpu_affinity` leaves); otherwise no
    pinning (core/affinity.py)."""


class AlgorithmConfig(Section):
    name: Literal["copg", "rloo", "agro"] = "copg"
    """Loss: `copg` and `agro` are valid off-policy; `rloo` is on-policy (see docs/algorithms.md)."""

    beta: float = Field(0.05, gt=0)
    """KL-regularisation strength towards the reference model."""

    average_logprobs: bool = False
    """Use per-token mean log-probs instead of sums (length-invariant; changes the optimum)."""

    importance_sampling: Literal["none", "truncated"] = "none"
    """RLOO only: `truncated` reweights slightly stale samples by min(pi/mu, is_cap)."""

    is_cap: float = Field(2.0, gt=0)
    """Cap of the truncated importance weight."""
