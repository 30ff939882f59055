"""Reward functions for the `python` scorer tests, imported by the scorer through `reward_functions:NAME`."""

import math
import threading

import numpy as np

from reward_server.scorers.base import ScoreItem

CALLER_THREADS: list[str] = []


def completion_length(prompt: str, completion: str, item: ScoreItem) -> float:
    """len(completion); records the calling thread, so a test can see it is not the event loop's."""
    CALLER_THREADS.append(threading.current_thread().name)
    return float(len(completion))


def fails_on_boom(prompt: str, completion: str, item: ScoreItem) -> float:
    if "boom" in completion:
        raise ValueError(f"cannot score {completion!r}")
    return 1.0


def not_a_number(prompt: str, completion: str, item: ScoreItem) -> object:
    return {"score": 1} if completion == "dict" else True


def numpy_score(prompt: str, completion: str, item: ScoreItem) -> object:
    return np.float32(0.5)


def non_finite(prompt: str, completion: str, item: ScoreItem) -> float:
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(completion, 1.0)


def metadata_weight(prompt: str, completion: str, item: ScoreItem) -> float:
    """Reads the item's metadata, which the request carries through to the function."""
    return float(item.metadata.get("weight", 0))


NOT_CALLABLE = 3
