"""The test dialect and the harness's strict functions, in-process (no sandbox): what a test may
contain, how it is rewritten, and that judging a value never calls a method of the completion's."""

import builtins
import os
from collections.abc import Iterator
from typing import ClassVar

import pytest

from reward_server.sandbox import harness
from reward_server.sandbox.dialect import NONCE_PLACEHOLDER, DialectError, prepare_test


class Spy:
    """A completion's object that records every dunder the judge calls on it."""

    calls: ClassVar[list[str]] = []

    def __eq__(self, other: object) -> bool:
        Spy.calls.append("__eq__")
        return True

    def __ne__(self, other: object) -> bool:
        Spy.calls.append("__ne__")
        return False

    def __hash__(self) -> int:
        Spy.calls.append("__hash__")
        return 7

    def __bool__(self) -> bool:
        Spy.calls.append("__bool__")
        return True

    def __len__(self) -> int:
        Spy.calls.append("__len__")
        return 1

    def __iter__(self) -> Iterator[int]:
        Spy.calls.append("__iter__")
        return iter([7])

    def __index__(self) -> int:
        Spy.calls.append("__index__")
        return 0

    def __lt__(self, other: object) -> bool:
        Spy.calls.append("__lt__")
        return True


class SpyInt(int):
    def __eq__(self, other: object) -> bool:
        Spy.calls.append("SpyInt.__eq__")
        return True

    __hash__ = int.__hash__


@pytest.fixture
def helpers() -> dict:
    Spy.calls.clear()
    made = harness._helpers(-1, b"nonce", {}, {}, {}, dict(builtins.__dict__))
    return made["helpers"]


def test_a_test_is_rewritten_through_the_harness_helpers() -> None:
    prepared = prepare_test("import math\nassert f(2) == 7, 'message dropped'\nassert all(f(x) for x in [1])")
    assert prepared.modules == ("math",)
    source = prepared.source
    assert "__tandem_assert(__tandem_compare(('==',), __tandem_call(f, (2,), {}), 7))" in source
    assert "math = __tandem_module('math')" in source
    assert "message dropped" not in source
    assert "[__tandem_call(f, (x,), {}) for x in __tandem_iter([1])]" in source  # no generator frame
    # The pass is the last statement of the test's own body, inside the try, its proof a constant.
    assert source.startswith("try:\n")
    assert "    __tandem_done('\\x00tandem:nonce')\nexcept BaseException:\n    pass" in source
    assert NONCE_PLACEHOLDER == harness.NONCE_PLACEHOLDER == "\x00tandem:nonce"


@pytest.mark.parametrize(
    ("test", "message"),
    [
        ("class A:\n    pass", "line 1: class definitions"),
        ("x = 1\nwith open('f') as f:\n    pass", "line 2: with statements"),
        ("raise SystemExit", "raise"),
        ("global f", "global"),
        ("del f", "del"),
        ("x = (y := 3)", "assignment expressions"),
        ("f(**{})", "keyword unpacking"),
        ("from . import x", "relative imports"),
        ("from os import *", "star imports"),
        ("x = __import__('os')", "dunder names (__import__)"),
        ("x = '\\x00tandem'('y')", "calls of constants"),
        ("__tandem_done()", "dunder names (__tandem_done)"),
        ("x = '\\x00tandem:nonce'", "strings holding the harness's placeholder"),
        ("a[0] = 1", "assignments to attributes or subscripts"),
    ],
)
def test_constructs_outside_the_dialect_are_refused_by_name(test: str, message: str) -> None:
    with pytest.raises(DialectError, match="not allowed in tests") as refused:
        prepare_test(test)
    assert message in str(refused.value)


def test_what_only_the_compiler_rejects_is_a_syntax_error_of_the_test() -> None:
    with pytest.raises(SyntaxError, match="'break' outside loop"):
        prepare_test("break")


def test_the_strict_comparison_calls_no_method_of_the_completions_objects(helpers: dict) -> None:
    compare, truth, check = helpers["compare"], helpers["truth"], helpers["assert"]
    cycle: list = []
    cycle.append(cycle)
    deep: list = []
    for _ in range(harness.MAX_DEPTH + 5):
        deep = [deep]
    refused = [
        (("==",), Spy(), 7),
        (("!=",), Spy(), 7),
        (("==",), 7, Spy()),
        (("<",), Spy(), 7),
        (("in",), 7, Spy()),
        (("in",), Spy(), [7]),
        (("==",), SpyInt(0), 7),  # a subclass of a builtin is not the builtin
        (("==",), [1, (2, Spy())], [1, (2, 7)]),
        (("==",), {Spy(): 1}, {7: 1}),  # a key would be hashed: refused before
        (("==",), frozenset([SpyInt(3)]), frozenset([3])),
        (("==",), cycle, cycle),  # a cycle is infinitely deep
        (("==",), deep, deep),
    ]
    Spy.calls.clear()  # building {Spy(): 1} above hashed it: the judging below must call nothing
    for ops, *values in refused:
        with pytest.raises(AssertionError, match="sandbox: comparison"):
            compare(ops, *values)
    for value in (Spy(), SpyInt(1), [Spy()][0]):
        with pytest.raises(AssertionError, match="sandbox: truth"):
            check(value)
        with pytest.raises(AssertionError):
            truth(value)
    assert Spy.calls == []


def test_the_strict_comparison_keeps_python_semantics_on_builtins(helpers: dict) -> None:
    compare, check = helpers["compare"], helpers["assert"]
    nan = float("nan")
    assert compare(("==",), [1, (2.0, "a"), {"k": {3}}], [1, (2, "a"), {"k": {3}}]) is True
    assert compare(("<", "<="), 1, 2, 2) is True
    assert compare(("<", "<"), 1, 3, 2) is False
    assert compare(("in", "not in"), "b", "abc", ["x"]) is True
    assert compare(("in",), "z", "abc") is False
    assert compare(("is",), None, None) is True and compare(("is not",), Spy(), None) is True  # identity only
    assert compare(("==",), nan, nan) is False  # the copies are compared: no identity shortcut
    assert compare(("==",), 7, 7.0) is True and compare(("==",), True, 1) is True
    check([0])  # a non-empty list is true: no item is asked
    with pytest.raises(AssertionError, match="assertion failed"):
        check(0)
    assert Spy.calls == []


def test_indexing_a_builtin_by_a_completions_object_fails_without_calling_it(helpers: dict) -> None:
    with pytest.raises(AssertionError, match="not an exact builtin"):
        helpers["item"]({7: 1}, Spy())
    assert helpers["item"]([5, 6, 7], 2) == 7 and helpers["item"]("abcd", slice(1, 3, None)) == "bc"
    assert helpers["binop"]("+", [1], [2]) == [1, 2] and helpers["unary"]("-", 3) == -3
    assert Spy.calls == []


def test_done_writes_the_nonce_only_when_given_it_by_the_tests_own_code() -> None:
    read, write = os.pipe()
    try:
        os.set_blocking(read, False)
        made = harness._helpers(write, b"n" * 32, {}, {}, {}, dict(builtins.__dict__))
        done = made["helpers"]["done"]
        for wrong in (None, b"x" * 32, "n" * 32, bytearray(b"n" * 32)):
            done(wrong)  # holding `done` is not enough to pass
        with pytest.raises(BlockingIOError):
            os.read(read, 64)
        code = harness._with_nonce(compile(prepare_test("assert 1 == 1").source, "<test>", "exec"), b"n" * 32)
        exec(
            code,
            {
                "__builtins__": {
                    **builtins.__dict__,
                    **{"__tandem_" + k: v for k, v in made["helpers"].items()},
                }
            },
        )
        assert os.read(read, 64) == b"n" * 32
    finally:
        os.close(read)
        os.close(write)
