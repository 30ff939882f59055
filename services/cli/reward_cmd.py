"""`tandem reward-server`: serve the reward server (reward_server.app) with uvicorn.

Host, port and workers come from the `reward` section; `--host`, `--port` and `--workers` override it
(as `--set reward.host=...` would, so they are validated the same way). The resolved section is
printed at launch with its secrets masked.
"""

import argparse
import json
import os
import sys

from core.config import load_config
from core.config.reward import RewardConfig
from services.cli.common import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("reward-server", help="serve the reward server (FastAPI + uvicorn)")
    add_config_arguments(serve)
    serve.add_argument("--host", help="bind address (overrides reward.host); beyond loopback needs a token")
    serve.add_argument("--port", type=int, help="port (overrides reward.port; 0 picks a free one)")
    serve.add_argument("--workers", type=int, help="uvicorn worker processes (overrides reward.workers)")
    serve.set_defaults(handler=serve_reward)


def serve_reward(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    for field in ("host", "port", "workers"):
        value = getattr(args, field)
        if value is not None:
            # JSON-quoted, so the override parser reads "::1" or "1e3" as the string it is.
            overrides.append(f"reward.{field}={json.dumps(value)}")
    config = load_config(args.config, overrides).reward
    print(json.dumps({"reward": config.redacted()}, indent=2), flush=True)

    from reward_server.auth import require_token_for_public_bind

    try:
        require_token_for_public_bind(config.host, config.auth_token)
    except ValueError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return 2
    run_uvicorn(config)
    return 0


def run_uvicorn(config: RewardConfig) -> None:
    import uvicorn

    from reward_server.app import CONFIG_ENV, create_app

    if config.workers == 1:
        uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")
        return
    # Worker processes import the app themselves, so the config travels to them in the environment.
    os.environ[CONFIG_ENV] = config.model_dump_json()
    uvicorn.run(
        "reward_server.app:app_from_environment",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        log_level="info",
    )
