"""The files a store's index owns: object files on disk, small files in the index.

Object files live under ``objects/`` and are named by random ids (``objects/ab/ab12...``),
never by an object's path, so no path can reach outside the directory or collide with
another.  A spooled segment is moved in as it is (a rename, not a copy).  Object files are
never modified in place: an overwrite writes new files, commits the index row, then unlinks
the old files, so a reader that opened them keeps reading.  Files a committed write replaced
or dropped are unlinked by a thread of their own once the write has returned
(:meth:`ObjectFiles.discard`): unlinking a large file frees its blocks, which can take a
good part of a second, and no answer waits for it.

Small bytes kept in the index itself, in the ``small_files`` table, are written and dropped
in the transaction that commits or drops their row; their file id is ``=`` and the table's
row id (:func:`is_inline`).

Each open store (one per process) is an *owner*: it holds an exclusive ``flock`` on a file
of its own, ``owners/<owner>``, for as long as it is open, and records in the ``pending``
table the object files it is about to move in (before moving them) and the files it is
about to unlink (in the transaction that drops their row).  The transaction that commits a
new row deletes the pending rows of its files; the rows of unlinked files go with the next
write of the owner.  The kernel releases the lock when the process ends, however it ends
(``kill -9`` included), so at each open the store takes the lock of every other owner it
can: those processes are gone, and their pending files that no row refers to were left by
a crash and are removed at once (:meth:`ObjectFiles.reclaim`).  A live owner's files are
never touched.  :meth:`ObjectFiles.sweep` still walks every object file, for files left
before owners were recorded.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import IO

from twisted.logger import Logger

from lambgw.network.index import Index
from lambgw.network.interface import Segment

#: The directory of the owners' lock files.
OWNERS_DIR = "owners"
#: The suffix of an owner file being claimed.
_CLAIMING = ".new"
#: An owner file still being claimed this many seconds after it was made was left by a crash.
CLAIMING_GRACE = 60.0
#: How the file id of bytes kept in the index starts.
INLINE_MARK = "="

log = Logger()


def is_inline(file_id: str) -> bool:
    """Whether ``file_id`` names bytes kept in the index rather than an object file."""
    return file_id.startswith(INLINE_MARK)


class ObjectFiles:
    """The object files of the store in ``root``, owned by this process while it is open."""

    def __init__(self, root: str, index: Index, durable: bool = True) -> None:
        """Claim an owner in ``root`` and remove the files dead owners left pending.

        With ``durable``, files are flushed to disk when moved in (see :meth:`flush`).
        """
        self._objects = os.path.join(root, "objects")
        self._owners = os.path.join(root, OWNERS_DIR)
        self._index = index
        self._durable = durable
        self._lock = threading.Lock()
        #: Subdirectories of ``objects/`` known to exist, so a new file does not retry them.
        self._made: set[str] = set()
        #: Files this owner unlinked whose pending rows are deleted with its next write.
        self._settled: list[str] = []
        #: Files no row refers to any more, waiting for the discarding thread to unlink them.
        self._discarded: deque[str] = deque()
        #: The thread unlinking ``_discarded``, while there are any.
        self._discarding: threading.Thread | None = None
        #: Notified when the discarding thread has unlinked every file given to it.
        self._discarded_all = threading.Condition(self._lock)
        os.makedirs(self._objects, exist_ok=True)
        os.makedirs(self._owners, exist_ok=True)
        self._owner, self._owner_fd = self._claim_owner()
        self.reclaim()

    @property
    def owner(self) -> str:
        """The name of this owner, its file's under ``owners/``."""
        return self._owner

    def close(self) -> None:
        """Settle this owner's unlinked files and let go of its lock.

        Files this owner left pending are then removed by the next store opened.
        """
        if self._owner_fd is None:
            return
        self.drain()
        with suppress(sqlite3.Error):
            with self._index.write() as db:
                self.settle(db)
                left = db.execute(
                    "SELECT 1 FROM pending WHERE owner = ? LIMIT 1", (self._owner,)
                ).fetchone()
            if left is None:
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._owners, self._owner))
        os.close(self._owner_fd)
        self._owner_fd = None

    # -- owners and pending files -------------------------------------------------------

    def _claim_owner(self) -> tuple[str, int | None]:
        """Make and lock this store's owner file; its name and descriptor.

        It is made as ``<owner>.new`` and renamed once locked, so that :meth:`reclaim`
        never takes an owner being claimed for a dead one.
        """
        owner = secrets.token_hex(8)
        claiming = os.path.join(self._owners, owner + _CLAIMING)
        fd = os.open(claiming, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(claiming, os.path.join(self._owners, owner))
        return owner, fd

    def _lock_owner(self, owner: str) -> tuple[bool, int | None]:
        """Try to take the lock of ``owner``: (whether it is dead, the descriptor held)."""
        try:
            fd = os.open(os.path.join(self._owners, owner), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Owners are renamed in before writing pending rows: this one's file is gone.
            return True, None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False, None
        return True, fd

    def reclaim(self) -> int:
        """Remove the pending files of owners that are gone and no row refers to.

        Run at each open; returns how many files were removed.
        """
        now = time.time()
        owners: set[str] = set()
        for name in os.listdir(self._owners):
            if name.endswith(_CLAIMING):
                with suppress(FileNotFoundError):
                    if now - os.stat(os.path.join(self._owners, name)).st_mtime > CLAIMING_GRACE:
                        dead, fd = self._lock_owner(name)
                        if dead and fd is not None:
                            os.unlink(os.path.join(self._owners, name))
                            os.close(fd)
            elif name != self._owner:
                owners.add(name)
        with self._index.read() as db:
            owners.update(owner for (owner,) in db.execute("SELECT DISTINCT owner FROM pending"))
        owners.discard(self._owner)
        removed = 0
        for owner in sorted(owners):
            dead, fd = self._lock_owner(owner)
            if not dead:
                continue
            try:
                removed += self._reclaim_owner(owner)
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._owners, owner))
            finally:
                if fd is not None:
                    os.close(fd)
        return removed

    def _reclaim_owner(self, owner: str) -> int:
        """Remove the unreferenced pending files of the dead ``owner``, then its rows."""
        with self._index.read() as db:
            pending = {
                file_id
                for (file_id,) in db.execute(
                    "SELECT file_id FROM pending WHERE owner = ?", (owner,)
                )
            }
            if pending:
                for (files,) in db.execute("SELECT files FROM objects"):
                    pending.difference_update(file_id for file_id, _ in json.loads(files))
                pending.difference_update(
                    file_id for (file_id,) in db.execute("SELECT file_id FROM parts")
                )
        orphans = sorted(file_id for file_id in pending if not is_inline(file_id))
        for file_id in orphans:
            with suppress(FileNotFoundError):
                os.unlink(self._path(file_id))
        with self._index.write() as db:
            db.execute("DELETE FROM pending WHERE owner = ?", (owner,))
        return len(orphans)

    def reserve(self, count: int) -> list[str]:
        """Name ``count`` new object files and record them as pending, before making them."""
        file_ids = [secrets.token_hex(16) for _ in range(count)]
        if file_ids:
            with self._index.write() as db:
                self.settle(db)
                self.pend(db, file_ids)
        return file_ids

    def pend(self, db: sqlite3.Connection, file_ids: Sequence[str]) -> None:
        """Record ``file_ids`` as pending files of this owner (inside a write transaction)."""
        rows = [(file_id, self._owner) for file_id in file_ids if not is_inline(file_id)]
        if rows:
            db.executemany("INSERT OR REPLACE INTO pending (file_id, owner) VALUES (?, ?)", rows)

    def settle(self, db: sqlite3.Connection, committed: Sequence[str] = ()) -> None:
        """Drop the pending rows of ``committed`` files and of those unlinked since.

        Files unlinked since this owner's last write are meant; inside a write transaction.
        """
        with self._lock:
            done, self._settled = self._settled, []
        done += [file_id for file_id in committed if not is_inline(file_id)]
        if done:
            db.executemany("DELETE FROM pending WHERE file_id = ?", [(f,) for f in done])

    # -- object files ------------------------------------------------------------------

    def _path(self, file_id: str) -> str:
        return os.path.join(self._objects, file_id[:2], file_id)

    def _new_file(self, file_id: str | None = None) -> tuple[str, str]:
        file_id = secrets.token_hex(16) if file_id is None else file_id
        target = self._path(file_id)
        directory = os.path.dirname(target)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        return file_id, target

    def adopt(self, segment: Segment, file_id: str) -> str:
        """Move a spooled segment in as the object file ``file_id``, reserved by :meth:`reserve`.

        A segment in memory is written and flushed.
        """
        file_id, target = self._new_file(file_id)
        if segment.data is not None:
            with open(target, "xb") as f:
                f.write(segment.data)
                if self._durable:
                    f.flush()
                    os.fsync(f.fileno())
            return file_id
        source = segment.path
        try:
            os.rename(source, target)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.copyfile(source, target)
            os.unlink(source)
        return file_id

    def open(self, file_id: str) -> IO[bytes]:
        """Open an object file for reading (bytes held in the index come in memory)."""
        if is_inline(file_id):
            data = self.inline_data(self._index.connection(), file_id)
            if data is None:
                raise FileNotFoundError(file_id)
            return io.BytesIO(data)
        return open(self._path(file_id), "rb")

    def link(self, file_id: str, new_id: str) -> str | bytes:
        """Make the new object file ``new_id`` (reserved) with the bytes of ``file_id``.

        Bytes held in the index are returned themselves, for the copy's row to hold.
        """
        if is_inline(file_id):
            return self.open(file_id).read()
        new_id, target = self._new_file(new_id)
        try:
            os.link(self._path(file_id), target)
        except FileNotFoundError:
            raise
        except OSError:
            shutil.copyfile(self._path(file_id), target)
            self.flush([new_id])
        return new_id

    def flush(self, file_ids: Sequence[str]) -> None:
        """Flush object files to disk, if the store is durable."""
        if not self._durable:
            return
        for file_id in file_ids:
            fd = os.open(self._path(file_id), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def remove(self, file_ids: Sequence[str]) -> None:
        """Unlink object files; their pending rows go with this owner's next write."""
        unlinked = []
        for file_id in file_ids:
            if is_inline(file_id):
                continue  # gone with the transaction that dropped its row
            with suppress(FileNotFoundError):
                os.unlink(self._path(file_id))
            unlinked.append(file_id)
        with self._lock:
            self._settled += unlinked

    def discard(self, file_ids: Sequence[str]) -> None:
        """Have object files unlinked by a thread of their own, soon; return at once.

        For files a committed transaction replaced or dropped, and recorded as this owner's
        pending files in it: should the process end before they are unlinked, the next
        store opened removes them (:meth:`reclaim`).  :meth:`drain` waits for them.  Inside
        a group of writes (:meth:`Index.group`), they are handed over once it is committed.
        """
        files = [file_id for file_id in file_ids if not is_inline(file_id)]
        if files:
            self._index.after_commit(lambda: self._queue_discarded(files))

    def _queue_discarded(self, files: list[str]) -> None:
        """Hand ``files`` to the discarding thread, starting it if it is not running."""
        with self._lock:
            self._discarded.extend(files)
            if self._discarding is None:
                self._discarding = threading.Thread(
                    target=self._unlink_discarded, name="lambgw-discard", daemon=True
                )
                self._discarding.start()

    def drain(self) -> None:
        """Wait until every file given to :meth:`discard` is unlinked."""
        with self._lock:
            self._discarded_all.wait_for(lambda: self._discarding is None)

    def _unlink_discarded(self) -> None:
        """Unlink the discarded files, one by one, until there are none left."""
        while True:
            with self._lock:
                if not self._discarded:
                    self._discarding = None
                    self._discarded_all.notify_all()
                    return
                file_id = self._discarded.popleft()
            try:
                os.unlink(self._path(file_id))
            except FileNotFoundError:
                pass
            except OSError as e:
                # Its pending row stays: the next store opened after this one retries.
                log.error("Could not unlink the object file {file_id}: {why}", file_id=file_id,
                          why=e)  # fmt: skip
                continue
            with self._lock:
                self._settled.append(file_id)

    @staticmethod
    def keep_inline(db: sqlite3.Connection, data: bytes) -> str:
        """Keep ``data`` in the index (inside a write transaction); its file id."""
        row_id = db.execute("INSERT INTO small_files (data) VALUES (?)", (data,)).lastrowid
        return INLINE_MARK + str(row_id)

    @staticmethod
    def drop_inline(db: sqlite3.Connection, file_ids: Sequence[str]) -> None:
        """Delete the index-held bytes among ``file_ids`` (inside a write transaction)."""
        for file_id in file_ids:
            if is_inline(file_id):
                db.execute("DELETE FROM small_files WHERE id = ?", (int(file_id[1:]),))

    @staticmethod
    def inline_data(db: sqlite3.Connection, file_id: str) -> bytes | None:
        """The bytes of an index-held file, read on ``db``, or None if it is gone."""
        row = db.execute("SELECT data FROM small_files WHERE id = ?", (int(file_id[1:]),))
        found = row.fetchone()
        return None if found is None else bytes(found[0])

    def sweep(self, min_age: float = 3600.0) -> int:
        """Delete object files no row refers to, older than ``min_age`` seconds.

        Such files are left by a crash between moving files in and committing their row.
        Younger files may belong to a write in progress and are kept.  Returns how many
        files were deleted.
        """
        now = time.time()
        candidates: list[str] = []
        for directory, _, names in os.walk(self._objects):
            for name in names:
                try:
                    stat = os.stat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue
                if now - max(stat.st_mtime, stat.st_ctime) >= min_age:
                    candidates.append(name)
        with self._index.read() as db:
            referenced = {
                file_id
                for (files,) in db.execute("SELECT files FROM objects")
                for file_id, _ in json.loads(files)
            }
            referenced.update(file_id for (file_id,) in db.execute("SELECT file_id FROM parts"))
        orphans = [name for name in candidates if name not in referenced]
        self.remove(orphans)
        return len(orphans)
