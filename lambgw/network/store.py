"""The embedded network's store: an SQLite index of accounts, orders and objects, plus files.

One directory holds ``index.sqlite3`` and the object bytes under ``objects/``.  Object files
are named by random ids (``objects/ab/ab12...``), never by the object's path, so no path can
reach outside the directory or collide with another.  An object is the concatenation of its
segment files; the spooled files of an upload are moved in as they are (a rename, not a
copy).  Multipart uploads (:mod:`lambgw.network.uploads`) keep each part in a file of its
own, and a completed upload's object is made of those files.  Object files are never
modified in place: an overwrite writes new files, commits the index row, then unlinks the
old files, so a reader that opened them keeps reading.

A small object that arrives whole in memory (at most :data:`INLINE_SIZE` bytes) is kept in
the index itself, in the ``small_files`` table, written in the transaction that commits its
row: no file to create, flush and later unlink, and its bytes are exactly as durable as the
row that makes it visible.  Its file id is ``=`` and the table's row id.

Several threads and several processes may use one store at once: each thread has its own
SQLite connection (WAL mode, busy timeout) and every write is one ``BEGIN IMMEDIATE``
transaction that checks and charges the order's capacity.

Each open store (one per process) is an *owner*: it holds an exclusive ``flock`` on a file
of its own, ``owners/<owner>``, for as long as it is open, and records in the ``pending``
table the object files it is about to move in (before moving them) and the files it is
about to unlink (in the transaction that drops their row).  The transaction that commits a
new row deletes the pending rows of its files; the rows of unlinked files go with the next
write of the owner.  The kernel releases the lock when the process ends, however it ends
(``kill -9`` included), so at each open the store takes the lock of every other owner it
can: those processes are gone, and their pending files that no row refers to were left by
a crash and are removed at once (:meth:`Store.reclaim`).  A live owner's files are never
touched.  :meth:`Store.sweep` still walks every object file, for files left before owners
were recorded; it is run on demand (``python -m lambgw store sweep``).
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import IO, Any

from attrs import frozen
from twisted.python.filepath import FilePath

from lambgw.network.errors import (
    InvalidPath,
    NetworkError,
    NoSuchAccount,
    NoSuchOrder,
    NoSuchPath,
    OrderExpired,
    PreconditionFailed,
    QuotaExceeded,
)
from lambgw.network.interface import (
    MAX_PATH_BYTES,
    ListPage,
    NewObject,
    ObjectInfo,
    Order,
    Segment,
)
from lambgw.network.listing import (
    OBJECT_COLUMNS,
    info_from_row,
    json_text,
    list_page,
    write_object_row,
)

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

_ORDER_COLUMNS = "order_id, account, capacity, used, created, expires, status"

#: The largest object kept in the index rather than in a file of its own.  No larger than
#: ``files.SMALL_READ``: such objects are always read whole, never streamed from a file.
INLINE_SIZE = 64 * 1024
#: How the file id of bytes kept in the index starts.
_INLINE = "="

#: How often a read retries when a concurrent overwrite removed the files it looked up.
_READ_ATTEMPTS = 5


@frozen
class FileRange:
    """``length`` bytes of an open object file, from ``offset``."""

    file: IO[bytes]
    offset: int
    length: int


def encode_path(path: str) -> bytes:
    """Return the UTF-8 bytes of an object path; raise ``InvalidPath`` if it is not one."""
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath("the path is not valid UTF-8") from None
    if not raw:
        raise InvalidPath("the path is empty")
    if len(raw) > MAX_PATH_BYTES:
        raise InvalidPath(f"the path is {len(raw)} bytes long, more than {MAX_PATH_BYTES}")
    return raw


def _order_from_row(row: Sequence[Any]) -> Order:
    return Order(
        order_id=row[0],
        account=row[1],
        capacity=row[2],
        used=row[3],
        created=row[4],
        expires=row[5],
        status=row[6],
    )


def check_write_conditions(
    old: Sequence[Any] | None, path: str, if_none_match: bool = False, if_match: str | None = None
) -> None:
    """Refuse a write whose conditions the object row ``old`` (its etag third) does not meet.

    ``if_none_match``: only where there is no object; ``if_match``: only over the object
    with that etag (``*``: any object).
    """
    if old is not None and if_none_match:
        raise PreconditionFailed(f"an object exists at {path}")
    if if_match is None:
        return
    if old is None:
        raise NoSuchPath(f"no object at {path}")
    if if_match != "*" and old[2] != if_match:
        raise PreconditionFailed(f"the object at {path} has another etag")


#: The file of a store's index: a directory without it holds no store.
INDEX_FILE = "index.sqlite3"
#: The directory of the owners' lock files.
OWNERS_DIR = "owners"
#: The suffix of an owner file being claimed.
_CLAIMING = ".new"
#: An owner file still being claimed this many seconds after it was made was left by a crash.
CLAIMING_GRACE = 60.0


class Store:
    """Accounts, orders and objects kept in one directory; every method is synchronous."""

    def __init__(
        self,
        root: FilePath[str] | str,
        clock: Callable[[], float] = time.time,
        durable: bool = True,
    ) -> None:
        """Open (creating if needed) the store in ``root``.

        With ``durable``, object files are flushed to disk before their row is committed.
        """
        self._root = root.path if isinstance(root, FilePath) else os.fspath(root)
        self._objects = os.path.join(self._root, "objects")
        self._index = os.path.join(self._root, INDEX_FILE)
        self._clock = clock
        self._durable = durable
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        #: Subdirectories of ``objects/`` known to exist, so a new file does not retry them.
        self._made: set[str] = set()
        #: Files this store unlinked whose pending rows are deleted with its next write.
        self._settled: list[str] = []
        os.makedirs(self._objects, exist_ok=True)
        self._owners = os.path.join(self._root, OWNERS_DIR)
        os.makedirs(self._owners, exist_ok=True)
        self._connection().executescript(_SCHEMA)
        self._migrate()
        self._owner, self._owner_fd = self._claim_owner()
        self.reclaim()

    def _migrate(self) -> None:
        """Bring a store made by an older version up to the current schema."""
        with self._write() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(objects)")}
            if "tags" not in columns:
                db.execute("ALTER TABLE objects ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'")

    @property
    def root(self) -> str:
        """The directory of the store."""
        return self._root

    # -- connections -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self._index, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        """Close the index connections of every thread and let go of the owner's lock.

        Files this store left pending are then removed by the next store opened.
        """
        if self._owner_fd is not None:
            with suppress(sqlite3.Error):
                with self._write() as db:
                    self._settle(db)
                    left = db.execute(
                        "SELECT 1 FROM pending WHERE owner = ? LIMIT 1", (self._owner,)
                    ).fetchone()
                if left is None:
                    with suppress(FileNotFoundError):
                        os.unlink(os.path.join(self._owners, self._owner))
            os.close(self._owner_fd)
            self._owner_fd = None
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()
        self._local = threading.local()

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
        with self._read() as db:
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
        with self._read() as db:
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
        orphans = sorted(file_id for file_id in pending if not file_id.startswith(_INLINE))
        for file_id in orphans:
            with suppress(FileNotFoundError):
                os.unlink(self._file(file_id))
        with self._write() as db:
            db.execute("DELETE FROM pending WHERE owner = ?", (owner,))
        return len(orphans)

    def _reserve(self, count: int) -> list[str]:
        """Name ``count`` new object files and record them as pending, before making them."""
        file_ids = [secrets.token_hex(16) for _ in range(count)]
        if file_ids:
            with self._write() as db:
                self._settle(db)
                self._pend(db, file_ids)
        return file_ids

    def _pend(self, db: sqlite3.Connection, file_ids: Sequence[str]) -> None:
        """Record ``file_ids`` as pending files of this owner (inside a write transaction)."""
        db.executemany(
            "INSERT OR REPLACE INTO pending (file_id, owner) VALUES (?, ?)",
            [(file_id, self._owner) for file_id in file_ids if not file_id.startswith(_INLINE)],
        )

    def _settle(self, db: sqlite3.Connection, committed: Sequence[str] = ()) -> None:
        """Drop the pending rows of ``committed`` files and of those unlinked since.

        Files unlinked since this owner's last write are meant; inside a write transaction.
        """
        with self._lock:
            done, self._settled = self._settled, []
        done += [file_id for file_id in committed if not file_id.startswith(_INLINE)]
        if done:
            db.executemany("DELETE FROM pending WHERE file_id = ?", [(f,) for f in done])

    # -- object files ------------------------------------------------------------------

    def _file(self, file_id: str) -> str:
        return os.path.join(self._objects, file_id[:2], file_id)

    def _new_file(self, file_id: str | None = None) -> tuple[str, str]:
        file_id = secrets.token_hex(16) if file_id is None else file_id
        target = self._file(file_id)
        directory = os.path.dirname(target)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        return file_id, target

    def _adopt(self, segment: Segment, file_id: str) -> str:
        """Move a spooled segment in as the object file ``file_id``, reserved by :meth:`_reserve`.

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

    def _open(self, file_id: str) -> IO[bytes]:
        """Open an object file for reading (bytes held in the index come in memory)."""
        if file_id.startswith(_INLINE):
            data = self._inline_data(self._connection(), file_id)
            if data is None:
                raise FileNotFoundError(file_id)
            return io.BytesIO(data)
        return open(self._file(file_id), "rb")

    def _link(self, file_id: str, new_id: str) -> str | bytes:
        """Make the new object file ``new_id`` (reserved) with the bytes of ``file_id``.

        Bytes held in the index are returned themselves, for the copy's row to hold.
        """
        if file_id.startswith(_INLINE):
            return self._open(file_id).read()
        new_id, target = self._new_file(new_id)
        try:
            os.link(self._file(file_id), target)
        except FileNotFoundError:
            raise
        except OSError:
            shutil.copyfile(self._file(file_id), target)
            self._flush([new_id])
        return new_id

    def _flush(self, file_ids: Sequence[str]) -> None:
        if not self._durable:
            return
        for file_id in file_ids:
            fd = os.open(self._file(file_id), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _remove(self, file_ids: Sequence[str]) -> None:
        """Unlink object files; their pending rows go with this owner's next write."""
        unlinked = []
        for file_id in file_ids:
            if file_id.startswith(_INLINE):
                continue  # gone with the transaction that dropped its row
            with suppress(FileNotFoundError):
                os.unlink(self._file(file_id))
            unlinked.append(file_id)
        with self._lock:
            self._settled += unlinked

    @staticmethod
    def _drop_inline(db: sqlite3.Connection, file_ids: Sequence[str]) -> None:
        """Delete the index-held bytes among ``file_ids`` (inside a write transaction)."""
        for file_id in file_ids:
            if file_id.startswith(_INLINE):
                db.execute("DELETE FROM small_files WHERE id = ?", (int(file_id[1:]),))

    @staticmethod
    def _inline_data(db: sqlite3.Connection, file_id: str) -> bytes | None:
        """The bytes of an index-held file, or None if it is gone."""
        row = db.execute("SELECT data FROM small_files WHERE id = ?", (int(file_id[1:]),))
        found = row.fetchone()
        return None if found is None else bytes(found[0])

    # -- accounts and orders -----------------------------------------------------------

    def create_account(self, name: str) -> None:
        """Create the account ``name``; fails if it exists."""
        if not name:
            raise NetworkError("the account name is empty")
        with self._write() as db:
            if self._has_account(db, name):
                raise NetworkError(f"the account {name} already exists")
            db.execute("INSERT INTO accounts VALUES (?, ?)", (name, self._clock()))

    def has_account(self, name: str) -> bool:
        """Whether the account ``name`` exists."""
        return self._has_account(self._connection(), name)

    @staticmethod
    def _has_account(db: sqlite3.Connection, name: str) -> bool:
        row = db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone()
        return row is not None

    def buy_order(self, account: str, capacity: int, days: float) -> Order:
        """Buy a new order of ``capacity`` bytes for ``account``, valid ``days`` days."""
        with self._write() as db:
            return self._buy(db, account, capacity, days)

    def _buy(self, db: sqlite3.Connection, account: str, capacity: int, days: float) -> Order:
        if capacity <= 0:
            raise NetworkError("the capacity must be positive")
        if days <= 0:
            raise NetworkError("the duration must be positive")
        if not self._has_account(db, account):
            raise NoSuchAccount(f"no such account: {account}")
        now = self._clock()
        order = Order(
            order_id=secrets.token_hex(20).upper(),
            account=account,
            capacity=capacity,
            used=0,
            created=now,
            expires=now + days * 86400.0,
        )
        db.execute(
            f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (order.order_id, account, capacity, 0, order.created, order.expires, order.status),
        )
        return order

    def orders(self, account: str) -> list[Order]:
        """Return the orders of ``account``, in the order they were bought."""
        with self._read() as db:
            return self._orders(db, account)

    def _orders(self, db: sqlite3.Connection, account: str) -> list[Order]:
        if not self._has_account(db, account):
            raise NoSuchAccount(f"no such account: {account}")
        rows = db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE account = ? ORDER BY created, rowid",
            (account,),
        )
        return [_order_from_row(row) for row in rows]

    def order(self, account: str, order_id: str) -> Order:
        """Return one order of ``account``; ``NoSuchOrder`` if it is missing or another's."""
        return self._order(self._connection(), account, order_id)

    @staticmethod
    def _order(db: sqlite3.Connection, account: str, order_id: str) -> Order:
        row = db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = ? AND account = ?",
            (order_id, account),
        ).fetchone()
        if row is None:
            raise NoSuchOrder(f"no such order: {order_id}")
        return _order_from_row(row)

    def ensure_account(self, name: str, default_capacity: int, default_days: float) -> list[Order]:
        """Return the orders of ``name``, creating the account with one order if new."""
        with self._write() as db:
            if not self._has_account(db, name):
                db.execute("INSERT INTO accounts VALUES (?, ?)", (name, self._clock()))
                self._buy(db, name, default_capacity, default_days)
            return self._orders(db, name)

    # -- objects -----------------------------------------------------------------------

    def put(
        self,
        account: str,
        order_id: str,
        path: str,
        segments: Sequence[Segment],
        new: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Store the object made of the spooled ``segments`` at ``path``, atomically.

        The conditions are checked in the transaction that writes the row (see
        :meth:`INetwork.put_object`).

        The segment files are moved in on success and deleted on failure.  A multipart
        object (an etag ending in ``-N``) records the segment sizes as its part sizes.
        """
        adopted: list[str] = []
        reserved: list[str] = []
        try:
            raw = encode_path(path)
            sizes = [segment.size for segment in segments]
            for segment in segments:
                held = (
                    len(segment.data) if segment.data is not None else os.stat(segment.path).st_size
                )
                if held != segment.size:
                    raise NetworkError(f"the spooled part {segment.path} has the wrong size")
            if sum(sizes) != new.size:
                raise NetworkError(f"the parts hold {sum(sizes)} bytes, not {new.size}")
            pieces: list[tuple[str | bytes, int]]
            if len(segments) == 1 and segments[0].data is not None and new.size <= INLINE_SIZE:
                pieces = [(segments[0].data, new.size)]
            else:
                for segment, file_id in zip(segments, self._reserve(len(segments)), strict=True):
                    reserved.append(file_id)
                    adopted.append(self._adopt(segment, file_id))
                # Segments written from memory were flushed as they were written.
                spooled = zip(adopted, segments, strict=True)
                self._flush([file_id for file_id, seg in spooled if seg.data is None])
                pieces = list(zip(adopted, sizes, strict=True))
            # ``Any``: the attrs converter of ``part_sizes`` confuses mypy.
            part_sizes: Any = tuple(sizes) if "-" in new.etag else ()
            info = ObjectInfo(
                order_id=order_id,
                path=path,
                size=new.size,
                etag=new.etag,
                last_modified=self._clock(),
                content_type=new.content_type,
                metadata=new.metadata,
                headers=new.headers,
                checksums=new.checksums,
                checksum_type=new.checksum_type,
                part_sizes=part_sizes,
                tag_count=len(new.tags),
            )
            old = self._commit(account, raw, info, pieces, if_none_match, new.tags, if_match)
        except BaseException:
            self._remove(reserved)
            for segment in segments[len(adopted) :]:
                if segment.data is None:
                    with suppress(FileNotFoundError):
                        os.unlink(segment.path)
            raise
        self._remove(old)
        return info

    def _commit(
        self,
        account: str,
        raw: bytes,
        info: ObjectInfo,
        pieces: Sequence[tuple[str | bytes, int]],
        if_none_match: bool,
        tags: Mapping[str, str],
        if_match: str | None = None,
    ) -> list[str]:
        """Write the row of ``info`` and ``tags``, charge its order; return the replaced files.

        A piece given as bytes is kept in the index, in the same transaction.
        """
        with self._write() as db:
            order = self._order(db, account, info.order_id)
            if order.expired(self._clock()):
                raise OrderExpired(f"the order {order.order_id} has expired")
            old = db.execute(
                "SELECT size, files, etag FROM objects WHERE order_id = ? AND path = ?",
                (info.order_id, raw),
            ).fetchone()
            check_write_conditions(old, info.path, if_none_match, if_match)
            used = order.used - (old[0] if old else 0) + info.size
            if used > order.capacity:
                raise QuotaExceeded(
                    f"the order {order.order_id} has {order.free} bytes free,"
                    f" {info.size} are needed"
                )
            files = [
                (
                    piece
                    if isinstance(piece, str)
                    else _INLINE
                    + str(
                        db.execute("INSERT INTO small_files (data) VALUES (?)", (piece,)).lastrowid
                    ),
                    size,
                )
                for piece, size in pieces
            ]
            replaced = [file_id for file_id, _ in json.loads(old[1])] if old else []
            self._drop_inline(db, replaced)
            self._settle(db, [file_id for file_id, _ in files])
            self._pend(db, replaced)
            write_object_row(db, raw, info, files, tags)
            db.execute("UPDATE orders SET used = ? WHERE order_id = ?", (used, order.order_id))
        return replaced

    def _lookup(
        self, account: str, order_id: str, raw: bytes
    ) -> tuple[ObjectInfo, list[tuple[str, int]], dict[str, str]]:
        with self._read() as db:
            self._order(db, account, order_id)
            row = db.execute(
                f"SELECT {OBJECT_COLUMNS} FROM objects WHERE order_id = ? AND path = ?",
                (order_id, raw),
            ).fetchone()
        if row is None:
            raise NoSuchPath(f"no object at {raw.decode('utf-8')}")
        files = [(file_id, size) for file_id, size in json.loads(row[11])]
        return info_from_row(row), files, json.loads(row[12])

    def head(self, account: str, order_id: str, path: str) -> ObjectInfo:
        """Return what is stored at ``path``; raise ``NoSuchPath`` if nothing is."""
        return self._lookup(account, order_id, encode_path(path))[0]

    def open_range(
        self, account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> tuple[ObjectInfo, list[FileRange]]:
        """Return the object at ``path`` and its bytes ``first`` to ``last``, opened.

        The files are open when this returns, so a concurrent overwrite or delete does not
        disturb the reader; the caller closes them.
        """
        raw = encode_path(path)
        for _ in range(_READ_ATTEMPTS):
            info, files, _ = self._lookup(account, order_id, raw)
            end = info.size if last is None else min(last + 1, info.size)
            ranges: list[FileRange] = []
            start = 0
            try:
                for file_id, size in files:
                    low, high = max(first, start), min(end, start + size)
                    if low < high:
                        ranges.append(FileRange(self._open(file_id), low - start, high - low))
                    start += size
            except FileNotFoundError:
                for opened in ranges:
                    opened.file.close()
                continue
            return info, ranges
        raise NetworkError(f"the object at {path} keeps changing; try again")

    def delete(self, account: str, order_id: str, path: str, if_match: str | None = None) -> bool:
        """Remove the object at ``path`` and give its space back; whether there was one.

        With ``if_match``, only an object with that etag (``*``: any) is removed.
        """
        raw = encode_path(path)
        with self._write() as db:
            self._order(db, account, order_id)
            old = db.execute(
                "SELECT size, files, etag FROM objects WHERE order_id = ? AND path = ?",
                (order_id, raw),
            ).fetchone()
            check_write_conditions(old, path, if_match=if_match)
            if old is None:
                return False
            db.execute("DELETE FROM objects WHERE order_id = ? AND path = ?", (order_id, raw))
            db.execute("UPDATE orders SET used = used - ? WHERE order_id = ?", (old[0], order_id))
            removed = [file_id for file_id, _ in json.loads(old[1])]
            self._drop_inline(db, removed)
            self._settle(db)
            self._pend(db, removed)
        self._remove(removed)
        return True

    def copy(
        self,
        account: str,
        src_order_id: str,
        src_path: str,
        dst_order_id: str,
        dst_path: str,
        replace: NewObject | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Copy an object between orders of ``account``, charged to the destination.

        With ``replace``, its content type, metadata and headers replace the source's; the
        copy has the source's tags unless ``tags`` are given.
        """
        src_raw, dst_raw = encode_path(src_path), encode_path(dst_path)
        for _ in range(_READ_ATTEMPTS):
            source, files, source_tags = self._lookup(account, src_order_id, src_raw)
            linked: list[str | bytes] = []
            reserved = self._reserve(sum(not f.startswith(_INLINE) for f, _ in files))
            names = iter(reserved)
            try:
                for file_id, _size in files:
                    linked.append(
                        self._link(file_id, "" if file_id.startswith(_INLINE) else next(names))
                    )
            except FileNotFoundError:
                self._remove(reserved)
                continue
            copied_sizes: Any = source.part_sizes
            info = ObjectInfo(
                order_id=dst_order_id,
                path=dst_path,
                size=source.size,
                etag=source.etag,
                last_modified=self._clock(),
                content_type=replace.content_type if replace else source.content_type,
                metadata=replace.metadata if replace else source.metadata,
                headers=replace.headers if replace else source.headers,
                checksums=source.checksums,
                checksum_type=source.checksum_type,
                part_sizes=copied_sizes,
                tag_count=len(source_tags if tags is None else tags),
            )
            new_files = [(new_id, size) for new_id, (_, size) in zip(linked, files, strict=True)]
            try:
                old = self._commit(
                    account, dst_raw, info, new_files, False, source_tags if tags is None else tags
                )
            except BaseException:
                self._remove(reserved)
                raise
            self._remove(old)
            return info
        raise NetworkError(f"the object at {src_path} keeps changing; try again")

    def get_tags(self, account: str, order_id: str, path: str) -> dict[str, str]:
        """Return the tags of the object at ``path``; raise ``NoSuchPath`` if there is none."""
        return self._lookup(account, order_id, encode_path(path))[2]

    def put_tags(self, account: str, order_id: str, path: str, tags: Mapping[str, str]) -> None:
        """Replace the tags of the object at ``path``; raise ``NoSuchPath`` if there is none."""
        raw = encode_path(path)
        with self._write() as db:
            self._order(db, account, order_id)
            changed = db.execute(
                "UPDATE objects SET tags = ? WHERE order_id = ? AND path = ?",
                (json_text(tags), order_id, raw),
            ).rowcount
        if not changed:
            raise NoSuchPath(f"no object at {path}")

    def list(
        self,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: int = 1000,
    ) -> ListPage:
        """List up to ``max_keys`` objects and common prefixes after ``marker``, in byte order.

        Paths under a common prefix are skipped with one range seek, so a page costs
        ``O(max_keys)`` index lookups whatever the size of the order.
        """
        with self._read() as db:
            self._order(db, account, order_id)
            return list_page(db, order_id, prefix, delimiter, marker, max_keys)

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
        with self._read() as db:
            referenced = {
                file_id
                for (files,) in db.execute("SELECT files FROM objects")
                for file_id, _ in json.loads(files)
            }
            referenced.update(file_id for (file_id,) in db.execute("SELECT file_id FROM parts"))
        orphans = [name for name in candidates if name not in referenced]
        self._remove(orphans)
        return len(orphans)
