"""The one redaction of secrets, for every dump of the config and for log lines.

`redact_tree` masks a JSON-ready tree (a dumped config or section): secret-named keys (`auth_token`,
`password`, ...), the values of every `headers` mapping (http scorers send `Authorization` there), and
the password of every URL that carries userinfo (`redis://:PASSWORD@host/0`, also `?password=`).
`tandem config show`, `RUN/config.yaml`, the configs `train` and `learn` print and the reward server's
launch line all go through it. `secret_values` lists what it hid, so that `RedactingFormatter` can mask
the same strings, and any URL password, wherever a log line or a traceback happens to print them.

Standard library only: the CLI uses it before anything heavy is imported.
"""

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "***"

# Keys whose string value is a secret as a whole, wherever they sit in the tree.
SECRET_KEYS = frozenset({"auth_token", "token", "password", "secret", "api_key", "apikey"})
# URL query parameters that carry credentials (redis-py reads `?password=`).
SECRET_QUERY_KEYS = frozenset({"password", "token", "auth", "auth_token", "secret", "api_key", "apikey"})
# Secrets shorter than this are not searched for in free text: masking every "ab" would garble the logs,
# and the URL pattern below still masks a short password where it sits in a URL.
MIN_TEXT_SECRET = 4

# scheme://userinfo@ in free text; userinfo stops at whitespace, '/' or a quote.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/@'\"<>]+)@")


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo masked (a lone user part too: often a token) and secret
    query parameters masked; anything that is not such a URL comes back unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_USERINFO.sub(_mask_userinfo_match, url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{_mask_userinfo(userinfo)}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in SECRET_QUERY_KEYS for key, _ in pairs):
            masked = [(k, REDACTED if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
            query = urlencode(masked, safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_userinfo(userinfo: str) -> str:
    user, sep, _ = userinfo.partition(":")
    return f"{user}:{REDACTED}" if sep else REDACTED


def _mask_userinfo_match(match: re.Match[str]) -> str:
    return f"{match.group(1)}{_mask_userinfo(match.group(2))}@"


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def redact_tree(tree: Any) -> Any:
    """A copy of a JSON-ready tree with every secret masked (see the module docstring)."""
    if isinstance(tree, dict):
        masked: dict[Any, Any] = {}
        for key, value in tree.items():
            if _is_secret_key(key) and isinstance(value, str) and value:
                masked[key] = REDACTED
            elif key == "headers" and isinstance(value, dict):
                masked[key] = dict.fromkeys(value, REDACTED)
            else:
                masked[key] = redact_tree(value)
        return masked
    if isinstance(tree, list):
        return [redact_tree(item) for item in tree]
    if isinstance(tree, str):
        return redact_url(tree)
    return tree


def secret_values(tree: Any) -> set[str]:
    """Every string `redact_tree` hides in `tree`: whole secrets, header values (and their credential
    after `Bearer `), URL passwords (raw and percent-decoded) and secret query values."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if _is_secret_key(key) and isinstance(value, str) and value:
                    found.add(value)
                elif key == "headers" and isinstance(value, dict):
                    for header in value.values():
                        found.add(str(header))
                        found.update(part for part in str(header).split() if len(part) >= MIN_TEXT_SECRET)
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, str):
            found.update(_url_secrets(node))

    visit(tree)
    return {value for value in found if value}


def _url_secrets(text: str) -> set[str]:
    if "://" not in text:
        return set()
    try:
        parts = urlsplit(text)
    except ValueError:
        return set()
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, sep, password = userinfo.partition(":")
        secret = password if sep else user
        found |= {secret, unquote(secret), quote(unquote(secret), safe="")}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in SECRET_QUERY_KEYS and value:
            found |= {value, quote(value, safe="")}
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets (longest first, so a secret containing another goes whole) and any
    URL userinfo password masked."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_TEXT_SECRET and secret in text:
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL_USERINFO.sub(_mask_userinfo_match, text)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose output (message, arguments, traceback) passes through `redact_text`: put it
    on every handler of a process that holds secrets, so no log line can carry one out."""

    def __init__(self, fmt: str | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.secrets = set(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), self.secrets)
