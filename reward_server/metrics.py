"""Prometheus metrics of the reward server, served on GET /metrics.

Module-level collectors in the default registry, so any scorer can record into them without wiring
(the unit-test sandbox calls `record_sandbox_kill`). With several uvicorn workers each process keeps
its own counts; scrape each worker, or run one worker per container.
"""

from functools import cache
from typing import Any

from prometheus_client import Counter, Histogram

# Seconds per scorer call (one call scores a whole request's batch): 1 ms to 2 min.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

SCORER_LATENCY = Histogram(
    "tandem_reward_scorer_latency_seconds",
    "Wall-clock time of one scorer call over a request's items.",
    ["scorer"],
    buckets=LATENCY_BUCKETS,
)
SCORER_ITEMS = Counter(
    "tandem_reward_scorer_items", "Items scored, by scorer and status.", ["scorer", "status"]
)
SCORER_ERRORS = Counter("tandem_reward_scorer_errors", "Items a scorer failed with an error.", ["scorer"])
SCORER_TIMEOUTS = Counter("tandem_reward_scorer_timeouts", "Items a scorer failed by timing out.", ["scorer"])
SANDBOX_KILLS = Counter(
    "tandem_reward_sandbox_kills",
    "Sandboxed runs killed, by reason (timeout, output_limit, cpu_limit, signal).",
    ["scorer", "reason"],
)
REQUEST_ITEMS = Counter(
    "tandem_reward_request_items", "Items received, by route and outcome.", ["route", "status"]
)


def register_scorer(name: str) -> None:
    """Create the scorer's series at start-up, so dashboards see zeros rather than missing series."""
    _scorer_series(name)


# The labelled children, looked up once per scorer: `labels()` takes a lock and builds a key, and a
# request records several series (benchmarks/reward_bench.py).
@cache
def _scorer_series(name: str) -> tuple[Any, dict[str, Any], Any, Any]:
    items = {status: SCORER_ITEMS.labels(scorer=name, status=status) for status in ("ok", "error", "timeout")}
    return (
        SCORER_LATENCY.labels(scorer=name),
        items,
        SCORER_ERRORS.labels(scorer=name),
        SCORER_TIMEOUTS.labels(scorer=name),
    )


def record_scorer_call(name: str, seconds: float, statuses: list[str]) -> None:
    latency, items, errors, timeouts = _scorer_series(name)
    latency.observe(seconds)
    if ok := statuses.count("ok"):
        items["ok"].inc(ok)
    if ok == len(statuses):
        return  # the common case: one pass over the statuses
    if failed := statuses.count("error"):
        items["error"].inc(failed)
        errors.inc(failed)
    if timed_out := statuses.count("timeout"):
        items["timeout"].inc(timed_out)
        timeouts.inc(timed_out)


def record_sandbox_kill(scorer: str, reason: str) -> None:
    """Count one sandboxed run killed for `reason` (called by the unit-test sandbox)."""
    SANDBOX_KILLS.labels(scorer=scorer, reason=reason).inc()


def record_request(route: str, statuses: list[str]) -> None:
    ok = statuses.count("ok")
    if ok:
        _request_series(route, "ok").inc(ok)
    if ok < len(statuses):
        for status in set(statuses) - {"ok"}:
            _request_series(route, status).inc(statuses.count(status))


@cache
def _request_series(route: str, status: str) -> Any:
    return REQUEST_ITEMS.labels(route=route, status=status)
