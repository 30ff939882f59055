"""Synthetic tasks for the tiny demo policy: prompts, reference answers, unit tests, and flawed SFT targets.

The warm-start data is deliberately only partly right, so that reinforcement learning has room to improve:
- `arithmetic`: "a+b=" -> the sum; a fraction of training targets follow the classic "forgot to carry"
  bug (17+25 -> 32), so the warm-started model is right on carry-free sums (about 25 %) and unsure on
  the rest.
- `code`: "# f(x) = 3x + 1" + "def f(x):\n    return " -> "x*3+1", checked by unit tests; a fraction of
  training targets swap the slope and the intercept (x*1+3), a confusion the tests catch.
"""

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

TaskName = Literal["arithmetic", "code"]
TASKS: tuple[TaskName, ...] = ("arithmetic", "code")


@dataclass(frozen=True)
class Problem:
    """One prompt with its correct answer (`reference`) and, for code, the unit tests that check it."""

    prompt_id: str
    prompt: str
    reference: str
    tests: list[str] | None = None
    metadata: dict[str, object] = field(default_factory=dict)


def make_problem(task: TaskName, rng: random.Random, index: int) -> Problem:
    return _MAKERS[task](rng, f"{task}-{index}")


def flawed_target(task: TaskName, problem: Problem, rng: random.Random, correct_fraction: float) -> str:
    """The SFT target: the reference with probability `correct_fraction`, else the task's typical mistake."""
    if rng.random() < correct_fraction:
        return problem.reference
    return _MISTAKES[task](problem)


def split_problems(
    task: TaskName, seed: int, n_train: int, n_eval: int
) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train and held-out sets (no prompt appears in both), deterministic for a seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    problems: list[Problem] = []
    for index in _count():
        problem = make_problem(task, rng, index)
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
        if len(problems) == n_train + n_eval or index > 50 * (n_train + n_eval):
            break
    if len(problems) < n_train + n_eval:
        raise ValueError(
            f"task {task} has only {len(problems)} distinct prompts, asked for {n_train + n_eval}"
        )
    return problems[:n_train], problems[n_train:]


def write_jsonl(problems: list[Problem], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for problem in problems:
            handle.write(json.dumps(asdict(problem)) + "\n")


def read_jsonl(path: Path) -> list[Problem]:
    with path.open() as handle:
        return [Problem(**json.loads(line)) for line in handle if line.strip()]


def _count() -> Iterator[int]:
    index = 0
    while True:
        yield index
        index += 1


def _arithmetic(rng: random.Random, prompt_id: str) -> Problem:
    a, b = rng.randint(10, 99), rng.randint(10, 99)  # fixed width: digits align by position
    carries = (a % 10) + (b % 10) >= 10 or a + b >= 100
    return Problem(prompt_id, f"{a}+{b}=", str(a + b), metadata={"a": a, "b": b, "carry": carries})


def _arithmetic_mistake(problem: Problem) -> str:
    """Digit-wise addition that drops every carry: 17+25 -> 32, 75+48 -> 13."""
    a, b = int(problem.metadata["a"]), int(problem.metadata["b"])  # type: ignore[call-overload]
    units = (a + b) % 10
    tens = (a // 10 + b // 10) % 10
    return str(tens * 10 + units)


def _code(rng: random.Random, prompt_id: str) -> Problem:
    name = rng.choice("fgh")
    slope, intercept = rng.randint(2, 9), rng.randint(1, 9)
    sign = rng.choice("+-")
    spec = f"{slope}x {sign} {intercept}"
    prompt = f"# {name}(x) = {spec}\ndef {name}(x):\n    return "
    value = (lambda x: slope * x + intercept) if sign == "+" else (lambda x: slope * x - intercept)
    tests = [f"assert {name}({x}) == {value(x)}" for x in (0, 2, 5)]
    return Problem(
        prompt_id,
        prompt,
        f"x*{slope}{sign}{intercept}",
        tests,
        metadata={"slope": slope, "intercept": intercept, "sign": sign},
    )


def _code_mistake(problem: Problem) -> str:
    """Slope and intercept swapped: x*3+1 -> x*1+3."""
    return f"x*{problem.metadata['intercept']}{problem.metadata['sign']}{problem.metadata['slope']}"


_MAKERS = {"arithmetic": _arithmetic, "code": _code}
_MISTAKES = {"arithmetic": _arithmetic_mistake, "code": _code_mistake}
