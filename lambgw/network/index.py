"""The SQLite index of a store: its schema, and one connection per thread.

The index is ``index.sqlite3`` in the store's directory, in WAL mode with a busy timeout, so
that several threads and several processes use it at once.  Each thread has its own
connection; every write is one ``BEGIN IMMEDIATE`` transaction (:meth:`Index.write`), and
a read sees one snapshot (:meth:`Index.read`).  Small writes may be grouped: inside
:meth:`Index.group`, each write is a savepoint of one transaction, committed at the end of
the group, so that a group of small objects costs one commit and one turn of the lock.

Writers, in every thread and process, first take an exclusive ``flock`` on
``index.sqlite3-writers``, each thread through a descriptor of its own.  SQLite's busy
handler waits for the write lock by sleeping and trying again, from 1 ms up to 100 ms a
try, so two gateway workers writing small objects would each sleep through much of the
other's work.  The ``flock`` queues writers instead, and the next one starts as soon as a
transaction ends.  It is a queue, not the guard: SQLite's own lock still makes writes
exclusive, also for a process that does not take the ``flock``.
The kernel drops the lock of a process that dies, however it dies.

A thread may also use a second connection that never waits (:meth:`Index.nowait`): no
busy handler and no automatic checkpoint, for the small reads and writes the reactor
thread makes in place (:mod:`lambgw.network.quick`).  A write on it
(:meth:`Index.write_now`) tries the writers' queue once and raises :class:`WouldWait`
rather than wait.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import NamedTuple

#: The file of a store's index: a directory without it holds no store.
INDEX_FILE = "index.sqlite3"
#: The file whose ``flock`` queues the writers of the index.
WRITERS_FILE = INDEX_FILE + "-writers"
#: Seconds a write waits for the others' before it fails (SQLite's busy timeout too).
BUSY_TIMEOUT = 30.0
#: :meth:`Index.write_now` asks for a checkpoint after this many commits (of a few pages
#: each: SQLite's own automatic checkpoint comes at 1,000 pages).
CHECKPOINT_EVERY = 128
#: A checkpoint that leaves this many frames (pages) or more in the log also starts the log
#: over (:meth:`Index.checkpoint`): about 16 MiB of log at SQLite's pages of 4 KiB.
RESTART_FRAMES = 4096
#: Seconds the restart of the log waits for readers still on it before it gives up.
RESTART_WAIT = 0.2
#: A writer that finds the queue's lock taken tries again after this many seconds ...
_FIRST_WAIT = 50e-6
#: ... doubled after each try, up to this.
_LONGEST_WAIT = 1e-3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts(name),
    capacity INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX IF NOT EXISTS orders_by_account ON orders (account, created);
CREATE TABLE IF NOT EXISTS objects (
    order_id TEXT NOT NULL,
    path BLOB NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified REAL NOT NULL,
    content_type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    headers TEXT NOT NULL,
    checksums TEXT NOT NULL,
    checksum_type TEXT NOT NULL,
    part_sizes TEXT NOT NULL,
    files TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (order_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    path BLOB NOT NULL,
    created REAL NOT NULL,
    last_active REAL NOT NULL,
    described TEXT NOT NULL,
    completed TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_path ON uploads (order_id, path, created);
CREATE INDEX IF NOT EXISTS uploads_by_age ON uploads (last_active);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified REAL NOT NULL,
    checksums TEXT NOT NULL,
    file_id TEXT NOT NULL,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS small_files (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    file_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL
) WITHOUT ROWID;
"""


class WouldWait(Exception):
    """Work that was asked not to wait, and would have to (for a lock, or for a file)."""


class _Group(NamedTuple):
    """A thread's group of writes: the work to run once it is committed, and its connection."""

    hooks: list[Callable[[], None]]
    db: sqlite3.Connection


class GroupRolledBack(Exception):
    """A write in a group of writes whose transaction SQLite has already rolled back."""


class _NoWaiting:
    """A context that turns SQLite's refusal to wait for a lock into :class:`WouldWait`.

    A class rather than a generator: it is entered on every quick read and write, and
    holds no state, so one instance serves them all.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        ):
            raise WouldWait(str(error)) from error


_NO_WAITING = _NoWaiting()


def no_waiting() -> _NoWaiting:
    """Turn SQLite's refusal to wait for a lock into :class:`WouldWait` (a context)."""
    return _NO_WAITING


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction on ``db``, committed unless the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


@contextmanager
def _savepoint(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One savepoint of the transaction open on ``db``: undone alone if the block raises.

    If SQLite has rolled the transaction back (as it does on some errors: a full disk, an
    I/O error), this raises: a savepoint would otherwise begin a transaction of its own,
    committed alone, and the group's failure would then misreport it.
    """
    if not db.in_transaction:
        raise GroupRolledBack("the group's transaction was rolled back by an earlier error")
    db.execute("SAVEPOINT write")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK TO write")
        db.execute("RELEASE write")
        raise
    db.execute("RELEASE write")


class Index:
    """The index of the store in ``root``, created and brought up to date if needed."""

    def __init__(self, root: str) -> None:
        """Open (creating if needed) the index in the directory ``root``."""
        self._path = os.path.join(root, INDEX_FILE)
        self._writers = os.path.join(root, WRITERS_FILE)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        #: The descriptors of the writers' lock file, one per thread that wrote.
        self._writer_fds: list[int] = []
        #: Commits made by :meth:`write_now` since the last checkpoint it asked for.
        self._unchecked = 0
        self.connection().executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring an index made by an older version up to the current schema."""
        with self.write() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(objects)")}
            if "tags" not in columns:
                db.execute("ALTER TABLE objects ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'")

    def connection(self) -> sqlite3.Connection:
        """The connection of the calling thread, opened on its first use."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._open(BUSY_TIMEOUT)
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db

    def nowait(self) -> sqlite3.Connection:
        """The calling thread's connection that never waits, opened on its first use.

        It has no busy handler: a statement that finds the index locked (by another writer,
        or by another process recovering it after a crash) fails at once with
        ``sqlite3.OperationalError`` instead of sleeping.  It never checkpoints, since a
        checkpoint copies the log into the index and flushes it to disk: that is left to
        :meth:`checkpoint`, in a pool thread.
        """
        db: sqlite3.Connection | None = getattr(self._local, "nowait", None)
        if db is None:
            # The index is in WAL mode already (the file keeps it).
            db = self._open(0.0)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")
            self._local.nowait = db
        return db

    @contextmanager
    def write_now(self) -> Iterator[sqlite3.Connection]:
        """:meth:`write` on the :meth:`nowait` connection, without waiting for other writers.

        Raises :class:`WouldWait` at once if another writer holds the writers' queue or the
        index.  Every :data:`CHECKPOINT_EVERY` such commits, :meth:`checkpoint_due` says so
        once.  Inside a :meth:`group_now`, a savepoint of its transaction; not inside a
        :meth:`group`.
        """
        group = self._group()
        if group is not None:
            if group.db is not self.nowait():
                raise RuntimeError("write_now is not for a group of writes that may wait")
            with _savepoint(group.db) as db:
                yield db
            return
        with self._immediate_now() as db:
            yield db
        self._unchecked += 1

    @contextmanager
    def group_now(self) -> Iterator[None]:
        """:meth:`group` on the :meth:`nowait` connection, without waiting for other writers.

        Raises :class:`WouldWait` at once, with nothing written, if another writer holds the
        writers' queue or the index.  Each :meth:`write_now` or :meth:`write` in the block is
        a savepoint; the whole counts as one commit towards :meth:`checkpoint_due`.
        """
        with self._grouped(self._immediate_now()):
            yield
        self._unchecked += 1

    @contextmanager
    def _immediate_now(self) -> Iterator[sqlite3.Connection]:
        """A transaction on :meth:`nowait`, the writers' queue held for it, without waiting.

        :class:`WouldWait` at once if another writer holds the queue or the index.
        """
        fd = self._writer_fd()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WouldWait("another writer holds the index") from None
        try:
            with no_waiting(), _immediate(self.nowait()) as db:
                yield db
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def checkpoint_due(self) -> bool:
        """Whether :meth:`write_now` committed enough since the last time to checkpoint now."""
        due = self._unchecked >= CHECKPOINT_EVERY
        if due:
            self._unchecked = 0
        return due

    def checkpoint(self) -> tuple[int, int]:
        """Copy what the log holds into the index, as far as readers allow (pool thread).

        Returns the frames in the log and how many of them are now in the index.

        SQLite starts its log over only when a write begins with every frame of it already
        copied, and quick writes go on while a checkpoint copies: under a steady load the log
        would grow for as long as the process runs (15 KiB for each small object, and each
        checkpoint flushing more of it).  So a log of :data:`RESTART_FRAMES` or more is then
        emptied (:meth:`_restart`).
        """
        log_frames, copied = self._copy()
        if log_frames >= RESTART_FRAMES:
            self._restart()
        return log_frames, copied

    def _copy(self) -> tuple[int, int]:
        """Copy the log into the index alongside writers; the frames in it and those copied."""
        _, log_frames, copied = (
            self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        )
        return int(log_frames), int(copied)

    def _restart(self) -> None:
        """Copy the rest of the log into the index and empty the log.

        Writers are held off for it by taking their queue (:meth:`_queue_for_writing`): a
        quick write meanwhile goes to the pool, as when another writer holds the index.
        Readers still on the log are waited for :data:`RESTART_WAIT` seconds at most; if
        they stay, the log is left as it is until the next checkpoint.
        """
        fd = self._writer_fd()
        self._queue_for_writing(fd)
        try:
            db = self._restarter()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _restarter(self) -> sqlite3.Connection:
        """The calling thread's connection for :meth:`_restart`, opened on its first use.

        Its busy handler waits :data:`RESTART_WAIT` seconds at most, so that the writers'
        queue is not held for long.
        """
        db: sqlite3.Connection | None = getattr(self._local, "restarter", None)
        if db is None:
            db = self._open(RESTART_WAIT)
            db.execute(f"PRAGMA busy_timeout = {int(RESTART_WAIT * 1000)}")
            self._local.restarter = db
        return db

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        """A new connection to the index that waits ``busy_timeout`` seconds for locks."""
        db = sqlite3.connect(
            self._path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._connections.append(db)
        return db

    def _writer_fd(self) -> int:
        """The calling thread's descriptor of the writers' lock file, opened on first use."""
        fd: int | None = getattr(self._local, "writer_fd", None)
        if fd is None:
            fd = os.open(self._writers, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._local.writer_fd = fd
            with self._lock:
                self._writer_fds.append(fd)
        return fd

    def _queue_for_writing(self, fd: int) -> None:
        """Take the writers' ``flock`` through ``fd``, waiting at most :data:`BUSY_TIMEOUT`.

        Tries without blocking, so that a writer stopped with the lock held (a process
        suspended mid-transaction) fails this one in bounded time, as SQLite would.
        """
        wait = _FIRST_WAIT
        deadline: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            if deadline is None:
                deadline = now + BUSY_TIMEOUT
            elif now >= deadline:
                raise sqlite3.OperationalError("database is locked")
            time.sleep(wait)
            wait = min(2 * wait, _LONGEST_WAIT)

    @contextmanager
    def group(self) -> Iterator[None]:
        """One transaction around the writes this thread makes in the block.

        Each :meth:`write` in the block is a savepoint: one that raises is undone alone, and
        the others are committed together when the block ends.  If that commit fails, none
        is.  Work handed to :meth:`after_commit` in the block runs once the commit is done.
        """
        with self._grouped(self._transaction()):
            yield

    @contextmanager
    def _grouped(self, transaction: AbstractContextManager[sqlite3.Connection]) -> Iterator[None]:
        """Make ``transaction`` this thread's group of writes; run its hooks once committed."""
        if self._group() is not None:
            raise RuntimeError("groups of writes do not nest")
        hooks: list[Callable[[], None]] = []
        with transaction as db:
            self._local.group = _Group(hooks, db)
            try:
                yield
            finally:
                self._local.group = None
        for hook in hooks:
            hook()

    def _group(self) -> _Group | None:
        """The calling thread's group of writes, or None."""
        group: _Group | None = getattr(self._local, "group", None)
        return group

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once what this thread wrote is committed: now, or after its group.

        If the group's commit fails, ``hook`` is dropped.
        """
        group = self._group()
        if group is None:
            hook()
        else:
            group.hooks.append(hook)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed unless the block raises.

        The writers queue for it on the ``flock`` of :data:`WRITERS_FILE`.  Inside
        :meth:`group` or :meth:`group_now`, a savepoint of the group's transaction instead.
        """
        group = self._group()
        if group is None:
            with self._transaction() as db:
                yield db
            return
        with _savepoint(group.db) as db:
            yield db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, its writer queued for it first."""
        fd = self._writer_fd()
        self._queue_for_writing(fd)
        try:
            with _immediate(self.connection()) as db:
                yield db
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: the block sees one snapshot of the index.

        Inside a group of writes, the group's transaction.
        """
        group = self._group()
        if group is not None:
            yield group.db
            return
        db = self.connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        """Close the connections of every thread."""
        with self._lock:
            connections, self._connections = self._connections, []
            fds, self._writer_fds = self._writer_fds, []
        for db in connections:
            db.close()
        for fd in fds:
            os.close(fd)
        self._local = threading.local()
