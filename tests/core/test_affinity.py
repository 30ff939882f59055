"""CPU pinning of a role's process (core/affinity.py), the `cpu_affinity` config fields and `auto`.

Pinning is checked in a child interpreter, so this test process keeps every core: a thread started
before the call must be moved too, and the thread/vLLM environment must follow the CPU list.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.affinity import apply_cpu_affinity, format_cpu_list, resolve_auto_affinity, validate_cpu_ids
from core.config import TandemConfig
from core.config.loader import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_ids_are_sorted_and_deduplicated() -> None:
    assert validate_cpu_ids([3, 1, 3], "x", available={0, 1, 2, 3}) == [1, 3]


def test_an_unknown_cpu_id_is_an_error_naming_it_the_key_and_what_is_available() -> None:
    with pytest.raises(ValueError) as error:
        validate_cpu_ids([1, 7], "actors.cpu_affinity", available={0, 1})
    message = str(error.value)
    assert "actors.cpu_affinity" in message and "7" in message and "available: 0-1" in message


def test_negative_and_empty_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        validate_cpu_ids([-1], "learner.cpu_affinity", available={0, 1})
    with pytest.raises(ValueError, match="empty"):
        validate_cpu_ids([], "learner.cpu_affinity", available={0, 1})


def test_none_pins_nothing_and_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    before = os.sched_getaffinity(0)
    assert apply_cpu_affinity(None, "actors.cpu_affinity") is None
    assert os.sched_getaffinity(0) == before and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ


def test_an_unknown_id_fails_before_anything_is_pinned() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match=r"learner\.cpu_affinity"):
        apply_cpu_affinity([max(before) + 1000], "learner.cpu_affinity")
    assert os.sched_getaffinity(0) == before


def test_cpu_lists_are_written_as_ranges() -> None:
    assert format_cpu_list([5, 0, 1, 2]) == "0-2,5"
    assert format_cpu_list([3]) == "3"


def test_pinning_moves_every_thread_and_sets_one_thread_per_cpu() -> None:
    cpu = min(os.sched_getaffinity(0))
    script = textwrap.dedent(
        f"""
        import json, os, threading, time
        from core.affinity import apply_cpu_affinity
        ready, stop = threading.Event(), threading.Event()
        ids = {{}}
        def earlier():
            ids["earlier"] = threading.get_native_id()
            ready.set()
            stop.wait()
        thread = threading.Thread(target=earlier)
        thread.start()
        ready.wait()
        pinned = apply_cpu_affinity([{cpu}], "actors.cpu_affinity")
        print(json.dumps({{
            "pinned": pinned,
            "main": sorted(os.sched_getaffinity(0)),
            "earlier": sorted(os.sched_getaffinity(ids["earlier"])),
            "env": {{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "VLLM_CPU_OMP_THREADS_BIND")}},
        }}))
        stop.set()
        thread.join()
        """
    )
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    answer = json.loads(found.stdout.strip().splitlines()[-1])
    assert answer["pinned"] == [cpu] and answer["main"] == [cpu] and answer["earlier"] == [cpu]
    assert answer["env"] == {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "VLLM_CPU_OMP_THREADS_BIND": str(cpu),
    }


def test_a_pinned_run_leaves_its_calling_process_as_it_found_it() -> None:
    # A test or notebook that runs the driver in a thread must get every core and thread back after.
    cpus = sorted(os.sched_getaffinity(0))
    script = textwrap.dedent(
        f"""
        import json, os, torch
        from core.affinity import apply_cpu_affinity, restored_cpu_layout
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        os.environ["OMP_NUM_THREADS"] = "7"
        torch.set_num_threads(3)
        with restored_cpu_layout():
            apply_cpu_affinity([{cpus[0]}], "learner.cpu_affinity")
            inside = sorted(os.sched_getaffinity(0))
        print(json.dumps({{
            "inside": inside,
            "after": sorted(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(),
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
        }}))
        """
    )
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    answer = json.loads(found.stdout.strip().splitlines()[-1])
    assert answer["inside"] == [cpus[0]]
    assert answer == {"inside": [cpus[0]], "after": cpus, "threads": 3, "omp": "7", "bind": None}


def test_the_config_fields_default_to_none_and_take_lists_from_set() -> None:
    config = TandemConfig()
    assert config.actors.cpu_affinity is None and config.learner.cpu_affinity is None
    pinned = load_config(
        ROOT / "configs" / "demo.yaml", ["actors.cpu_affinity=[0]", "learner.cpu_affinity=[1]"], environ={}
    )
    assert pinned.actors.cpu_affinity == [0] and pinned.learner.cpu_affinity == [1]
    with pytest.raises(ValidationError):
        TandemConfig.model_validate({"actors": {"cpu_affinity": []}})


def test_auto_splits_the_cpus_between_actors_and_learner_only_when_asked_to_pin() -> None:
    cpus = [0, 1, 2, 3, 4]
    assert resolve_auto_affinity("auto", "auto", pin=True, available=cpus) == ([0, 1], [2, 3, 4])
    assert resolve_auto_affinity("auto", "auto", pin=True, available=[6, 2]) == ([2], [6])
    # Beside an explicit list, auto takes what the list leaves (nothing left: no pinning).
    assert resolve_auto_affinity("auto", [4], pin=True, available=cpus) == ([0, 1, 2, 3], [4])
    assert resolve_auto_affinity([1, 0], "auto", pin=True, available=[0, 1]) == ([1, 0], None)
    assert resolve_auto_affinity("auto", None, pin=True, available=cpus) == (None, None)
    # Sync mode or a cluster (pin=False), or a single CPU: auto pins nothing; lists pass unchanged.
    assert resolve_auto_affinity("auto", "auto", pin=False, available=cpus) == (None, None)
    assert resolve_auto_affinity("auto", [3], pin=False, available=cpus) == (None, [3])
    assert resolve_auto_affinity("auto", "auto", pin=True, available=[0]) == (None, None)


def test_an_unresolved_auto_pins_nothing_and_the_field_takes_only_auto_or_ids() -> None:
    before = os.sched_getaffinity(0)
    assert apply_cpu_affinity("auto", "actors.cpu_affinity") is None and os.sched_getaffinity(0) == before
    assert TandemConfig.model_validate({"learner": {"cpu_affinity": "auto"}}).learner.cpu_affinity == "auto"
    with pytest.raises(ValidationError, match="auto"):
        TandemConfig.model_validate({"actors": {"cpu_affinity": "half"}})
