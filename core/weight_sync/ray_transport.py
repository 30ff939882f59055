"""`ray` transport: the newest weights live in a named Ray actor's object store entry.

The learner sends the safetensors blob to the `WeightStore` actor, which re-puts it so the store
owns the object: a learner crash does not take the published weights with it, and a restarted
actor still finds them. Works on CPU and across nodes; nothing is pickled but bytes and strings.
"""

import ray
import torch

from core.weight_sync.manifest import PublishedWeights, WeightManifest, WeightSyncError, encode_weights

STORE_NAME_PREFIX = "tandem-weights-"


@ray.remote(num_cpus=0)
class WeightStore:
    """Holds the newest (version, manifest, blob reference); versions only move forward."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.manifest_json: str | None = None
        self.blob_ref: list[ray.ObjectRef] = []

    def put(self, version: int, manifest_json: str, blob: bytes) -> int:
        # The same version with the same weights again is a resumed learner re-announcing them.
        same = version == self.version and manifest_json == self.manifest_json
        if self.version is not None and version <= self.version and not same:
            raise ValueError(f"weights v{version} published after v{self.version}: versions must increase")
        self.blob_ref = [ray.put(blob)]  # in a list, so callers receive the reference, not the bytes
        self.version, self.manifest_json = version, manifest_json
        return version

    def latest_version(self) -> int | None:
        return self.version

    def latest(self) -> tuple[int, str, list[ray.ObjectRef]] | None:
        if self.version is None or self.manifest_json is None:
            return None
        return self.version, self.manifest_json, self.blob_ref


def weight_store(run_name: str, create: bool) -> ray.actor.ActorHandle:
    """The run's store: created by the publisher, looked up by subscribers (by name, across nodes)."""
    name = STORE_NAME_PREFIX + run_name
    if create:
        return WeightStore.options(name=name, get_if_exists=True, lifetime="detached").remote()
    try:
        return ray.get_actor(name)
    except ValueError:
        raise WeightSyncError(
            f"no weight store {name!r} in this Ray cluster: has the learner started?"
        ) from None


class RayPublisher:
    def __init__(self, run_name: str):
        self.store = weight_store(run_name, create=True)

    def publish(self, state_dict: dict[str, torch.Tensor], version: int) -> WeightManifest:
        published = encode_weights(state_dict, version)
        ray.get(self.store.put.remote(version, published.manifest.to_json(), published.blob))
        return published.manifest

    def close(self) -> None:
        """Nothing to stop: the published versions stay for the actors to read."""


class RaySubscriber:
    """Finds the store lazily: an actor may start before the learner has published anything."""

    def __init__(self, run_name: str):
        self.run_name = run_name
        self.store: ray.actor.ActorHandle | None = None

    def _store(self) -> ray.actor.ActorHandle | None:
        if self.store is None:
            try:
                self.store = weight_store(self.run_name, create=False)
            except WeightSyncError:
                return None
        return self.store

    def latest_version(self) -> int | None:
        store = self._store()
        return None if store is None else ray.get(store.latest_version.remote())

    def latest(self) -> PublishedWeights | None:
        store = self._store()
        if store is None:
            return None
        found = ray.get(store.latest.remote())
        if found is None:
            return None
        version, manifest_json, (blob_ref,) = found
        manifest = WeightManifest.from_json(manifest_json)
        if manifest.version != version:
            raise WeightSyncError(
                f"weight store announces v{version} but its manifest says v{manifest.version}"
            )
        return PublishedWeights(manifest, ray.get(blob_ref))
