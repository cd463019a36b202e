"""Spools of request bodies in flight: a directory per process, and the space left for bodies.

Several processes may share one spool: gateways (``--workers``, or two gateways on one data
directory) in the gateway's ``spool/``, ``lambnet`` nodes in their store's ``incoming/``.
Each writes its request bodies only into a directory of its own below the spool, named at
random and held with an exclusive ``flock`` for as long as the process lives.  The kernel
lets go of the lock when the process ends, however it ends (``kill -9`` included), so a
directory whose lock can be taken belongs to no live process: what is in it was left by a
crash and is removed at once, at the next start of any process on that spool or by
``python -m lambgw store sweep``.  A live process's bodies are never touched.

A new directory is made under a name ending in ``.new`` and renamed once its lock is held,
so that a sweep never mistakes a directory being claimed for an abandoned one.

:class:`SpoolDirectory` also watches the free space of the spool's file system: an upload
that cannot fit is refused before its body is read, one that fills the disk on the way
fails with ``503 SlowDown``, and the shortage is logged once and shown by ``/readyz``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import time
from contextlib import suppress

from attrs import define, frozen
from twisted.logger import Logger

from lambgw.protocol.errors import S3Error

#: A directory still named ``*.new`` this many seconds after it was made was left by a crash
#: between making it and claiming it.
CLAIMING_GRACE = 60.0
#: Loose files at the top of the spool (from gateways before per-process directories) are
#: removed once untouched for this long.
LOOSE_FILE_AGE = 3600.0
#: The errors that mean the file system (or the user's quota on it) is full.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

log = Logger()


@frozen
class Swept:
    """What a sweep removed: files and their bytes."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Swept) -> Swept:
        return Swept(self.files + other.files, self.bytes + other.bytes)


def _remove_tree(path: str) -> Swept:
    """Remove the directory ``path`` and what is in it; what was removed."""
    files = size = 0
    for directory, _, names in os.walk(path):
        for name in names:
            with suppress(FileNotFoundError):
                file = os.path.join(directory, name)
                size += os.lstat(file).st_size
                os.unlink(file)
                files += 1
    shutil.rmtree(path, ignore_errors=True)
    return Swept(files, size)


def _lock(path: str) -> int | None:
    """Open the directory ``path`` and lock it; its descriptor, or None if a process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def sweep_spool(root: str, now: float | None = None) -> Swept:
    """Remove from the spool ``root`` what processes no longer alive left there.

    The directories of processes that have ended go at once, whatever their age; loose
    files at the top go once older than :data:`LOOSE_FILE_AGE`.
    """
    now = time.time() if now is None else now
    swept = Swept()
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return swept
    for entry in entries:
        with suppress(FileNotFoundError):
            stat = entry.stat(follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                if entry.name.endswith(".new") and now - stat.st_mtime < CLAIMING_GRACE:
                    continue
                fd = _lock(entry.path)
                if fd is None:
                    continue  # a live process's directory
                try:
                    swept += _remove_tree(entry.path)
                finally:
                    os.close(fd)
            elif now - max(stat.st_mtime, stat.st_ctime) >= LOOSE_FILE_AGE:
                os.unlink(entry.path)
                swept += Swept(1, stat.st_size)
    return swept


@define
class SpoolDirectory:
    """The directory of this process in the spool ``root``, held until :meth:`release`.

    ``short_of`` is the size of the last body that found no room, until there is room for
    it again (0 when the spool has room).
    """

    root: str
    path: str
    _fd: int | None
    short_of: int = 0

    @classmethod
    def claim(cls, root: str) -> SpoolDirectory:
        """Remove what ended processes left in ``root``, then claim a directory of its own."""
        os.makedirs(root, exist_ok=True)
        swept = sweep_spool(root)
        if swept.files:
            log.info(
                "Removed {files} files ({size} bytes) left in the spool {root} by a process "
                "that ended without cleaning up",
                files=swept.files,
                size=swept.bytes,
                root=root,
            )
        name = secrets.token_hex(8)
        claiming = os.path.join(root, name + ".new")
        os.mkdir(claiming)
        fd = os.open(claiming, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = os.path.join(root, name)
        os.rename(claiming, path)
        return cls(root, path, fd)

    def release(self) -> None:
        """Remove this process's directory and let go of it (a second call does nothing)."""
        if self._fd is None:
            return
        _remove_tree(self.path)
        os.close(self._fd)
        self._fd = None

    # -- free space ----------------------------------------------------------

    def free(self) -> int:
        """Bytes an unprivileged writer may still write on the spool's file system."""
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def check_room(self, size: int) -> None:
        """Refuse, before its body is read, an upload of ``size`` bytes that cannot fit."""
        stat = os.statvfs(self.path)
        free, total = stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
        if size > total:
            raise S3Error.of(
                "EntityTooLarge",
                f"Your proposed upload of {size} bytes is larger than the gateway's spool "
                f"can ever hold ({total} bytes).",
            )
        if size > free:
            raise self.ran_out(size, free)
        if self.short_of and free >= self.short_of:
            self._recovered(free)

    def ran_out(self, needed: int, free: int | None = None) -> S3Error:
        """Note that a body of ``needed`` bytes found no room; the error for its client.

        The first shortage is logged, with the spool's path and free space; the others
        are not, until there is room again.
        """
        free = self.free() if free is None else free
        if not self.short_of:
            log.warn(
                "The gateway's spool {path} is full: {free} bytes free, an upload needed "
                "{needed}; uploads are refused with 503 SlowDown until there is room",
                path=self.root,
                free=free,
                needed=needed,
            )
        self.short_of = max(needed, 1)
        return S3Error(
            "SlowDown",
            503,
            f"The gateway's spool is full ({free} bytes free): reduce your request rate and retry.",
        )

    def shortage(self) -> str | None:
        """Why the spool cannot take uploads now, or None if it has room."""
        if not self.short_of:
            return None
        free = self.free()
        if free >= self.short_of:
            self._recovered(free)
            return None
        return f"spool full: {self.root} has {free} bytes free, an upload needed {self.short_of}"

    def _recovered(self, free: int) -> None:
        self.short_of = 0
        log.info(
            "The gateway's spool {path} has room again: {free} bytes free",
            path=self.root,
            free=free,
        )


def gateway_spools(data: str) -> list[str]:
    """The spools in the gateway data directory ``data``: its own and each account's."""
    accounts = os.path.join(data, "accounts")
    try:
        names = sorted(os.listdir(accounts))
    except FileNotFoundError:
        names = []
    return [os.path.join(data, "spool")] + [os.path.join(accounts, n, "spool") for n in names]
