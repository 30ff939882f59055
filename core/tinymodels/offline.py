"""Offline completions for the tiny tasks: what an older policy (or a log of past traffic) produced,
in the format `tandem ingest` and `buffer.offline_files` read.

Each prompt gets `samples` completions drawn like the warm-start data (the reference with probability
`correct_fraction`, else the task's typical mistake), rewarded 1.0 when equal to the reference and
0.0 otherwise, and stamped `policy_version: 0`, so mixing treats them as off-policy data.
"""

import json
import random
from pathlib import Path

from core.tinymodels.tasks import TaskName, flawed_target, read_jsonl


def write_offline_data(
    task: TaskName,
    prompts: Path,
    out: Path,
    samples: int = 4,
    correct_fraction: float = 0.5,
    limit: int | None = None,
    seed: int = 0,
) -> int:
    """Write one JSONL line per prompt of `prompts` (up to `limit`); returns the number of lines."""
    rng = random.Random(seed)
    problems = read_jsonl(prompts)[:limit]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for problem in problems:
            completions = [flawed_target(task, problem, rng, correct_fraction) for _ in range(samples)]
            line = {
                "prompt_id": f"offline-{problem.prompt_id}",
                "prompt": problem.prompt,
                "reference": problem.reference,
                "completions": completions,
                "rewards": [float(c == problem.reference) for c in completions],
                "policy_version": 0,
                "source": f"offline-{task}",
            }
            handle.write(json.dumps(line) + "\n")
    return len(problems)
