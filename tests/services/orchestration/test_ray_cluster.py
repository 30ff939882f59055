"""Scale-out on a real multi-node Ray cluster: two raylets on this machine (ray.cluster_utils), the
driver joins it through `run.ray_address`, and the generator actor is placed on the second node by
a custom resource (`actors.resources`)."""

from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from core.config import load_config
from services.orchestration.run_files import read_jsonl
from tests.services.orchestration.test_train_e2e import ROOT, short_demo

pytestmark = pytest.mark.slow


def test_short_training_with_the_generator_on_the_second_node(tiny_arith_model: Path, tmp_path: Path) -> None:
    from services.orchestration.driver import train

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker_node = cluster.add_node(num_cpus=1, resources={"generator_node": 1})
    cluster.wait_for_nodes()
    run_dir = tmp_path / "run"
    overrides = [
        *short_demo(run_dir, tiny_arith_model, 3),
        f"run.ray_address={cluster.address}",
        "actors.resources={generator_node: 1}",
    ]
    try:
        result = train(load_config(ROOT / "configs" / "demo.yaml", overrides), progress=False)
        head_id = ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.steps == 3
    (ready,) = [event for event in read_jsonl(run_dir / "events.jsonl") if event["event"] == "actor_ready"]
    assert ready["node_id"] == worker_node.node_id != head_id
