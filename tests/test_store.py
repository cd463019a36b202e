"""Tests for the embedded network's store: accounting, atomicity, paths, ranges, listing."""

from __future__ import annotations

import os
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import listing
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
from lambgw.network.interface import ListedObject, ListPage, NewObject, Segment
from lambgw.network.store import Store


class Clock:
    """A settable clock for the store."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class StoreMixin:
    """Builds a store with one account and one order in a temp dir."""

    def setUp(self) -> None:
        base = self.mktemp()  # type: ignore[attr-defined]
        os.makedirs(base)
        self.spool = os.path.join(base, "spool")
        os.makedirs(self.spool)
        self.clock = Clock()
        self.store = Store(os.path.join(base, "net"), clock=self.clock, durable=False)
        self.addCleanup(self.store.close)  # type: ignore[attr-defined]
        self.order = self.store.ensure_account("demo", 1000, 30)[0]
        self.counter = 0

    def segment(self, data: bytes) -> Segment:
        """Spool ``data`` into a new file."""
        self.counter += 1
        path = os.path.join(self.spool, f"part{self.counter}")
        with open(path, "wb") as f:
            f.write(data)
        return Segment(path, len(data))

    def put(self, path: str, *parts: bytes, order_id: str = "", etag: str = "e") -> None:
        """Store an object made of ``parts``."""
        segments = [self.segment(p) for p in parts]
        size = sum(len(p) for p in parts)
        self.store.put(
            "demo", order_id or self.order.order_id, path, segments, NewObject(size, etag)
        )

    def read(self, path: str, first: int = 0, last: int | None = None) -> bytes:
        """Read bytes of an object through ``open_range``."""
        _, ranges = self.store.open_range("demo", self.order.order_id, path, first, last)
        out = b""
        for r in ranges:
            r.file.seek(r.offset)
            out += r.file.read(r.length)
            r.file.close()
        return out

    def object_files(self) -> list[str]:
        """Every file under the store's ``objects`` directory, once discarded ones are gone."""
        self.store.files.drain()
        root = os.path.join(self.store.root, "objects")
        return sorted(n for _, _, names in os.walk(root) for n in names)

    def used(self) -> int:
        """Bytes used in the order."""
        return self.store.order("demo", self.order.order_id).used


class AccountTests(StoreMixin, SynchronousTestCase):
    def test_ensure_creates_one_order(self) -> None:
        """A new account gets one active order of the default capacity."""
        self.assertEqual(len(self.order.order_id), 40)
        self.assertEqual(self.order.order_id, self.order.order_id.upper())
        self.assertEqual((self.order.capacity, self.order.used), (1000, 0))
        self.assertEqual(self.order.expires - self.order.created, 30 * 86400)

    def test_ensure_again_keeps_orders(self) -> None:
        """A second ensure does not buy another order."""
        self.assertEqual(self.store.ensure_account("demo", 5, 1), [self.order])

    def test_buy_order_appends(self) -> None:
        """Bought orders are listed in the order they were bought."""
        second = self.store.buy_order("demo", 10, 1)
        self.assertEqual(self.store.orders("demo"), [self.order, second])

    def test_unknown_account(self) -> None:
        """Orders of an unknown account fail with NoSuchAccount."""
        self.assertRaises(NoSuchAccount, self.store.orders, "nobody")
        self.assertRaises(NoSuchAccount, self.store.buy_order, "nobody", 10, 1)

    def test_create_twice(self) -> None:
        """Creating an existing account fails."""
        self.store.create_account("other")
        self.assertTrue(self.store.has_account("other"))
        self.assertRaises(NetworkError, self.store.create_account, "other")

    def test_order_of_another_account(self) -> None:
        """An order is not reachable from another account."""
        self.store.create_account("other")
        self.assertRaises(NoSuchOrder, self.store.order, "other", self.order.order_id)


class PutTests(StoreMixin, SynchronousTestCase):
    def test_accounting(self) -> None:
        """Put, overwrite and delete keep ``used`` exact and back to zero."""
        self.put("a", b"x" * 100)
        self.assertEqual(self.used(), 100)
        self.put("a", b"y" * 30)
        self.assertEqual(self.used(), 30)
        self.assertEqual(self.read("a"), b"y" * 30)
        self.assertEqual(len(self.object_files()), 1)
        self.assertTrue(self.store.delete("demo", self.order.order_id, "a"))
        self.assertEqual(self.used(), 0)
        self.assertEqual(self.object_files(), [])

    def test_segments_are_moved(self) -> None:
        """The spooled files are moved in, leaving the spool empty."""
        self.put("a", b"abc", b"def")
        self.assertEqual(os.listdir(self.spool), [])
        self.assertEqual(len(self.object_files()), 2)

    def test_delete_missing(self) -> None:
        """Deleting a missing path is not an error."""
        self.assertFalse(self.store.delete("demo", self.order.order_id, "nothing"))

    def test_quota(self) -> None:
        """A put over capacity is refused and leaves nothing behind."""
        self.put("a", b"x" * 600)
        self.assertRaises(QuotaExceeded, self.put, "b", b"x" * 401)
        self.assertEqual(self.used(), 600)
        self.assertEqual(len(self.object_files()), 1)
        self.assertEqual(os.listdir(self.spool), [])
        self.assertRaises(NoSuchPath, self.store.head, "demo", self.order.order_id, "b")

    def test_overwrite_gives_back_old_size(self) -> None:
        """An overwrite is charged the difference only."""
        self.put("a", b"x" * 600)
        self.put("a", b"x" * 1000)
        self.assertEqual(self.used(), 1000)

    def test_expired(self) -> None:
        """A put into an expired order is refused and leaves nothing behind."""
        self.clock.now = self.order.expires
        self.assertRaises(OrderExpired, self.put, "a", b"x")
        self.assertEqual((self.used(), self.object_files()), (0, []))
        self.assertEqual(os.listdir(self.spool), [])

    def test_if_none_match(self) -> None:
        """A conditional put fails over an existing object, keeping the old one."""
        self.put("a", b"old")
        segment = self.segment(b"new")
        self.assertRaises(
            PreconditionFailed,
            self.store.put,
            "demo",
            self.order.order_id,
            "a",
            [segment],
            NewObject(3, "e"),
            True,
        )
        self.assertEqual(self.read("a"), b"old")
        self.assertFalse(os.path.exists(segment.path))

    def put_if_match(self, path: str, data: bytes, if_match: str) -> None:
        """Store ``data`` at ``path`` only over an object with the etag ``if_match``."""
        segment = self.segment(data)
        new = NewObject(len(data), "new")
        self.store.put("demo", self.order.order_id, path, [segment], new, False, if_match)

    def test_if_match(self) -> None:
        """A put with the stored etag (or '*') replaces the object."""
        self.put("a", b"old", etag="one")
        self.put_if_match("a", b"two", "one")
        self.assertEqual(self.read("a"), b"two")
        self.put_if_match("a", b"three", "*")
        self.assertEqual((self.read("a"), self.used()), (b"three", 5))

    def test_if_match_other_etag(self) -> None:
        """A put with another etag fails, keeping the old object and its charge."""
        self.put("a", b"old", etag="one")
        self.assertRaises(PreconditionFailed, self.put_if_match, "a", b"new!", "two")
        self.assertEqual((self.read("a"), self.used()), (b"old", 3))
        self.assertEqual(os.listdir(self.spool), [])

    def test_if_match_no_object(self) -> None:
        """A put with If-Match where nothing is stored fails with NoSuchPath, storing nothing."""
        for etag in ("one", "*"):
            self.assertRaises(NoSuchPath, self.put_if_match, "a", b"new", etag)
        self.assertEqual((self.used(), self.object_files()), (0, []))

    def test_delete_if_match(self) -> None:
        """A delete with another etag keeps the object; with its etag or '*' removes it."""
        self.put("a", b"old", etag="one")
        self.put("b", b"old", etag="one")
        order_id = self.order.order_id
        self.assertRaises(PreconditionFailed, self.store.delete, "demo", order_id, "a", "two")
        self.assertEqual(self.read("a"), b"old")
        self.assertTrue(self.store.delete("demo", order_id, "a", "one"))
        self.assertTrue(self.store.delete("demo", order_id, "b", "*"))
        self.assertEqual(self.used(), 0)

    def test_delete_if_match_no_object(self) -> None:
        """A delete with If-Match where nothing is stored fails with NoSuchPath."""
        self.assertRaises(NoSuchPath, self.store.delete, "demo", self.order.order_id, "a", "*")

    def test_size_mismatch(self) -> None:
        """Segments that do not add up to the declared size are refused."""
        segment = self.segment(b"abc")
        self.assertRaises(
            NetworkError,
            self.store.put,
            "demo",
            self.order.order_id,
            "a",
            [segment],
            NewObject(4, "e"),
        )
        self.assertEqual((self.used(), self.object_files()), (0, []))

    def test_other_account(self) -> None:
        """A put into another account's order fails with NoSuchOrder."""
        self.store.create_account("other")
        segment = self.segment(b"x")
        self.assertRaises(
            NoSuchOrder,
            self.store.put,
            "other",
            self.order.order_id,
            "a",
            [segment],
            NewObject(1, "e"),
        )
        self.assertEqual(self.object_files(), [])

    def test_odd_paths(self) -> None:
        """Paths that look like file system paths are plain names."""
        paths = ["a", "a/b", "a//b", "../x", "x/../../y", "d/", "/", "é/ü", "k" * 1024]
        for i, path in enumerate(paths):
            self.put(path, str(i).encode())
        for i, path in enumerate(paths):
            self.assertEqual(self.read(path), str(i).encode())
        listed = self.store.list("demo", self.order.order_id).objects
        self.assertEqual([o.path for o in listed], sorted(paths, key=str.encode))
        index = ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "index.sqlite3-writers")
        allowed = {"objects", "owners", *index}
        self.assertLessEqual(set(os.listdir(self.store.root)), allowed)

    def test_invalid_paths(self) -> None:
        """Empty, too long and non-UTF-8 paths are refused."""
        for path in ["", "k" * 1025, "é" * 513, "\udc80"]:
            self.assertRaises(InvalidPath, self.put, path, b"x")
        self.assertEqual(os.listdir(self.spool), [])

    def test_metadata_kept(self) -> None:
        """Content type, metadata, headers and checksums come back from head."""
        new = NewObject(
            2,
            '"abc-2"',
            content_type="text/plain",
            metadata={"k": "v"},
            headers={"cache-control": "no"},
            checksums={"crc32": "AAAA"},
            checksum_type="COMPOSITE",
        )
        segments = [self.segment(b"a"), self.segment(b"b")]
        self.store.put("demo", self.order.order_id, "a", segments, new)
        info = self.store.head("demo", self.order.order_id, "a")
        self.assertEqual(
            (info.content_type, info.metadata, info.headers, info.checksums),
            ("text/plain", {"k": "v"}, {"cache-control": "no"}, {"crc32": "AAAA"}),
        )
        self.assertEqual((info.checksum_type, tuple(info.part_sizes)), ("COMPOSITE", (1, 1)))


class ReadTests(StoreMixin, SynchronousTestCase):
    def test_ranges_across_segments(self) -> None:
        """Every range of a multi-segment object reads the right bytes."""
        parts = [b"abc", b"", b"defg", b"h", b"ijklmn"]
        whole = b"".join(parts)
        self.put("m", *parts)
        for first in range(len(whole)):
            for last in range(first, len(whole)):
                self.assertEqual(self.read("m", first, last), whole[first : last + 1])
        self.assertEqual(self.read("m", 5), whole[5:])
        self.assertEqual(self.read("m", 2, 100), whole[2:])

    def test_read_survives_overwrite(self) -> None:
        """Files opened by a read stay readable after an overwrite and a delete."""
        self.put("a", b"old bytes")
        _, ranges = self.store.open_range("demo", self.order.order_id, "a")
        self.put("a", b"new")
        self.store.delete("demo", self.order.order_id, "a")
        self.assertEqual(self.object_files(), [])
        self.assertEqual(ranges[0].file.read(), b"old bytes")
        ranges[0].file.close()

    def test_missing(self) -> None:
        """A missing path is NoSuchPath; an order not the account's is NoSuchOrder."""
        self.assertRaises(NoSuchPath, self.store.open_range, "demo", self.order.order_id, "x")
        self.assertRaises(NoSuchOrder, self.store.head, "demo", "0" * 40, "x")
        theirs = self.store.ensure_account("other", 100, 1)[0].order_id
        self.store.put("other", theirs, "x", [Segment("", 1, b"t")], NewObject(1, "e"))
        self.assertEqual(self.store.head("other", theirs, "x").size, 1)
        for read in (self.store.head, self.store.open_range, self.store.get_tags):
            self.assertRaises(NoSuchOrder, read, "demo", theirs, "x")
            self.assertRaises(NoSuchOrder, read, "demo", theirs, "missing")


class CopyTests(StoreMixin, SynchronousTestCase):
    def test_copy_between_orders(self) -> None:
        """A copy into another order of the account is charged there and independent."""
        other = self.store.buy_order("demo", 100, 1)
        self.put("a", b"abc", b"def", etag="x-2")
        info = self.store.copy("demo", self.order.order_id, "a", other.order_id, "b/c")
        self.assertEqual((info.size, info.etag, tuple(info.part_sizes)), (6, "x-2", (3, 3)))
        self.assertEqual(self.store.order("demo", other.order_id).used, 6)
        self.store.delete("demo", self.order.order_id, "a")
        _, ranges = self.store.open_range("demo", other.order_id, "b/c")
        self.assertEqual(b"".join(r.file.read() for r in ranges), b"abcdef")
        for r in ranges:
            r.file.close()

    def test_copy_replace_metadata(self) -> None:
        """A copy with ``replace`` takes its content type and metadata."""
        self.put("a", b"abc")
        replace = NewObject(0, "", content_type="text/x", metadata={"n": "1"})
        info = self.store.copy("demo", self.order.order_id, "a", self.order.order_id, "a", replace)
        self.assertEqual((info.content_type, info.metadata, info.size), ("text/x", {"n": "1"}, 3))
        self.assertEqual(self.read("a"), b"abc")
        self.assertEqual(self.used(), 3)

    def test_copy_quota(self) -> None:
        """A copy that does not fit the destination is refused, leaving no file."""
        small = self.store.buy_order("demo", 2, 1)
        self.put("a", b"abc")
        self.assertRaises(
            QuotaExceeded, self.store.copy, "demo", self.order.order_id, "a", small.order_id, "a"
        )
        self.assertEqual(len(self.object_files()), 1)

    def test_copy_across_accounts(self) -> None:
        """A copy into another account's order is refused."""
        self.store.create_account("other")
        theirs = self.store.buy_order("other", 100, 1)
        self.put("a", b"abc")
        self.assertRaises(
            NoSuchOrder, self.store.copy, "demo", self.order.order_id, "a", theirs.order_id, "a"
        )
        self.assertRaises(
            NoSuchOrder, self.store.copy, "other", self.order.order_id, "a", theirs.order_id, "a"
        )
        self.assertEqual(len(self.object_files()), 1)


class ConcurrencyTests(StoreMixin, SynchronousTestCase):
    def test_threads_keep_accounting_exact(self) -> None:
        """Concurrent puts and deletes from several threads keep ``used`` exact."""
        order = self.store.buy_order("demo", 10**9, 1)
        segments = {(t, i): self.segment(b"x" * (t * 7 + i)) for t in range(6) for i in range(15)}
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(15):
                    segment = segments[(t, i)]
                    new = NewObject(segment.size, "e")
                    self.store.put("demo", order.order_id, f"k{i % 4}", [segment], new)
                    if i % 5 == 0:
                        self.store.delete("demo", order.order_id, f"k{(i + 1) % 4}")
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        objects = self.store.list("demo", order.order_id).objects
        used = self.store.order("demo", order.order_id).used
        self.assertEqual(used, sum(o.size for o in objects))
        self.assertEqual(len(self.object_files()), len(objects))


def model_page(keys: list[str], prefix: str, delimiter: str, marker: str) -> list[tuple[str, bool]]:
    """Every entry the listing should give, as (name, is_common_prefix), in byte order."""
    entries: set[tuple[str, bool]] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if delimiter and delimiter in rest:
            entries.add((prefix + rest[: rest.index(delimiter) + len(delimiter)], True))
        else:
            entries.add((key, False))
    ordered = sorted(entries, key=lambda e: e[0].encode())
    return [e for e in ordered if e[0].encode() > marker.encode()]


def page_entries(page: ListPage) -> list[tuple[str, bool]]:
    """Return the entries of a page in byte order."""
    entries = [(o.path, False) for o in page.objects] + [(p, True) for p in page.common_prefixes]
    return sorted(entries, key=lambda e: e[0].encode())


#: With the highest code point, whose UTF-8 bytes (F4 8F BF BF) are the highest a path has.
_keys = st.lists(
    st.text(alphabet="ab/é\x00\U0010ffff", min_size=1, max_size=6), max_size=25, unique=True
)
_parts = st.text(alphabet="ab/é\U0010ffff", max_size=3)


class ListTests(StoreMixin, SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        keys=_keys,
        prefix=_parts,
        delimiter=st.sampled_from(["", "/", "a", "b/"]),
        marker=_parts,
        max_keys=st.integers(1, 6),
    )
    def test_listing_matches_model(
        self, keys: list[str], prefix: str, delimiter: str, marker: str, max_keys: int
    ) -> None:
        """Paging through a listing gives exactly the model's entries, in order."""
        order = self.store.buy_order("demo", 10**9, 1)
        for key in keys:
            self.put(key, b"", order_id=order.order_id)
        expected = model_page(keys, prefix, delimiter, marker)
        got: list[tuple[str, bool]] = []
        for _ in range(len(expected) + 2):
            page = self.store.list("demo", order.order_id, prefix, delimiter, marker, max_keys)
            entries = page_entries(page)
            self.assertLessEqual(len(entries), max_keys)
            got += entries
            if entries:
                self.assertEqual(page.next_marker, entries[-1][0])
            self.assertEqual(page.is_truncated, len(got) < len(expected))
            if not page.is_truncated:
                break
            assert page.next_marker is not None
            marker = page.next_marker
        self.assertEqual(got, expected)

    def test_runs_of_common_prefixes(self) -> None:
        """Runs of common prefixes, between paths and cut by pages, list as the model does."""
        keys = [f"p/d{i:02d}/{j}" for i in range(30) for j in range(3)]
        keys += ["o/x", "p/f05", "p/d10", "p/é/1", "p/\U0010ffff/1", "p/\U0010ffff", "q/d00/1"]
        keys += [f"p/e{i}/x/y" for i in range(5)]
        for key in keys:
            self.put(key, b"")
        for prefix, max_keys in [("p/", 7), ("p/", 1000), ("", 2), ("p/d1", 3)]:
            expected = model_page(keys, prefix, "/", "")
            got: list[tuple[str, bool]] = []
            marker = ""
            while True:
                page = self.store.list("demo", self.order.order_id, prefix, "/", marker, max_keys)
                got += page_entries(page)
                if not page.is_truncated:
                    break
                assert page.next_marker is not None
                marker = page.next_marker
            self.assertEqual(got, expected, (prefix, max_keys))

    def test_common_prefix_marker_skips_its_paths(self) -> None:
        """A marker inside a common prefix skips the rest of that prefix."""
        for key in ["a/1", "a/2", "a/3", "b"]:
            self.put(key, b"")
        page = self.store.list("demo", self.order.order_id, "", "/", "a/1", 10)
        self.assertEqual(([o.path for o in page.objects], list(page.common_prefixes)), (["b"], []))

    def test_page_time_does_not_grow(self) -> None:
        """A page of a 100,000-path order costs a number of queries set by the page alone."""
        order = self.store.buy_order("demo", 10**9, 1)
        rows = [
            (
                order.order_id,
                f"d{i // 1000:03d}/k{i:06d}".encode(),
                0,
                "e",
                0.0,
                "b",
                "{}",
                "{}",
                "{}",
                "",
                "[]",
                "[]",
            )
            for i in range(100_000)
        ]
        db = self.store.index.connection()
        db.execute("BEGIN")
        columns = (
            "order_id, path, size, etag, last_modified, content_type, metadata, headers,"
            " checksums, checksum_type, part_sizes, files"
        )
        db.executemany(f"INSERT INTO objects ({columns}) VALUES ({', '.join('?' * 12)})", rows)
        db.execute("COMMIT")
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        self.addCleanup(db.set_trace_callback, None)
        page = self.store.list("demo", order.order_id, "d050/", "", "d050/k050100", 1000)
        flat = len(statements)
        statements.clear()
        folded = self.store.list("demo", order.order_id, "", "/", "", 1000)
        grouped = len(statements)
        self.assertEqual((len(page.objects), page.next_marker), (899, "d050/k050999"))
        self.assertEqual(len(folded.common_prefixes), 100)
        # Bounded by the page, not the order: a few statements for a flat page, and for a
        # folded one too, its run of common prefixes one statement (one seek each inside
        # SQLite; timings are the benchmark's business).
        self.assertLessEqual(flat, 10)
        self.assertLessEqual(grouped, 10)

    def test_listing_reads_only_listed_fields(self) -> None:
        """A listing selects a listed object's four columns and builds no ObjectInfo."""
        self.put("a/1", b"one", etag="e1")
        self.put("b", b"", etag="e2")
        self.store.put_tags("demo", self.order.order_id, "b", {"k": "v"})
        db = self.store.index.connection()
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        self.addCleanup(db.set_trace_callback, None)
        self.patch(listing, "ObjectInfo", None)
        self.patch(listing, "info_from_row", None)
        page = self.store.list("demo", self.order.order_id, delimiter="/")
        modified = self.clock.now
        self.assertEqual(list(page.objects), [ListedObject("b", 0, "e2", modified)])
        self.assertIs(type(page.objects[0]), ListedObject)
        self.assertEqual(list(page.common_prefixes), ["a/"])
        selects = [s for s in statements if "FROM objects" in s]
        self.assertTrue(selects)
        for statement in selects:
            # A run of common prefixes is found by the paths alone.
            hop = statement.lstrip().startswith("WITH RECURSIVE hop")
            listed = f"SELECT {listing.LISTED_COLUMNS} FROM"
            self.assertIn("SELECT o.path FROM objects" if hop else listed, statement)
