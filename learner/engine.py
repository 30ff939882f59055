"""DeepSpeed for the learner (the only module that imports deepspeed): set-up, stepping, checkpoints.

On CPU (`DS_ACCELERATOR=cpu`) ranks talk over gloo, on GPUs over NCCL. ZeRO stage, AdamW, warm-up,
gradient clipping, precision (fp32 or DeepSpeed's bf16 with float32 master weights), the attention
kernel and activation checkpointing come from `LearnerConfig`. A step may span a variable number of
micro-batches (a token budget, see step.py): `begin_step` sets DeepSpeed's accumulation count for it.
"""

import importlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import deepspeed
import torch

from core.config.learner import LearnerConfig


def init_distributed() -> None:
    """Join the torch.distributed group DeepSpeed needs, from RANK, WORLD_SIZE, MASTER_ADDR/PORT
    (ranks.py or a launcher sets them); a lone process makes a group of one on a free port, so two
    single-rank learners on one machine do not collide on a fixed default port."""
    if torch.distributed.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu" else "gloo"
    if backend == "gloo":
        skip_shared_memory_op()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
        deepspeed.init_distributed(dist_backend=backend)
        return
    # A lone process always takes a fresh port, even when it inherited a group-of-one's variables
    # from the process that started it (whose store still listens on that port). The port found
    # here can be taken by another process (Ray starts many) before the store listens on it, so a
    # collision is retried on a new port.
    for attempt in range(5):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
        )
        try:
            deepspeed.init_distributed(dist_backend=backend)
            return
        except torch.distributed.DistNetworkError:
            if attempt == 4:
                raise


def skip_shared_memory_op() -> None:
    """Stop DeepSpeed's CPU back-end from compiling its shared-memory all-reduce at start-up.

    DeepSpeed's torch back-end builds the `deepspeed_shm_comm_op` C++ extension (JIT, about 70 s on a
    fresh machine, then cached) whenever it starts on the CPU accelerator. The op serves only
    `inference_all_reduce`, which training never calls: the learner's collectives go through gloo. Without
    the op, DeepSpeed falls back to torch.distributed for everything, as it does on an accelerator where
    the op is not compatible.
    """
    # By module path: `from deepspeed.comm import torch` would give PyTorch itself, which
    # deepspeed.comm's namespace also holds under that name.
    backend_module = importlib.import_module("deepspeed.comm.torch")
    backend_module.build_shm_op = lambda: None


def deepspeed_config(config: LearnerConfig, accelerator: str | None = None) -> dict[str, Any]:
    """DeepSpeed's config for `config` on `accelerator` (DeepSpeed's device name, by default the one
    it picked); `precision: bf16` adds its bf16 section (weights and activations in bfloat16, float32
    master weights and optimizer state)."""
    if accelerator is None:
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator().device_name()
    optimizer: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay, "torch_adam": True}
    if accelerator == "cuda":
        # PyTorch's AdamW (DeepSpeed passes the other params through): its fused CUDA kernel is one
        # launch per step instead of a few per tensor, and needs no DeepSpeed op compiled at run time.
        optimizer["fused"] = True
    settings: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": optimizer},
        "zero_optimization": {"stage": config.zero_stage},
        "gradient_clipping": config.grad_clip or 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if config.precision == "bf16":
        settings["bf16"] = {"enabled": True}
    return settings


def check_precision(config: LearnerConfig) -> None:
    """Refuse `precision: bf16` where DeepSpeed's accelerator reports no bf16 support, naming the field."""
    if config.precision != "bf16":
        return
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if not accelerator.is_bf16_supported():
        raise ValueError(
            f"learner.precision=bf16: DeepSpeed's {accelerator.device_name()} accelerator has no bf16 "
            "support on this machine; set learner.precision: fp32"
        )


def prepare_model(model: torch.nn.Module, config: LearnerConfig) -> torch.nn.Module:
    """Apply the attention kernel and activation checkpointing of `config` to a transformers model."""
    set_attention = getattr(model, "set_attn_implementation", None)
    if set_attention is not None:
        set_attention(config.attention)
    if config.activation_checkpointing:
        # Non-reentrant checkpointing: gradients flow to parameters even when the layer inputs do not
        # require them, and it is the variant PyTorch recommends.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
        # transformers checkpoints a layer only in training mode; from_pretrained returns the model in
        # eval mode, which the learner keeps (no dropout). Only the checkpointed layers themselves are
        # flagged, not their submodules, so dropout stays off and the gradients are unchanged.
        for module in model.modules():
            if getattr(module, "gradient_checkpointing", False):
                module.training = True
    return model


def create_engine(model: torch.nn.Module, config: LearnerConfig) -> Any:
    """A DeepSpeed engine for `model` (the learning rate is set per step, see `begin_step`)."""
    check_precision(config)
    init_distributed()
    model = prepare_model(model, config)
    parameters = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=parameters, config=deepspeed_config(config)
    )
    return engine


def warmup_lr(config: LearnerConfig, step: int) -> float:
    """Linear warm-up from lr/warmup_steps to `lr` over the first `warmup_steps` steps, then constant.

    Applied by hand: DeepSpeed's WarmupLR derives from torch's LRScheduler, which refuses ZeRO's
    optimizer wrapper under torch 2.13."""
    return config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))


def begin_step(engine: Any, micro_batches: int, lr: float) -> None:
    """Set this step's learning rate; make DeepSpeed step after exactly `micro_batches` backward passes."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
    world = torch.distributed.get_world_size()
    if engine.gradient_accumulation_steps() != micro_batches:
        engine.set_train_batch_size(micro_batches * world)


def backward(engine: Any, loss: torch.Tensor) -> float | None:
    """Accumulate gradients of one micro-batch's share (the caller has already scaled it); DeepSpeed
    steps the optimizer at the accumulation boundary. Returns the global gradient norm measured just
    before that step where DeepSpeed reports none (ZeRO stage 0, whose gradients are whole and already
    averaged over ranks here), else None."""
    engine.backward(loss, scale_wrt_gas=False)
    measured = None
    if engine.zero_optimization_stage() == 0 and engine.is_gradient_accumulation_boundary():
        norms = [p.grad.detach().float().norm() for p in engine.module.parameters() if p.grad is not None]
        measured = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    engine.step()
    return measured


def grad_norm(engine: Any, measured: float | None = None) -> float:
    """The step's global gradient norm before clipping: DeepSpeed's, else the one `backward` measured."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        norm = measured
    return float(norm) if norm is not None else float("nan")


@contextmanager
def full_parameters(engine: Any) -> Iterator[None]:
    """Inside, `engine.module` holds whole parameters on every rank (for publishing and the HF export).

    ZeRO-3 partitions the parameters themselves, so they are gathered (a collective: every rank must
    enter); stages 0-2 keep whole parameters on every rank already."""
    if engine.zero_optimization_stage() == 3:
        context: Any = deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    else:
        context = nullcontext()
    with context:
        yield


def optimizer_steps(engine: Any) -> int:
    """Adam's step count as the optimizer state holds it (0 for a fresh optimizer): shows a resume
    restored the optimizer, not only the weights. ZeRO wraps the torch optimizer; stage 0 does not."""
    inner = engine.optimizer.optimizer if hasattr(engine.optimizer, "optimizer") else engine.optimizer
    steps = [state["step"] for state in inner.state.values() if "step" in state]
    return int(max(steps)) if steps else 0


def save_state(engine: Any, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
    engine.save_checkpoint(str(directory), tag=tag, client_state=client_state)


def load_state(engine: Any, directory: Path, tag: str | None = None) -> dict[str, Any] | None:
    """Restore module, optimizer and scheduler; returns the client state (step, version, cursor)."""
    path, client_state = engine.load_checkpoint(str(directory), tag=tag)
    return client_state if path is not None else None
