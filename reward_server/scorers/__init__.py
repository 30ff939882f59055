"""The scorer types the config may name, and `build_scorer` that turns one scorer config into a Scorer.

A literal dict maps each config `type` to the import path of its class, imported only when a config
uses it, so a server scoring with `exact_match` never imports torch and a missing optional tool
(bubblewrap, a model directory) only matters to the configs that need it.
"""

import importlib

from core.config.reward import ScorerConfig
from reward_server.scorers.base import Scorer

SCORER_TYPES: dict[str, str] = {
    "exact_match": "reward_server.scorers.exact_match:ExactMatchScorer",
    "unit_tests": "reward_server.scorers.unit_tests:UnitTestsScorer",
    "reward_model": "reward_server.scorers.reward_model:RewardModelScorer",
    "entailment": "reward_server.scorers.entailment:EntailmentScorer",
    "http": "reward_server.scorers.http:HttpScorer",
    "python": "reward_server.scorers.python_fn:PythonScorer",
}


def build_scorer(config: ScorerConfig) -> Scorer:
    """Import the class registered for `config.type` and construct it from `config` (may load a model)."""
    module_name, class_name = SCORER_TYPES[config.type].split(":")
    scorer_class = getattr(importlib.import_module(module_name), class_name)
    return scorer_class(config)
