"""Load the config tree from YAML, apply environment and `--set` overrides, and explain failures.

Precedence (last wins): defaults < YAML file < `TANDEM_<SECTION>__<FIELD>` environment < `--set a.b=v`.
Values of overrides are parsed as YAML scalars, so `--set learner.lr=3e-4` is a float and
`--set actors.stop=[";"]` a list.
"""

import copy
import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.config.root import TandemConfig

ENV_PREFIX = "TANDEM_"
ENV_SEPARATOR = "__"


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the offending key."""


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> TandemConfig:
    """Resolve the config: YAML at `path` (or defaults), then environment, then `--set` overrides."""
    source = str(path) if path is not None else "<defaults>"
    tree = read_yaml(Path(path)) if path is not None else {}
    env = os.environ if environ is None else environ
    for key, value in environment_overrides(env).items():
        set_dotted(tree, key, value, source=f"environment {key_to_env(key)}")
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(tree, key, value, source=f"--set {override}")
    return validate_tree(tree, source)


def validate_tree(tree: dict[str, Any], source: str) -> TandemConfig:
    """Validate a plain dict, turning pydantic's report into one line per key."""
    try:
        return TandemConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid config\n{format_errors(error)}") from None


def format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        # Discriminated unions put the tag (e.g. 'exact_match') into the location; drop it from the key.
        location = [str(part) for part in item["loc"] if part not in _SCORER_TAGS]
        key = ".".join(location) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in item and item["type"] not in ("missing", "value_error"):
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


_SCORER_TAGS = {"exact_match", "unit_tests", "reward_model", "entailment", "http", "python"}


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(tree).__name__}")
    return tree


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set learner.lr=3e-4")
    return key.strip(), parse_scalar(raw)


def parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`TANDEM_LEARNER__LR=3e-4` -> {"learner.lr": 3e-4}. Variables without `__` are not config."""
    found = {}
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX) and ENV_SEPARATOR in name:
            dotted = name[len(ENV_PREFIX) :].lower().replace(ENV_SEPARATOR, ".")
            found[dotted] = parse_scalar(raw)
    return found


def key_to_env(dotted: str) -> str:
    return ENV_PREFIX + dotted.upper().replace(".", ENV_SEPARATOR)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    """Set `a.b.0.c` in a nested dict/list tree, creating mappings on the way.

    A list the file does not mention (e.g. the default `reward.scorers`) is copied from the defaults
    first, so `--set reward.scorers.0.weight=2` edits the default scorer instead of replacing the list.
    """
    parts = dotted.split(".")
    node: Any = tree
    defaults: Any = _default_tree()
    for depth, part in enumerate(parts):
        defaults = defaults.get(part) if isinstance(defaults, dict) else None
        if (
            isinstance(node, dict)
            and part not in node
            and isinstance(defaults, list)
            and depth < len(parts) - 1
        ):
            node[part] = copy.deepcopy(defaults)
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{source}: {'.'.join(parts[: depth + 1])}: no list item {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {'.'.join(parts[:depth])} is a value, not a section")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


@functools.cache
def _default_tree() -> dict[str, Any]:
    return TandemConfig().model_dump(mode="json")
