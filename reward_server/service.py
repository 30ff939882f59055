"""The scoring service behind the routes: the built scorers, the server's identity, and readiness.

The scoring routes reach it through `auth.authorize`, which each calls before reading its body, the
probes through `ServiceDep`; the app's lifespan starts and closes it.
"""

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from importlib.metadata import version
from typing import Annotated

from fastapi import Depends, Request

from core.config.reward import RewardConfig
from reward_server import metrics
from reward_server.scorers import build_scorer
from reward_server.scorers.base import ScoreItem
from reward_server.scoring import ItemScore, WeightedScorer, score_items
from reward_server.wire import ScoreRequestDecoder

log = logging.getLogger(__name__)


class UnknownScorerError(ValueError):
    """A request named scorers that are not configured; `names` lists them with their positions."""

    def __init__(self, unknown: list[tuple[int, str]], configured: list[str]) -> None:
        self.unknown = unknown
        self.configured = configured
        super().__init__(f"unknown scorers {[name for _, name in unknown]}; configured: {configured}")


class ScoringService:
    """Builds the configured scorers at start-up and scores batches with all or a named subset of them."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        self.server_version = version("tandem")
        self.config_hash = config_hash(config)
        self.request_decoder = ScoreRequestDecoder(config)
        self.scorers: dict[str, WeightedScorer] = {}
        self.ready = False

    async def start(self) -> None:
        """Build every scorer (model loading happens in a thread); a scorer that cannot start stops the
        server with its name in the message, rather than serving without it."""
        for scorer_config in self.config.scorers:
            metrics.register_scorer(scorer_config.name)
            try:
                scorer = await asyncio.to_thread(build_scorer, scorer_config)
            except Exception as error:
                await self.close()
                raise RuntimeError(
                    f"reward scorer {scorer_config.name!r} (type {scorer_config.type}) "
                    f"failed to start: {error}"
                ) from error
            self.scorers[scorer_config.name] = WeightedScorer(
                scorer_config.name, scorer_config.weight, scorer
            )
            log.info("reward scorer %s (%s) ready", scorer_config.name, scorer_config.type)
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        for entry in self.scorers.values():
            try:
                await entry.scorer.close()
            except Exception:
                log.exception("closing reward scorer %s failed", entry.name)
        self.scorers.clear()

    def select(self, names: Sequence[str] | None) -> list[WeightedScorer]:
        """All scorers when `names` is None, else the named ones in the order given."""
        if names is None:
            return list(self.scorers.values())
        unknown = [(index, name) for index, name in enumerate(names) if name not in self.scorers]
        if unknown:
            raise UnknownScorerError(unknown, list(self.scorers))
        return [self.scorers[name] for name in dict.fromkeys(names)]

    async def score(self, items: Sequence[ScoreItem], scorers: Sequence[WeightedScorer]) -> list[ItemScore]:
        return await score_items(scorers, items, self.config.scorer_timeout_s)


def config_hash(config: RewardConfig) -> str:
    """Identifies the scoring setup in every response; secrets are masked first, so the hash cannot be
    used to test guesses of the token."""
    return hashlib.sha256(json.dumps(config.redacted(), sort_keys=True).encode()).hexdigest()[:16]


async def get_service(request: Request) -> ScoringService:
    return request.app.state.service


ServiceDep = Annotated[ScoringService, Depends(get_service)]
