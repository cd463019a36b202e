"""The SQLite index of a store: its schema, and one connection per thread.

The index is ``index.sqlite3`` in the store's directory, in WAL mode with a busy timeout, so
that several threads and several processes use it at once.  Each thread has its own
connection; every write is one ``BEGIN IMMEDIATE`` transaction (:meth:`Index.write`), and
a read sees one snapshot (:meth:`Index.read`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The file of a store's index: a directory without it holds no store.
INDEX_FILE = "index.sqlite3"

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


class Index:
    """The index of the store in ``root``, created and brought up to date if needed."""

    def __init__(self, root: str) -> None:
        """Open (creating if needed) the index in the directory ``root``."""
        self._path = os.path.join(root, INDEX_FILE)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
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
            db = sqlite3.connect(
                self._path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed unless the block raises."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: the block sees one snapshot of the index."""
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
        for db in connections:
            db.close()
        self._local = threading.local()
