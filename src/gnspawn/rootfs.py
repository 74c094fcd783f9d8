"""Files inside a machine's root, resolved the way the container sees them.

Whoever is root in a container can turn any path of its root into a symlink to a
host path (`etc/portage -> /etc`). gnspawnd runs as root on the host, so it never
resolves a path inside a root with the host's view: every path here is opened with
openat2(2) and RESOLVE_IN_ROOT, which resolves absolute symlinks and ".." against the
root itself, and refuses /proc's magic links. What the daemon reads or writes is
always a file of the container, never one of the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

_SYS_OPENAT2 = 437
"""The same number on every architecture Linux added it to after 5.6."""
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _openat2(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _libc.syscall(
            _SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:  # EAGAIN: a rename raced the lookup; try again
            raise OSError(err, os.strerror(err), path)


@contextlib.contextmanager
def _opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _root(root: Path) -> Iterator[int]:
    with _opened(os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
        yield fd


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.strip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise OSError(errno.EINVAL, "not a file name", path)
    return parent or ".", name


def is_file(root: Path, path: str) -> bool:
    """Whether `path` is a regular file in the root (symlinks resolved inside it)."""
    try:
        with _root(root) as fd, _opened(_openat2(fd, path, os.O_PATH)) as file:
            return stat.S_ISREG(os.fstat(file).st_mode)
    except OSError:
        return False


def read_text(root: Path, path: str, limit: int = 1 << 20) -> str:
    """The start of a text file in the root, at most `limit` bytes of it."""
    return read_bytes(root, path, limit).decode(errors="replace")


def read_bytes(root: Path, path: str, limit: int = 1 << 20) -> bytes:
    """The start of a regular file in the root, at most `limit` bytes of it."""
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK  # a planted FIFO must not block
    with _root(root) as fd, _opened(_openat2(fd, path, flags)) as file:
        if not stat.S_ISREG(os.fstat(file).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks = []
        while limit > 0 and (chunk := os.read(file, min(limit, 1 << 16))):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)


def read_texts(
    root: Path, directories: Sequence[str], names: Mapping[str, int]
) -> list[dict[str, str] | None]:
    """For each directory of the root, the start of each text file `names` names in it
    (at most as many bytes as it gives for the name); None for a directory that cannot
    be opened, and a name that is missing or no regular file is left out. Each
    directory is resolved in the root and each name inside its directory: neither ever
    out of the root. The root is opened once for them all."""
    found: list[dict[str, str] | None] = []
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK  # a planted FIFO must not block
    with _root(root) as fd:
        for directory in directories:
            try:
                dir_fd = _openat2(fd, directory, os.O_PATH | os.O_DIRECTORY)
            except OSError:
                found.append(None)
                continue
            texts = {}
            with _opened(dir_fd):
                for name, limit in names.items():
                    try:
                        file = _openat2(dir_fd, name, flags)
                    except OSError:
                        continue
                    with _opened(file):
                        if stat.S_ISREG(os.fstat(file).st_mode):
                            texts[name] = os.read(file, limit).decode(errors="replace")
            found.append(texts)
    return found


def listdir(root: Path, path: str, limit: int) -> list[str]:
    """The names in a directory of the root, at most `limit` of them."""
    with (
        _root(root) as fd,
        _opened(_openat2(fd, path, os.O_RDONLY | os.O_DIRECTORY)) as dir_fd,
        os.scandir(dir_fd) as entries,
    ):
        return [entry.name for _, entry in zip(range(limit), entries, strict=False)]


def readlink(root: Path, path: str) -> str:
    """The target of a symlink in the root, as written (it is never followed)."""
    parent, name = _split(path)
    with _root(root) as fd, _opened(_openat2(fd, parent, os.O_PATH | os.O_DIRECTORY)) as dir_fd:
        return os.readlink(name, dir_fd=dir_fd)


def makedirs(root: Path, path: str, mode: int = 0o755) -> None:
    """Create a directory and its parents in the root; what exists is kept."""
    with _root(root) as fd:
        done = "."
        for part in path.strip("/").split("/"):
            parent = _openat2(fd, done, os.O_PATH | os.O_DIRECTORY)
            with _opened(parent), contextlib.suppress(FileExistsError):
                os.mkdir(part, mode, dir_fd=parent)
            done = f"{done}/{part}"


def write_text(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    """Replace a file in the root at once: the old one, or a symlink there, is replaced
    by a new regular file, never written through."""
    write_bytes(root, path, text.encode(), mode)


def write_bytes(root: Path, path: str, content: bytes, mode: int = 0o644) -> None:
    """As write_text, with `content` as it is."""
    parent, name = _split(path)
    temporary = f".{name}.gnspawn-tmp"
    with _root(root) as fd, _opened(_openat2(fd, parent, os.O_PATH | os.O_DIRECTORY)) as dir_fd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=dir_fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with _opened(os.open(temporary, flags, mode, dir_fd=dir_fd)) as file:
            data = memoryview(content)
            while data:
                data = data[os.write(file, data) :]
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def replace_by(
    root: Path,
    path: str,
    new: str,
    *,
    backup: str,
    content: bytes | None = None,
    drop: Sequence[str] = (),
) -> None:
    """Put file `new` in the place of `path` (both names in one directory of the root),
    or, with `content`, a file of that content with the owner and mode of `new`, which
    then goes. What was at `path` stays as `backup` (a hard link: nothing is copied and
    the file is never opened); the names in `drop` go. `path` is always whole: the
    replacement is a rename."""
    parent, name = _split(path)
    if any(_split(other)[0] != parent for other in (new, backup, *drop)):
        raise OSError(errno.EXDEV, "not in the directory of", path)
    new_name, backup_name = _split(new)[1], _split(backup)[1]
    with _root(root) as fd, _opened(_openat2(fd, parent, os.O_PATH | os.O_DIRECTORY)) as dir_fd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(backup_name, dir_fd=dir_fd)
        with contextlib.suppress(FileNotFoundError):
            os.link(name, backup_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        if content is None:
            os.replace(new_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            like = os.stat(new_name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(like.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", new)
            temporary = f".{name}.gnspawn-tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with _opened(os.open(temporary, flags, 0o600, dir_fd=dir_fd)) as file:
                data = memoryview(content)
                while data:
                    data = data[os.write(file, data) :]
                os.fchown(file, like.st_uid, like.st_gid)
                os.fchmod(file, stat.S_IMODE(like.st_mode))
            os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.unlink(new_name, dir_fd=dir_fd)
        for other in drop:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_split(other)[1], dir_fd=dir_fd)


def remove(root: Path, paths: Sequence[str]) -> None:
    """Remove files (never directories) from the root; what is gone already is fine."""
    with _root(root) as fd:
        for path in paths:
            parent, name = _split(path)
            with (
                _opened(_openat2(fd, parent, os.O_PATH | os.O_DIRECTORY)) as dir_fd,
                contextlib.suppress(FileNotFoundError),
            ):
                os.unlink(name, dir_fd=dir_fd)


def symlink(root: Path, target: str, path: str) -> None:
    """Make `path` in the root a symlink to `target`, replacing what is there."""
    parent, name = _split(path)
    with _root(root) as fd, _opened(_openat2(fd, parent, os.O_PATH | os.O_DIRECTORY)) as dir_fd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        os.symlink(target, name, dir_fd=dir_fd)
