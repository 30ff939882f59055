"""Learner start-up on the CPU compiles no C++ op: DeepSpeed's shared-memory all-reduce (a ~70 s JIT
build on a fresh machine) is skipped, and the engine still trains over gloo."""

import importlib

import torch
from test_single_pass_microbatch import tiny_policy

from core.config.learner import LearnerConfig
from learner import engine as ds


def test_the_shared_memory_op_builder_is_replaced_in_deepspeeds_backend_module() -> None:
    # The module by path: deepspeed.comm's namespace also holds PyTorch under the name `torch`, and
    # patching that instead leaves DeepSpeed's builder in place (as an earlier version did).
    backend_module = importlib.import_module("deepspeed.comm.torch")
    ds.skip_shared_memory_op()
    assert backend_module.build_shm_op() is None
    assert not hasattr(torch, "build_shm_op")


def test_a_cpu_engine_starts_without_the_shared_memory_op_and_trains() -> None:
    import deepspeed.comm

    engine = ds.create_engine(tiny_policy(torch.float32), LearnerConfig())
    backend = deepspeed.comm.comm.cdb
    assert backend is not None and backend.shm_comm_op is None
    # The fallback path every training collective takes: a plain torch.distributed all-reduce.
    value = torch.ones(3)
    backend.inference_all_reduce(value, torch.distributed.ReduceOp.SUM)
    assert torch.equal(value, torch.ones(3))
    assert engine.device.type == "cpu"
    before = [p.detach().clone() for p in engine.module.parameters()]
    ds.begin_step(engine, 1, 1e-2)
    inputs = torch.randint(1, 40, (2, 6))
    ds.backward(engine, engine(input_ids=inputs).logits.float().logsumexp(-1).mean())
    assert any(not torch.equal(p, b) for p, b in zip(engine.module.parameters(), before, strict=True))
