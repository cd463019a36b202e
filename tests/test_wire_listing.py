"""Tests for a listing page on the wire: its columns (written by SQLite or Python), over a node."""

from __future__ import annotations

import json
import random
import sqlite3
from typing import Any

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import wire
from lambgw.network.errors import NetworkError
from lambgw.network.interface import ListedObject, ListPage, NewObject, Segment, millis
from lambgw.network.listing import MILLIS_SQL
from lambgw.network.store import Store
from tests.test_network_http import Harness

#: Paths a listing must carry unchanged: non-ASCII, markup, JSON's own quoting, the longest.
ODD_PATHS = [
    "é/ü",
    "\U0001f600 smile",
    "a&b<c>d\"e'f",
    'back\\slash "quoted"',
    "line\nbreak\ttab\r",
    "\x00nul",
    "/",
    "k" * 1024,
    "é" * 512,
]


def over_wire(page: ListPage) -> ListPage:
    """``page`` as the node sends it and the gateway reads it."""
    return wire.page_from_json(json.loads(wire.page_body(wire.PageColumns.of(page))))


class PageJSONTests(SynchronousTestCase):
    def test_odd_paths_round_trip(self) -> None:
        """Odd paths, sizes, multipart ETags and times to the millisecond come back exactly."""
        objects = [
            ListedObject(path, n * 5 * 2**40, f"{n:032x}-{n + 1}", 1_700_000_000.123 + n)
            for n, path in enumerate(sorted(ODD_PATHS, key=str.encode))
        ]
        page = ListPage(objects, ["a&b/", "é/"], True, objects[-1].path)
        got = over_wire(page)
        self.assertEqual(got, page)
        self.assertTrue(all(type(o) is ListedObject for o in got.objects))

    def test_empty_page(self) -> None:
        """An empty page stays empty, untruncated and without a marker."""
        self.assertEqual(over_wire(ListPage([], [], False, None)), ListPage([], [], False, None))

    def test_common_prefixes_only(self) -> None:
        """A page of common prefixes only keeps them in order, and its marker."""
        page = ListPage([], ["a/", "b <c>/", "é/"], True, "é/")
        self.assertEqual(over_wire(page), page)

    def test_objects_are_columns(self) -> None:
        """Listed objects travel as four arrays: paths, sizes, ETags and milliseconds."""
        page = ListPage(
            [ListedObject("a", 1, "e", 1.5), ListedObject("b", 2, "f", 2.0)], [], False, "b"
        )
        encoded = json.loads(wire.page_body(wire.PageColumns.of(page)))
        self.assertEqual(
            encoded,
            {
                "paths": ["a", "b"],
                "sizes": [1, 2],
                "etags": ["e", "f"],
                "millis": [1500, 2000],
                "common_prefixes": [],
                "is_truncated": False,
                "next_marker": "b",
            },
        )

    def test_times_to_the_millisecond(self) -> None:
        """A time is listed to the millisecond, as S3 lists it: the rest does not travel."""
        page = ListPage([ListedObject("a", 1, "e", 1_700_000_000.1236)], [], False, "a")
        (listed,) = over_wire(page).objects
        self.assertEqual(listed.last_modified, 1_700_000_000.124)

    @given(
        st.lists(
            st.tuples(
                st.text(min_size=1),
                st.integers(0, 5 * 2**40),
                st.text(),
                st.floats(0, 2**33, allow_nan=False),
            ),
            max_size=20,
        )
    )
    def test_any_objects_round_trip(self, rows: list[tuple[str, int, str, float]]) -> None:
        """Whatever the listed objects' fields, they come back equal (times to the ms)."""
        page = ListPage([ListedObject(*row) for row in rows], [], False, None)
        expected = [o._replace(last_modified=millis(o.last_modified) / 1000) for o in page.objects]
        self.assertEqual(over_wire(page).objects, expected)

    def test_malformed_refused(self) -> None:
        """A page the gateway cannot read is a NetworkError, not a crash."""
        good: dict[str, Any] = {
            "paths": ["a"],
            "sizes": [1],
            "etags": ["e"],
            "millis": [1500],
            "common_prefixes": ["b/"],
            "is_truncated": False,
            "next_marker": "b/",
        }
        self.assertEqual(wire.page_from_json(good).objects, [ListedObject("a", 1, "e", 1.5)])
        for change in (
            {"paths": ["a", "b"]},
            {"millis": []},
            {"sizes": ["one"]},
            {"sizes": [True]},
            {"millis": [1.5]},
            {"paths": [7]},
            {"etags": [None]},
            {"paths": "a"},
            {"sizes": {"1": 1}},
            {"common_prefixes": [3]},
            {"common_prefixes": "b/"},
            {"next_marker": 5},
        ):
            with self.subTest(change=change):
                self.assertRaises(NetworkError, wire.page_from_json, {**good, **change})
        for missing in good:
            partial = {k: v for k, v in good.items() if k != missing}
            self.assertRaises(NetworkError, wire.page_from_json, partial)
        self.assertRaises(NetworkError, wire.page_from_json, [])

    @given(st.floats(0, 2**34, allow_nan=False))
    def test_millis_as_sqlite_rounds(self, seconds: float) -> None:
        """Python and SQLite round every time to the same millisecond."""
        db = sqlite3.connect(":memory:")
        self.addCleanup(db.close)
        (sql,) = db.execute(f"SELECT {MILLIS_SQL} FROM (SELECT ? AS last_modified)", [seconds])
        self.assertEqual(sql[0], millis(seconds))

    def test_half_millisecond_rounds_up(self) -> None:
        """A time exactly half way between two milliseconds lists as the later one."""
        self.assertEqual((millis(0.0005), millis(1.0025), millis(2.5)), (1, 1003, 2500))


class NodeListingTests(SynchronousTestCase):
    def test_listing_over_node_is_the_store_listing(self) -> None:
        """Over a node, odd paths and prefixes list as in the store (times to the millisecond)."""
        h = Harness(self.mktemp())
        order = h.order.order_id
        for n, path in enumerate([*ODD_PATHS, "dir/x", "dir/y"]):
            data = str(n).encode()
            new = NewObject(size=len(data), etag=f"{n:032x}")
            h.run(h.network.put_object("demo", order, path, [Segment("", len(data), data)], new))
        for delimiter in ("", "/"):
            remote = h.run(h.network.list_objects("demo", order, delimiter=delimiter))
            local = h.store.list("demo", order, delimiter=delimiter)
            to_ms = [
                o._replace(last_modified=millis(o.last_modified) / 1000) for o in local.objects
            ]
            self.assertEqual(remote, evolve(local, objects=to_ms))
        self.assertIn("dir/", local.common_prefixes)

    def test_pages_over_node_are_the_store_pages(self) -> None:
        """Walking an order in pages over a node gives the store's pages, marker by marker."""
        h = Harness(self.mktemp())
        order = h.order.order_id
        for n in range(23):
            data = b"x" * n
            new = NewObject(size=n, etag=f"{n:032x}")
            path = f"p/{n % 5}/{n:03d}"
            h.run(h.network.put_object("demo", order, path, [Segment("", n, data)], new))
        for prefix, max_keys in (("", 4), ("p/", 7), ("p/3", 2), ("p/9", 3), ("", 1000)):
            marker: str | None = ""
            while marker is not None:
                remote = h.run(h.network.list_objects("demo", order, prefix, "", marker, max_keys))
                local = h.store.list("demo", order, prefix, "", marker, max_keys)
                to_ms = [
                    o._replace(last_modified=millis(o.last_modified) / 1000) for o in local.objects
                ]
                self.assertEqual(remote, evolve(local, objects=to_ms))
                marker = local.next_marker if local.is_truncated else None


class StoreColumnsTests(SynchronousTestCase):
    """The columns SQLite writes for a listing are those of the page listed in Python."""

    def setUp(self) -> None:
        times = iter(1_700_000_000 + random.Random(7).random() * 10**6 for _ in range(10**4))
        self.store = Store(self.mktemp(), clock=lambda: next(times), durable=False)
        self.addCleanup(self.store.close)
        self.store.create_account("demo")
        self.order = self.store.buy_order("demo", 1 << 30, 30).order_id
        paths = [*ODD_PATHS, "a", "a/b", "a/b/c", "a0", "\xff", "\U0010ffff"]
        paths += [f"k/{n % 7}/{n:04d}" for n in range(300)]
        random.Random(3).shuffle(paths)
        for n, path in enumerate(paths):
            data = b"y" * (n % 9)
            new = NewObject(size=len(data), etag=f"{n:032x}-{n % 4}")
            self.store.put("demo", self.order, path, [Segment("", len(data), data)], new)
        self.paths = paths

    def assertSamePage(self, prefix: str, delimiter: str, marker: str, max_keys: int) -> bool:
        """Assert both pages are the same; return whether the listing is truncated."""
        args = ("demo", self.order, prefix, delimiter, marker, max_keys)
        page = self.store.list(*args)
        sql = json.loads(wire.page_body(self.store.list_columns(*args)))
        python = json.loads(wire.page_body(wire.PageColumns.of(page)))
        self.assertEqual(sql, python, args)
        self.assertEqual(sql["paths"], [o.path for o in page.objects])
        return page.is_truncated

    def test_walks(self) -> None:
        """Walks with any page size, prefix and marker list the same pages both ways."""
        for prefix in ("", "k/", "k/3/", "a", "\xff", "zz", "é"):
            for max_keys in (0, 1, 2, 7, 1000):
                marker = ""
                while self.assertSamePage(prefix, "", marker, max_keys) and max_keys:
                    page = self.store.list("demo", self.order, prefix, "", marker, max_keys)
                    assert page.next_marker is not None
                    marker = page.next_marker

    def test_markers(self) -> None:
        """Markers before, inside, between and after the keys list the same both ways."""
        for marker in ("", "a", "a/", "a/b/c", "k/3", "k/3/0150", "k/9", "\U0010ffff", "\xff\xff"):
            for prefix in ("", "k/", "a"):
                self.assertSamePage(prefix, "", marker, 50)

    def test_delimiter_pages_are_listed_in_python(self) -> None:
        """With a delimiter, the columns are those of the page listed in Python."""
        self.assertFalse(self.assertSamePage("", "/", "", 1000))
        self.assertTrue(self.assertSamePage("k/", "/", "", 3))

    def test_ordered_by_bytes(self) -> None:
        """SQLite's arrays are in byte order of the UTF-8 paths, whatever the insertion order."""
        columns = self.store.list_columns("demo", self.order, "", "", "", 1000)
        self.assertEqual(json.loads(columns.paths), sorted(self.paths, key=str.encode))
