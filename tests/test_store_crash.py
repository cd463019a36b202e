"""A store opened after a crash removes the object files the dead process left pending."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.interface import CompletedPart, NewObject, Segment
from lambgw.network.objectfiles import OWNERS_DIR
from lambgw.network.store import Store
from lambgw.network.uploads import StoredUploads
from tests.test_store import Clock


class Killed(BaseException):
    """The process was killed here (``kill -9``): nothing after runs."""


def md5(data: bytes) -> str:
    """The hex MD5 of ``data``."""
    return hashlib.md5(data).hexdigest()


class CrashTests(SynchronousTestCase):
    """Each point where a killed process leaves an object file that no row refers to."""

    def setUp(self) -> None:
        base = self.mktemp()
        self.spool = os.path.join(base, "spool")
        os.makedirs(self.spool)
        self.root = os.path.join(base, "net")
        self.clock = Clock()
        self.store = self.open()
        self.order = self.store.ensure_account("demo", 1 << 20, 30)[0].order_id
        self.counter = 0

    def open(self) -> Store:
        """Open a store (a process starting) on the directory."""
        store = Store(self.root, clock=self.clock, durable=False)
        self.addCleanup(store.close)
        return store

    def kill(self, store: Store) -> None:
        """End ``store`` as ``kill -9`` would: its lock goes, nothing is cleaned up."""
        assert store.files._owner_fd is not None
        os.close(store.files._owner_fd)
        store.files._owner_fd = None
        store.close()

    def freeze(self, store: Store) -> None:
        """Make ``store`` unlink nothing from now on, as if killed before each unlink."""
        store.files.remove = lambda file_ids: None  # type: ignore[method-assign]
        store.files.discard = lambda file_ids: None  # type: ignore[method-assign]

    def die_after(self, store: Store, name: str) -> None:
        """Make the method ``name`` of ``store``'s files do its work, then the process die."""
        original: Callable[..., Any] = getattr(store.files, name)

        def dying(*args: Any) -> Any:
            original(*args)
            raise Killed()

        setattr(store.files, name, dying)
        self.freeze(store)

    def segment(self, data: bytes) -> Segment:
        """Spool ``data`` into a new file."""
        self.counter += 1
        path = os.path.join(self.spool, f"part{self.counter}")
        with open(path, "wb") as f:
            f.write(data)
        return Segment(path, len(data))

    def put(self, store: Store, path: str, data: bytes) -> None:
        """Store ``data`` (spooled, so kept in a file) at ``path``."""
        store.put("demo", self.order, path, [self.segment(data)], NewObject(len(data), md5(data)))

    def read(self, store: Store, path: str) -> bytes:
        """The bytes of the object at ``path``."""
        _, ranges = store.open_range("demo", self.order, path)
        out = b""
        for r in ranges:
            r.file.seek(r.offset)
            out += r.file.read(r.length)
            r.file.close()
        return out

    def object_files(self) -> list[str]:
        """Every file under ``objects/``, once the files the store discarded are gone."""
        self.store.files.drain()
        root = os.path.join(self.root, "objects")
        return sorted(n for _, _, names in os.walk(root) for n in names)

    def referenced(self) -> list[str]:
        """Every file id the rows refer to."""
        db = sqlite3.connect(os.path.join(self.root, "index.sqlite3"))
        try:
            files = [
                f for (row,) in db.execute("SELECT files FROM objects") for f in row_file_ids(row)
            ]
            files += [f for (f,) in db.execute("SELECT file_id FROM parts")]
            pending = db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        finally:
            db.close()
        self.pending = pending
        return sorted(files)

    def assertClean(self) -> None:
        """Only referenced files are left, and no pending row or dead owner."""
        self.assertEqual(self.object_files(), self.referenced())
        self.assertEqual(self.pending, 0)

    def test_killed_after_moving_in(self) -> None:
        """A file moved in but never committed is removed at the next open."""
        self.put(self.store, "keep", b"kept")
        self.die_after(self.store, "adopt")
        self.assertRaises(Killed, self.put, self.store, "a", b"lost")
        self.assertEqual(len(self.object_files()), 2)
        self.kill(self.store)
        fresh = self.open()
        self.assertClean()
        self.assertEqual(len(self.object_files()), 1)
        self.assertEqual(self.read(fresh, "keep"), b"kept")
        self.assertEqual(os.listdir(os.path.join(self.root, OWNERS_DIR)), [fresh.files.owner])

    def test_killed_before_unlinking_overwritten(self) -> None:
        """The files an overwrite replaced, left by a kill before unlinking, are removed."""
        self.put(self.store, "a", b"old")
        self.freeze(self.store)
        self.put(self.store, "a", b"new")
        self.assertEqual(len(self.object_files()), 2)
        self.kill(self.store)
        fresh = self.open()
        self.assertClean()
        self.assertEqual(len(self.object_files()), 1)
        self.assertEqual(self.read(fresh, "a"), b"new")

    def test_killed_before_unlinking_deleted(self) -> None:
        """The files of a deleted object, left by a kill before unlinking, are removed."""
        self.put(self.store, "a", b"old")
        self.freeze(self.store)
        self.assertTrue(self.store.delete("demo", self.order, "a"))
        self.kill(self.store)
        self.open()
        self.assertClean()
        self.assertEqual(self.object_files(), [])

    def test_killed_after_linking_copy(self) -> None:
        """A copy's linked file never committed is removed; the source stays whole."""
        self.put(self.store, "a", b"source")
        self.die_after(self.store, "link")
        self.assertRaises(Killed, self.store.copy, "demo", self.order, "a", self.order, "b")
        self.assertEqual(len(self.object_files()), 2)
        self.kill(self.store)
        fresh = self.open()
        self.assertClean()
        self.assertEqual(self.read(fresh, "a"), b"source")

    def test_killed_in_multipart(self) -> None:
        """Parts moved in, replaced or left out of a completion, then killed: all removed."""
        uploads = StoredUploads(self.store)
        upload = uploads.create("demo", self.order, "m", NewObject(0, "")).upload_id
        for number, data in [(1, b"one"), (2, b"two"), (3, b"three")]:
            uploads.upload_part(
                "demo", self.order, "m", upload, number, self.segment(data), md5(data), {}
            )
        self.freeze(self.store)
        # Part 1 replaced, and its old file left.
        uploads.upload_part(
            "demo", self.order, "m", upload, 1, self.segment(b"ONE"), md5(b"ONE"), {}
        )
        # Parts 2 and 3 left out of the completion (small parts must be last), files left.
        named = [CompletedPart(1, md5(b"ONE"))]
        uploads.complete("demo", self.order, "m", upload, named)
        self.die_after(self.store, "adopt")
        other = uploads.create("demo", self.order, "n", NewObject(0, "")).upload_id
        self.assertRaises(
            Killed,
            uploads.upload_part,
            "demo", self.order, "n", other, 1, self.segment(b"lost"), md5(b"lost"), {},
        )  # fmt: skip
        self.assertEqual(len(self.object_files()), 5)
        self.kill(self.store)
        fresh = self.open()
        self.assertClean()
        self.assertEqual(self.read(fresh, "m"), b"ONE")

    def test_live_owner_kept(self) -> None:
        """A live process's pending file is never removed; once it dies, it is."""
        self.put(self.store, "keep", b"kept")
        live = self.store
        self.die_after(live, "adopt")
        self.assertRaises(Killed, self.put, live, "a", b"in flight")
        other = self.open()
        self.assertEqual(len(self.object_files()), 2)
        self.assertEqual(other.reclaim(), 0)
        self.assertEqual(len(self.object_files()), 2)
        self.kill(live)
        self.assertEqual(other.reclaim(), 1)
        self.assertClean()

    def test_referenced_pending_file_kept(self) -> None:
        """A dead owner's pending row for a file some row refers to does not remove it."""
        self.put(self.store, "a", b"data")
        (file_id,) = self.object_files()
        with self.store.index.write() as db:
            self.store.files.pend(db, [file_id])
        self.kill(self.store)
        fresh = self.open()
        self.assertEqual(self.read(fresh, "a"), b"data")
        self.assertClean()

    def test_closed_store_leaves_nothing(self) -> None:
        """A store closed in order leaves no owner file and no pending row."""
        self.put(self.store, "a", b"one")
        self.put(self.store, "a", b"two")
        self.store.delete("demo", self.order, "a")
        self.store.close()
        self.assertEqual(os.listdir(os.path.join(self.root, OWNERS_DIR)), [])
        self.assertClean()


def row_file_ids(files: str) -> list[str]:
    """The file ids of an object row's ``files`` column."""
    return [file_id for file_id, _ in json.loads(files)]
