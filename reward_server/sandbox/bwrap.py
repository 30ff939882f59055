"""The bubblewrap command line and the rlimits of one sandboxed test run.

The sandbox sees a read-only /usr (libc, the loader), the interpreter's own prefix read-only with
its site-packages hidden, a fresh /proc of its own pid namespace, a minimal /dev and a private,
size-capped /tmp. No /etc, /root, /home or /work: the server's config and the repository are not
there to read. Network, pid, ipc, uts and cgroup namespaces are new; the environment is cleared.

Running as root (the usual container), bwrap keeps no user namespace and hands the harness only
CAP_SETUID/CAP_SETGID, which it spends dropping to a fresh random uid for this run (`run_uid`):
the kernel never applies RLIMIT_NPROC to uid 0, and a uid of its own makes the limit count this
sandbox alone, even beside other scorers and server workers drawing from the same range.
Running unprivileged, bwrap makes a user namespace (and forbids nested ones); the process limit is
then counted per namespace by the kernel, so the harness keeps its uid.
"""

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Extension modules hidden inside the sandbox (the harness also refuses to import them): ctypes
# reads raw memory, _posixsubprocess forks without an audit event, _test* expose C-API back doors.
HIDDEN_EXTENSIONS = ("_ctypes*", "_posixsubprocess*", "_test*", "_xxsubinterpreters*", "_xxtestfuzz*")
# Far above any real account, so nothing on the host is owned by a run's uid. Two billion values:
# two runs alive at once share a uid (and so a process count) with odds ~ runs^2 / 4e9.
RUN_UID_BASE = 2_000_000_000
RUN_UID_COUNT = 2_000_000_000
TMP_BYTES = 64 << 20


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
        return [
            # soft then hard: SIGXCPU first, SIGKILL a second later if it is ignored
            ("RLIMIT_CPU", self.cpu_seconds, self.cpu_seconds + 1),
            ("RLIMIT_AS", self.memory_mb << 20, self.memory_mb << 20),
            ("RLIMIT_NPROC", self.max_processes, self.max_processes),
            ("RLIMIT_FSIZE", TMP_BYTES, TMP_BYTES),
            ("RLIMIT_NOFILE", self.max_open_files, self.max_open_files),
            ("RLIMIT_CORE", 0, 0),
        ]


# Printed by the interpreter itself, so the paths follow its own version and install scheme:
# its prefix, its site-packages directories, its extension-module directory.
LAYOUT_SCRIPT = """
import sys, sysconfig
base = {"base": sys.base_prefix, "platbase": sys.base_prefix}
print(sys.base_prefix)
print(sysconfig.get_path("purelib", vars=base))
print(sysconfig.get_path("platlib", vars=base))
print(sysconfig.get_path("platstdlib", vars=base) + "/lib-dynload")
"""


@dataclass(frozen=True, slots=True)
class Interpreter:
    """The Python that runs inside the sandbox: its binary, the prefix holding its stdlib, and
    what of that prefix the sandbox hides (site-packages, HIDDEN_EXTENSIONS in lib-dynload)."""

    executable: Path
    prefix: Path
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
        prefix, purelib, platlib, dynload = (Path(line).resolve() for line in layout[:4])
        return cls(resolved, prefix, (purelib, platlib), dynload)

    def hidden_paths(self) -> list[Path]:
        """site-packages directories and the HIDDEN_EXTENSIONS files inside the prefix."""
        files = [path for pattern in HIDDEN_EXTENSIONS for path in self.dynload.glob(pattern)]
        return sorted(path for path in {*self.site_dirs, *files} if path.exists())


def running_as_root() -> bool:
    return os.geteuid() == 0


def run_uid() -> int:
    """A uid for one root-mode run, drawn at random so concurrent runs almost never share one."""
    return RUN_UID_BASE + secrets.randbelow(RUN_UID_COUNT)


def bwrap_argv(interpreter: Interpreter, as_root: bool) -> list[str]:
    """bwrap and its options, up to (not including) the command run inside."""
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
    argv += ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():  # merged-/usr systems: /lib -> usr/lib
            argv += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), str(target)]
    mounts = [interpreter.prefix]
    if not interpreter.executable.is_relative_to(interpreter.prefix):
        mounts.append(interpreter.executable)  # the binary lives elsewhere (a venv made with --copies)
    for path in mounts:
        if path.is_relative_to("/usr"):
            continue
        # bwrap would create the parents (e.g. /root/.pyenv) owner-only; the run's uid must pass.
        for parent in reversed(path.parents[:-1]):
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", str(path), str(path)]
    # A hidden file is /dev/null bound over it: bwrap's binds are nodev, so it cannot even be opened.
    for path in interpreter.hidden_paths():
        argv += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    return argv


def harness_argv(interpreter: Interpreter, harness_source: str, ctl_fd: int, uid: int) -> list[str]:
    """The command run inside: -I -S keeps env, cwd and site out; -u so output needs no flush."""
    return [str(interpreter.executable), "-I", "-S", "-u", "-c", harness_source, str(ctl_fd), str(uid)]
