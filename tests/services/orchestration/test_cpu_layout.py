"""The driver's CPU layout: `auto` affinities (the peer benchmark's) made concrete before anything starts."""

import os
from pathlib import Path

from core.config.loader import load_config
from services.orchestration.driver import with_cpu_layout

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "configs" / "demo.yaml"
AUTO = ["actors.cpu_affinity=auto", "learner.cpu_affinity=auto"]


def test_an_async_run_on_its_own_ray_splits_this_machines_cpus_between_the_roles() -> None:
    config = load_config(DEMO, AUTO, environ={})
    assert config.actors.cpu_affinity == "auto" and config.learner.cpu_affinity == "auto"
    laid_out = with_cpu_layout(config)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:  # nothing to split on a one-CPU machine
        assert laid_out.actors.cpu_affinity is None and laid_out.learner.cpu_affinity is None
        return
    actors, learner = laid_out.actors.cpu_affinity, laid_out.learner.cpu_affinity
    assert isinstance(actors, list) and isinstance(learner, list)
    assert actors and learner and not set(actors) & set(learner) and sorted(actors + learner) == cpus


def test_sync_mode_and_a_cluster_run_pin_nothing() -> None:
    for overrides in (["run.mode=sync"], ["run.ray_address=ray://head:10001"]):
        laid_out = with_cpu_layout(load_config(DEMO, [*AUTO, *overrides], environ={}))
        assert laid_out.actors.cpu_affinity is None and laid_out.learner.cpu_affinity is None, overrides
