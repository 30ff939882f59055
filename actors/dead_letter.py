"""Groups whose rewards failed after every retry, kept aside with the reason instead of being trained on.

Each actor appends to its own JSONL file (`<run_dir>/dead_letter/<actor_id>.jsonl`), so actors on one
shared directory never interleave half-lines, and a user can read, count or re-score them later.
The record holds what is needed to score the group again: the prompt, the reference and tests, and
every completion with its own status and error.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.schemas import Sample


@dataclass(frozen=True)
class FailedSample:
    sample: Sample
    status: str
    error: str | None
    reward: float | None


class DeadLetterFile:
    def __init__(self, directory: Path, actor_id: str) -> None:
        self.path = Path(directory) / f"{actor_id}.jsonl"
        self.count = 0

    def write(
        self,
        group_id: str,
        prompt: str,
        reference: str | None,
        tests: list[str] | None,
        samples: list[FailedSample],
        reason: str,
    ) -> None:
        record: dict[str, Any] = {
            "group_id": group_id,
            "prompt_id": samples[0].sample.prompt_id,
            "prompt": prompt,
            "reference": reference,
            "tests": tests,
            "policy_version": min(s.sample.policy_version for s in samples),
            "actor_id": samples[0].sample.actor_id,
            "reason": reason,
            "written_at": time.time(),
            "samples": [
                {
                    "completion": s.sample.completion_text,
                    "completion_token_ids": list(s.sample.completion_token_ids),
                    "status": s.status,
                    "reward": s.reward,
                    "error": s.error,
                }
                for s in samples
            ],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one line, flushed and synced: a crash after `write` returns cannot lose it.
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.count += 1


def read_dead_letters(directory: Path) -> list[dict[str, Any]]:
    """Every dead-lettered group under `directory`, from all actors."""
    records = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records
