"""The driver's Prometheus endpoint (`logging.metrics_port`): learner progress, buffer depth and
staleness, weight-sync time, actor throughput and dead-lettered groups.

It serves the process's default registry, so when the reward server is embedded in the driver its
per-scorer latency, error and timeout metrics appear on the same port.
"""

from typing import Any

from prometheus_client import Counter, Gauge, start_http_server

STEP = Gauge("tandem_learner_step", "Learner optimizer steps taken")
POLICY_VERSION = Gauge("tandem_policy_version", "Newest published policy version")
TRAIN_REWARD = Gauge("tandem_train_reward_mean", "Mean reward of the last training batch")
EVAL_REWARD = Gauge("tandem_eval_reward_mean", "Mean held-out reward of the last evaluation")
KL = Gauge("tandem_kl", "Mean log-ratio to the reference model in the last batch")
WEIGHT_SYNC_SECONDS = Gauge("tandem_weight_sync_seconds", "Seconds the last weight publish took")
ON_POLICY_FRACTION = Gauge("tandem_on_policy_fraction", "Fraction of fresh groups in the last batch")
BATCH_STALENESS = Gauge(
    "tandem_batch_staleness_groups", "Groups of the last batch by staleness", ["staleness"]
)
BUFFER = Gauge("tandem_buffer_groups", "Experience buffer contents", ["part"])
BUFFER_EVENTS = Gauge("tandem_buffer_events_total", "Buffer counters since it started", ["counter"])
ACTOR_TOKENS_PER_S = Gauge("tandem_actor_tokens_per_second", "Generated tokens per second", ["actor"])
ACTOR_GROUPS = Gauge("tandem_actor_groups_total", "Groups an actor pushed or set aside", ["actor", "outcome"])
ACTOR_RESTARTS = Counter("tandem_actor_restarts_total", "Generator actor restarts seen by the driver")


def serve(port: int) -> None:
    start_http_server(port)


def record_step(row: dict[str, Any]) -> None:
    STEP.set(row["step"])
    POLICY_VERSION.set(row.get("policy_version", 0))
    for gauge, key in ((TRAIN_REWARD, "reward_mean"), (KL, "kl"), (ON_POLICY_FRACTION, "on_policy_fraction")):
        if isinstance(row.get(key), int | float):
            gauge.set(row[key])
    if isinstance(row.get("publish_time_s"), int | float):
        WEIGHT_SYNC_SECONDS.set(row["publish_time_s"])
    BATCH_STALENESS.clear()
    for staleness, count in (row.get("staleness_histogram") or {}).items():
        BATCH_STALENESS.labels(str(staleness)).set(count)


def record_eval(row: dict[str, Any]) -> None:
    if isinstance(row.get("eval_reward_mean"), int | float):
        EVAL_REWARD.set(row["eval_reward_mean"])


def record_buffer(stats: dict[str, Any]) -> None:
    for part in ("depth", "backlog", "pending", "replay_size", "offline_size"):
        BUFFER.labels(part).set(stats[part])
    for counter, value in stats["counters"].items():
        BUFFER_EVENTS.labels(counter).set(value)


def record_actors(stats: list[dict[str, Any]]) -> None:
    for entry in stats:
        actor = str(entry.get("actor_id"))
        if "tokens_per_s" in entry:
            ACTOR_TOKENS_PER_S.labels(actor).set(entry["tokens_per_s"])
            ACTOR_GROUPS.labels(actor, "pushed").set(entry.get("groups_pushed", 0))
            ACTOR_GROUPS.labels(actor, "dead_lettered").set(entry.get("groups_dead_lettered", 0))


def record_restart() -> None:
    ACTOR_RESTARTS.inc()
