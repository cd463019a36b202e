"""Multipart uploads in the store: parts kept as object files, completed by reference.

An upload is a row of the ``uploads`` table; each part is a row of ``parts`` naming an
object file of its own, moved in from the spool like an object's (a rename).  A part is
charged to the order in the transaction that records it; a re-sent part number replaces
the older part and gives its space back.  Completion is one transaction that writes the
object's row with the chosen parts' files as its files, drops the parts' rows, and marks
the upload completed: no byte is copied or read, and the parts' charge becomes the
object's (the parts left out, and an object replaced, are given back).  The completed
upload's row stays, with the part list it was completed with and the object it made, so
that a repeated completion answers the same; :meth:`StoredUploads.expire` removes
abandoned uploads and old completion records after the expiry age.

Every method is synchronous (called from a thread pool) and safe in several threads and
processes, like the :class:`~lambgw.network.store.Store` it works in.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

from lambgw.network import wire
from lambgw.network.completion import (
    DEFAULT_UPLOAD_EXPIRY,
    MAX_PART_NUMBER,
    UPLOAD_ID,
    bare_etag,
    choose_parts,
    final_checksum,
    final_etag,
    new_upload_id,
    page_uploads,
)
from lambgw.network.errors import (
    BadDigest,
    NetworkError,
    NoSuchUpload,
    OrderExpired,
    QuotaExceeded,
    UploadExists,
)
from lambgw.network.interface import (
    CompletedPart,
    MultipartUpload,
    NewObject,
    ObjectInfo,
    PartInfo,
    PartsPage,
    Segment,
    UploadsPage,
)
from lambgw.network.listing import write_object_row
from lambgw.network.store import Store, check_write_conditions, encode_path

_UPLOAD_COLUMNS = (
    "u.upload_id, u.order_id, u.path, u.created, u.last_active, u.described,"
    " COUNT(p.number), COALESCE(SUM(p.size), 0)"
)
_PART_COLUMNS = "number, size, etag, last_modified, checksums, file_id"


def _no_such_upload(upload_id: str) -> NoSuchUpload:
    return NoSuchUpload(f"no open upload {upload_id} of that path")


def _upload_from_row(row: Sequence[Any]) -> MultipartUpload:
    described = json.loads(row[5])
    return MultipartUpload(
        upload_id=row[0],
        order_id=row[1],
        path=bytes(row[2]).decode("utf-8"),
        created=row[3],
        last_active=row[4],
        content_type=described["content_type"],
        metadata=described["metadata"],
        headers=described["headers"],
        checksum_algorithm=described["checksum_algorithm"],
        checksum_type=described["checksum_type"],
        parts=row[6],
        size=row[7],
    )


def _part_from_row(row: Sequence[Any]) -> PartInfo:
    return PartInfo(row[0], row[1], row[2], row[3], json.loads(row[4]))


def _named(parts: Sequence[CompletedPart]) -> list[list[Any]]:
    """The part list of a completion as recorded: numbers and bare ETags."""
    return [[p.number, bare_etag(p.etag)] for p in parts]


class StoredUploads:
    """The multipart uploads of a :class:`Store`; uploads idle ``expiry`` seconds expire."""

    def __init__(self, store: Store, expiry: float = DEFAULT_UPLOAD_EXPIRY) -> None:
        """Keep uploads in ``store``."""
        self._store = store
        self.expiry = expiry

    def _open_upload(
        self, db: sqlite3.Connection, account: str, order_id: str, raw: bytes, upload_id: str
    ) -> tuple[Any, ...]:
        """The row of an open upload of ``raw`` in the account's order, or ``NoSuchUpload``."""
        self._store._order(db, account, order_id)
        row = db.execute(
            "SELECT upload_id, created, described, completed FROM uploads"
            " WHERE upload_id = ? AND order_id = ? AND path = ?",
            (upload_id, order_id, raw),
        ).fetchone()
        if row is None or row[3] is not None:
            raise _no_such_upload(upload_id)
        return tuple(row)

    def create(
        self,
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        checksum_algorithm: str = "",
        upload_id: str = "",
    ) -> MultipartUpload:
        """Open an upload to ``path`` (under ``upload_id`` if given, else a new random id)."""
        raw = encode_path(path)
        if upload_id and not UPLOAD_ID.fullmatch(upload_id):
            raise NetworkError(f"{upload_id!r} is not a valid upload id")
        now = self._store._clock()
        upload = MultipartUpload(
            upload_id=upload_id or new_upload_id(),
            order_id=order_id,
            path=path,
            created=now,
            last_active=now,
            content_type=described.content_type,
            metadata=described.metadata,
            headers=described.headers,
            checksum_algorithm=checksum_algorithm,
            checksum_type=described.checksum_type if checksum_algorithm else "",
        )
        description = {
            "content_type": upload.content_type,
            "metadata": dict(upload.metadata),
            "headers": dict(upload.headers),
            "checksum_algorithm": upload.checksum_algorithm,
            "checksum_type": upload.checksum_type,
            "tags": dict(described.tags),
        }
        with self._store.index.write() as db:
            order = self._store._order(db, account, order_id)
            if order.expired(now):
                raise OrderExpired(f"the order {order_id} has expired")
            try:
                db.execute(
                    "INSERT INTO uploads (upload_id, order_id, path, created, last_active,"
                    " described) VALUES (?, ?, ?, ?, ?, ?)",
                    (upload.upload_id, order_id, raw, now, now, json.dumps(description)),
                )
            except sqlite3.IntegrityError:
                raise UploadExists(f"the upload {upload.upload_id} exists") from None
        return upload

    def upload_part(
        self,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        number: int,
        segment: Segment,
        etag: str,
        checksums: Mapping[str, str],
    ) -> PartInfo:
        """Store the spooled ``segment`` as part ``number`` (moved in, or deleted on failure)."""
        store = self._store
        adopted = reserved = ""
        try:
            raw = encode_path(path)
            if not 1 <= number <= MAX_PART_NUMBER:
                raise NetworkError(f"part number {number} is not from 1 to {MAX_PART_NUMBER}")
            held = len(segment.data) if segment.data is not None else os.stat(segment.path).st_size
            if held != segment.size:
                raise NetworkError(f"the spooled part holds {held} bytes, not {segment.size}")
            (reserved,) = store.files.reserve(1)
            adopted = store.files.adopt(segment, reserved)
            if segment.data is None:
                store.files.flush([adopted])
            now = store._clock()
            part = PartInfo(number, segment.size, bare_etag(etag), now, checksums)
            with store.index.write() as db:
                self._open_upload(db, account, order_id, raw, upload_id)
                order = store._order(db, account, order_id)
                if order.expired(now):
                    raise OrderExpired(f"the order {order_id} has expired")
                old = db.execute(
                    "SELECT size, file_id FROM parts WHERE upload_id = ? AND number = ?",
                    (upload_id, number),
                ).fetchone()
                used = order.used - (old[0] if old else 0) + part.size
                if used > order.capacity:
                    raise QuotaExceeded(
                        f"the order {order_id} has {order.free} bytes free, {part.size} are needed"
                    )
                store.files.settle(db, [adopted])
                if old is not None:
                    store.files.pend(db, [old[1]])
                db.execute(
                    f"INSERT OR REPLACE INTO parts ({_PART_COLUMNS}, upload_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (number, part.size, part.etag, now, json.dumps(dict(checksums)), adopted,
                     upload_id),
                )  # fmt: skip
                db.execute("UPDATE orders SET used = ? WHERE order_id = ?", (used, order_id))
                db.execute(
                    "UPDATE uploads SET last_active = ? WHERE upload_id = ?", (now, upload_id)
                )
        except BaseException:
            if reserved:
                store.files.remove([reserved])
            if not adopted and segment.data is None and segment.path:
                with suppress(FileNotFoundError):
                    os.unlink(segment.path)
            raise
        if old is not None:
            store.files.discard([old[1]])
        return part

    def list_uploads(
        self,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> UploadsPage:
        """A page of the order's open uploads, as S3 lists them."""
        with self._store.index.read() as db:
            self._store._order(db, account, order_id)
            rows = db.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads u LEFT JOIN parts p"
                " ON p.upload_id = u.upload_id WHERE u.order_id = ? AND u.path >= ?"
                " AND u.completed IS NULL GROUP BY u.upload_id",
                (order_id, encode_path(prefix) if prefix else b""),
            ).fetchall()
        uploads = [_upload_from_row(row) for row in rows]
        return page_uploads(uploads, prefix, delimiter, key_marker, upload_id_marker, max_uploads)

    def list_parts(
        self,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        marker: int = 0,
        max_parts: int = 1000,
    ) -> PartsPage:
        """The open upload and up to ``max_parts`` of its parts numbered above ``marker``."""
        raw = encode_path(path)
        with self._store.index.read() as db:
            self._open_upload(db, account, order_id, raw, upload_id)
            (row,) = db.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads u LEFT JOIN parts p"
                " ON p.upload_id = u.upload_id WHERE u.upload_id = ? GROUP BY u.upload_id",
                (upload_id,),
            ).fetchall()
            rows = db.execute(
                f"SELECT {_PART_COLUMNS} FROM parts WHERE upload_id = ? AND number > ?"
                " ORDER BY number LIMIT ?",
                (upload_id, marker, max_parts + 1),
            ).fetchall()
        parts = [_part_from_row(r) for r in rows[:max_parts]]
        return PartsPage(
            _upload_from_row(row),
            parts,
            len(rows) > max_parts,
            parts[-1].number if parts else marker,
        )

    def abort(self, account: str, order_id: str, path: str, upload_id: str) -> None:
        """Remove the open upload and its parts, giving their space back."""
        raw = encode_path(path)
        with self._store.index.write() as db:
            self._open_upload(db, account, order_id, raw, upload_id)
            files = self._drop(db, [upload_id])
            self._store.files.settle(db)
            self._store.files.pend(db, files)
        self._store.files.discard(files)

    @staticmethod
    def _drop(db: sqlite3.Connection, upload_ids: Sequence[str]) -> list[str]:
        """Delete uploads and their parts, uncharging their orders; return the part files."""
        files = []
        for upload_id in upload_ids:
            row = db.execute(
                "SELECT order_id FROM uploads WHERE upload_id = ?", (upload_id,)
            ).fetchone()
            held = db.execute(
                "SELECT file_id, size FROM parts WHERE upload_id = ?", (upload_id,)
            ).fetchall()
            db.execute(
                "UPDATE orders SET used = MAX(0, used - ?) WHERE order_id = ?",
                (sum(size for _, size in held), row[0]),
            )
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            files += [file_id for file_id, _ in held]
        return files

    def complete(
        self,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        checksums: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Make the object at ``path`` of the named parts' files, in one transaction.

        ``if_none_match`` and ``if_match`` are the write's conditions on the object there now
        (a repeated completion answers as the first, whatever stands there since).
        """
        store = self._store
        raw = encode_path(path)
        named = _named(parts)
        with store.index.write() as db:
            order = store._order(db, account, order_id)
            row = db.execute(
                "SELECT described, completed FROM uploads"
                " WHERE upload_id = ? AND order_id = ? AND path = ?",
                (upload_id, order_id, raw),
            ).fetchone()
            if row is None:
                raise _no_such_upload(upload_id)
            if row[1] is not None:
                done = json.loads(row[1])
                if done["parts"] != named:
                    raise NoSuchUpload(
                        f"the upload {upload_id} was completed with another list of parts"
                    )
                return wire.info_from_json(done["object"])
            now = store._clock()
            if order.expired(now):
                raise OrderExpired(f"the order {order_id} has expired")
            stored = {
                r[0]: (_part_from_row(r), r[5])
                for r in db.execute(
                    f"SELECT {_PART_COLUMNS} FROM parts WHERE upload_id = ?", (upload_id,)
                )
            }
            chosen = choose_parts(parts, {n: p for n, (p, _) in stored.items()})
            described = json.loads(row[0])
            algorithm = described["checksum_algorithm"]
            checksum = final_checksum(algorithm, described["checksum_type"], chosen)
            given = (checksums or {}).get(algorithm)
            full = described["checksum_type"] == "FULL_OBJECT"
            if full and given is not None and checksum is not None and given != checksum:
                raise BadDigest(
                    f"The {algorithm.upper()} you specified did not match the calculated checksum."
                )
            tags = described.get("tags", {})
            sizes: Any = tuple(p.size for p in chosen)
            info = ObjectInfo(
                order_id=order_id,
                path=path,
                size=sum(sizes),
                etag=final_etag(chosen),
                last_modified=now,
                content_type=described["content_type"],
                metadata=described["metadata"],
                headers=described["headers"],
                checksums={algorithm: checksum} if checksum else {},
                checksum_type=described["checksum_type"] if checksum else "",
                part_sizes=sizes,
                tag_count=len(tags),
            )
            old = db.execute(
                "SELECT size, files, etag FROM objects WHERE order_id = ? AND path = ?",
                (order_id, raw),
            ).fetchone()
            check_write_conditions(old, path, if_none_match, if_match)
            numbers = {p.number for p in chosen}
            left_out = [(p.size, f) for n, (p, f) in stored.items() if n not in numbers]
            replaced = [file_id for file_id, _ in json.loads(old[1])] if old else []
            store.files.drop_inline(db, replaced)
            store.files.settle(db)
            store.files.pend(db, replaced + [file_id for _, file_id in left_out])
            write_object_row(db, raw, info, [(stored[p.number][1], p.size) for p in chosen], tags)
            freed = (old[0] if old else 0) + sum(size for size, _ in left_out)
            db.execute(
                "UPDATE orders SET used = MAX(0, used - ?) WHERE order_id = ?", (freed, order_id)
            )
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            record = {"parts": named, "object": wire.info_to_json(info)}
            db.execute(
                "UPDATE uploads SET completed = ?, last_active = ? WHERE upload_id = ?",
                (json.dumps(record), now, upload_id),
            )
        store.files.discard(replaced + [file_id for _, file_id in left_out])
        return info

    def expire(self, max_age: float | None = None) -> int:
        """Abort uploads idle for ``max_age`` seconds (the expiry by default).

        Completion records that old are forgotten too.  Returns how many uploads were
        aborted.
        """
        cutoff = self._store._clock() - (self.expiry if max_age is None else max_age)
        with self._store.index.write() as db:
            idle = [
                upload_id
                for (upload_id,) in db.execute(
                    "SELECT upload_id FROM uploads WHERE last_active < ? AND completed IS NULL",
                    (cutoff,),
                )
            ]
            files = self._drop(db, idle)
            self._store.files.settle(db)
            self._store.files.pend(db, files)
            db.execute(
                "DELETE FROM uploads WHERE last_active < ? AND completed IS NOT NULL", (cutoff,)
            )
        self._store.files.discard(files)
        return len(idle)
