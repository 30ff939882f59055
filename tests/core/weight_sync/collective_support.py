"""A receiver process for the `collective` transport tests: it answers commands from a queue.

Spawned (not forked: the learner side runs threads), so it lives in an importable module.
Commands: `("sync", None)` joins if needed, receives the newest version and answers
`("ok", version, {name: tensor})` or `("error", message)`; `("stall", None)` sends a request and
then never reads the buckets (a hung actor); `("stop", None)` ends the process.
"""

import multiprocessing
from pathlib import Path
from typing import Any

from core.weight_sync.collective_receiver import CollectiveReceiver, CollectiveSubscriber


def serve_commands(directory: str, commands: Any, answers: Any, timeout_s: float) -> None:
    subscriber = CollectiveSubscriber(Path(directory), timeout_s=timeout_s)
    receiver: CollectiveReceiver | None = None
    while True:
        command, _ = commands.get()
        if command == "stop":
            return
        try:
            offer = subscriber.latest()
            if offer is None:
                answers.put(("error", "nothing published"))
                continue
            if receiver is None:
                receiver = CollectiveReceiver(
                    offer.rendezvous, f"test-{multiprocessing.current_process().pid}", timeout_s
                )
            incoming = receiver.request()
            if command == "stall":
                answers.put(("stalled", incoming.version))
                continue
            tensors = {name: tensor.clone() for name, tensor in incoming.tensors()}
            answers.put(("ok", incoming.version, tensors, offer.version))
        except Exception as error:
            receiver = None  # a failed stream cannot be resumed: join again next time
            answers.put(("error", f"{type(error).__name__}: {error}"))


class ReceiverProcess:
    """The test's handle on one receiver process."""

    def __init__(self, directory: Path, timeout_s: float = 5.0) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands = context.Queue()
        self.answers = context.Queue()
        self.process = context.Process(
            target=serve_commands, args=(str(directory), self.commands, self.answers, timeout_s), daemon=True
        )
        self.process.start()

    def ask(self, command: str, wait_s: float = 60.0) -> tuple:
        self.commands.put((command, None))
        return self.answers.get(timeout=wait_s)

    def kill(self) -> None:
        self.process.kill()
        self.process.join(10)

    def stop(self) -> None:
        if self.process.is_alive():
            self.commands.put(("stop", None))
            self.process.join(10)
        if self.process.is_alive():
            self.kill()
