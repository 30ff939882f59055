"""The in-sandbox runner: runs one completion and ONE test, and judges the test outside the
completion's objects.

Started as `python -I -S -u -c <this file's source> <ctl_fd> <uid>` inside bubblewrap (see bwrap.py),
reading a marshal payload `(user_src, test_src, modules, user_token, nonce, rlimits)` on ctl_fd up
to EOF; the verdict goes back on the same socket. It never imports the project: the scorer sends
this file's text, so nothing of the repository is mounted. `test_src` is already rewritten into the
test dialect (dialect.py): its comparisons, truth tests, calls, attribute and item lookups go
through the `__tandem_*` helpers made here.

Steps (the threat model is in docs/sandbox.md):
1. read the payload, drop to the run's uid, set the rlimits, close stray fds;
2. import the modules the test imports and copy every loaded module's namespace, compile the
   completion (with `os.write(ctl, user_token)` appended) and the test, and build the helpers;
   all of this before any user byte runs, so the completion can patch none of it;
3. start three threads, each parked on a lock: the completion's, the test's and the worker that
   runs the completion's callables for the test. If one cannot start (RLIMIT_NPROC too low), write
   THREADS_FAILED and exit: no user code ran, so the scorer reports a sandbox error, not a 0;
4. install the audit guard, write READY, let the completion run; once every thread of it has
   ended, let the test run; wait for every thread to finish and `os._exit`.

The test runs on its own thread with its own globals: the completion's top-level names (copied
when it finished, never shadowing a builtin) plus the test's own, and builtins copied before user
code with the helpers added, behind a read-only mapping. The test's thread calls no completion
code: completion callables, attribute lookups and operators on non-builtin objects run on the
worker thread, whose frames never link to the test's (only a garbage collection could run a
completion's __del__ there, and the guard denies frames on that thread). The pass is written by
`__tandem_done(nonce)`, the last statement inside the test's `try`, the nonce a constant of the
test's own code: only a test that ran to its end writes it.
The scorer passes only when ctl carries exactly READY + user_token + nonce.
"""

import _collections
import _operator
import _signal
import _thread
import builtins
import itertools
import marshal
import os
import sys
import time
import types

READY = b"R"
NONCE_PLACEHOLDER = "\x00tandem:nonce"  # dialect.NONCE_PLACEHOLDER (this file imports nothing of the project)
THREADS_FAILED = b"E"  # written instead of READY: a thread could not start, no user code ran
# Nested containers deeper than this are refused by the strict comparison (a cycle is infinitely
# deep): it bounds the harness's own recursion, which the completion's data must not exhaust.
MAX_DEPTH = 64
# Extension modules that reach around the guard: raw memory (ctypes), unaudited process creation
# (_posixsubprocess.fork_exec), pending calls and tracing back doors (_test*), subinterpreters.
DENIED_MODULES = frozenset(
    {"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_xxtestfuzz", "_lsprof"}
)
DENIED_EVENTS = frozenset(
    {
        "sys.addaudithook",  # a later hook cannot undo a denial, but nothing legitimate needs one
        "sys.settrace",  # a trace function can jump over `assert` lines (frame.f_lineno); 3.12's
        "sys.setprofile",  # sys._settraceallthreads / _setprofileallthreads raise these too
        "sys.monitoring.register_callback",  # 3.12+: a LINE/CALL callback sees every code object
        "sys._current_frames",  # other threads' frames: the harness's, the test's
        "sys._current_exceptions",
        "gc.get_objects",  # the test's code object, the helpers and their nonce are on the heap
        "gc.get_referrers",
        "gc.get_referents",  # also the road to a builtin type's real __dict__
        "os.fork",  # a child keeps a copy of the heap and may exec an unguarded interpreter
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "subprocess.Popen",
        "os.symlink",  # a link to /proc/self/mem would dodge the "mem" path check below
        "os.link",
    }
)
# Attributes that hand out a frame or a code object: f_code (constants), and the frames of
# tracebacks, generators and coroutines, whose f_back can lead into the test's thread.
DENIED_ATTRIBUTES = frozenset({"f_code", "tb_frame", "gi_frame", "cr_frame", "ag_frame"})
# On the test's thread nothing legitimate asks for a frame: only completion code run there by the
# garbage collector (a __del__, a weakref callback) could, to reach the test's globals.
TEST_THREAD_EVENTS = frozenset({"sys._getframe", "sys._getframemodulename"})
# Builtins the test may call on its own thread when every argument is an exact builtin value: pure
# functions that consult no replaceable state (no print/open/import, no codec lookup).
DIRECT_BUILTINS = (
    *("abs", "all", "any", "ascii", "bin", "bool", "callable", "chr", "dict", "divmod", "enumerate"),
    *("filter", "float", "frozenset", "hex", "id", "int", "isinstance", "issubclass", "len", "list"),
    *("map", "max", "min", "oct", "ord", "pow", "range", "repr", "reversed", "round", "set", "slice"),
    *("sorted", "sum", "tuple", "type", "zip"),
)
# Modules whose C functions are pure in the same way (used only if the test imports them).
DIRECT_MODULES = ("math", "cmath", "operator", "_operator", "heapq", "_heapq", "bisect", "_bisect")
BINARY = {
    "+": _operator.add, "-": _operator.sub, "*": _operator.mul, "/": _operator.truediv,
    "//": _operator.floordiv, "%": _operator.mod, "**": _operator.pow, "<<": _operator.lshift,
    ">>": _operator.rshift, "|": _operator.or_, "^": _operator.xor, "&": _operator.and_,
    "@": _operator.matmul,
}  # fmt: skip
UNARY = {"-": _operator.neg, "+": _operator.pos, "~": _operator.invert}


def _install_guard(test_thread: int) -> None:
    """Deny, for the rest of the process, the introspection that could read the nonce, skip the
    test or reach the test's thread.

    Every name the hook uses is bound as a default argument: user code may rebind builtins, but
    it cannot reach this function (audit hooks cannot be listed) or its defaults.
    """

    def guard(
        event: str,
        args: tuple,
        _events: frozenset = DENIED_EVENTS,
        _attributes: frozenset = DENIED_ATTRIBUTES,
        _test_events: frozenset = TEST_THREAD_EVENTS,
        _modules: frozenset = DENIED_MODULES,
        _test_thread: int = test_thread,
        _ident=_thread.get_ident,
        _type: type = type,
        _str: type = str,
        _bytes: type = bytes,
        _int: type = int,
        _error: type = PermissionError,
    ) -> None:
        if event in _events or event.startswith("ctypes."):
            raise _error("sandbox: " + event + " is not allowed")
        if event in _test_events and _ident() == _test_thread:
            raise _error("sandbox: " + event + " is not allowed on the test's thread")
        # User code can raise any event itself (sys.audit) with objects of its own: only exact
        # str arguments are compared, so no user __eq__ or method runs inside this hook.
        if event == "object.__getattr__" and _type(args[1]) is _str and args[1] in _attributes:
            raise _error("sandbox: ." + args[1] + " is not allowed")
        if event == "import" and _type(args[0]) is _str:
            top = args[0].partition(".")[0]
            if top in _modules or top.startswith("_test"):
                raise _error("sandbox: import of " + top + " is not allowed")
        if event == "open":
            path = args[0]
            kind = _type(path)
            if kind is _int:
                return
            if kind is _bytes:
                path = path.decode("utf-8", "surrogateescape")
            elif kind is not _str:
                # A PathLike may answer differently when io re-reads it (check vs use).
                raise _error("sandbox: open() takes str or bytes paths here")
            if "mem" in path.split("/"):
                raise _error("sandbox: process memory is not readable")

    sys.addaudithook(guard)


def _read_payload(ctl_fd: int) -> bytes:
    """The payload, up to the EOF the scorer leaves by shutting down its writing side."""
    chunks = []
    while chunk := os.read(ctl_fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _confine(uid: int, ctl_fd: int, rlimits: list[tuple[str, int, int]]) -> None:
    """Drop to the run's uid and apply the rlimits before any user byte runs."""
    import resource

    if uid >= 0:
        # Root-mode sandboxes start as root with only CAP_SETUID/CAP_SETGID; the run's own uid clears
        # those and makes RLIMIT_NPROC count this sandbox alone (the kernel never applies it to uid 0).
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for name, soft, hard in rlimits:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.closerange(3, ctl_fd)
    os.closerange(ctl_fd + 1, 1 << 16)
    # SIGINT's default handler raises in the main thread; user threads cannot install handlers
    # (only the main thread may), so ignoring it leaves no way to run code on this thread.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)


def _report_line(ctl_fd: int, token: bytes) -> str:
    return "\n\n__import__('os').write(" + str(ctl_fd) + ", " + repr(token) + ")\n"


def _job(*calls: tuple) -> tuple[object, tuple, object]:
    """A thread body made of C callables only: release `started`, then each `(function, *args)`.

    `deque(starmap(call, ...), maxlen=0)` runs the calls in C: with no Python frame under the
    user code, `f_back` ends in user code. `started` closes a race: a new thread counts in
    `_thread._count()` only once it runs.
    """
    started = _thread.allocate_lock()
    started.acquire()
    steps = itertools.starmap(_operator.call, [(started.release,), *calls])
    return _collections.deque, (steps, 0), started


def _import_modules(names: list[str]) -> dict[str, object]:
    """The test's modules, imported now (before user code); one that fails is left out, and the
    test fails when it asks for it."""
    imported = {}
    for name in names:
        top = name.partition(".")[0]
        if top in DENIED_MODULES or top.startswith("_test"):
            continue  # imported before the guard, it would sit in sys.modules for the completion
        try:
            __import__(name)
        except Exception:
            continue
        parts = name.split(".")
        for end in range(1, len(parts) + 1):  # `import os.path` binds os
            prefix = ".".join(parts[:end])
            imported[prefix] = sys.modules[prefix]
    return imported


def _with_nonce(code: types.CodeType, nonce: bytes) -> types.CodeType:
    """The test's code with the nonce in place of dialect.NONCE_PLACEHOLDER (the argument of its
    last statement, `__tandem_done(...)`, in the module body)."""
    consts = [nonce if type(c) is str and c == NONCE_PLACEHOLDER else c for c in code.co_consts]
    if consts == list(code.co_consts):
        raise ValueError("the test has no __tandem_done placeholder: it was not prepared by dialect.py")
    return code.replace(co_consts=tuple(consts))


def _helpers(ctl_fd: int, nonce: bytes, ns: dict, tg: dict, imported: dict, test_builtins: dict) -> dict:
    """The `__tandem_*` functions the rewritten test calls (under "helpers"), the test thread's
    first and last steps (fill_names, stop_worker) and the worker thread's body.

    Everything they use is a local of this call, captured before user code: they look up no
    global or builtin at run time (user code may rebind both through `import __main__` or
    `builtins`), and they are reachable only from the test's builtins, which only the test's thread
    (where the guard denies frames) can see. They never call a method of a value that is not an
    exact builtin: `type(v) is int` is checked first, and only then is `v` compared or hashed,
    which runs the builtin type's C code. (A builtin type's slots cannot be replaced from Python,
    not even by editing its __dict__ through gc, which the guard denies anyway.)
    """
    _type, _id, _len, _getattr = type, id, len, getattr
    _int, _float, _bool, _str, _bytes, _none = int, float, bool, str, bytes, type(None)
    _getitem = _operator.getitem
    _tuple, _list, _dict, _set, _frozenset, _range, _slice = tuple, list, dict, set, frozenset, range, slice
    _builtin_function = type(len)
    _fail_type, _binary, _unary, _max_depth = AssertionError, dict(BINARY), dict(UNARY), MAX_DEPTH
    _allocate, _write, _base = _thread.allocate_lock, os.write, BaseException

    class Refused(Exception):
        """A value outside the exact builtins: the operation goes to the worker, or fails."""

    def fail(why: str) -> BaseException:
        return _fail_type("sandbox: " + why)

    def freeze(value: object, depth: int) -> object:
        """A private deep copy of an exact builtin value, or Refused. The copy is what gets
        compared, so a completion thread that still holds the original cannot change it between
        the type check and the comparison. No method of `value` is called: containers are copied
        by C code that only reads their slots (list(), dict.items()) after their type is checked."""
        kind = _type(value)
        if kind is _int or kind is _str or kind is _float or kind is _bool or kind is _bytes or kind is _none:
            return value
        if depth <= 0:
            raise Refused("nested too deep (or a cycle)")
        if kind is _tuple or kind is _list:
            out = []
            for item in _list(value):
                out.append(freeze(item, depth - 1))
            return _tuple(out) if kind is _tuple else out
        if kind is _dict:
            copy = {}
            for key, item in _list(value.items()):
                # Keys are frozen (so exact) before the copy hashes them.
                copy[freeze(key, depth - 1)] = freeze(item, depth - 1)
            return copy
        if kind is _set or kind is _frozenset:
            items = []
            for item in _list(value):
                items.append(freeze(item, depth - 1))
            return kind(items)
        raise Refused("not an exact builtin value")

    def frozen_or_none(value: object) -> tuple[bool, object]:
        try:
            return True, freeze(value, _max_depth)
        except Refused:
            return False, None

    # --- the worker: completion callables run here, never on the test's thread ------------------
    request: list = [None]
    response: list = []
    want, got = _allocate(), _allocate()
    want.acquire()
    got.acquire()
    keep: list = []  # every value the worker hands over: none is freed (no __del__) on the test's thread

    def on_worker(function: object, args: tuple, kwargs: dict) -> object:
        response.clear()
        request[0] = (function, args, kwargs)
        want.release()
        got.acquire()
        if _len(response) != 1:
            raise fail("the completion's call raised")
        value = response[0]
        keep.append(value)
        return value

    def stop_worker() -> None:
        request[0] = None
        want.release()

    # --- calls, attributes, items, operators --------------------------------------------------
    trusted: dict = {}  # id -> callable, for identity checks that call no __eq__ or __hash__
    for name in DIRECT_BUILTINS:
        function = test_builtins[name]
        trusted[_id(function)] = function
    namespaces: dict = {}  # id(module) -> (module, its namespace copied before user code)
    for module in _list(sys.modules.values()):
        namespaces[_id(module)] = (module, _dict(module.__dict__))
    for name in DIRECT_MODULES:
        module = imported.get(name)
        if module is not None:
            for value in namespaces[_id(module)][1].values():
                if _type(value) is _builtin_function:
                    trusted[_id(value)] = value

    def direct_argument(value: object) -> tuple[bool, object]:
        if trusted.get(_id(value)) is value:
            return True, value
        kind = _type(value)
        if kind is _range:
            return True, value
        return frozen_or_none(value)

    def call(function: object, args: tuple, kwargs: dict) -> object:
        if trusted.get(_id(function)) is function:
            if (function is _str or function is _bytes) and _len(args) + _len(kwargs) > 1:
                return on_worker(function, args, kwargs)  # an encoding argument: a codec lookup
            direct_args, direct_kwargs = [], {}
            for value in args:
                ok, frozen = direct_argument(value)
                if not ok:
                    return on_worker(function, args, kwargs)
                direct_args.append(frozen)
            for key, value in kwargs.items():  # the test's own dict: constant str keys
                ok, frozen = direct_argument(value)
                if not ok:
                    return on_worker(function, args, kwargs)
                direct_kwargs[key] = frozen
            return function(*direct_args, **direct_kwargs)
        return on_worker(function, args, kwargs)

    def attr(value: object, name: str) -> object:
        entry = namespaces.get(_id(value))
        if entry is not None and entry[0] is value:
            if name in entry[1]:
                return entry[1][name]
            raise fail("module has no attribute " + name)
        kind = _type(value)
        if trusted.get(_id(value)) is value or (
            kind is _int
            or kind is _str
            or kind is _float
            or kind is _bool
            or kind is _bytes
            or kind is _none
            or kind is _tuple
            or kind is _list
            or kind is _dict
            or kind is _set
            or kind is _frozenset
        ):
            return _getattr(value, name)  # an attribute of a builtin type: its immutable C type dict
        return on_worker(_getattr, (value, name), {})

    def item(value: object, key: object) -> object:
        """`value[key]`: an exact builtin container is indexed only by an exact builtin key (no
        __index__ or __hash__ of the completion's); a completion's container answers on the worker."""
        kind, key_kind = _type(value), _type(key)
        if (kind is _list or kind is _tuple or kind is _str or kind is _bytes or kind is _range) and (
            key_kind is _int or key_kind is _bool
        ):
            return value[key]  # indexing by position compares nothing
        ok_value, frozen_value = frozen_or_none(value)
        if not ok_value and kind is not _range:
            return on_worker(_getitem, (value, key), {})
        if key_kind is _slice:
            for bound in (key.start, key.stop, key.step):
                bound_kind = _type(bound)
                if not (bound_kind is _int or bound_kind is _bool or bound_kind is _none):
                    raise fail("a slice bound that is not an int")
            frozen_key = key
        else:
            ok_key, frozen_key = frozen_or_none(key)
            if not ok_key:
                raise fail("an index or key that is not an exact builtin")
        return (value if kind is _range else frozen_value)[frozen_key]

    def binop(op: str, left: object, right: object) -> object:
        function = _binary[op]
        ok_left, frozen_left = frozen_or_none(left)
        ok_right, frozen_right = frozen_or_none(right)
        if ok_left and ok_right:
            return function(frozen_left, frozen_right)
        return on_worker(function, (left, right), {})

    def unary(op: str, value: object) -> object:
        function = _unary[op]
        ok, frozen = frozen_or_none(value)
        return function(frozen) if ok else on_worker(function, (value,), {})

    def iterate(value: object) -> list:
        kind = _type(value)
        if (
            kind is _list
            or kind is _tuple
            or kind is _str
            or kind is _bytes
            or kind is _range
            or kind is _dict
            or kind is _set
            or kind is _frozenset
        ):
            return _list(value)  # a snapshot; iterating these calls no method of their items
        items = on_worker(_list, (value,), {})
        if _type(items) is not _list:
            raise fail("iteration did not give a list")
        return items

    def unpack(value: object, count: int) -> list:
        items = iterate(value)
        if _len(items) != count:
            raise fail("cannot unpack")
        return items

    def iterate_unpacked(value: object, count: int) -> list:
        out = []
        for element in iterate(value):
            out.append(unpack(element, count))
        return out

    def make_set(*elements: object) -> object:
        ok, frozen = frozen_or_none(_list(elements))
        return _set(frozen) if ok else on_worker(_set, (elements,), {})

    def make_dict(*pairs: tuple) -> object:
        ok, frozen = frozen_or_none(_list(pairs))
        return _dict(frozen) if ok else on_worker(_dict, (pairs,), {})

    def set_of(elements: list) -> object:
        return make_set(*elements)

    def dict_of(pairs: list) -> object:
        return make_dict(*pairs)

    def make_slice(start: object, stop: object, step: object) -> object:
        return _slice(start, stop, step)

    def module(name: str) -> object:
        found = imported.get(name)
        if found is None:
            raise fail("module " + name + " could not be imported")
        return found

    def from_module(name: str, attribute: str) -> object:
        return attr(module(name), attribute)

    # --- the verdict-deciding operations: strict, never a method of the completion's ----------
    def compare(ops: tuple, *values: object) -> bool:
        """`values[0] ops[0] values[1] ops[1] ...` on exact builtins only; anything else fails the
        test (raises), so `not (x == 7)` cannot pass by refusing to compare."""
        left = values[0]
        index = 1
        for op in ops:
            right = values[index]
            index += 1
            if op == "is":
                result = left is right  # identity calls nothing
            elif op == "is not":
                result = left is not right
            else:
                try:
                    a = freeze(left, _max_depth)
                    b = freeze(right, _max_depth)
                except Refused:
                    raise fail("comparison of a value that is not an exact builtin") from None
                if op == "==":
                    result = a == b
                elif op == "!=":
                    result = a != b
                elif op == "<":
                    result = a < b
                elif op == "<=":
                    result = a <= b
                elif op == ">":
                    result = a > b
                elif op == ">=":
                    result = a >= b
                elif op == "in":
                    result = a in b
                elif op == "not in":
                    result = a not in b
                else:
                    raise fail("unknown comparison " + op)
            if result is not True:
                return False
            left = right
        return True

    def truth(value: object) -> bool:
        kind = _type(value)
        if kind is _bool:
            return value  # type: ignore[return-value]
        if (
            kind is _int
            or kind is _float
            or kind is _str
            or kind is _bytes
            or kind is _none
            or kind is _tuple
            or kind is _list
            or kind is _dict
            or kind is _set
            or kind is _frozenset
        ):
            return _bool(value)  # emptiness or zero: no method of the items
        raise fail("truth of a value that is not an exact builtin")

    def negate(value: object) -> bool:
        return not truth(value)

    def both(*thunks: object) -> object:
        value: object = True
        for thunk in thunks:
            value = thunk()  # type: ignore[operator]
            if not truth(value):
                return value
        return value

    def either(*thunks: object) -> object:
        value: object = False
        for thunk in thunks:
            value = thunk()  # type: ignore[operator]
            if truth(value):
                return value
        return value

    def check(value: object) -> None:
        if truth(value) is not True:
            raise fail("assertion failed")

    def done(proof: object) -> None:
        # The proof is a constant of the test's own code: holding `done` is not enough to pass.
        if _type(proof) is _bytes and proof == nonce:
            _write(ctl_fd, nonce)

    def fill_names() -> None:
        """The completion's top-level names as it left them, for the test: only exact-str keys (a
        str subclass could compare equal to a builtin's name), never one that shadows a builtin."""
        for key, value in _list(ns.items()):
            if _type(key) is _str and not key.startswith("__") and key not in test_builtins and key not in tg:
                tg[key] = value

    def worker() -> None:
        """The worker thread: one request at a time from the test. Completion code reaching this
        frame (f_back) finds only the request and response lists, i.e. values it could return."""
        while True:
            want.acquire()
            job = request[0]
            if job is None:
                return
            # Any failure of the call fails the test (contextlib is not imported here).
            try:  # noqa: SIM105
                response.append(job[0](*job[1], **job[2]))
            except _base:
                pass
            got.release()

    helpers = {
        "assert": check, "compare": compare, "truth": truth, "not": negate, "and": both, "or": either,
        "call": call, "attr": attr, "item": item, "binop": binop, "unary": unary, "iter": iterate,
        "unpack": unpack, "iter_unpack": iterate_unpacked, "set": make_set, "dict": make_dict,
        "set_of": set_of, "dict_of": dict_of, "slice": make_slice, "module": module,
        "from": from_module, "done": done,
    }  # fmt: skip
    return {
        "helpers": helpers,
        "fill_names": fill_names,
        "stop_worker": stop_worker,
        "worker": worker,
    }


def _prepare() -> tuple[int, list[list[tuple]]]:
    """Everything before user code; failures here are the sandbox's, printed with a traceback."""
    ctl_fd, uid = int(sys.argv[1]), int(sys.argv[2])
    user_src, test_src, modules, user_token, nonce, rlimits = marshal.loads(_read_payload(ctl_fd))
    _confine(uid, ctl_fd, rlimits)
    # `types` reads a traceback's tb_frame when it is first imported (re, enum, json... import it):
    # imported now, before the guard denies tb_frame.
    imported = _import_modules(["types", *modules])
    # The completion is compiled in its own thread (exec of a string): its SyntaxError is its fail.
    user_code = user_src + _report_line(ctl_fd, user_token)
    test_code = _with_nonce(compile(test_src, "<test>", "exec"), nonce)
    ns = {"__name__": "completion", "__builtins__": dict(builtins.__dict__)}
    # The test's builtins, copied now, before user code: `builtins.len = ...` or
    # `__builtins__['abs'] = ...` changes the completion's lookups, not the test's.
    test_builtins = dict(builtins.__dict__)
    tg: dict = {"__name__": "test"}
    made = _helpers(ctl_fd, nonce, ns, tg, imported, test_builtins)
    names = dict(test_builtins)
    for name, helper in made["helpers"].items():
        names["__tandem_" + name] = helper
    tg["__builtins__"] = type(type.__dict__)(names)  # read-only: a mappingproxy
    # Each thread's steps, run in C (see _job) once its gate opens.
    user_steps = [(exec, user_code, ns)]
    test_steps = [(made["fill_names"],), (exec, test_code, tg), (made["stop_worker"],)]
    worker_steps = [(made["worker"],)]
    return ctl_fd, [user_steps, test_steps, worker_steps]


def main() -> None:
    try:
        ctl_fd, jobs = _prepare()
    except Exception:
        import traceback

        traceback.print_exc()
        os._exit(2)
    # From here on this thread names only locals bound now: user code may rebind any global or
    # builtin, and reaching this frame would hand it the test's code and helpers. Nothing is
    # allocated after user code runs either, so no garbage collection (and no user __del__) can
    # start on this thread.
    start, running, sleep, exit_ = _thread.start_new_thread, _thread._count, time.sleep, os._exit
    write, allocate = os.write, _thread.allocate_lock
    gates, idents = [], []
    try:
        for steps in jobs:
            gate = allocate()
            gate.acquire()
            # Each thread parks on its gate before its first step, so all three exist before any
            # user code: none has to be started later, when the completion could have used up
            # the process limit (or the memory) to turn its failure into a sandbox error.
            body, args, started = _job((gate.acquire,), *steps)
            idents.append(start(body, args))
            started.acquire()
            gates.append(gate)
    except BaseException:
        write(ctl_fd, THREADS_FAILED)
        exit_(4)
    user_gate, test_gate, worker_gate = gates
    _install_guard(idents[1])
    write(ctl_fd, READY)
    worker_gate.release()
    user_gate.release()
    # The test and the worker stay parked: the completion is done when only they are left.
    while running() > 2:
        sleep(0.0002)
    test_gate.release()
    while running():
        sleep(0.0002)
    exit_(0)


def _entry(_main=main, _exit=os._exit) -> None:
    # A failure after user code ran must exit without printing: printing goes through
    # sys.stderr / sys.excepthook, which user code may have replaced.
    try:
        _main()
    except BaseException:
        _exit(3)


if __name__ == "__main__":
    _entry()
