"""The seccomp filter every sandboxed test runs under, compiled once to the BPF that bwrap loads.

bwrap (`--seccomp FD`) installs the program in the sandbox's last process right before it execs
the interpreter, and the filter then holds for the whole run, across any later exec. It is a
deny list on a default of "allow": Python and glibc need a wide, version-dependent set of calls,
and what is dangerous here is a short list. Denied calls fail with EPERM (a clear PermissionError
in Python, not a silent kill), except clone3, which fails with ENOSYS so that glibc's
pthread_create falls back to clone(), where the flags can be checked (clone3 passes them in a
struct that seccomp cannot read).

The design assumes the completion can run native code (crafted bytecode can corrupt the
interpreter; see sandbox/__init__.py), so the filter, not the audit hook, is what bounds it:

- one process per run: fork, vfork, clone without CLONE_THREAD, clone3 (ENOSYS) are denied, so
  no second process can outlive an exec, read the harness's memory through /proc, or escape the
  wall clock by detaching. Threads (clone with CLONE_THREAD) still work.
- execve stays allowed: bwrap loads the filter *before* its own execve of the interpreter, and a
  seccomp filter is stateless, so it cannot allow that one exec and refuse later ones. It is sound
  to allow because the harness is the only process (nothing can be forked to survive the exec):
  an exec replaces the one image that holds the nonce, so the run cannot pass, and the new image
  keeps the namespaces, mounts, rlimits, no_new_privs and this filter. execveat and memfd_create
  are denied anyway (no exec of an anonymous file through the direct route).
- no reading or writing of other processes: ptrace, process_vm_readv/writev, kcmp, pidfd_getfd,
  process_madvise.
- no sockets: socket, connect, bind, listen, accept(4) are denied (the verdict channel is an
  inherited socketpair and needs none of them; AF_VSOCK and AF_ALG are not bounded by the network
  namespace). socketpair(AF_UNIX) stays allowed: a pair connected only to itself reaches nothing,
  and asyncio's event loop needs one for its self-pipe.
- no memory the rlimits do not count: memfd_create, System V shared memory, message queues and
  semaphores, POSIX message queues (the /dev/shm of POSIX shm is read-only, see bwrap.py).
- no kernel surface the sandbox has no use for: io_uring (its requests are not seen by seccomp),
  namespaces and mounts, bpf, perf_event_open, userfaultfd, keyrings, modules, kexec, handles.

Syscalls of another ABI (i386 `int 0x80`, x32) do not match the native-only filter and kill the
process (libseccomp's bad-arch action).
"""

import errno
import functools
import os
import socket

# Each (syscall, why); all denied with EPERM unconditionally.
DENIED = (
    ("fork", "a second process could outlive an exec or read the harness's memory"),
    ("vfork", "same as fork (used by _posixsubprocess.fork_exec)"),
    ("execveat", "exec of an fd (memfd); execve itself is needed by bwrap, see the module docstring"),
    ("memfd_create", "an anonymous, executable file"),
    ("ptrace", "reading or writing another process"),
    ("process_vm_readv", "reading another process's memory"),
    ("process_vm_writev", "writing another process's memory"),
    ("kcmp", "probing another process's kernel objects"),
    ("pidfd_getfd", "stealing another process's file descriptors"),
    ("process_madvise", "acting on another process's memory"),
    ("socket", "no socket of any family: AF_VSOCK and AF_ALG are not bounded by the network namespace"),
    ("connect", "the verdict channel is already connected"),
    ("bind", "no listening"),
    ("listen", "no listening"),
    ("accept", "no listening"),
    ("accept4", "no listening"),
    ("io_uring_setup", "io_uring requests (socket, connect, open) bypass seccomp"),
    ("io_uring_enter", "io_uring"),
    ("io_uring_register", "io_uring"),
    ("unshare", "new namespaces"),
    ("setns", "joining other namespaces"),
    ("mount", "mounts"),
    ("umount2", "mounts"),
    ("pivot_root", "mounts"),
    ("chroot", "mounts"),
    ("move_mount", "mounts"),
    ("open_tree", "mounts"),
    ("fsopen", "mounts"),
    ("fsmount", "mounts"),
    ("fsconfig", "mounts"),
    ("fspick", "mounts"),
    ("mount_setattr", "mounts"),
    # System V IPC and POSIX message queues keep memory in the kernel that no rlimit of the process
    # counts (a shm segment detached after writing stays allocated): a way around RLIMIT_AS.
    ("shmget", "memory outside the address space"),
    ("shmat", "System V shared memory"),
    ("shmdt", "System V shared memory"),
    ("shmctl", "System V shared memory"),
    ("msgget", "memory outside the address space"),
    ("msgsnd", "System V message queues"),
    ("msgrcv", "System V message queues"),
    ("msgctl", "System V message queues"),
    ("semget", "System V semaphores"),
    ("semop", "System V semaphores"),
    ("semtimedop", "System V semaphores"),
    ("semctl", "System V semaphores"),
    ("mq_open", "memory outside the address space"),
    ("mq_unlink", "POSIX message queues"),
    ("mq_timedsend", "POSIX message queues"),
    ("mq_timedreceive", "POSIX message queues"),
    ("mq_notify", "POSIX message queues"),
    ("mq_getsetattr", "POSIX message queues"),
    ("migrate_pages", "acting on another process's memory"),
    ("move_pages", "acting on another process's memory"),
    ("bpf", "kernel attack surface"),
    ("perf_event_open", "kernel attack surface, side channels"),
    ("userfaultfd", "stalls the kernel at will (a classic exploit aid)"),
    ("keyctl", "kernel keyrings"),
    ("add_key", "kernel keyrings"),
    ("request_key", "kernel keyrings"),
    ("open_by_handle_at", "opens files by handle, around the mount namespace"),
    ("name_to_handle_at", "file handles"),
    ("kexec_load", "privileged"),
    ("kexec_file_load", "privileged"),
    ("init_module", "privileged"),
    ("finit_module", "privileged"),
    ("delete_module", "privileged"),
    ("quotactl", "privileged"),
    ("acct", "privileged"),
    ("swapon", "privileged"),
    ("swapoff", "privileged"),
    ("reboot", "privileged"),
    ("syslog", "the kernel log"),
)
# clone(flags, ...) takes its flags in the first argument on x86_64 and aarch64 (s390 swaps the
# first two; it is refused below rather than mis-filtered).
CLONE_THREAD = 0x00010000
SUPPORTED_MACHINES = ("x86_64", "aarch64")


class SeccompUnavailableError(RuntimeError):
    """The filter cannot be built here (no libseccomp, or an architecture it is not written for)."""


@functools.cache
def filter_program() -> bytes:
    """The compiled BPF program (struct sock_filter[]), built once per process."""
    machine = os.uname().machine
    if machine not in SUPPORTED_MACHINES:
        raise SeccompUnavailableError(f"the sandbox's seccomp filter is not written for {machine}")
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as error:  # OSError: the binding is there, libseccomp.so.2 is not
        raise SeccompUnavailableError(
            f"the sandbox needs libseccomp and its binding (pip install pyseccomp; apt-get install "
            f"libseccomp2): {error}"
        ) from error
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for name, _why in DENIED:
        rules.add_rule(deny, name)
    # glibc (2.34+) tries clone3 first and falls back to clone() only on ENOSYS.
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # A thread shares the harness's process; anything else would be a new process.
    rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(deny, "socketpair", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "wb", closefd=True) as sink:
            rules.export_bpf(sink)
        with open(read_end, "rb", closefd=False) as source:
            program = source.read()
    finally:
        os.close(read_end)
    # 8 bytes per instruction; the kernel takes at most 4096 instructions.
    assert program and len(program) % 8 == 0 and len(program) // 8 <= 4096, len(program)
    return program


def program_fd() -> int:
    """A fresh fd to read the program from (bwrap reads `--seccomp FD` to its end, then closes it).

    A pipe: the program (~1 KiB) fits its buffer, so it is written whole before bwrap starts. The
    read end is non-inheritable until the caller passes it on (Popen's pass_fds).
    """
    program = filter_program()
    read_end, write_end = os.pipe()
    try:
        written = os.write(write_end, program)
    finally:
        os.close(write_end)
    if written != len(program):
        os.close(read_end)
        raise SeccompUnavailableError(f"the seccomp program ({len(program)} bytes) did not fit a pipe")
    return read_end
