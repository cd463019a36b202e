"""The embedded network's store: accounts, orders and objects in an index, plus files.

One directory holds the SQLite index (:mod:`lambgw.network.index`) and the object bytes
(:mod:`lambgw.network.objectfiles`).  An object is the concatenation of its segment files;
the spooled files of an upload are moved in as they are (a rename, not a copy).  Multipart
uploads (:mod:`lambgw.network.uploads`) keep each part in a file of its own, and a
completed upload's object is made of those files.  An overwrite writes new files, commits
the index row, then has the old files unlinked in the background, so a reader that opened
them keeps reading and the writer does not wait for their blocks to be freed.

A small object that arrives whole in memory (at most :data:`INLINE_SIZE` bytes) is kept in
the index itself, written in the transaction that commits its row: no file to create,
flush and later unlink, and its bytes are exactly as durable as the row that makes it
visible.

Several threads and several processes may use one store at once: each thread has its own
SQLite connection and every write is one ``BEGIN IMMEDIATE`` transaction that checks and
charges the order's capacity.  Each open store is an *owner* of the files it is moving in
or unlinking, so that a crashed process's files are removed at the next open
(:meth:`Store.reclaim`); :meth:`Store.sweep` walks every object file, and is run on demand
(``python -m lambgw store sweep``).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
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
from lambgw.network.index import Index, WouldWait, no_waiting
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
    list_columns,
    list_page,
    load_column,
    write_object_row,
)
from lambgw.network.objectfiles import INLINE_MARK, ObjectFiles, is_inline
from lambgw.network.wire import PageColumns

_ORDER_COLUMNS = "order_id, account, capacity, used, created, expires, status"

#: An object's row (all ``NULL`` if it is not there) in an order of the account: no row if
#: the order is not the account's.
_LOOKUP = (
    f"SELECT {', '.join('o.' + c for c in OBJECT_COLUMNS.split(', '))} FROM orders r"
    " LEFT JOIN objects o ON o.order_id = r.order_id AND o.path = ?"
    " WHERE r.order_id = ? AND r.account = ?"
)

#: An order of the account, and the size, files and etag of its object at a path (all
#: ``NULL`` if there is none): what a write checks, in one statement.
_ORDER_AND_OBJECT = (
    f"SELECT {', '.join('r.' + c for c in _ORDER_COLUMNS.split(', '))}, o.size, o.files, o.etag"
    " FROM orders r LEFT JOIN objects o ON o.order_id = r.order_id AND o.path = ?"
    " WHERE r.order_id = ? AND r.account = ?"
)

#: :data:`_LOOKUP`, and the bytes of an object the index holds as one piece (else NULL).
#: The ``files`` column is written by :func:`~lambgw.network.listing.write_object_row` as
#: ``[["=ID", SIZE]]`` for such an object: it is read as text, which costs a fraction of
#: SQLite's JSON functions (pieces are separated by ``],``; a file id holds no bracket).
_LOOKUP_HELD = _LOOKUP.replace(
    " FROM orders r",
    ", (SELECT s.data FROM small_files s"
    f" WHERE substr(o.files, 1, 4) = '[[\"{INLINE_MARK}' AND instr(o.files, '],') = 0"
    " AND s.id = CAST(substr(o.files, 5) AS INTEGER))"
    " FROM orders r",
    1,
)

#: The largest object kept in the index rather than in a file of its own.  No larger than
#: ``files.SMALL_READ``: such objects are always read whole, never streamed from a file.
INLINE_SIZE = 64 * 1024

#: How often a read retries when a concurrent overwrite removed the files it looked up.
_READ_ATTEMPTS = 5


def _pieces(
    info: ObjectInfo, files: Sequence[tuple[str, int]], first: int, last: int | None
) -> Iterator[tuple[str, int, int]]:
    """The files holding bytes ``first`` to ``last`` of an object: (file, offset, length)."""
    end = info.size if last is None else min(last + 1, info.size)
    start = 0
    for file_id, size in files:
        low, high = max(first, start), min(end, start + size)
        if low < high:
            yield file_id, low - start, high - low
        start += size


@frozen
class FileRange:
    """``length`` bytes of an open object file, from ``offset``."""

    file: IO[bytes]
    offset: int
    length: int


def _found(row: Sequence[Any] | None, raw: bytes, order_id: str) -> Sequence[Any]:
    """A row of :data:`_LOOKUP` (or :data:`_LOOKUP_HELD`), or the error of what is missing."""
    if row is None:
        raise NoSuchOrder(f"no such order: {order_id}")
    if row[0] is None:
        raise NoSuchPath(f"no object at {raw.decode('utf-8')}")
    return row


def held_inline(segments: Sequence[Segment], size: int) -> bool:
    """Whether an object of ``segments`` is kept in the index: small and whole in memory.

    Storing one touches no file, so it may share its transaction with others
    (:meth:`Store.put` inside :meth:`Index.group`).
    """
    return len(segments) == 1 and segments[0].data is not None and size <= INLINE_SIZE


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
        self._clock = clock
        os.makedirs(self._root, exist_ok=True)
        self._index = Index(self._root)
        self._files = ObjectFiles(self._root, self._index, durable)

    @property
    def root(self) -> str:
        """The directory of the store."""
        return self._root

    @property
    def index(self) -> Index:
        """The index, for the modules that keep tables of their own in it (uploads)."""
        return self._index

    @property
    def files(self) -> ObjectFiles:
        """The files of the index, for the modules that keep tables of their own in it."""
        return self._files

    def close(self) -> None:
        """Close the index connections of every thread and let go of the owner's lock.

        Waits for the files it is unlinking; files this store left pending are then removed
        by the next store opened.
        """
        self._files.close()
        self._index.close()

    def reclaim(self) -> int:
        """Remove the pending files of owners that are gone and no row refers to.

        Run at each open; returns how many files were removed.
        """
        return self._files.reclaim()

    def sweep(self, min_age: float = 3600.0) -> int:
        """Delete object files no row refers to, older than ``min_age`` seconds.

        Such files are left by a crash between moving files in and committing their row.
        Younger files may belong to a write in progress and are kept.  Returns how many
        files were deleted.
        """
        return self._files.sweep(min_age)

    # -- accounts and orders -----------------------------------------------------------

    def create_account(self, name: str) -> None:
        """Create the account ``name``; fails if it exists."""
        if not name:
            raise NetworkError("the account name is empty")
        with self._index.write() as db:
            if self._has_account(db, name):
                raise NetworkError(f"the account {name} already exists")
            db.execute("INSERT INTO accounts VALUES (?, ?)", (name, self._clock()))

    def has_account(self, name: str) -> bool:
        """Whether the account ``name`` exists."""
        return self._has_account(self._index.connection(), name)

    @staticmethod
    def _has_account(db: sqlite3.Connection, name: str) -> bool:
        row = db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone()
        return row is not None

    def buy_order(self, account: str, capacity: int, days: float) -> Order:
        """Buy a new order of ``capacity`` bytes for ``account``, valid ``days`` days."""
        with self._index.write() as db:
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
        with self._index.read() as db:
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
        return self._order(self._index.connection(), account, order_id)

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
        with self._index.write() as db:
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
        *,
        now: bool = False,
    ) -> ObjectInfo:
        """Store the object made of the spooled ``segments`` at ``path``, atomically.

        The conditions are checked in the transaction that writes the row (see
        :meth:`INetwork.put_object`).

        The segment files are moved in on success and deleted on failure.  A multipart
        object (an etag ending in ``-N``) records the segment sizes as its part sizes.

        With ``now``, an object held in memory is stored without waiting for other writers
        (:meth:`Index.write_now`): :class:`WouldWait` is raised where it would wait, and for
        an object that is not :func:`held_inline`.
        """
        if now and not held_inline(segments, new.size):
            raise WouldWait("only a small object in memory is stored without waiting")
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
            data = segments[0].data if held_inline(segments, new.size) else None
            if data is not None:
                pieces = [(data, new.size)]
            else:
                names = self._files.reserve(len(segments))
                for segment, file_id in zip(segments, names, strict=True):
                    reserved.append(file_id)
                    adopted.append(self._files.adopt(segment, file_id))
                # Segments written from memory were flushed as they were written.
                spooled = zip(adopted, segments, strict=True)
                self._files.flush([file_id for file_id, seg in spooled if seg.data is None])
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
            old = self._commit(account, raw, info, pieces, if_none_match, new.tags, if_match, now)
        except BaseException:
            self._files.remove(reserved)
            for segment in segments[len(adopted) :]:
                if segment.data is None:
                    with suppress(FileNotFoundError):
                        os.unlink(segment.path)
            raise
        self._files.discard(old)
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
        now: bool = False,
    ) -> list[str]:
        """Write the row of ``info`` and ``tags``, charge its order; return the replaced files.

        A piece given as bytes is kept in the index, in the same transaction.  With ``now``,
        without waiting for other writers (:meth:`Index.write_now`).
        """
        with self._index.write_now() if now else self._index.write() as db:
            row = db.execute(_ORDER_AND_OBJECT, (raw, info.order_id, account)).fetchone()
            if row is None:
                raise NoSuchOrder(f"no such order: {info.order_id}")
            order = _order_from_row(row)
            if order.expired(self._clock()):
                raise OrderExpired(f"the order {order.order_id} has expired")
            old = None if row[7] is None else row[7:]
            check_write_conditions(old, info.path, if_none_match, if_match)
            used = order.used - (old[0] if old else 0) + info.size
            if used > order.capacity:
                raise QuotaExceeded(
                    f"the order {order.order_id} has {order.free} bytes free,"
                    f" {info.size} are needed"
                )
            files = [
                (piece if isinstance(piece, str) else self._files.keep_inline(db, piece), size)
                for piece, size in pieces
            ]
            replaced = [file_id for file_id, _ in json.loads(old[1])] if old else []
            self._files.drop_inline(db, replaced)
            self._files.settle(db, [file_id for file_id, _ in files])
            self._files.pend(db, replaced)
            write_object_row(db, raw, info, files, tags)
            db.execute("UPDATE orders SET used = ? WHERE order_id = ?", (used, order.order_id))
        return replaced

    def _lookup(
        self, account: str, order_id: str, raw: bytes, db: sqlite3.Connection | None = None
    ) -> tuple[ObjectInfo, list[tuple[str, int]], dict[str, str]]:
        """The object at ``raw``, its files and its tags, read in one statement.

        One SELECT is a snapshot of its own: the order's check and the object's row need no
        transaction around them.  ``db``: the connection to read on (the thread's own).
        """
        db = db or self._index.connection()
        row = _found(db.execute(_LOOKUP, (raw, order_id, account)).fetchone(), raw, order_id)
        files = [(file_id, size) for file_id, size in json.loads(row[11])]
        return info_from_row(row), files, load_column(row[12])

    def head(self, account: str, order_id: str, path: str) -> ObjectInfo:
        """Return what is stored at ``path``; raise ``NoSuchPath`` if nothing is."""
        return self._lookup(account, order_id, encode_path(path))[0]

    def head_now(self, account: str, order_id: str, path: str) -> ObjectInfo:
        """:meth:`head` on the thread's connection that never waits for a lock.

        Raises :class:`WouldWait` where :meth:`head` would wait.
        """
        with no_waiting():
            return self._lookup(account, order_id, encode_path(path), self._index.nowait())[0]

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
            ranges: list[FileRange] = []
            try:
                for file_id, offset, length in _pieces(info, files, first, last):
                    ranges.append(FileRange(self._files.open(file_id), offset, length))
            except FileNotFoundError:
                for opened in ranges:
                    opened.file.close()
                continue
            return info, ranges
        raise NetworkError(f"the object at {path} keeps changing; try again")

    def read_held_now(
        self, account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        """The object at ``path`` and its bytes ``first`` to ``last``, if the index holds them.

        Reads on the thread's connection that never waits for a lock, and opens no file:
        raises :class:`WouldWait` where it would wait, or when bytes are in a file.
        """
        raw = encode_path(path)
        with no_waiting():
            db = self._index.nowait()
            for _ in range(_READ_ATTEMPTS):
                row = _found(
                    db.execute(_LOOKUP_HELD, (raw, order_id, account)).fetchone(), raw, order_id
                )
                info = info_from_row(row)
                held: bytes | None = row[-1]
                if held is not None:
                    # One piece, read in the same statement (a snapshot of its own).
                    end = info.size if last is None else min(last + 1, info.size)
                    if len(held) < end:
                        raise OSError(f"held bytes are shorter than recorded ({len(held)} bytes)")
                    return info, held[first:end]
                files = [(file_id, size) for file_id, size in json.loads(row[11])]
                if not all(is_inline(file_id) for file_id, _ in files):
                    raise WouldWait(f"the object at {path} is in files")
                data: list[bytes] = []
                for file_id, offset, length in _pieces(info, files, first, last):
                    held = ObjectFiles.inline_data(db, file_id)
                    if held is None:
                        break
                    if len(held) < offset + length:
                        raise OSError(f"held bytes are shorter than recorded ({len(held)} bytes)")
                    data.append(held[offset : offset + length])
                else:
                    return info, b"".join(data)
        raise NetworkError(f"the object at {path} keeps changing; try again")

    def delete(self, account: str, order_id: str, path: str, if_match: str | None = None) -> bool:
        """Remove the object at ``path`` and give its space back; whether there was one.

        With ``if_match``, only an object with that etag (``*``: any) is removed.
        """
        raw = encode_path(path)
        with self._index.write() as db:
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
            self._files.drop_inline(db, removed)
            self._files.settle(db)
            self._files.pend(db, removed)
        self._files.discard(removed)
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
            reserved = self._files.reserve(sum(not is_inline(f) for f, _ in files))
            names = iter(reserved)
            try:
                for file_id, _size in files:
                    linked.append(
                        self._files.link(file_id, "" if is_inline(file_id) else next(names))
                    )
            except FileNotFoundError:
                self._files.remove(reserved)
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
                self._files.remove(reserved)
                raise
            self._files.discard(old)
            return info
        raise NetworkError(f"the object at {src_path} keeps changing; try again")

    def get_tags(self, account: str, order_id: str, path: str) -> dict[str, str]:
        """Return the tags of the object at ``path``; raise ``NoSuchPath`` if there is none."""
        return self._lookup(account, order_id, encode_path(path))[2]

    def put_tags(self, account: str, order_id: str, path: str, tags: Mapping[str, str]) -> None:
        """Replace the tags of the object at ``path``; raise ``NoSuchPath`` if there is none."""
        raw = encode_path(path)
        with self._index.write() as db:
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
        with self._index.read() as db:
            self._order(db, account, order_id)
            return list_page(db, order_id, prefix, delimiter, marker, max_keys)

    def list_columns(
        self,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: int = 1000,
    ) -> PageColumns:
        """The page :meth:`list` lists, its objects as the JSON arrays a node sends."""
        with self._index.read() as db:
            self._order(db, account, order_id)
            return list_columns(db, order_id, prefix, delimiter, marker, max_keys)
