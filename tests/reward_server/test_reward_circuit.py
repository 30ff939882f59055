"""The circuit breaker of the http scorer, on a fake clock: closed -> open -> half-open -> closed/open."""

import pytest

from reward_server.circuit import CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=Clock())
    for _ in range(2):
        breaker.admit()
        breaker.record(False)
    breaker.admit()
    breaker.record(True)  # a success resets the count
    for _ in range(2):
        breaker.admit()
        breaker.record(False)
    assert breaker.state == "closed"
    breaker.admit()
    breaker.record(False)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError, match=r"after 3 consecutive failed requests; next try in 10.0 s"):
        breaker.admit()


def test_after_the_cooldown_one_trial_runs_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5, clock=clock)
    breaker.admit()
    breaker.record(False)
    clock.now += 4.0
    with pytest.raises(CircuitOpenError, match=r"next try in 1\.0 s"):
        breaker.admit()
    clock.now += 1.0
    breaker.admit()  # the trial
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpenError, match="a trial request is in flight"):
        breaker.admit()
    breaker.record(False)  # the trial failed: open again, for a full cooldown
    assert breaker.state == "open"
    clock.now += 5.0
    breaker.admit()
    breaker.record(True)
    assert breaker.state == "closed"
    breaker.admit()
