"""Rows of the store's object index (read and written), and the listing of an order in pages.

Paths are BLOBs of UTF-8 in the index, so SQL order is byte order.  A listing walks the
primary key ``(order_id, path)`` from the marker on; with a delimiter, everything under a
common prefix is skipped with one range seek (the next query starts at the byte successor
of the prefix), so a page costs ``O(max_keys)`` index lookups whatever the order's size.
A run of common prefixes one after another (the top of a tree) is one statement that seeks
from each to the next inside SQLite.
A listing reads only the columns of a :class:`ListedObject`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from lambgw.network.errors import InvalidPath
from lambgw.network.interface import ListedObject, ListPage, ObjectInfo
from lambgw.network.wire import PageColumns

#: The columns of the ``objects`` table, in the order :func:`info_from_row` reads them.
OBJECT_COLUMNS = (
    "order_id, path, size, etag, last_modified, content_type, metadata, headers,"
    " checksums, checksum_type, part_sizes, files, tags"
)

#: The columns a listing reads, in the order of :class:`ListedObject`'s fields.
LISTED_COLUMNS = "path, size, etag, last_modified"

#: :func:`~lambgw.network.interface.millis` of the ``last_modified`` column, in SQL: the
#: same IEEE operations, so SQLite and Python round every time to the same millisecond.
MILLIS_SQL = "CAST(last_modified * 1000 + 0.5 AS INTEGER)"

_Entries = list[tuple[bytes, ListedObject | None]]


def load_column(text: str) -> Any:
    """Decode a JSON column; most are empty, and those need no parsing."""
    if text == "{}":
        return {}
    if text == "[]":
        return ()
    return json.loads(text)


def info_from_row(row: Sequence[Any]) -> ObjectInfo:
    """Return the object described by a row of :data:`OBJECT_COLUMNS`."""
    return ObjectInfo(
        order_id=row[0],
        path=bytes(row[1]).decode("utf-8"),
        size=row[2],
        etag=row[3],
        last_modified=row[4],
        content_type=row[5],
        metadata=load_column(row[6]),
        headers=load_column(row[7]),
        checksums=load_column(row[8]),
        checksum_type=row[9],
        part_sizes=load_column(row[10]),
        tag_count=len(load_column(row[12])),
    )


def json_text(value: Mapping[str, str] | Sequence[Any]) -> str:
    """A map or list as the JSON text of an index column (keys sorted, so rows compare)."""
    if not value:
        return "{}" if isinstance(value, Mapping) else "[]"
    return json.dumps(dict(value) if isinstance(value, Mapping) else list(value), sort_keys=True)


def write_object_row(
    db: sqlite3.Connection,
    raw: bytes,
    info: ObjectInfo,
    files: Sequence[tuple[str, int]],
    tags: Mapping[str, str],
) -> None:
    """Insert (or replace) the index row of the object ``info``, made of ``files``."""
    db.execute(
        f"INSERT OR REPLACE INTO objects ({OBJECT_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            info.order_id,
            raw,
            info.size,
            info.etag,
            info.last_modified,
            info.content_type,
            json_text(info.metadata),
            json_text(info.headers),
            json_text(info.checksums),
            info.checksum_type,
            json_text(info.part_sizes),
            json.dumps(list(files)),
            json_text(tags),
        ),
    )


def byte_successor(prefix: bytes) -> bytes | None:
    """Return the smallest byte string above every string that starts with ``prefix``.

    ``None`` if there is none (the prefix is empty or all ``0xff``).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath("the prefix, delimiter or marker is not valid UTF-8") from None


def _start(prefix: str, delimiter: str, marker: str) -> tuple[bytes, bytes, bytes | None, bool]:
    """The encoded prefix and delimiter, and where a listing after ``marker`` starts.

    Returns ``(prefix, delimiter, low, inclusive)``: the first path listed is ``low`` or the
    first above it; ``low`` is ``None`` when nothing can follow the marker.
    """
    start, delim, after = _encode(prefix), _encode(delimiter), _encode(marker)
    low: bytes | None = start
    inclusive = True
    if after and after >= start:
        low, inclusive = after, False
        cut = after.find(delim, len(start)) if delim and after.startswith(start) else -1
        if cut >= 0:
            low, inclusive = byte_successor(after[: cut + len(delim)]), True
    return start, delim, low, inclusive


def list_page(
    db: sqlite3.Connection,
    order_id: str,
    prefix: str,
    delimiter: str,
    marker: str,
    max_keys: int,
) -> ListPage:
    """List up to ``max_keys`` objects and common prefixes after ``marker``, in byte order.

    An entry (a path, or the common prefix that rolls it up) is listed if it is above
    ``marker``; so a marker that is a common prefix skips every path under it.
    """
    start, delim, low, inclusive = _start(prefix, delimiter, marker)
    upper = byte_successor(start)
    entries: _Entries = []
    wanted = max(0, max_keys) + 1
    while low is not None and len(entries) < wanted:
        low, inclusive, more = _scan(
            db, order_id, start, delim, upper, low, inclusive, wanted, entries
        )
        if not more:
            break
    truncated = len(entries) >= wanted
    del entries[wanted - 1 :]
    return ListPage(
        objects=[info for _, info in entries if info is not None],
        common_prefixes=[key.decode("utf-8") for key, info in entries if info is None],
        is_truncated=truncated,
        next_marker=entries[-1][0].decode("utf-8") if entries else None,
    )


def list_columns(
    db: sqlite3.Connection,
    order_id: str,
    prefix: str,
    delimiter: str,
    marker: str,
    max_keys: int,
) -> PageColumns:
    """The page :func:`list_page` lists, with its objects as JSON arrays, one per field.

    Without a delimiter SQLite writes the arrays itself, in one query: no listed object
    becomes a Python object on its way to the wire.  With one, the page is listed as usual
    and its columns encoded.
    """
    start, _, low, inclusive = _start(prefix, delimiter, marker)
    if delimiter or max_keys <= 0 or low is None:
        return PageColumns.of(list_page(db, order_id, prefix, delimiter, marker, max_keys))
    upper = byte_successor(start)
    within = "" if upper is None else " AND path < ?"
    bound = [] if upper is None else [upper]
    paths, sizes, etags, millis, count, last = db.execute(
        "SELECT json_group_array(CAST(path AS TEXT)), json_group_array(size),"
        f" json_group_array(etag), json_group_array({MILLIS_SQL}), count(*), max(path)"
        f" FROM (SELECT {LISTED_COLUMNS} FROM objects WHERE order_id = ?"
        f" AND path {'>=' if inclusive else '>'} ?{within} ORDER BY path LIMIT ?)",
        [order_id, low, *bound, max_keys],
    ).fetchone()
    more = (
        count == max_keys
        and db.execute(
            f"SELECT 1 FROM objects WHERE order_id = ? AND path > ?{within} LIMIT 1",
            [order_id, last, *bound],
        ).fetchone()
    )
    return PageColumns(
        paths=paths,
        sizes=sizes,
        etags=etags,
        millis=millis,
        common_prefixes=[],
        is_truncated=bool(more),
        next_marker=None if last is None else bytes(last).decode("utf-8"),
    )


def _scan(
    db: sqlite3.Connection,
    order_id: str,
    start: bytes,
    delim: bytes,
    upper: bytes | None,
    low: bytes,
    inclusive: bool,
    wanted: int,
    entries: _Entries,
) -> tuple[bytes | None, bool, bool]:
    """Append entries from ``low`` on, until a common prefix, ``wanted`` or the end.

    Returns where to go on and whether there may be more.
    """
    query = (
        f"SELECT {LISTED_COLUMNS} FROM objects WHERE order_id = ?"
        f" AND path {'>=' if inclusive else '>'} ?"
    )
    args: list[Any] = [order_id, low]
    if upper is not None:
        query += " AND path < ?"
        args.append(upper)
    limit = wanted - len(entries)
    cursor = db.execute(query + " ORDER BY path LIMIT ?", [*args, limit])
    try:
        seen = 0
        for row in cursor:
            seen += 1
            key = row[0]
            cut = key.find(delim, len(start)) if delim else -1
            if cut >= 0:
                common = key[: cut + len(delim)]
                entries.append((common, None))
                if seen == 1:
                    # A common prefix right where the scan began: likely one of a run.
                    return _hop(db, order_id, start, delim, upper, common, wanted, entries)
                return byte_successor(common), True, True
            entries.append((key, ListedObject(key.decode("utf-8"), row[1], row[2], row[3])))
            low, inclusive = key, False
    finally:
        cursor.close()
    return low, inclusive, seen == limit


#: The paths that follow the common prefix ``?1`` one after the other, each the first path
#: after the last one's common prefix, for as long as each has one (a path without one, or
#: ``NULL`` at the end, comes last); at most ``?5`` of them.  ``?2`` is the order, ``?3`` the
#: length of the listing's prefix, ``?4`` the delimiter (as BLOBs, lengths are in bytes).
#: Paths are UTF-8 (:func:`~lambgw.network.store.encode_path`), which has no byte 0xFF, so the
#: paths under a common prefix sort below it followed by 0xFF, and the paths after them above.
_HOP = """
WITH RECURSIVE hop(path) AS (
  SELECT ?1
  UNION ALL
  SELECT (
    SELECT o.path FROM objects AS o WHERE o.order_id = ?2
    AND o.path > CAST(
      substr(hop.path, 1, ?3 + instr(substr(hop.path, ?3 + 1), ?4) + length(?4) - 1) || x'ff'
      AS BLOB
    ){within}
    ORDER BY o.path LIMIT 1
  )
  FROM hop
  WHERE instr(substr(hop.path, ?3 + 1), ?4) > 0
  LIMIT ?5 + 1
)
SELECT path FROM hop LIMIT -1 OFFSET 1
"""
_HOPS = (_HOP.format(within=""), _HOP.format(within=" AND o.path < ?6"))


def _hop(
    db: sqlite3.Connection,
    order_id: str,
    start: bytes,
    delim: bytes,
    upper: bytes | None,
    common: bytes,
    wanted: int,
    entries: _Entries,
) -> tuple[bytes | None, bool, bool]:
    """Append the common prefixes that follow ``common`` one after another, in one statement.

    A run of common prefixes (``aws s3 ls`` of a tree's top) costs one seek each inside
    SQLite, not a statement each.  Returns where the scan goes on, as :func:`_scan` does:
    at the first path that is not under a common prefix, or nowhere at the end.
    """
    limit = wanted - len(entries)
    if limit <= 0:
        return byte_successor(common), True, True
    args: list[Any] = [common, order_id, len(start), delim, limit]
    if upper is not None:
        args.append(upper)
    rows = db.execute(_HOPS[upper is not None], args).fetchall()
    for (key,) in rows:
        if key is None:
            return None, True, False
        cut = key.find(delim, len(start))
        if cut < 0:
            return key, True, True
        common = key[: cut + len(delim)]
        entries.append((common, None))
    return byte_successor(common), True, True
