"""Where the `collective` transport's learner can be reached, and the store keys both sides use.

The learner hosts a `TCPStore` on `weight_sync.collective_host` (127.0.0.1 by default) and a free
port, and writes `{host, port, session}` to `<weights dir>/collective.json` (atomically, after the
store is up). Actors already know the run directory, so the file is the only control path needed: no
Ray, no fixed port. A restarted learner gets a new port and session and rewrites the file; receivers
notice the new session and join again.

Keys in the store:
  `latest`             `{"version", "digest", "backend"}` of the newest published version
  `joins`              counter: each receiver that joins takes the next number n
  `pair/<n>/req/<m>`   the receiver's m-th request for the newest version
  `pair/<n>/resp/<m>`  the sender's answer: the `Plan` (names, shapes, fingerprints) it then sends
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

RENDEZVOUS_FILE = "collective.json"
LATEST = "latest"
JOINS = "joins"


def pair_prefix(join: int) -> str:
    return f"pair/{join}/"


@dataclass(frozen=True)
class Rendezvous:
    host: str
    port: int
    session: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Rendezvous":
        data = json.loads(text)
        return cls(str(data["host"]), int(data["port"]), str(data["session"]))


def write_rendezvous(directory: Path, rendezvous: Rendezvous) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RENDEZVOUS_FILE
    scratch = path.with_name(f".{path.name}.{os.getpid()}.partial")
    scratch.write_text(rendezvous.to_json())
    os.replace(scratch, path)  # readers see the old file or the new one, never half of one
    return path


def read_rendezvous(directory: Path) -> Rendezvous | None:
    try:
        return Rendezvous.from_json((directory / RENDEZVOUS_FILE).read_text())
    except (FileNotFoundError, ValueError, KeyError):
        return None
