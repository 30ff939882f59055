"""The `collective` transport inside a vLLM worker: receive buckets and stream them into the reload.

Mixed into `WeightReceiverExtension` (actors/weight_receiver.py) and called through
`LLM.collective_rpc`. The worker joins the learner's store once per learner session (again after
any failure: a broken pair group cannot be resynchronised, and a restarted worker is a new process
anyway), asks for the newest version, checks the plan's names and shapes against the model before any
weight changes, then hands vLLM's in-place `reload_weights` an iterator that receives each bucket,
checks its fingerprint, and yields its tensors: bytes go from the socket into vLLM's loaders without a
file, a pickle or a second full copy. Afterwards every parameter vLLM keeps under its published name
and shape is read back and compared (by exact integer sums) with what arrived.

An adapter (a LoRA run's payload, core/weight_sync/adapter.py) is a few MB: it is received whole, each
bucket checked as above, merged into the base weights (actors/adapter_merge.py) before any weight
changes, and the merged layers stream into the same reload.

Failures are returned, not raised, with `touched` saying whether any weight may have changed: a
refusal before streaming leaves the engine on its version; one during it leaves the weights unknown,
and the engine then refuses to generate until a good load (actors/engine.py).
"""

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import torch

from core.weight_sync.adapter import is_adapter_payload
from core.weight_sync.buckets import tensor_sum
from core.weight_sync.collective_receiver import CollectiveReceiver, Incoming
from core.weight_sync.manifest import WeightSyncError
from core.weight_sync.rendezvous import Rendezvous


class CollectiveLoadMixin:
    """`tandem_receive_weights`, for the worker extension. `self` is the vLLM worker."""

    _tandem_receiver: CollectiveReceiver | None = None

    def tandem_receive_weights(self, rendezvous_json: str, timeout_s: float) -> dict[str, Any]:
        from actors.weight_receiver import check_fits, load_in_place

        rendezvous = Rendezvous.from_json(rendezvous_json)
        touched = False
        try:
            receiver = self._receiver(rendezvous, timeout_s)
            incoming = receiver.request()
            model = self.model_runner.get_model()  # type: ignore[attr-defined]
            started = time.perf_counter()
            merge_s = 0.0
            adapter = is_adapter_payload(slot.name for slot in incoming.plan.slots())
            if adapter:  # received and merged whole: refused, if at all, before any weight changes
                tensors = dict(incoming.tensors())
                _check_complete(incoming)
                merging = time.perf_counter()
                merged = self._tandem_merge_adapter(tensors, incoming.version)  # type: ignore[attr-defined]
                merge_s = time.perf_counter() - merging
                shapes: dict[str, torch.Tensor] = merged
                stream: Iterator[tuple[str, torch.Tensor]] = iter(merged.items())
            else:
                shapes = {slot.name: torch.empty(slot.shape, device="meta") for slot in incoming.plan.slots()}
                stream = incoming.tensors()
            check_fits(model, shapes, incoming.version)  # refuses before any weight changes
            parameters = dict(model.named_parameters())
            dtype = next(model.parameters()).dtype
            expected: dict[str, int] = {}
            touched = True
            warnings, path = load_in_place(
                self, _checked(stream, parameters, dtype, expected), partial=adapter
            )
            reloaded = time.perf_counter()
            _check_complete(incoming)
            _compare(parameters, expected, incoming.version, require_match=not adapter)
            # Where the load's time went: waiting for buckets, fingerprinting them, merging an adapter,
            # and the rest of the reload (vLLM's loaders and processing, plus the expected sums), then
            # the read-back.
            seconds = {
                "wait": incoming.wait_s,
                "fingerprint": incoming.fingerprint_s,
                "merge": merge_s,
                "reload": reloaded - started - incoming.wait_s - incoming.fingerprint_s - merge_s,
                "read_back": time.perf_counter() - reloaded,
            }
        except Exception as error:  # reported to the engine, which decides
            self._drop_receiver()
            if touched:
                self._end_broken_reload()
            return {"ok": False, "touched": touched, "error": f"{type(error).__name__}: {error}"}
        return {"ok": True, "version": incoming.version, "digest": incoming.plan.digest,
                "checked_tensors": len(expected), "reload_warnings": warnings.messages,
                "rotary_dropped": warnings.rotary_dropped, "seconds": seconds, "adapter": adapter,
                "untouched_layers": warnings.untouched_layers, "load_path": path}  # fmt: skip

    def tandem_release_receiver(self) -> None:
        """Leave the learner's group now (the engine is shutting down): an open pair group otherwise
        keeps the worker from exiting within vLLM's grace period, and it is killed instead."""
        self._drop_receiver()

    def _receiver(self, rendezvous: Rendezvous, timeout_s: float) -> CollectiveReceiver:
        if self._tandem_receiver is not None and self._tandem_receiver.rendezvous != rendezvous:
            self._drop_receiver()  # a new learner session: its store is another one
        if self._tandem_receiver is None:
            rank = getattr(self, "rank", 0)
            name = f"{socket.gethostname()}:{os.getpid()}:worker-{rank}"
            self._tandem_receiver = CollectiveReceiver(rendezvous, name, timeout_s)
        return self._tandem_receiver

    def _end_broken_reload(self) -> None:
        """vLLM's reload stops where the iterator raised, with layers still waiting for weights (on
        the meta device, buffered partial loads counted). Left so, the next reload would count those
        stale loads too and process layers before their new weights arrive. Finalising settles every
        layer now (the weights are then a mix, and the engine refuses to generate on them). A direct
        load (actors/direct_load.py) leaves no layer half-built: nothing to settle."""
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        from actors.direct_load import can_load_directly

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        if can_load_directly(model, self.vllm_config):  # type: ignore[attr-defined]
            return
        with contextlib.suppress(Exception):  # the engine already treats these weights as unknown
            finalize_layerwise_reload(model, self.vllm_config.model_config)  # type: ignore[attr-defined]

    def _drop_receiver(self) -> None:
        if self._tandem_receiver is not None:
            self._tandem_receiver.close()
        self._tandem_receiver = None


def _check_complete(incoming: Incoming) -> None:
    if not incoming.complete:
        raise WeightSyncError(
            f"weights v{incoming.version}: the loader stopped after {incoming.received} of "
            f"{len(incoming.plan.buckets)} buckets"
        )


def _checked(
    tensors: Iterator[tuple[str, torch.Tensor]],
    parameters: dict[str, torch.nn.Parameter],
    dtype: torch.dtype,
    expected: dict[str, int],
) -> Iterator[tuple[str, torch.Tensor]]:
    """The arriving tensors in the engine's dtype; records the integer sum of each one that an engine
    parameter keeps under the same name and shape, for the read-back after the load."""
    for name, tensor in tensors:
        tensor = tensor.to(dtype)
        parameter = parameters.get(name)
        if parameter is not None and parameter.shape == tensor.shape:
            expected[name] = tensor_sum(tensor.to(parameter.dtype))
        yield name, tensor


def _compare(
    parameters: dict[str, torch.nn.Parameter],
    expected: dict[str, int],
    version: int,
    require_match: bool = True,
) -> None:
    if not expected and require_match:
        raise WeightSyncError(
            f"weights v{version}: no published tensor could be matched to an engine parameter"
        )
    for name, total in expected.items():
        if tensor_sum(parameters[name]) != total:
            raise WeightSyncError(
                f"engine parameter {name} differs from published weights v{version} after load"
            )
