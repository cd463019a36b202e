"""Tests of the store's index: groups of writes in one transaction, and the writers' queue."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading

from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import index as index_module
from lambgw.network.index import WRITERS_FILE, Index


class IndexCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.index = self.open()
        with self.index.write() as db:
            db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")

    def open(self) -> Index:
        """An index on the directory, as another process would open it."""
        opened = Index(self.root)
        self.addCleanup(opened.close)
        return opened

    def keys(self) -> list[str]:
        """The committed keys, as another connection sees them."""
        db = sqlite3.connect(os.path.join(self.root, index_module.INDEX_FILE))
        try:
            return sorted(k for (k,) in db.execute("SELECT k FROM t"))
        finally:
            db.close()

    def insert(self, key: str) -> None:
        with self.index.write() as db:
            db.execute("INSERT INTO t (k) VALUES (?)", (key,))


class GroupTests(IndexCase):
    def test_writes_of_a_group_commit_together(self) -> None:
        """No write of a group is seen by others before the group ends; then all are."""
        with self.index.group():
            self.insert("a")
            self.insert("b")
            self.assertEqual(self.keys(), [])
            with self.index.read() as db:
                self.assertEqual(db.execute("SELECT count(*) FROM t").fetchone(), (2,))
        self.assertEqual(self.keys(), ["a", "b"])

    def test_a_failed_write_is_undone_alone(self) -> None:
        """A write that raises inside a group is rolled back; the others are committed."""
        with self.index.group():
            self.insert("a")
            with self.assertRaises(sqlite3.IntegrityError), self.index.write() as db:
                db.execute("INSERT INTO t (k) VALUES ('c')")
                db.execute("INSERT INTO t (k) VALUES ('a')")
            self.insert("b")
        self.assertEqual(self.keys(), ["a", "b"])

    def test_after_commit_waits_for_the_group(self) -> None:
        """Work handed over after a write runs at once alone, after the commit in a group."""
        ran: list[list[str]] = []
        self.insert("a")
        self.index.after_commit(lambda: ran.append(self.keys()))
        self.assertEqual(ran, [["a"]])
        with self.index.group():
            self.insert("b")
            self.index.after_commit(lambda: ran.append(self.keys()))
            self.assertEqual(len(ran), 1)
        self.assertEqual(ran, [["a"], ["a", "b"]])

    def test_a_failed_group_commits_nothing(self) -> None:
        """A group whose block raises commits none of its writes and drops its hooks."""
        ran: list[str] = []
        with self.assertRaises(RuntimeError), self.index.group():
            self.insert("a")
            self.index.after_commit(lambda: ran.append("hook"))
            raise RuntimeError("ending the group failed")
        self.assertEqual((self.keys(), ran), ([], []))
        self.insert("b")
        self.assertEqual(self.keys(), ["b"])


class WritersQueueTests(IndexCase):
    def test_a_writer_waits_for_the_other_then_goes(self) -> None:
        """A write of another index waits while one is in progress, and goes once it ends."""
        other = self.open()
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            with self.index.write() as db:
                db.execute("INSERT INTO t (k) VALUES ('first')")
                entered.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        self.addCleanup(holder.join)
        self.addCleanup(release.set)
        self.assertTrue(entered.wait(10))
        wrote = threading.Event()

        def write() -> None:
            with other.write() as db:
                db.execute("INSERT INTO t (k) VALUES ('second')")
            wrote.set()

        writer = threading.Thread(target=write)
        writer.start()
        self.addCleanup(writer.join)
        self.assertFalse(wrote.wait(0.2))
        release.set()
        self.assertTrue(wrote.wait(10))
        self.assertEqual(self.keys(), ["first", "second"])

    def test_a_stopped_writer_fails_the_others_in_bounded_time(self) -> None:
        """A lock never released (a writer suspended) fails a write after the busy timeout."""
        self.patch(index_module, "BUSY_TIMEOUT", 0.2)
        fd = os.open(os.path.join(self.root, WRITERS_FILE), os.O_RDWR)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with self.assertRaises(sqlite3.OperationalError) as raised:
            self.insert("a")
        self.assertEqual(str(raised.exception), "database is locked")
        fcntl.flock(fd, fcntl.LOCK_UN)
        self.insert("a")
        self.assertEqual(self.keys(), ["a"])


class WriteNowTests(IndexCase):
    def insert_now(self, key: str) -> None:
        with self.index.write_now() as db:
            db.execute("INSERT INTO t (k) VALUES (?)", (key,))

    def test_commits_when_no_writer_waits(self) -> None:
        """A write that finds the index free commits at once; one that raises is undone."""
        self.insert_now("a")
        with self.assertRaises(ValueError), self.index.write_now() as db:
            db.execute("INSERT INTO t (k) VALUES ('b')")
            raise ValueError("undo")
        self.assertEqual(self.keys(), ["a"])

    def test_another_writer_in_the_queue(self) -> None:
        """A writer of another index holding the writers' lock: WouldWait, nothing written."""
        other = self.open()
        with other.write():
            self.assertRaises(index_module.WouldWait, self.insert_now, "a")
        self.insert_now("b")
        self.assertEqual(self.keys(), ["b"])

    def test_a_writer_outside_the_queue(self) -> None:
        """SQLite's own lock, taken without the queue: WouldWait at once, not a wait."""
        holder = sqlite3.connect(os.path.join(self.root, index_module.INDEX_FILE), timeout=0)
        self.addCleanup(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        self.assertRaises(index_module.WouldWait, self.insert_now, "a")
        holder.execute("ROLLBACK")
        self.insert_now("b")  # the queue's lock was given back
        self.assertEqual(self.keys(), ["b"])

    def test_not_in_a_group(self) -> None:
        """A group's transaction cannot hold a write that does not wait."""
        with self.index.group():
            self.assertRaises(RuntimeError, self.insert_now, "a")

    def test_a_group_without_waiting(self) -> None:
        """Writes in a group that does not wait: savepoints, committed together at its end."""
        ran: list[list[str]] = []
        with self.index.group_now():
            self.insert_now("a")
            with self.assertRaises(ValueError), self.index.write_now() as db:
                db.execute("INSERT INTO t (k) VALUES ('c')")
                raise ValueError("undo this one")
            self.insert("b")
            self.index.after_commit(lambda: ran.append(self.keys()))
            self.assertEqual((self.keys(), ran), ([], []))
            with self.index.read() as db:
                self.assertEqual(db.execute("SELECT count(*) FROM t").fetchone(), (2,))
        self.assertEqual(self.keys(), ["a", "b"])
        self.assertEqual(ran, [["a", "b"]])

    def test_a_group_without_waiting_finds_the_index_held(self) -> None:
        """Another writer in the queue, or SQLite's lock held: WouldWait, nothing written."""
        other = self.open()
        with other.write(), self.assertRaises(index_module.WouldWait), self.index.group_now():
            self.insert_now("a")
        holder = sqlite3.connect(os.path.join(self.root, index_module.INDEX_FILE), timeout=0)
        self.addCleanup(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        with self.assertRaises(index_module.WouldWait), self.index.group_now():
            self.insert_now("b")
        holder.execute("ROLLBACK")
        with self.index.group_now():
            self.insert_now("c")
        self.assertEqual(self.keys(), ["c"])

    def test_a_failed_group_without_waiting_commits_nothing(self) -> None:
        """A group whose block raises commits none of its writes, and counts no commit."""
        self.patch(index_module, "CHECKPOINT_EVERY", 1)
        with self.assertRaises(RuntimeError), self.index.group_now():
            self.insert_now("a")
            raise RuntimeError("the group failed")
        self.assertEqual(self.keys(), [])
        self.assertFalse(self.index.checkpoint_due())
        with self.index.group_now():
            self.insert_now("b")
            self.insert_now("c")
        self.assertTrue(self.index.checkpoint_due())

    def test_a_group_rolled_back_under_it_commits_nothing(self) -> None:
        """Once SQLite has rolled a group back (on a full disk, say), no later write commits."""
        for group, connection in (
            (self.index.group, self.index.connection),
            (self.index.group_now, self.index.nowait),
        ):
            with self.subTest(group.__name__):
                with self.assertRaises(sqlite3.OperationalError), group():
                    self.insert("a")
                    connection().execute("ROLLBACK")  # as SQLite does after SQLITE_FULL
                    self.assertRaises(index_module.GroupRolledBack, self.insert, "b")
                self.assertEqual(self.keys(), [])

    def test_groups_do_not_nest(self) -> None:
        """A group inside another is refused, whichever waits."""
        for outer, inner in (
            (self.index.group, self.index.group_now),
            (self.index.group_now, self.index.group),
            (self.index.group_now, self.index.group_now),
        ):
            with self.assertRaises(RuntimeError), outer(), inner():
                pass

    def test_checkpoint_due_every_so_many_commits(self) -> None:
        """Every CHECKPOINT_EVERY quick commits ask for one checkpoint, once."""
        self.patch(index_module, "CHECKPOINT_EVERY", 3)
        due = []
        for n in range(7):
            self.insert_now(str(n))
            due.append(self.index.checkpoint_due())
        self.assertEqual(due, [False, False, True, False, False, True, False])

    def test_quick_commits_leave_checkpoints_to_the_pool(self) -> None:
        """Past SQLite's 1,000 pages the log still grows; :meth:`checkpoint` copies it all."""
        for n in range(1100):
            self.insert_now(str(n))
        wal = os.path.join(self.root, index_module.INDEX_FILE + "-wal")
        page_size = self.index.connection().execute("PRAGMA page_size").fetchone()[0]
        frames = (os.path.getsize(wal) - 32) // (page_size + 24)
        self.assertGreaterEqual(frames, 1100)
        log_frames, copied = self.index.checkpoint()
        self.assertEqual(log_frames, copied)
        self.assertGreaterEqual(copied, 1100)
        self.assertEqual(len(self.keys()), 1100)

    def wal_size(self) -> int:
        """The size of the index's log file, in bytes."""
        return os.path.getsize(os.path.join(self.root, index_module.INDEX_FILE + "-wal"))

    def test_a_long_log_is_emptied_though_writes_go_on(self) -> None:
        """A checkpoint of a long log empties it, though a write landed while it copied.

        SQLite starts its log over only at a write that finds all of it copied: under a
        steady load a write always lands while a checkpoint copies, and the log would grow
        for as long as the process runs.
        """
        self.patch(index_module, "RESTART_FRAMES", 50)
        for n in range(60):
            self.insert_now(str(n))
        copy = self.index._copy

        def copy_then_write() -> tuple[int, int]:
            copied = copy()
            # Another thread's write, between the copy and the end of the checkpoint.
            writer = threading.Thread(target=self.insert, args=("late",))
            writer.start()
            writer.join()
            return copied

        self.patch(self.index, "_copy", copy_then_write)
        log_frames, copied = self.index.checkpoint()
        self.assertEqual(copied, log_frames)
        self.assertGreaterEqual(log_frames, 60)
        self.assertEqual(self.wal_size(), 0)
        self.assertEqual(len(self.keys()), 61)
        self.insert_now("after")
        self.assertEqual(len(self.keys()), 62)

    def test_a_short_log_is_only_copied(self) -> None:
        """Below RESTART_FRAMES, the log is copied and kept for the writes to reuse."""
        for n in range(20):
            self.insert_now(str(n))
        log_frames, copied = self.index.checkpoint()
        self.assertEqual(copied, log_frames)
        self.assertLess(log_frames, index_module.RESTART_FRAMES)
        self.assertGreater(self.wal_size(), 0)

    def test_a_reader_on_the_log_keeps_it_for_the_next_checkpoint(self) -> None:
        """A reader still on the log makes the restart give up, with writers free again."""
        self.patch(index_module, "RESTART_FRAMES", 50)
        self.patch(index_module, "RESTART_WAIT", 0.01)
        for n in range(30):
            self.insert_now(str(n))
        reader = sqlite3.connect(os.path.join(self.root, index_module.INDEX_FILE))
        self.addCleanup(reader.close)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        for n in range(30, 60):
            self.insert_now(str(n))
        log_frames, copied = self.index.checkpoint()
        self.assertLess(copied, log_frames)
        self.assertGreater(self.wal_size(), 0)
        self.insert_now("free")  # the writers' queue was let go: no WouldWait
        reader.execute("COMMIT")
        self.index.checkpoint()
        self.assertEqual(self.wal_size(), 0)
        self.assertEqual(len(self.keys()), 61)
