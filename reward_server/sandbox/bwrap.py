"""The bubblewrap command line and the rlimits of one sandboxed test run.

What the sandbox sees, and nothing else:
- the interpreter: its binary, its standard library (the entries of `sys.path` under `-I -S`: the
  stdlib directory, lib-dynload, the stdlib zip), read-only, with every site-packages and
  dist-packages directory inside them hidden and HIDDEN_EXTENSIONS bound over by /dev/null;
- the shared libraries the loader needs for the binary and for the extension modules that are not
  hidden or UNLINKED_EXTENSIONS (from `ldd`, asked once per Interpreter), each bound read-only at
  the name the loader opens (libz.so.1, with the content of libz.so.1.2.13), with the directory
  symlinks on the way (/lib -> usr/lib, /lib64 -> usr/lib64) recreated; plus libgcc_s, which
  glibc dlopens for pthread_exit;
- a fresh /proc of its own pid namespace, a read-only minimal /dev (so /dev/shm is read-only too)
  and a private, size-capped /tmp; the root itself is read-only.
No rest of /usr: no other Python's site- or dist-packages (a Debian `_cffi_backend` appended to
sys.path gave raw memory), no compilers, no shell, no /etc, /root, /home or /work (not the
server's config, not the repository). Network, pid, ipc, uts and cgroup namespaces are new; the
environment is cleared. A seccomp filter (seccomp.py) is loaded by bwrap before it execs the
interpreter: one process per run, no sockets, no ptrace, no io_uring.

Running as root (the usual container), bwrap keeps no user namespace and hands the harness only
CAP_SETUID/CAP_SETGID, which it spends dropping to a fresh random uid for this run (`run_uid`):
the kernel never applies RLIMIT_NPROC to uid 0, and a uid of its own makes the limit count this
sandbox alone, even beside other scorers and server workers drawing from the same range.
Running unprivileged, bwrap makes a user namespace (and forbids nested ones); the process limit is
then counted per namespace by the kernel, so the harness keeps its uid. In that mode the sandbox's
uid owns bwrap's tmpfs root and /dev, which is why both are remounted read-only.

Memory: RLIMIT_AS and RLIMIT_DATA cap the process's mappings; what it can hold outside them is
bounded by /tmp's size (TMP_BYTES), the read-only /dev and /, RLIMIT_NOFILE (kernel objects per
fd) and the seccomp filter (no memfd, no System V IPC or POSIX message queues, no sockets beyond
AF_UNIX pairs).
"""

import functools
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Extension modules hidden inside the sandbox (the harness also refuses to import them): ctypes
# reads raw memory, _posixsubprocess forks without an audit event, _test* expose C-API back doors.
HIDDEN_EXTENSIONS = ("_ctypes*", "_posixsubprocess*", "_test*", "_xxsubinterpreters*", "_xxtestfuzz*")
# Extension modules whose libraries are not bound (so they fail to import): a GUI (Tk and X11), a
# terminal (ncurses, readline) and NIS (RPC, Kerberos) add some 30 libraries, and mounts, to every
# run, for nothing a unit test needs.
UNLINKED_EXTENSIONS = ("_tkinter*", "_curses*", "readline*", "nis*")
# Third-party package directories: hidden wherever they sit inside the standard library's dirs.
PACKAGE_DIRS = ("site-packages", "dist-packages")
# dlopened by glibc (not linked, so ldd does not list it) when a thread exits through pthread_exit.
DLOPENED_LIBRARIES = ("libgcc_s.so.1",)
# Far above any real account, so nothing on the host is owned by a run's uid. Two billion values:
# two runs alive at once share a uid (and so a process count) with odds ~ runs^2 / 4e9.
RUN_UID_BASE = 2_000_000_000
RUN_UID_COUNT = 2_000_000_000
TMP_BYTES = 64 << 20
# `ldd` lines: "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and, for the loader
# itself, "\t/lib64/ld-linux-x86-64.so.2 (0x...)"; "=> not found" and the vdso have no path.
LDD_PATH = re.compile(r"^\s+(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-run limits; `rlimits()` is what the harness applies before user code runs."""

    timeout_s: float
    cpu_seconds: int
    memory_mb: int
    max_processes: int
    max_output_bytes: int
    max_open_files: int = 64

    def rlimits(self) -> list[tuple[str, int, int]]:
        memory = self.memory_mb << 20
        return [
            # soft then hard: SIGXCPU first, SIGKILL a second later if it is ignored
            ("RLIMIT_CPU", self.cpu_seconds, self.cpu_seconds + 1),
            ("RLIMIT_AS", memory, memory),
            # The kernel's own count of private writable memory (heap, anonymous maps). Equal to
            # AS it adds nothing today; it keeps the cap on what is written if AS is ever raised
            # for an interpreter that reserves address space it never touches.
            ("RLIMIT_DATA", memory, memory),
            ("RLIMIT_NPROC", self.max_processes, self.max_processes),
            ("RLIMIT_FSIZE", TMP_BYTES, TMP_BYTES),
            ("RLIMIT_NOFILE", self.max_open_files, self.max_open_files),
            ("RLIMIT_CORE", 0, 0),
        ]


# Printed by the interpreter itself, so the paths follow its own version and install scheme:
# its prefix, its stdlib search path (what `-I -S` puts on sys.path), its site-packages, lib-dynload.
LAYOUT_SCRIPT = """
import os, sys, sysconfig
base = {"base": sys.base_prefix, "platbase": sys.base_prefix}
print(sys.base_prefix)
print(os.pathsep.join(sys.path))
print(sysconfig.get_path("purelib", vars=base))
print(sysconfig.get_path("platlib", vars=base))
print(sysconfig.get_path("platstdlib", vars=base) + "/lib-dynload")
"""


@dataclass(frozen=True, slots=True)
class Interpreter:
    """The Python that runs inside the sandbox: its binary, the prefix and stdlib directories it
    imports from, and what of those the sandbox hides (site-packages, HIDDEN_EXTENSIONS)."""

    executable: Path
    prefix: Path
    stdlib_dirs: tuple[Path, ...]
    site_dirs: tuple[Path, ...]
    dynload: Path

    @classmethod
    def current(cls) -> "Interpreter":
        """The server's own base interpreter (a venv's python is a symlink into it)."""
        return cls.at(Path(sys.executable))

    @classmethod
    def at(cls, executable: Path) -> "Interpreter":
        """The interpreter at `executable` (symlinks resolved), its layout asked of it."""
        resolved = Path(executable).resolve()
        layout = subprocess.run(
            [str(resolved), "-I", "-S", "-c", LAYOUT_SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split("\n")
        prefix, purelib, platlib, dynload = (Path(line).resolve() for line in (layout[0], *layout[2:5]))
        # Only what exists: a missing stdlib zip stays missing inside too.
        search = tuple(dict.fromkeys(Path(entry).resolve() for entry in layout[1].split(os.pathsep) if entry))
        stdlib = tuple(path for path in search if path.exists())
        return cls(resolved, prefix, stdlib, (purelib, platlib), dynload)

    def hidden_paths(self) -> list[Path]:
        """site-packages directories and the HIDDEN_EXTENSIONS files inside the mounted stdlib."""
        files = [path for pattern in HIDDEN_EXTENSIONS for path in self.dynload.glob(pattern)]
        packages = [d / name for d in self.stdlib_dirs if d.is_dir() for name in PACKAGE_DIRS]
        candidates = {*self.site_dirs, *packages, *files}
        return sorted(path for path in candidates if path.exists() and self.mounts(path))

    def mounts(self, path: Path) -> bool:
        """Whether `path` lies inside what the sandbox binds of this interpreter."""
        return any(path.is_relative_to(directory) for directory in self.stdlib_dirs if directory.is_dir())

    def extension_modules(self) -> list[Path]:
        """The extension module files whose libraries the sandbox binds (lib-dynload minus the
        hidden and the UNLINKED_EXTENSIONS)."""
        left_out = {
            *self.hidden_paths(),
            *(p for pattern in UNLINKED_EXTENSIONS for p in self.dynload.glob(pattern)),
        }
        return sorted(path for path in self.dynload.glob("*.so") if path not in left_out)


@functools.cache
def linked_libraries(interpreter: Interpreter) -> tuple[Path, ...]:
    """Shared libraries (as the loader names them) that the binary and its allowed extension
    modules link, plus DLOPENED_LIBRARIES found beside libc. Asked of `ldd` once per interpreter."""
    ldd = shutil.which("ldd") or "/usr/bin/ldd"
    if not Path(ldd).exists():
        raise FileNotFoundError("the sandbox needs ldd (Debian: libc-bin) to list what the interpreter links")
    files = [interpreter.executable, *interpreter.extension_modules()]
    # ldd exits 1 when one of several files is not dynamic (a static build): the others still print.
    # ldd is the loader itself: it honours LD_PRELOAD / LD_LIBRARY_PATH, which a process that has run
    # vLLM's CPU engine carries (libgomp from torch's lib folder). The sandbox starts with a cleared
    # environment, so the libraries to mount are those a clean environment loads.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    listing = subprocess.run(
        [ldd, *map(str, files)], capture_output=True, text=True, timeout=60, check=False, env=clean
    ).stdout
    libraries = {Path(match) for match in LDD_PATH.findall(listing)}
    libc_dirs = {path.parent for path in libraries if path.name.startswith("libc.so")}
    extra = {directory / name for directory in libc_dirs for name in DLOPENED_LIBRARIES}
    return tuple(sorted(path for path in libraries | extra if path.exists() and path not in files))


@dataclass(frozen=True, slots=True)
class MountPlan:
    """Read-only binds (destination, source), directory symlinks (location -> target, as on the
    host), and the directories to create first so the run's uid can walk to them."""

    dirs: tuple[Path, ...]
    binds: tuple[tuple[Path, Path], ...]
    symlinks: tuple[tuple[Path, str], ...]


def _expose(path: Path, binds: dict[Path, Path], links: dict[Path, str], depth: int = 0) -> None:
    """Make `path` open inside as on the host. A symlinked directory on the way (/lib -> usr/lib)
    is recorded to be recreated; the file itself is bound at the name it is opened by (libz.so.1)
    with the content of the file that name leads to (libz.so.1.2.13): one mount per library, since
    each bwrap bind costs a mount and a read of the mount table."""
    if depth > 40:  # the kernel's own limit on links followed in one lookup
        raise OSError(f"too many symbolic links resolving {path}")
    parts = Path(os.path.normpath(path)).parts
    current = Path("/")
    for index, part in enumerate(parts[1:-1], start=1):
        candidate = current / part
        if candidate.is_symlink():
            target = os.readlink(candidate)
            links[candidate] = target
            # Everything before `candidate` is a real directory, so a lexical ".." is exact here.
            followed = Path(os.path.normpath(current / target)).joinpath(*parts[index + 1 :])
            _expose(followed, binds, links, depth + 1)
            return
        current = candidate
    destination = current / parts[-1]
    binds[destination] = destination.resolve(strict=True)


@functools.cache
def mount_plan(interpreter: Interpreter) -> MountPlan:
    """What of the host the sandbox binds for `interpreter`, computed once per interpreter."""
    binds: dict[Path, Path] = {}
    links: dict[Path, str] = {}
    for path in (interpreter.executable, *interpreter.stdlib_dirs, *linked_libraries(interpreter)):
        _expose(path, binds, links)
    # A bind inside another bind (lib-dynload inside the stdlib) is already there.
    outer = sorted(
        (at, source)
        for at, source in binds.items()
        if not any(at != other and at.is_relative_to(other) for other in binds)
    )
    symlinks = sorted(links.items())
    # bwrap would create missing parents (e.g. /root/.pyenv) owner-only; the run's uid must pass.
    dirs = {parent for at in [*(at for at, _ in outer), *links] for parent in at.parents[:-1]}
    return MountPlan(tuple(sorted(dirs)), tuple(outer), tuple(symlinks))


def running_as_root() -> bool:
    return os.geteuid() == 0


def run_uid() -> int:
    """A uid for one root-mode run, drawn at random so concurrent runs almost never share one."""
    return RUN_UID_BASE + secrets.randbelow(RUN_UID_COUNT)


def bwrap_argv(interpreter: Interpreter, as_root: bool) -> list[str]:
    """bwrap and its options, up to (not including) `--seccomp FD` and the command run inside."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bwrap is not installed (apt-get install bubblewrap)")
    argv = [bwrap, "--die-with-parent", "--new-session", "--clearenv"]
    argv += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if as_root:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    argv += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", "/tmp"]
    plan = mount_plan(interpreter)
    for directory in plan.dirs:
        argv += ["--perms", "0755", "--dir", str(directory)]
    for at, source in plan.binds:
        argv += ["--ro-bind", str(source), str(at)]
    for at, target in plan.symlinks:
        argv += ["--symlink", target, str(at)]
    # A hidden file is /dev/null bound over it: bwrap's binds are nodev, so it cannot even be opened.
    for path in interpreter.hidden_paths():
        argv += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    # /dev and / are bwrap's own tmpfs mounts, uncapped, and owned by the sandbox's uid in a user
    # namespace: read-only, so memory cannot hide there (/dev/shm included). /tmp is the one
    # writable place, capped.
    argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    argv += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    argv += ["--remount-ro", "/"]
    return argv


def harness_argv(interpreter: Interpreter, harness_source: str, ctl_fd: int, uid: int) -> list[str]:
    """The command run inside: -I -S keeps env, cwd and site out; -u so output needs no flush."""
    return [str(interpreter.executable), "-I", "-S", "-u", "-c", harness_source, str(ctl_fd), str(uid)]
