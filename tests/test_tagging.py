"""Tests for object tags: S3's rules, the store's tag column, and tags over the protocol."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import errors, wire
from lambgw.network.interface import NewObject, Segment
from lambgw.network.store import Store
from lambgw.protocol.errors import S3Error
from lambgw.protocol.tagging import (
    parse_tagging,
    parse_tagging_header,
    tagging_document,
    tagging_header,
)
from tests.test_network_http import Harness
from tests.test_store import StoreMixin


def _code(f: Any, *args: Any) -> str:
    try:
        f(*args)
    except S3Error as e:
        return e.code
    raise AssertionError("no S3Error raised")


def _document(*tags: tuple[str, str]) -> bytes:
    body = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in tags)
    return f"<Tagging><TagSet>{body}</TagSet></Tagging>".encode()


class RuleTests(SynchronousTestCase):
    """Tag sets are read and checked as S3 does."""

    def test_header_decoded(self) -> None:
        """``x-amz-tagging`` is URL-encoded UTF-8 pairs."""
        tags = parse_tagging_header("a=1&b%20c=d%2Be&caf%C3%A9=&e=x+y")
        self.assertEqual(tags, {"a": "1", "b c": "d+e", "café": "", "e": "x y"})

    def test_header_round_trip(self) -> None:
        """What ``tagging_header`` writes, ``parse_tagging_header`` reads back."""
        tags = {"k 1": "v/=+:@", "é": "ü"}
        self.assertEqual(parse_tagging_header(tagging_header(tags)), tags)

    def test_header_duplicates_refused(self) -> None:
        """A tag named twice in the header is InvalidArgument."""
        self.assertEqual(_code(parse_tagging_header, "a=1&a=2"), "InvalidArgument")

    def test_limits(self) -> None:
        """Eleven tags, long keys or values, bad characters and aws: keys are refused."""
        eleven = "&".join(f"k{i}=v" for i in range(11))
        self.assertEqual(_code(parse_tagging_header, eleven), "BadRequest")
        self.assertEqual(_code(parse_tagging_header, "k" * 129 + "=v"), "InvalidTag")
        self.assertEqual(_code(parse_tagging_header, "k=" + "v" * 257), "InvalidTag")
        self.assertEqual(_code(parse_tagging_header, "k%3C=v"), "InvalidTag")
        self.assertEqual(_code(parse_tagging_header, "aws:k=v"), "InvalidTag")
        self.assertEqual(_code(parse_tagging_header, "=v"), "InvalidTag")
        longest = parse_tagging_header("k" * 128 + "=" + "v" * 256)
        self.assertEqual(len(longest), 1)

    def test_document(self) -> None:
        """A ``<Tagging>`` document gives its tags; the answer document round-trips."""
        tags = parse_tagging(_document(("a", "1"), ("b", "")))
        self.assertEqual(tags, {"a": "1", "b": ""})
        self.assertEqual(parse_tagging(tagging_document(tags)), tags)

    def test_document_errors(self) -> None:
        """Duplicate keys are InvalidTag, eleven tags BadRequest, no TagSet MalformedXML."""
        self.assertEqual(_code(parse_tagging, _document(("a", "1"), ("a", "2"))), "InvalidTag")
        many = [(f"k{i}", "v") for i in range(11)]
        self.assertEqual(_code(parse_tagging, _document(*many)), "BadRequest")
        self.assertEqual(_code(parse_tagging, b"<Tagging></Tagging>"), "MalformedXML")
        self.assertEqual(_code(parse_tagging, b"<Tagging><TagSet>"), "MalformedXML")


class StoreTagTests(StoreMixin, SynchronousTestCase):
    """The store keeps tags with the object."""

    def put_tagged(self, path: str, tags: dict[str, str]) -> None:
        new = NewObject(3, "e", tags=tags)
        self.store.put("demo", self.order.order_id, path, [self.segment(b"abc")], new)

    def test_put_with_tags(self) -> None:
        """Tags stored with an object are counted by head and read back whole."""
        self.put_tagged("a", {"k": "v", "x": ""})
        self.assertEqual(self.store.head("demo", self.order.order_id, "a").tag_count, 2)
        self.assertEqual(self.store.get_tags("demo", self.order.order_id, "a"), {"k": "v", "x": ""})

    def test_replace_and_remove(self) -> None:
        """put_tags replaces the set, leaving the object as it was; an empty set removes it."""
        self.put_tagged("a", {"k": "v"})
        before = self.store.head("demo", self.order.order_id, "a")
        self.store.put_tags("demo", self.order.order_id, "a", {"n": "1"})
        self.assertEqual(self.store.get_tags("demo", self.order.order_id, "a"), {"n": "1"})
        self.store.put_tags("demo", self.order.order_id, "a", {})
        after = self.store.head("demo", self.order.order_id, "a")
        self.assertEqual((after.tag_count, after.etag), (0, before.etag))
        self.assertEqual(after.last_modified, before.last_modified)

    def test_missing_object(self) -> None:
        """Tags of a missing object are NoSuchPath."""
        order = self.order.order_id
        self.assertRaises(errors.NoSuchPath, self.store.get_tags, "demo", order, "nope")
        self.assertRaises(errors.NoSuchPath, self.store.put_tags, "demo", order, "nope", {})

    def test_copy_keeps_or_replaces(self) -> None:
        """A copy has the source's tags, or those given."""
        order = self.order.order_id
        self.put_tagged("a", {"k": "v"})
        self.assertEqual(self.store.copy("demo", order, "a", order, "b").tag_count, 1)
        self.assertEqual(self.store.get_tags("demo", order, "b"), {"k": "v"})
        self.store.copy("demo", order, "a", order, "c", tags={"n": "1", "m": "2"})
        self.assertEqual(self.store.get_tags("demo", order, "c"), {"n": "1", "m": "2"})

    def test_listing_leaves_tags_to_head(self) -> None:
        """A tagged object is listed like any other; its tag count is in its description.

        An S3 listing shows no tags, so a listed object does not carry them.
        """
        self.put_tagged("a", {"k": "v"})
        page = self.store.list("demo", self.order.order_id)
        head = self.store.head("demo", self.order.order_id, "a")
        self.assertEqual(
            list(page.objects), [(head.path, head.size, head.etag, head.last_modified)]
        )
        self.assertEqual(head.tag_count, 1)


class MigrationTests(SynchronousTestCase):
    """A store made before tags existed opens and keeps working."""

    def test_old_store_gains_tags(self) -> None:
        """The tag column is added; old objects have no tags and can be tagged."""
        root = self.mktemp()
        store = Store(root, durable=False)
        order = store.ensure_account("demo", 1000, 30)[0]
        store.put("demo", order.order_id, "old", [Segment("", 2, b"ab")], NewObject(2, "e"))
        store.close()
        db = sqlite3.connect(os.path.join(root, "index.sqlite3"))
        db.execute("ALTER TABLE objects DROP COLUMN tags")
        db.commit()
        db.close()
        store = Store(root, durable=False)
        self.addCleanup(store.close)
        self.assertEqual(store.head("demo", order.order_id, "old").tag_count, 0)
        self.assertEqual(store.get_tags("demo", order.order_id, "old"), {})
        store.put_tags("demo", order.order_id, "old", {"k": "v"})
        self.assertEqual(store.head("demo", order.order_id, "old").tag_count, 1)


class ProtocolTagTests(SynchronousTestCase):
    """Tags travel between the HTTP network and a node."""

    def setUp(self) -> None:
        self.h = Harness(self.mktemp())
        self.order = self.h.order.order_id
        self.spool = self.mktemp()
        os.makedirs(self.spool)

    def put(self, path: str, tags: dict[str, str]) -> Any:
        segment = Segment("", 3, b"abc")
        return self.h.run(
            self.h.network.put_object(
                "demo", self.order, path, [segment], NewObject(3, "e", tags=tags)
            )
        )

    def test_tags_round_trip(self) -> None:
        """Tags put with an object, replaced and copied come back from the node."""
        network = self.h.network
        self.assertEqual(self.put("a", {"k": "v", "é": "ü"}).tag_count, 2)
        self.assertEqual(self.h.run(network.head_object("demo", self.order, "a")).tag_count, 2)
        self.assertEqual(
            self.h.run(network.get_tags("demo", self.order, "a")), {"k": "v", "é": "ü"}
        )
        self.h.run(network.put_tags("demo", self.order, "a", {"n": "1"}))
        self.assertEqual(self.h.store.get_tags("demo", self.order, "a"), {"n": "1"})
        copied = self.h.run(network.copy_object("demo", self.order, "a", self.order, "b"))
        self.assertEqual(copied.tag_count, 1)
        self.h.run(network.copy_object("demo", self.order, "a", self.order, "c", tags={}))
        self.assertEqual(self.h.store.get_tags("demo", self.order, "c"), {})

    def test_missing_object(self) -> None:
        """Tags of a missing object are NoSuchPath over the protocol too."""
        result = self.h.run(self.h.network.get_tags("demo", self.order, "nope"))
        self.assertIsInstance(result, Failure)
        result.trap(errors.NoSuchPath)

    def test_node_bounds_tags(self) -> None:
        """The node refuses more tags than an object may have."""
        many = {f"k{i}": "v" for i in range(wire.MAX_TAGS + 1)}
        self.put("a", {})
        result = self.h.run(self.h.network.put_tags("demo", self.order, "a", many))
        self.assertIsInstance(result, Failure)
        result.trap(errors.NetworkError)
        self.assertEqual(self.h.store.get_tags("demo", self.order, "a"), {})
