"""Tests for a listing page on the wire: its compact JSON, and a listing over a node."""

from __future__ import annotations

import json
from typing import Any

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import wire
from lambgw.network.errors import NetworkError
from lambgw.network.interface import ListedObject, ListPage, NewObject, Segment
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
    body = json.dumps(wire.page_to_json(page)).encode("utf-8")
    return wire.page_from_json(json.loads(body))


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

    def test_object_is_an_array(self) -> None:
        """A listed object travels as ``[path, size, etag, milliseconds]``."""
        page = ListPage([ListedObject("a", 1, "e", 1.5)], [], False, "a")
        encoded = json.loads(json.dumps(wire.page_to_json(page)))
        self.assertEqual(encoded["objects"], [["a", 1, "e", 1500]])

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
        expected = [
            o._replace(last_modified=round(o.last_modified * 1000) / 1000) for o in page.objects
        ]
        self.assertEqual(over_wire(page).objects, expected)

    def test_malformed_refused(self) -> None:
        """A page the gateway cannot read is a NetworkError, not a crash."""
        good: dict[str, Any] = {
            "objects": [["a", 1, "e", 1500]],
            "common_prefixes": [],
            "is_truncated": False,
            "next_marker": "a",
        }
        self.assertEqual(wire.page_from_json(good).objects, [ListedObject("a", 1, "e", 1.5)])
        for objects in (
            [["a", 1, "e"]],
            [["a", "one", "e", 1500]],
            [["a", 1, "e", 1.5]],
            [[7, 1, "e", 1500]],
            [{"path": "a"}],
            [None],
            3,
        ):
            self.assertRaises(NetworkError, wire.page_from_json, {**good, "objects": objects})
        self.assertRaises(NetworkError, wire.page_from_json, {"objects": []})
        self.assertRaises(NetworkError, wire.page_from_json, [])


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
                o._replace(last_modified=round(o.last_modified * 1000) / 1000)
                for o in local.objects
            ]
            self.assertEqual(remote, evolve(local, objects=to_ms))
        self.assertIn("dir/", local.common_prefixes)
