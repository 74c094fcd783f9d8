"""Run a command inside a running container, with no more than the container may do.

gnspawnd runs this file, never imports it: `python -I -S -c <this file> LEADER
[CGROUP_PROCS...] -- COMMAND [ARG...]`, for a health check in a running container
whose init (machined's Leader) is LEADER. Unlike nsenter, it drops every capability
before it executes anything of the container's: the program is the container's own,
and so are the libraries and the loader it is linked against, so nothing of it may run
with the host's privileges. In order:

1. it joins the container's cgroups (their cgroup.procs files, as the host mounts
   them): the container's device policy and resource limits apply to the check;
2. it enters the container's namespaces (cgroup, IPC, UTS, network, PID for its
   child, mount; the user namespace last, when the container has one of its own, and
   becomes its root there) and its root directory;
3. it sets no_new_privs and empties its capability bounding, ambient, inheritable,
   permitted and effective sets: before it forks, since the child is in the
   container's PID namespace, where the container could reach it (ptrace);
4. it forks; the child executes COMMAND, found on the PATH of its environment in the
   container's file system. The parent waits and exits as the child did.

Nothing is imported after step 2: the file system is the container's from then on.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
NAMESPACES = {
    "cgroup": 0x02000000,
    "ipc": 0x08000000,
    "uts": 0x04000000,
    "net": 0x40000000,
    "pid": 0x20000000,
    "mnt": 0x00020000,
}
"""Entered in this order, while gnspawnd's privileges hold; the user namespace after.
Each with its CLONE_NEW* type: a service's RestrictNamespaces= refuses setns(fd, 0)."""
CLONE_NEWUSER = 0x10000000
EINVAL = 22
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _setns(fd: int, kind: int, what: str) -> None:
    _check(libc.setns(fd, kind), f"entering the container's {what} namespace")


def _drop_privileges() -> None:
    """No capability left, none to gain by an exec (a setuid or file-capability program
    of the container's included)."""
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if ctypes.get_errno() != EINVAL:  # EINVAL: past the last capability the kernel has
        _check(-1, f"dropping capability {cap} from the bounding set")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient capabilities")
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def _execute(argv: list[str], env: dict[str, str]) -> None:
    """execve `argv`, found on the PATH of `env` when it names no directory."""
    command = argv[0]
    candidates = [command] if "/" in command else []
    if not candidates:
        candidates = [f"{d}/{command}" for d in env.get("PATH", PATH).split(":") if d]
    failure: OSError = FileNotFoundError(2, "not found on PATH", command)
    for candidate in candidates:
        try:
            os.execve(candidate, argv, env)
        except (FileNotFoundError, NotADirectoryError) as err:
            failure = err
        except OSError as err:  # found, but it cannot run: no other candidate will do
            failure = err
            break
    raise failure


def main(args: list[str]) -> int:
    leader, *rest = args
    end = rest.index("--")
    procs, argv = rest[:end], rest[end + 1 :]
    proc = f"/proc/{int(leader)}"
    # Opened before anything changes: a leader that exits meanwhile fails this, never
    # lets another process of that PID be entered.
    fds = {ns: os.open(f"{proc}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES}
    own_user = os.stat("/proc/self/ns/user").st_ino
    user = os.open(f"{proc}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    root = os.open(f"{proc}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    env = {"PATH": PATH}
    for path in procs:
        with open(path, "w") as file:
            file.write(str(os.getpid()))
    for ns, fd in fds.items():
        _setns(fd, NAMESPACES[ns], ns)
    os.fchdir(root)
    os.chroot(".")
    os.chdir("/")
    if os.fstat(user).st_ino != own_user:
        _setns(user, CLONE_NEWUSER, "user")
        os.setgroups([])
        os.setgid(0)
        os.setuid(0)
    _drop_privileges()
    child = os.fork()
    if child == 0:
        try:
            _execute(argv, env)
        except OSError as err:
            os.write(2, f"cannot run {argv[0]}: {err.strerror}\n".encode())
        finally:
            os._exit(127)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
