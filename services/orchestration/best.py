"""The eval-gated export: `RUN/best/` is the HF export of the checkpoint whose held-out reward is the
best so far, with `RUN/best/best.json` saying which (step, policy version, eval reward).

Only evaluations of exactly a checkpoint's weights qualify: the driver evaluates at checkpoint steps
while the learner waits, so the eval's policy version is the checkpoint's. A candidate is settled once
its checkpoint is complete on disk; the copy goes to a temporary directory first and replaces `best/`
in one rename, so `best/` is never half-written.
"""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    step: int
    policy_version: int
    eval_reward_mean: float


class BestExport:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.directory = run_dir / "best"
        self.pending: list[Candidate] = []
        record = self.directory / "best.json"
        self.best: Candidate | None = (
            Candidate(**json.loads(record.read_text())) if record.is_file() else None
        )

    def offer(self, step: int, policy_version: int, eval_reward_mean: float | None) -> None:
        if eval_reward_mean is not None:
            self.pending.append(Candidate(step, policy_version, eval_reward_mean))

    def settle(self) -> list[str]:
        """Promote pending candidates whose checkpoint is written; returns what was done."""
        done: list[str] = []
        for candidate in list(self.pending):
            checkpoint = self.run_dir / "checkpoints" / f"step-{candidate.step:08d}"
            state_file = checkpoint / "tandem_state.json"
            if not state_file.is_file():
                continue  # not written yet
            self.pending.remove(candidate)
            state = json.loads(state_file.read_text())
            if state["policy_version"] != candidate.policy_version:
                done.append(
                    f"eval of v{candidate.policy_version} is not checkpoint {checkpoint.name}'s weights"
                )
                continue
            if self.best is not None and candidate.eval_reward_mean <= self.best.eval_reward_mean:
                continue
            self._promote(checkpoint / "hf", candidate)
            done.append(f"best/ <- {checkpoint.name} (eval reward {candidate.eval_reward_mean:.3f})")
        return done

    def _promote(self, export: Path, candidate: Candidate) -> None:
        staging = self.run_dir / "best.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(export, staging)
        (staging / "best.json").write_text(json.dumps(candidate.__dict__, indent=2) + "\n")
        retired = self.run_dir / "best.old"
        shutil.rmtree(retired, ignore_errors=True)
        if self.directory.exists():
            self.directory.rename(retired)
        staging.rename(self.directory)
        shutil.rmtree(retired, ignore_errors=True)
        self.best = candidate
        log.info("best/ is now step %d (eval reward %.3f)", candidate.step, candidate.eval_reward_mean)
