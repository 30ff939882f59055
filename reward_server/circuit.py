"""A circuit breaker for calls to an external endpoint.

closed     requests go through; `failures` consecutive failed requests open the circuit.
open       requests fail at once (no waiting on a dead endpoint) until `cooldown_s` has passed.
half-open  one trial request goes through; success closes the circuit, failure opens it again.
"""

import time
from collections.abc import Callable
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]


class CircuitOpenError(RuntimeError):
    """Raised instead of calling an endpoint whose circuit is open."""


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state: CircuitState = "closed"
        self.consecutive_failures = 0
        self.opened_at = 0.0

    def admit(self) -> None:
        """Let one request through, or raise CircuitOpenError saying when the next trial may run."""
        if self.state == "closed":
            return
        waited = self.clock() - self.opened_at
        if self.state == "open" and waited >= self.cooldown_s:
            self.state = "half_open"  # this caller is the trial; others fail fast until it reports
            return
        retry_in = max(0.0, self.cooldown_s - waited)
        trial = (
            "a trial request is in flight" if self.state == "half_open" else f"next try in {retry_in:.1f} s"
        )
        raise CircuitOpenError(
            f"circuit open after {self.consecutive_failures} consecutive failed requests; {trial}"
        )

    def record(self, success: bool) -> None:
        if success:
            self.state = "closed"
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        if self.state == "half_open" or self.consecutive_failures >= self.threshold:
            self.state = "open"
            self.opened_at = self.clock()
