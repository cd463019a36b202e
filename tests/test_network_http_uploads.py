"""Tests of multipart uploads over the network protocol: the client against the node in memory."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import errors
from lambgw.network.interface import CompletedPart, NewObject, Segment
from tests.test_network_http import Harness, _segment

MiB = 1 << 20


def md5(data: bytes) -> str:
    """The hex MD5 of ``data``."""
    return hashlib.md5(data).hexdigest()


class UploadsOverHTTPTests(SynchronousTestCase):
    """Every multipart call of the network interface works the same over the protocol."""

    def setUp(self) -> None:
        self.spool = self.mktemp()
        os.makedirs(self.spool)
        self.h = Harness(self.mktemp())
        self.order = self.h.store.buy_order("demo", 64 * MiB, 30).order_id
        self.network = self.h.network
        self.count = 0

    def ok(self, d: Any) -> Any:
        """Run ``d`` to its result, which must not be a failure."""
        result = self.h.run(d)
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def fails(self, error: type[Exception], d: Any) -> None:
        """Run ``d``; it must fail with ``error``."""
        result = self.h.run(d)
        self.assertIsInstance(result, Failure)
        assert isinstance(result, Failure)
        result.trap(error)

    def segment(self, data: bytes) -> Segment:
        """Spool ``data`` into a file (a large one) or keep it in memory."""
        self.count += 1
        return _segment(self.spool, f"p{self.count}", data)

    def part(self, upload_id: str, number: int, data: bytes, path: str = "k") -> Any:
        """Send ``data`` as part ``number``."""
        return self.network.upload_part(
            "demo", self.order, path, upload_id, number, self.segment(data), md5(data), {}
        )

    def test_upload_list_complete(self) -> None:
        """Parts sent to the node list, complete by reference, and read back whole."""
        upload = self.ok(
            self.network.create_upload(
                "demo", self.order, "k", NewObject(0, "", "text/plain", {"color": "blue"})
            )
        )
        one, two = os.urandom(5 * MiB), b"tail"
        stored = self.ok(self.part(upload.upload_id, 1, one))
        self.assertEqual((stored.number, stored.size, stored.etag), (1, len(one), md5(one)))
        self.ok(self.part(upload.upload_id, 2, two))
        page = self.ok(self.network.list_uploads("demo", self.order, prefix="k"))
        self.assertEqual([u.upload_id for u in page.uploads], [upload.upload_id])
        self.assertEqual(page.uploads[0].parts, 2)
        parts = self.ok(self.network.list_parts("demo", self.order, "k", upload.upload_id, 1))
        self.assertEqual([p.number for p in parts.parts], [2])
        self.assertEqual(parts.upload.metadata, {"color": "blue"})
        named = [CompletedPart(1, md5(one)), CompletedPart(2, f'"{md5(two)}"')]
        info = self.ok(
            self.network.complete_upload("demo", self.order, "k", upload.upload_id, named)
        )
        self.assertTrue(info.etag.endswith("-2"))
        self.assertEqual(self.h.store.order("demo", self.order).used, len(one) + len(two))
        again = self.ok(
            self.network.complete_upload("demo", self.order, "k", upload.upload_id, named)
        )
        self.assertEqual(again, info)
        self.assertEqual(self.h.store.order("demo", self.order).used, len(one) + len(two))
        _, ranges = self.h.store.open_range("demo", self.order, "k")
        data = b""
        for r in ranges:
            r.file.seek(r.offset)
            data += r.file.read(r.length)
            r.file.close()
        self.assertEqual(data, one + two)

    def test_errors_travel(self) -> None:
        """The network's refusals arrive as the same exceptions."""
        upload = self.ok(self.network.create_upload("demo", self.order, "k", NewObject(0, "")))
        self.ok(self.part(upload.upload_id, 1, b"small"))
        self.ok(self.part(upload.upload_id, 2, b"last"))
        complete = self.network.complete_upload
        self.fails(
            errors.EntityTooSmall,
            complete(
                "demo",
                self.order,
                "k",
                upload.upload_id,
                [CompletedPart(1, md5(b"small")), CompletedPart(2, md5(b"last"))],
            ),
        )
        self.fails(
            errors.InvalidPart,
            complete("demo", self.order, "k", upload.upload_id, [CompletedPart(1, "x")]),
        )
        self.fails(errors.NoSuchUpload, self.part(upload.upload_id, 1, b"x", path="other"))
        self.fails(errors.NoSuchUpload, self.part("../../x", 1, b"x"))
        self.fails(errors.QuotaExceeded, self.part(upload.upload_id, 3, b"x" * (64 * MiB - 8)))
        self.ok(self.network.abort_upload("demo", self.order, "k", upload.upload_id))
        self.assertEqual(self.h.store.order("demo", self.order).used, 0)
        self.fails(
            errors.NoSuchUpload,
            self.network.abort_upload("demo", self.order, "k", upload.upload_id),
        )

    def test_kept_id(self) -> None:
        """An upload brought over keeps its id; the id cannot be taken twice."""
        create = self.network.create_upload
        upload = self.ok(create("demo", self.order, "k", NewObject(0, ""), "", "old_Id-1"))
        self.assertEqual(upload.upload_id, "old_Id-1")
        self.fails(
            errors.UploadExists, create("demo", self.order, "k", NewObject(0, ""), "", "old_Id-1")
        )

    def stream_part(self, upload_id: str, number: int, data: bytes, digest: str = "") -> Any:
        """Stream ``data`` as part ``number`` and finish it; the result or failure."""
        upload = self.network.open_part("demo", self.order, "k", upload_id, number, len(data))
        assert upload is not None
        for start in range(0, len(data), 100_000):
            upload.write(data[start : start + 100_000])
        new = NewObject(len(data), md5(data), checksums={"crc32": "AAAAAA=="})
        return self.h.run(upload.finish(new, digest or hashlib.sha256(data).hexdigest()))

    def test_streamed_part(self) -> None:
        """A part streamed as its bytes come is stored with its ETag and checksums, charged."""
        upload = self.ok(self.network.create_upload("demo", self.order, "k", NewObject(0, "")))
        data = os.urandom(700_000)
        info = self.stream_part(upload.upload_id, 2, data)
        self.assertEqual(
            (info.size, info.etag, info.checksums), (700_000, md5(data), {"crc32": "AAAAAA=="})
        )
        page = self.ok(self.network.list_parts("demo", self.order, "k", upload.upload_id))
        self.assertEqual([(p.number, p.etag) for p in page.parts], [(2, md5(data))])
        self.assertEqual(self.h.store.order("demo", self.order).used, 700_000)

    def test_streamed_part_bad_digest(self) -> None:
        """A streamed part whose digest is not its bytes' is refused; nothing is charged."""
        upload = self.ok(self.network.create_upload("demo", self.order, "k", NewObject(0, "")))
        result = self.stream_part(upload.upload_id, 1, os.urandom(300_000), "0" * 64)
        self.assertIsInstance(result, Failure)
        page = self.ok(self.network.list_parts("demo", self.order, "k", upload.upload_id))
        self.assertEqual((list(page.parts), self.h.store.order("demo", self.order).used), ([], 0))
