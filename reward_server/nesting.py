"""The nesting limit on request bodies (reward.max_json_depth): deeper JSON is a 422 naming the field.

Deeply nested JSON costs the parsers a recursion level per level: msgspec raises RecursionError near
the interpreter's recursion limit (about 4 KB of `{"a":` was an HTTP 500), and pydantic's parser
stops at a depth of its own with an error that names no field. The limit, far below both, is
checked here before either would fail: `too_deep` finds the first container past it in the raw
bytes (for bodies msgspec refused, and for every /get_reward body), `nested_deeper` checks decoded
values (the /v1/score fast path, where only `metadata` can nest). On a hostile body at the 8 MiB
limit the check costs about what parsing it does.
"""

import json
import re
from collections.abc import Callable
from typing import Any

from reward_server.limits import Location, raise_if_any

# Brackets outside strings only: escapes removed first (an escaped backslash, then an escaped quote),
# so that every quote left opens or closes a string; {} read as [].
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
# What decides the path: strings (skipped whole, so brackets inside them do not count; the unrolled
# loop keeps `re` scanning long strings in C) and brackets. Commas between tokens give array indices.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_COLON = re.compile(rb"[ \t\r\n]*:")
MAX_TOKENS = 250_000
"""Tokens read while looking for the path to a too-deep container (a fraction of a second); past them
the body as a whole is named: a body known to be too deep is refused either way."""


def too_deep(body: bytes, max_depth: int) -> Location | None:
    """The path (keys and indices) to the first array or object nested deeper than `max_depth`, the
    body itself counting as depth 1 (() when it lies past MAX_TOKENS); None when there is none.
    Malformed JSON is scanned as far as it goes: it is the parser's to refuse."""
    if not _nests_deeper(body, max_depth):
        return None
    return _path_to_first(body, max_depth)


def _nests_deeper(body: bytes, max_depth: int) -> bool:
    """Whether `body` may nest deeper than `max_depth`, in passes over bytes that run in C: on a few MB
    of code completions a third of the token loop's time, and a /get_reward body is checked on every
    request. Exact for valid JSON; for malformed JSON the token loop decides."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False  # fewer brackets in all, strings included, than the limit: the common case
    outside = b"".join(body.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    brackets = outside.translate(_BRACKETS, _NOT_BRACKETS)
    for peeled in range(max_depth):
        # Each pass removes the containers that hold no container: after k passes, those k deep.
        inner = brackets.replace(b"[]", b"")
        if not inner:
            return False
        if len(inner) == len(brackets):  # unbalanced: what is left is unclosed or stray brackets
            return inner.count(b"[") + peeled > max_depth
        brackets = inner
    return True


def _path_to_first(body: bytes, max_depth: int) -> Location | None:
    """`too_deep`'s path, one token at a time: the slow part, run only for bodies found too deep."""
    positions: list[str | int] = []  # per open container: the key or index being read in it
    in_object: list[bool] = []
    end = 0
    for count, match in enumerate(_TOKEN.finditer(body)):
        if count == MAX_TOKENS:
            return ()
        start = match.start()
        if positions and not in_object[-1]:
            positions[-1] += body.count(b",", end, start)  # type: ignore[operator]
        end = match.end()
        first = body[start]
        if first == 0x22:  # a string: the member's key when a colon follows
            if in_object and in_object[-1] and _COLON.match(body, end):
                positions[-1] = _key(body[start:end])
        elif first in b"[{":
            if len(positions) == max_depth:
                return tuple(positions)
            positions.append("" if first == 0x7B else 0)
            in_object.append(first == 0x7B)
        elif positions:
            positions.pop()
            in_object.pop()
    return None


def _key(token: bytes) -> str:
    try:
        return json.loads(token)  # type: ignore[no-any-return]
    except ValueError:  # an invalid escape: still worth naming as written
        return token[1:-1].decode(errors="replace")


def nested_deeper(value: Any, levels: int) -> bool:
    """Whether the lists and dicts of a decoded `value` nest more than `levels` deep (`value` is level
    1). Iterative, so a value nested past the recursion limit is measured rather than crashing."""
    stack = [(value, 1)]
    while stack:
        current, level = stack.pop()
        if level > levels:
            return True
        for child in current.values() if isinstance(current, dict) else current:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    return False


def check_body_depth(body: bytes, max_depth: int, field_of: Callable[[Location], Location]) -> None:
    """422 naming the field that nests past `max_depth`: `field_of` cuts the path to the too-deep
    container down to the field a client would look at (e.g. `items`, 0, `metadata`), not 30-odd steps."""
    path = too_deep(body, max_depth)
    if path is not None:
        raise_if_any([depth_error(("body", *field_of(path)), max_depth)])


def depth_error(location: Location, max_depth: int) -> dict[str, Any]:
    """A 422 entry in FastAPI's shape for the field at `location` (already prefixed with "body")."""
    return {
        "type": "too_deeply_nested",
        "loc": location,
        "msg": f"JSON nested deeper than {max_depth} levels (reward.max_json_depth)",
        "ctx": {"max_depth": max_depth},
    }
