"""Tests for the files of the embedded network's store: flushing, small objects, sweeping."""

from __future__ import annotations

import os
import sqlite3
import threading
from types import SimpleNamespace
from typing import Any

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import objectfiles
from lambgw.network.errors import NoSuchPath, PreconditionFailed, QuotaExceeded
from lambgw.network.files import read_small
from lambgw.network.interface import NewObject, Segment
from lambgw.network.store import INLINE_SIZE, Store
from tests.test_store import StoreMixin


class SweepTests(StoreMixin, SynchronousTestCase):
    def test_sweep_removes_orphans_only(self) -> None:
        """The sweep deletes old unreferenced files and keeps the objects' files."""
        self.put("a", b"abc")
        orphan = os.path.join(self.store.root, "objects", "ff", "ff" + "0" * 30)
        os.makedirs(os.path.dirname(orphan))
        with open(orphan, "wb") as f:
            f.write(b"lost")
        self.assertEqual(self.store.sweep(min_age=3600), 0)
        self.assertEqual(self.store.sweep(min_age=-1), 1)
        self.assertFalse(os.path.exists(orphan))
        self.assertEqual(self.read("a"), b"abc")


def files_now(store: Store) -> list[str]:
    """The store's object files as they are, without waiting for any unlink."""
    return [n for _, _, names in os.walk(os.path.join(store.root, "objects")) for n in names]


class DiscardTests(StoreMixin, SynchronousTestCase):
    """Files a committed write replaced or dropped are unlinked after it returns."""

    def hold_unlinks(self) -> threading.Event:
        """Make the store's unlinks wait until the returned event is set."""
        release = threading.Event()

        def unlink(path: str) -> None:
            release.wait(10)
            os.unlink(path)

        self.patch(objectfiles, "os", SimpleNamespace(**{**vars(os), "unlink": unlink}))
        self.addCleanup(release.set)
        return release

    def pending(self) -> list[str]:
        """The file ids recorded as pending in the index."""
        with self.store.index.read() as db:
            return sorted(file_id for (file_id,) in db.execute("SELECT file_id FROM pending"))

    def test_overwrite_returns_before_unlinking(self) -> None:
        """An overwrite answers while its old file is still being unlinked, then it goes."""
        self.put("k", b"old bytes")
        (old,) = self.object_files()
        release = self.hold_unlinks()
        self.put("k", b"new bytes")
        self.assertEqual(self.read("k"), b"new bytes")
        self.assertIn(old, self.pending())
        self.assertEqual(len(files_now(self.store)), 2)
        release.set()
        self.assertEqual(len(self.object_files()), 1)
        self.assertNotIn(old, self.object_files())
        self.put("other", b"a write settles the unlinked file's pending row")
        self.assertNotIn(old, self.pending())

    def test_delete_and_copy_overwrite_discard(self) -> None:
        """A delete and a copy over an object leave only the files rows refer to."""
        self.put("a", b"first")
        self.put("b", b"second")
        self.store.copy("demo", self.order.order_id, "a", self.order.order_id, "b")
        self.assertTrue(self.store.delete("demo", self.order.order_id, "a"))
        self.assertEqual(len(self.object_files()), 1)
        self.assertEqual(self.read("b"), b"first")

    def test_failed_unlink_logged_and_reclaimed(self) -> None:
        """A file that cannot be unlinked is logged, stays pending, and the next open removes it."""

        def unlink(path: str) -> None:
            raise PermissionError(13, "Permission denied", path)

        events: list[dict[str, Any]] = []
        self.patch(objectfiles, "log", Logger(observer=events.append))
        self.put("k", b"old bytes")
        (old,) = self.object_files()
        refusing = self.patch(objectfiles, "os", SimpleNamespace(**{**vars(os), "unlink": unlink}))
        self.put("k", b"new bytes")
        self.store.files.drain()
        self.assertEqual(
            [formatEvent(e) for e in events],
            [f"Could not unlink the object file {old}: [Errno 13] Permission denied: "
             f"{os.path.join(self.store.root, 'objects', old[:2], old)!r}"],
        )  # fmt: skip
        self.assertIn(old, self.pending())
        self.assertIn(old, self.object_files())
        refusing.restore()
        self.store.close()
        again = Store(self.store.root, clock=self.clock, durable=False)
        self.addCleanup(again.close)
        files = files_now(again)
        self.assertNotIn(old, files)
        self.assertEqual(len(files), 1)
        _, ranges = again.open_range("demo", self.order.order_id, "k")
        with ranges[0].file as f:
            self.assertEqual(f.read(), b"new bytes")

    def test_close_waits_for_unlinks(self) -> None:
        """Closing the store waits for the files being unlinked and settles their rows."""
        self.put("k", b"old bytes")
        release = self.hold_unlinks()
        self.put("k", b"new bytes")
        threading.Timer(0.05, release.set).start()
        self.store.close()
        self.assertTrue(release.is_set())
        files = files_now(self.store)
        self.assertEqual(len(files), 1)
        with sqlite3.connect(os.path.join(self.store.root, "index.sqlite3")) as db:
            self.assertEqual(db.execute("SELECT count(*) FROM pending").fetchone(), (0,))


class DurabilityTests(StoreMixin, SynchronousTestCase):
    def durable_store(self) -> Store:
        """A durable store over the same directory."""
        store = Store(self.store.root, clock=self.clock)
        self.addCleanup(store.close)
        return store

    def count_fsyncs(self) -> list[int]:
        """Record every ``os.fsync`` of the store from now on."""
        synced: list[int] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            synced.append(fd)
            real(fd)

        self.patch(os, "fsync", fsync)
        return synced

    def test_memory_object_synced_once(self) -> None:
        """An object from memory too large for the index is flushed to disk once."""
        store = self.durable_store()
        order = store.buy_order("demo", 10 * INLINE_SIZE, 30)
        data = b"x" * (INLINE_SIZE + 1)
        synced = self.count_fsyncs()
        store.put(
            "demo", order.order_id, "m", [Segment("", len(data), data)], NewObject(len(data), "e")
        )
        self.assertEqual(len(synced), 1)
        _, ranges = store.open_range("demo", order.order_id, "m")
        self.assertEqual(read_small(ranges), data)

    def test_small_object_not_synced(self) -> None:
        """A small object from memory goes into the index: no file of its own to flush."""
        store = self.durable_store()
        synced = self.count_fsyncs()
        store.put("demo", self.order.order_id, "m", [Segment("", 3, b"abc")], NewObject(3, "e"))
        self.assertEqual(synced, [])
        self.assertEqual(self.object_files(), [])
        self.assertEqual(self.read("m"), b"abc")

    def test_spooled_parts_synced(self) -> None:
        """Each spooled part moved in is flushed to disk before the object is committed."""
        store = self.durable_store()
        segments = [self.segment(b"ab"), self.segment(b"cd")]
        synced = self.count_fsyncs()
        store.put("demo", self.order.order_id, "p", segments, NewObject(4, "e-2"))
        self.assertEqual(len(synced), 2)
        self.assertEqual(self.read("p"), b"abcd")


class InlineTests(StoreMixin, SynchronousTestCase):
    """Small objects from memory are kept in the index, and live and die with their row."""

    def put_small(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path`` as a body held in memory."""
        segment = Segment("", len(data), data)
        self.store.put("demo", self.order.order_id, path, [segment], NewObject(len(data), "e"))

    def small_files(self) -> int:
        """How many objects' bytes the index holds."""
        db = sqlite3.connect(os.path.join(self.store.root, "index.sqlite3"))
        try:
            count: int = db.execute("SELECT COUNT(*) FROM small_files").fetchone()[0]
        finally:
            db.close()
        return count

    def test_ranges_read(self) -> None:
        """A byte range of an object held in the index reads as from a file."""
        self.put_small("k", b"0123456789")
        self.assertEqual(self.read("k", 2, 5), b"2345")
        self.assertEqual(self.object_files(), [])

    def test_overwrite_drops_old_bytes(self) -> None:
        """Overwriting an object held in the index removes its old bytes."""
        self.put_small("k", b"old")
        self.put_small("k", b"new!")
        self.assertEqual(self.read("k"), b"new!")
        self.assertEqual(self.small_files(), 1)
        self.assertEqual(self.store.order("demo", self.order.order_id).used, 4)

    def test_overwrite_by_file(self) -> None:
        """An object held in the index overwritten by a spooled one leaves nothing behind."""
        self.put_small("k", b"old")
        self.put("k", b"from a file")
        self.assertEqual(self.read("k"), b"from a file")
        self.assertEqual(self.small_files(), 0)
        self.assertEqual(len(self.object_files()), 1)

    def test_delete_drops_bytes(self) -> None:
        """Deleting an object held in the index removes its bytes and frees its space."""
        self.put_small("k", b"abc")
        self.assertTrue(self.store.delete("demo", self.order.order_id, "k"))
        self.assertEqual(self.small_files(), 0)
        self.assertEqual(self.store.order("demo", self.order.order_id).used, 0)

    def test_copy_has_own_bytes(self) -> None:
        """A copy of an object held in the index outlives the source's deletion."""
        self.put_small("src", b"abc")
        self.store.copy("demo", self.order.order_id, "src", self.order.order_id, "dst")
        self.store.delete("demo", self.order.order_id, "src")
        self.assertEqual(self.read("dst"), b"abc")
        self.assertEqual(self.small_files(), 1)

    def test_refused_put_keeps_nothing(self) -> None:
        """A small object refused for lack of space leaves no bytes in the index."""
        with self.assertRaises(QuotaExceeded):
            self.put_small("k", b"x" * 1001)
        self.assertEqual(self.small_files(), 0)

    def test_sweep_keeps_small(self) -> None:
        """The sweep of orphaned files leaves objects held in the index alone."""
        self.put_small("k", b"abc")
        self.assertEqual(self.store.sweep(min_age=0), 0)
        self.assertEqual(self.read("k"), b"abc")


class GroupedPutTests(StoreMixin, SynchronousTestCase):
    """Small objects stored in one group of writes, as the write lanes store them."""

    def put_small(self, path: str, data: bytes, if_none_match: bool = False) -> None:
        """Store ``data`` at ``path`` as a body held in memory."""
        segment = Segment("", len(data), data)
        new = NewObject(len(data), "e")
        self.store.put("demo", self.order.order_id, path, [segment], new, if_none_match)

    def test_refused_put_leaves_the_others(self) -> None:
        """A put of the group refused by its condition or the order's space is undone alone."""
        self.put_small("taken", b"old")
        with self.store.index.group():
            self.put_small("a", b"aaa")
            with self.assertRaises(PreconditionFailed):
                self.put_small("taken", b"new", if_none_match=True)
            with self.assertRaises(QuotaExceeded):
                self.put_small("big", b"x" * 995)
            self.put_small("b", b"bbbb")
        self.assertEqual(
            (self.read("a"), self.read("b"), self.read("taken")), (b"aaa", b"bbbb", b"old")
        )
        self.assertEqual(self.store.order("demo", self.order.order_id).used, 10)
        with self.assertRaises(NoSuchPath):
            self.read("big")

    def test_replaced_file_kept_until_the_group_commits(self) -> None:
        """A file a grouped put replaced is unlinked only once the group is committed."""
        self.put("k", b"held in a file")
        (old,) = self.object_files()
        with self.store.index.group():
            self.put_small("k", b"small")
            self.store.files.drain()
            self.assertEqual(self.object_files(), [old])
        self.assertEqual(self.object_files(), [])
        self.assertEqual(self.read("k"), b"small")

    def test_failed_group_keeps_the_replaced_file(self) -> None:
        """If the group is not committed, the object it replaced and its file stay."""
        self.put("k", b"held in a file")
        (old,) = self.object_files()
        with self.assertRaises(OSError), self.store.index.group():
            self.put_small("k", b"small")
            raise OSError("the commit failed")
        self.assertEqual(self.object_files(), [old])
        self.assertEqual(self.read("k"), b"held in a file")
