"""The experience ledger, `RUN/ledger.jsonl`: which buffer deliveries each learner step trained on,
which each checkpoint covers and acknowledged, and where each resume picked up, so that a run can be
audited for groups lost or trained twice, however often it crashed.

One JSON object per line, written by the leader rank and flushed per line (it survives a kill -9 of
the learner; the checkpoints it refers to are fsynced):
  {"event": "start", "step": 0}                                    a fresh run (resets an audit)
  {"event": "step", "step": s, "policy_version": v, "deliveries": [id...], "fresh_groups": [gid...],
   "replayed_groups": [gid...]}                                    one optimizer step, after it ran
  {"event": "checkpoint", "step": s, "checkpoint": "step-...", "acked": [id...], "newly_acked": n}
                                                                   written once the buffer acked them
  {"event": "unusable", "step": s, "deliveries": [id...]}          a batch of bad groups only, acked
  {"event": "resume", "step": c, "checkpoint": "step-...", "reacked": n, "redelivered": n}

`deliveries` are the buffer's delivery ids (Redis stream ids, memory `m-N`), which stay the same when a
group is handed out again; `fresh_groups` and `replayed_groups` are group ids (replayed groups come from
the replay pool and may be trained any number of times, by design).

`audit(run_dir)` replays the ledger: a resume from step c discards the steps after c (their weights
died with the process, and their deliveries, never acknowledged, are handed out again); what is left
is the lineage of the surviving weights. `reconcile` holds it against the buffer (a namespace this run
alone used): every group put is covered by the surviving checkpoint (acked), held pending (trained
after the checkpoint, or sampled by the step in flight: handed out again on resume), undelivered, or
settled as too stale; none is trained twice by the lineage and none acked that it does not cover:
  put = acked + pending + backlog + stale_moved + stale_dropped,  acked = covered - still pending + unusable
where "covered - still pending" allows for a crash between a checkpoint and its ack (the resumed
learner acks those). `python -m learner.ledger RUN` prints both, reading the buffer from
`RUN/config.yaml`.
"""

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER = "ledger.jsonl"


class Ledger:
    """Appends records to `RUN/ledger.jsonl`; a no-op writer when `path` is None (ranks but the leader)."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **record: Any) -> None:
        if self.path is None:
            return
        # Opened per record: a handful of lines per step, and nothing is held open across a fork.
        with self.path.open("a") as handle:
            handle.write(json.dumps({"event": event, **record}) + "\n")

    def sync(self) -> None:
        """fsync the ledger: called before a checkpoint's deliveries are acknowledged, so the record of
        what they trained survives whatever survives the acknowledgement."""
        if self.path is not None and self.path.exists():
            with self.path.open("rb") as handle:
                os.fsync(handle.fileno())


@dataclass
class Audit:
    """What the ledger says about the surviving lineage (see the module docstring).

    `covered`: deliveries trained by the lineage's steps up to `checkpoint_step` (the newest complete
    checkpoint of the lineage), in the order trained; `uncovered`: deliveries trained after it (a
    learner that died since then has them handed out again); `twice`: deliveries the lineage trained
    more than once (must be empty); `lost`: deliveries a checkpoint acknowledged that the lineage
    does not cover, e.g. after a fall-back to an older checkpoint (must be empty unless one failed to
    load); `unusable`: deliveries acked without training (bad groups); `redelivered`: deliveries of
    discarded steps that the lineage trained again."""

    steps: list[int] = field(default_factory=list)
    checkpoint_step: int = 0
    covered: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)
    redelivered: list[str] = field(default_factory=list)
    resumes: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "steps": len(self.steps),
            "last_step": self.steps[-1] if self.steps else 0,
            "checkpoint_step": self.checkpoint_step,
            "covered": len(self.covered),
            "uncovered": len(self.uncovered),
            "twice": self.twice,
            "lost": self.lost,
            "unusable": len(self.unusable),
            "redelivered": len(self.redelivered),
            "resumes": self.resumes,
        }


def read_ledger(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / LEDGER
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a last line cut short by a kill: the step it describes did not count anyway
    return records


def audit(run_dir: Path, checkpoint_step: int | None = None) -> Audit:
    """Replay `RUN/ledger.jsonl` (see the module docstring). `checkpoint_step` defaults to the newest
    complete checkpoint on disk at or before the lineage's last step."""
    steps: dict[int, dict[str, Any]] = {}
    discarded: set[str] = set()
    acked: set[str] = set()
    unusable: list[str] = []
    resumes = 0
    for record in read_ledger(run_dir):
        event = record.get("event")
        if event == "start":
            steps, discarded, acked, unusable, resumes = {}, set(), set(), [], 0
        elif event == "step":
            steps[int(record["step"])] = record
        elif event == "checkpoint":
            acked.update(record.get("acked", []))
        elif event == "unusable":
            unusable += record.get("deliveries", [])
        elif event == "resume":
            resumes += 1
            back_to = int(record["step"])
            for step in [step for step in steps if step > back_to]:
                discarded.update(steps.pop(step).get("deliveries", []))
    lineage = sorted(steps)
    if checkpoint_step is None:
        on_disk = [
            int(path.parent.name.removeprefix("step-"))
            for path in (run_dir / "checkpoints").glob("step-*/tandem_state.json")
        ]
        last = lineage[-1] if lineage else 0
        checkpoint_step = max((step for step in on_disk if step <= last), default=0)
    covered = [i for step in lineage if step <= checkpoint_step for i in steps[step].get("deliveries", [])]
    uncovered = [i for step in lineage if step > checkpoint_step for i in steps[step].get("deliveries", [])]
    trained = Counter(covered + uncovered)
    return Audit(
        steps=lineage,
        checkpoint_step=checkpoint_step,
        covered=covered,
        uncovered=uncovered,
        twice=sorted(i for i, times in trained.items() if times > 1),
        lost=sorted(acked - set(covered) - set(unusable)),
        unusable=unusable,
        redelivered=sorted(discarded & set(trained)),
        resumes=resumes,
    )


def reconcile(run_dir: Path, found: Audit, stats: Any, pending: set[str] | None) -> list[str]:
    """The ways the ledger and the buffer disagree (empty when every group is accounted for): `stats` is
    the buffer's `BufferStats` (None: the ledger alone), `pending` its pending delivery ids where it can
    list them."""
    problems = []
    if found.twice:
        problems.append(f"trained twice by the surviving weights: {found.twice}")
    if found.lost:
        problems.append(f"acked but not in the surviving weights (lost): {found.lost}")
    if stats is None:
        return problems
    counters = stats.counters
    settled = counters["acked"] + stats.pending + stats.backlog + counters["stale_moved"]
    if counters["put"] != settled + counters["stale_dropped"]:
        problems.append(
            f"put {counters['put']} != acked + pending + backlog + stale "
            f"({counters['acked']} + {stats.pending} + {stats.backlog} + {counters['stale_moved']} + "
            f"{counters['stale_dropped']})"
        )
    if pending is None:
        return problems
    held = set(found.uncovered) - pending
    if held:
        problems.append(f"trained after checkpoint step {found.checkpoint_step} yet acked: {sorted(held)}")
    in_window = set(found.covered) & pending
    marker = run_dir / "checkpoints" / f"step-{found.checkpoint_step:08d}" / "tandem_state.json"
    # Covered yet pending: only the newest checkpoint's own groups, killed between it and its ack.
    window = set(json.loads(marker.read_text()).get("deliveries", [])) if marker.is_file() else set()
    if in_window - window:
        problems.append(f"covered by older checkpoints yet pending: {sorted(in_window - window)}")
    expected = len(set(found.covered) - pending) + len(found.unusable)
    if counters["acked"] != expected:
        problems.append(f"buffer acked {counters['acked']}, the ledger accounts for {expected}")
    return problems


def main(argv: list[str]) -> int:
    """`python -m learner.ledger RUN_DIR [--no-buffer]`: print the audit of a run directory as JSON and,
    unless --no-buffer, reconcile it with the buffer named in `RUN_DIR/config.yaml` (its password is
    masked there: give the URL in TANDEM_BUFFER__REDIS_URL); exit 1 on a disagreement."""
    if not argv or argv[0].startswith("-") or any(arg != "--no-buffer" for arg in argv[1:]):
        print("usage: python -m learner.ledger RUN_DIR [--no-buffer]", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    found = audit(run_dir)
    report: dict[str, Any] = {"ledger": found.summary()}
    problems = reconcile(run_dir, found, None, None)
    if "--no-buffer" not in argv:
        from core.buffer import open_buffer
        from core.config import load_config

        config = load_config(run_dir / "config.yaml", []).buffer
        if config.kind != "redis":  # the memory buffer lived and died with its run
            print("buffer.kind is memory: reconciling the ledger alone", file=sys.stderr)
        else:
            try:
                buffer = open_buffer(config, consumer="ledger-audit")
                try:
                    stats = buffer.stats()
                    problems = reconcile(run_dir, found, stats, buffer.pending_ids())  # type: ignore[attr-defined]
                    report["buffer"] = stats.as_dict()
                finally:
                    buffer.close()
            except Exception as error:  # unreachable, wrong password, ...: say so, as --no-buffer would not
                print(
                    f"cannot read the buffer ({type(error).__name__}: {error}); try --no-buffer",
                    file=sys.stderr,
                )
                return 2
    report["problems"] = problems
    print(json.dumps(report, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
