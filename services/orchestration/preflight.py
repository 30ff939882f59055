"""Checks of everything a run reads, made before anything heavy starts.

A bad prompt line used to surface 49 s into `tandem train`, after Ray, the learner and a vLLM actor
had started, as a 36-line traceback from inside the actor. `tandem train` and `tandem learn` call
`preflight_train` / `preflight_learn` right after the config is parsed: files are read and checked
here (every prompt line, every offline line, the model folders, the scorer models), Redis is pinged,
and the run directory is probed for writing. The first problem raises `PreflightError`, a
`ConfigError`, which the CLI prints as one line naming the config key and the file (exit code 2).

Standard library and `core/` only (no torch, Ray, vLLM, DeepSpeed, redis-py), so bad input is reported
in about a second and a good one costs a few milliseconds per file; Parquet files and `datasets`
folders bring in pyarrow and `datasets` (about a second more), JSONL nothing. Chat prompts are checked
against the model's files for a chat template, without loading its tokenizer.
"""

import json
import socket
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from core.config import ConfigError, TandemConfig
from core.config.reward import EntailmentScorerConfig, RewardModelScorerConfig
from core.offline_file import IngestError, parse_offline_file
from core.prompts.record import FieldMap, PromptFileError, read_prompt_file
from core.redaction import redact_url
from core.tokenization import has_chat_template

# What transformers and vLLM load a model's weights from (single file, shards, or their index).
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")
# A tokenizer needs its vocabulary in one of these forms (fast JSON, sentencepiece, BPE or WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
REDIS_TIMEOUT_S = 2.0  # a Redis that takes longer to answer PING is not one a run can use
REWARD_TIMEOUT_S = 5.0  # more than Redis: a remote server may be busy scoring for another run


class PreflightError(ConfigError):
    """Input a run cannot use; the message is one line naming the config key and the file or URL."""


def check_run_dir(run_dir: Path, resume: bool, key: str = "run.run_dir") -> None:
    """The run directory is a directory we can write (or can be created: nothing is created here, so
    a refused run leaves no trace), and a fresh run does not overwrite another run's checkpoints."""
    if run_dir.exists() and not run_dir.is_dir():
        raise PreflightError(f"{key}: {run_dir} exists and is not a directory")
    check_writable_dir(run_dir, key)
    checkpoints = run_dir / "checkpoints"
    if not resume and checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise PreflightError(
            f"{key}: {run_dir} already holds checkpoints: pass --resume to continue that run, "
            "or a new --run-dir"
        )


def check_writable_dir(directory: Path, key: str) -> None:
    """`directory`, or its nearest existing ancestor if it does not exist yet, accepts a new file."""
    probe_in = directory
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise PreflightError(f"{key}: cannot create {directory}: {probe_in} is not a directory")
    try:
        # A real write, not os.access: root passes os.access on a read-only mount, and ACLs lie to it.
        with tempfile.NamedTemporaryFile(dir=probe_in, prefix=".tandem-write-probe-"):
            pass
    except OSError as error:
        raise PreflightError(f"{key}: {directory} is not writable ({error.strerror or error})") from None


def check_prompt_file(
    path: Path,
    key: str,
    min_prompts: int = 1,
    fields: FieldMap | None = None,
    model: Path | None = None,
) -> int:
    """Every line or row of a prompt file (JSONL, Parquet, `datasets` folder; columns mapped by
    `fields`) parses into a prompt, and chat prompts have a chat template in `model` to render them;
    returns how many prompts there are."""
    try:
        records = read_prompt_file(path, fields=fields)
    except PromptFileError as error:
        raise PreflightError(f"{key}: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PreflightError(f"{key}: {path}: cannot read ({error})") from None
    if len(records) < min_prompts:
        raise PreflightError(
            f"{key}: {path} holds {len(records)} prompt(s), fewer than the {min_prompts} actors that share it"
        )
    chat = next((record for record in records if record.messages is not None), None)
    if model is not None and chat is not None:
        check_chat_template(model, f"{key}: {path} (prompt {chat.prompt_id!r})")
    return len(records)


def check_chat_template(model: Path, what: str) -> None:
    """`model`'s tokenizer has a chat template for the chat prompts (`messages`) that `what` names."""
    if not has_chat_template(model):
        raise PreflightError(
            f"{what} has chat prompts ('messages') but the tokenizer of {model} has no chat template "
            "to render them: give text prompts ('prompt'), or a model whose tokenizer_config.json has "
            "a 'chat_template' (or a chat_template.jinja)"
        )


def check_model_dir(path: Path, key: str, tokenizer: bool = True) -> None:
    """A Hugging Face model folder: exists, has a readable `config.json`, weights and (when asked)
    the tokenizer's vocabulary. Nothing is loaded: that is what the heavy processes do later."""
    if not path.exists():
        raise PreflightError(f"{key}: model folder {path} not found")
    if not path.is_dir():
        raise PreflightError(f"{key}: {path} is not a folder (a Hugging Face model folder is expected)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise PreflightError(f"{key}: {path} has no config.json (not a Hugging Face model folder)")
    try:
        if not isinstance(json.loads(config_file.read_text()), dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PreflightError(f"{key}: {config_file} is not a readable JSON object ({error})") from None
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise PreflightError(f"{key}: {path} has no weights (*.safetensors or pytorch_model*.bin)")
    if tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise PreflightError(f"{key}: {path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")


def check_scorer_models(config: TandemConfig) -> None:
    """Every reward_model / entailment scorer points at a complete model folder (it loads its own
    tokenizer, so the tokenizer must be there too)."""
    for index, scorer in enumerate(config.reward.scorers):
        if isinstance(scorer, RewardModelScorerConfig | EntailmentScorerConfig):
            check_model_dir(scorer.path, f"reward.scorers.{index}.path ({scorer.name})")


def check_offline_files(
    paths: Iterable[Path], key: str = "buffer.offline_files", model: Path | None = None
) -> None:
    """Every line of every offline file is a valid offline group (the format of `tandem ingest`), and
    lines with chat `messages` but no token ids have a chat template in `model` to render them."""
    for index, path in enumerate(paths):
        try:
            lines = parse_offline_file(path)
        except IngestError as error:
            raise PreflightError(f"{key}.{index}: {error}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise PreflightError(f"{key}.{index}: {path}: cannot read ({error})") from None
        chat = next((line for line in lines if line.messages and line.prompt_token_ids is None), None)
        if model is not None and chat is not None:
            check_chat_template(model, f"{key}.{index}: {chat.where}")


def check_redis(url: str, key: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
    """Redis at `url` answers PING, after AUTH with the URL's credentials and SELECT of its database.

    Spoken as raw RESP over a socket: redis-py lives only in the Redis buffer and prompt source (see
    tests/test_architecture.py), and importing those would import torch. A `rediss://` URL is checked
    up to the TLS handshake only (certificate unverified: its options are redis-py's to interpret).
    Messages show the URL with its password masked.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise PreflightError(f"{key}: {shown} is not a valid URL ({error})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise PreflightError(f"{key}: {shown}: expected a redis://, rediss:// or unix:// URL")
    query = parse_qs(parts.query)
    password = unquote(parts.password) if parts.password else (query.get("password") or [None])[0]
    username = unquote(parts.username) if parts.username else None
    database = (query.get("db") or [None])[0] or parts.path.strip("/") or "0"
    if parts.scheme == "unix":
        where = parts.path
        database = (query.get("db") or ["0"])[0]
    else:
        where = f"{parts.hostname or 'localhost'}:{port or 6379}"
    try:
        sock = _connect(parts.scheme, parts.hostname or "localhost", port or 6379, parts.path, timeout_s)
    except OSError as error:
        raise PreflightError(f"{key}: cannot reach Redis at {shown} ({_reason(error)})") from None
    if parts.scheme == "rediss":
        sock.close()
        return
    try:
        with sock, sock.makefile("rb") as replies:
            if password:
                auth = ["AUTH", username, password] if username else ["AUTH", password]
                reply = _command(sock, replies, auth)
                if username and b"wrong number of arguments" in reply:  # Redis < 6: password only
                    reply = _command(sock, replies, ["AUTH", password])
                if b"without any password" in reply or b"no password is set" in reply:
                    raise PreflightError(
                        f"{key}: Redis at {shown} has no password set but the URL gives one: "
                        "drop it from the URL, or set requirepass on the server"
                    )
                if not reply.startswith(b"+"):
                    raise PreflightError(
                        f"{key}: Redis at {shown} refused the password ({_error_word(reply)})"
                    )
            reply = _command(sock, replies, ["PING"])
            if reply.startswith(b"-NOAUTH"):
                raise PreflightError(
                    f"{key}: Redis at {where} requires a password: give it in the URL, "
                    "redis://:PASSWORD@host:port/db"
                )
            if not reply.startswith(b"+PONG"):
                raise PreflightError(f"{key}: {where} did not answer PING like Redis ({_error_word(reply)})")
            if database != "0":
                if not database.isdigit():
                    raise PreflightError(f"{key}: {shown}: database {database!r} is not a number")
                reply = _command(sock, replies, ["SELECT", database])
                if not reply.startswith(b"+"):
                    raise PreflightError(f"{key}: Redis at {shown} has no database {database}")
    except OSError as error:
        raise PreflightError(f"{key}: Redis at {shown} did not answer ({_reason(error)})") from None


def check_reward_server(url: str, token: str | None, key: str = "reward.url") -> None:
    """A remote reward server answers at `url` and accepts the token: an empty scoring request with the
    bearer token the actors will send. Any answer but 401/403 will do (a server still loading its
    models may say 503); a refused token would fail every item of the run."""
    shown = redact_url(url)
    parts = urlsplit(url)
    # urllib takes no userinfo in a URL (httpx, the actors' client, does): probe the bare host, and
    # leave the answer to credentials it did not send out of the verdict.
    userinfo = "@" in parts.netloc
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(
        bare.rstrip("/") + "/v1/score", data=b'{"items": []}', headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=REWARD_TIMEOUT_S):
            return
    except urllib.error.HTTPError as error:
        error.close()
        if error.code in (401, 403) and not userinfo:
            problem = "refused reward.auth_token" if token else "requires a token: set reward.auth_token"
            raise PreflightError(
                f"{key}: the reward server at {shown} {problem} (HTTP {error.code})"
            ) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise PreflightError(f"{key}: cannot reach the reward server at {shown} ({reason})") from None


def _connect(scheme: str, host: str, port: int, path: str, timeout_s: float) -> socket.socket:
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((host, port), timeout=timeout_s)
    if scheme == "rediss":
        # Reachability and handshake only (see check_redis); the certificate is not verified here.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(sock, server_hostname=host)
    return sock


def _command(sock: socket.socket, replies: object, words: list[str]) -> bytes:
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        data = word.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(payload)
    line: bytes = replies.readline()  # type: ignore[attr-defined]
    if not line:
        raise ConnectionResetError("connection closed")
    return line.rstrip(b"\r\n")


def _error_word(reply: bytes) -> str:
    # The server's error reply (e.g. WRONGPASS ...); it never echoes the password back.
    return reply.lstrip(b"-+").decode(errors="replace")[:120]


def _reason(error: OSError) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    return error.strerror or str(error) or type(error).__name__


def _check_learner_files(config: TandemConfig, resume: bool) -> None:
    """The run directory, the weight-sync folder, the policy and reference folders. The model comes
    before the prompt files in `tandem train`: the demo's prompt files live in its folder."""
    check_run_dir(config.run.run_dir, resume)
    # `filesystem` writes the weights there, `collective` (and `auto`, on one machine) its rendezvous file.
    if config.weight_sync.transport != "ray" and config.weight_sync.directory is not None:
        check_writable_dir(config.weight_sync.directory, "weight_sync.directory")
    check_model_dir(config.model.path, "model.path")
    if config.model.ref_path is not None:
        # The learner loads only the reference's weights; its tokenizer is the policy's.
        check_model_dir(config.model.ref_path, "model.ref_path", tokenizer=False)


def preflight_learn(config: TandemConfig, resume: bool = False) -> None:
    """What `tandem learn` reads: the run directory, the policy and reference folders, the buffer."""
    _check_learner_files(config, resume)
    if config.buffer.kind == "redis":
        check_redis(config.buffer.redis_url, "buffer.redis_url")


def preflight_train(config: TandemConfig, resume: bool = False) -> None:
    """What `tandem train` reads, local files first and the network last: everything `preflight_learn`
    checks, plus the prompt files, the scorer models, the offline files and the prompt stream."""
    actors = config.actors
    _check_learner_files(config, resume)
    if actors.prompt_source == "file":
        # Each actor reads its own shard of the file, so the file needs a prompt for every actor.
        check_prompt_file(
            actors.train_prompts,
            "actors.train_prompts",
            min_prompts=actors.num_actors,
            fields=actors.prompt_fields,
            model=config.model.path,
        )
    if actors.eval_prompts is not None:
        check_prompt_file(
            actors.eval_prompts, "actors.eval_prompts", fields=actors.prompt_fields, model=config.model.path
        )
    if config.reward.url is None:  # embedded: this process loads the scorers (a remote server its own)
        check_scorer_models(config)
    check_offline_files(config.buffer.offline_files, model=config.model.path)
    if config.reward.url is not None:
        check_reward_server(config.reward.url, config.reward.auth_token)
    if config.buffer.kind == "redis":
        check_redis(config.buffer.redis_url, "buffer.redis_url")
    if actors.prompt_source == "redis":
        check_redis(actors.prompt_redis_url, "actors.prompt_redis_url")


__all__ = [
    "PreflightError",
    "check_chat_template",
    "check_model_dir",
    "check_offline_files",
    "check_prompt_file",
    "check_redis",
    "check_reward_server",
    "check_run_dir",
    "check_scorer_models",
    "check_writable_dir",
    "preflight_learn",
    "preflight_train",
]
