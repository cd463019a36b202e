"""Tests of the multipart completion rules, uploads listing, S3 parsing and keep-alive."""

from __future__ import annotations

import base64
import hashlib
import zlib
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from lambgw.gateway.multipart import check_part_number
from lambgw.network import errors as net
from lambgw.network.completion import (
    MIN_PART_SIZE,
    choose_parts,
    final_checksum,
    final_etag,
    page_uploads,
)
from lambgw.network.interface import CompletedPart, MultipartUpload, ObjectInfo, PartInfo
from lambgw.protocol.auth import PayloadMode
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import parse, text
from lambgw.s3.multipart import (
    KEEPALIVE_AFTER,
    KEEPALIVE_EVERY,
    MultipartAPI,
    parse_complete,
)
from lambgw.s3.request import RequestState, parse_target


def _part(number: int, size: int, etag: str = "") -> PartInfo:
    return PartInfo(number, size, etag or hashlib.md5(str(number).encode()).hexdigest(), 0.0)


class CompletionRuleTests(SynchronousTestCase):
    """What CompleteMultipartUpload accepts, and the ETag and checksum it computes."""

    def test_part_numbers(self) -> None:
        """Part numbers 1 to 10000 are accepted, 0 and 10001 are InvalidArgument."""
        self.assertEqual(check_part_number("1"), 1)
        self.assertEqual(check_part_number("10000"), 10000)
        for bad in ("0", "10001", "-1", "x", ""):
            with self.assertRaises(S3Error) as e:
                check_part_number(bad)
            self.assertEqual(e.exception.code, "InvalidArgument")

    def _codes(self, requested: list[CompletedPart], parts: dict[int, PartInfo]) -> str:
        with self.assertRaises(net.NetworkError) as e:
            choose_parts(requested, parts)
        return type(e.exception).__name__

    def test_errors(self) -> None:
        """Out of order, duplicate, unknown, wrong ETag and small parts are refused."""
        big = MIN_PART_SIZE
        parts = {1: _part(1, big), 2: _part(2, big), 3: _part(3, 10)}
        ok = [CompletedPart(n, parts[n].etag) for n in (1, 2, 3)]
        self.assertEqual(choose_parts(ok, parts), [parts[1], parts[2], parts[3]])
        self.assertEqual(self._codes([], parts), "InvalidPart")
        self.assertEqual(self._codes([ok[1], ok[0]], parts), "InvalidPartOrder")
        self.assertEqual(self._codes([ok[0], ok[0]], parts), "InvalidPartOrder")
        self.assertEqual(self._codes([CompletedPart(4, "x")], parts), "InvalidPart")
        self.assertEqual(self._codes([CompletedPart(1, "0" * 32)], parts), "InvalidPart")
        self.assertEqual(self._codes([ok[2], CompletedPart(4, "x")], parts), "InvalidPart")
        small = {1: _part(1, 10), 2: _part(2, 10)}
        self.assertEqual(
            self._codes([CompletedPart(1, small[1].etag), CompletedPart(2, small[2].etag)], small),
            "EntityTooSmall",
        )

    def test_quoted_etags(self) -> None:
        """ETags in Complete may be quoted, as clients send them."""
        part = _part(1, 3)
        self.assertEqual(choose_parts([CompletedPart(1, f'"{part.etag}"')], {1: part}), [part])

    def test_final_etag(self) -> None:
        """The ETag is the MD5 of the binary part MD5s followed by -N."""
        a, b = hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()
        parts = [_part(1, 1, a.hex()), _part(2, 1, b.hex())]
        self.assertEqual(final_etag(parts), hashlib.md5(a + b).hexdigest() + "-2")

    def test_full_object_crc32(self) -> None:
        """A FULL_OBJECT CRC32 is the CRC32 of the whole object."""
        chunks = [b"hello ", b"multipart ", b"world"]
        parts = [
            PartInfo(
                i + 1,
                len(c),
                "",
                0.0,
                {"crc32": base64.b64encode(zlib.crc32(c).to_bytes(4, "big")).decode()},
            )
            for i, c in enumerate(chunks)
        ]
        whole = zlib.crc32(b"".join(chunks)).to_bytes(4, "big")
        self.assertEqual(
            final_checksum("crc32", "FULL_OBJECT", parts), base64.b64encode(whole).decode()
        )

    def test_composite_crc32(self) -> None:
        """A COMPOSITE CRC32 is the CRC32 of the parts' CRC32s, followed by -N."""
        digests = [zlib.crc32(c).to_bytes(4, "big") for c in (b"x", b"y")]
        parts = [
            PartInfo(i + 1, 1, "", 0.0, {"crc32": base64.b64encode(d).decode()})
            for i, d in enumerate(digests)
        ]
        outer = zlib.crc32(b"".join(digests)).to_bytes(4, "big")
        self.assertEqual(
            final_checksum("crc32", "COMPOSITE", parts), base64.b64encode(outer).decode() + "-2"
        )

    def test_no_checksum_without_every_part(self) -> None:
        """No whole-object checksum when a part has none."""
        self.assertIsNone(final_checksum("crc32", "COMPOSITE", [_part(1, 1)]))

    def test_parse_complete(self) -> None:
        """The Complete document gives part numbers, ETags and checksums in its order."""
        body = (
            b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b'<Part><PartNumber>2</PartNumber><ETag>"e2"</ETag>'
            b"<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>"
            b"<Part><PartNumber>1</PartNumber><ETag>e1</ETag></Part>"
            b"</CompleteMultipartUpload>"
        )
        self.assertEqual(
            parse_complete(body),
            [CompletedPart(2, '"e2"', {"crc32": "AAAAAA=="}), CompletedPart(1, "e1")],
        )

    def test_parse_complete_malformed(self) -> None:
        """Malformed XML, no part and parts without numbers are MalformedXML."""
        for body in (b"<CompleteMultipartUpload>", b"<Other/>",
                     b"<CompleteMultipartUpload></CompleteMultipartUpload>",
                     b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part>"
                     b"</CompleteMultipartUpload>"):  # fmt: skip
            with self.assertRaises(S3Error) as e:
                parse_complete(body)
            self.assertEqual(e.exception.code, "MalformedXML")


class ListUploadsTests(SynchronousTestCase):
    """ListMultipartUploads paging: prefix, delimiter, markers, max-uploads."""

    def setUp(self) -> None:
        self.uploads = [
            MultipartUpload(f"id{i}", "o", key, float(i))
            for i, key in enumerate(["test/g1", "test/g1", "test/g2", "test/h", "x/y", "z"])
        ]

    def test_prefix(self) -> None:
        """Only keys under the prefix, by key then by time initiated."""
        page = page_uploads(self.uploads, prefix="test/g")
        self.assertEqual([u.upload_id for u in page.uploads], ["id0", "id1", "id2"])
        self.assertFalse(page.is_truncated)

    def test_delimiter(self) -> None:
        """Keys past the delimiter are rolled into common prefixes."""
        page = page_uploads(self.uploads, delimiter="/")
        self.assertEqual(page.common_prefixes, ["test/", "x/"])
        self.assertEqual([u.path for u in page.uploads], ["z"])

    def test_paging(self) -> None:
        """Pages follow each other through NextKeyMarker and NextUploadIdMarker."""
        seen = []
        key_marker = upload_id_marker = ""
        while True:
            page = page_uploads(
                self.uploads, key_marker=key_marker, upload_id_marker=upload_id_marker,
                max_uploads=2,
            )  # fmt: skip
            seen += [u.upload_id for u in page.uploads]
            if not page.is_truncated:
                break
            key_marker, upload_id_marker = page.next_key_marker, page.next_upload_id_marker
        self.assertEqual(seen, [f"id{i}" for i in range(6)])

    def test_key_marker_alone(self) -> None:
        """A key marker without an upload id marker skips every upload of that key."""
        page = page_uploads(self.uploads, key_marker="test/g1")
        self.assertEqual(page.uploads[0].upload_id, "id2")


class _Request:
    """Just enough of an S3Request for the CompleteMultipartUpload handler."""

    def __init__(self, body: bytes) -> None:
        self.code = 200
        self.headers: dict[bytes, bytes] = {}
        self.written: list[bytes] = []
        self.finished = False
        self.channel = object()
        self.requestHeaders = Headers()
        self.s3 = RequestState(
            request_id="REQ",
            started=0.0,
            auth=SimpleNamespace(payload=PayloadMode.UNSIGNED),
            received=body,
        )

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Uploads:
    """A MultipartUploads stand-in whose completion fires when the test says."""

    def __init__(self) -> None:
        self.completing: Deferred[ObjectInfo] = Deferred()

    def complete(self, *args: Any) -> Deferred[ObjectInfo]:
        return self.completing


class CompleteKeepAliveTests(SynchronousTestCase):
    """A slow completion answers 200 early, sends whitespace, then the result or the error."""

    BODY = (
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part>"
        b"</CompleteMultipartUpload>"
    )

    def setUp(self) -> None:
        self.clock = Clock()
        self.uploads = _Uploads()
        self.api = MultipartAPI(self.uploads, self.clock, None, None)  # type: ignore[arg-type]
        self.request = _Request(self.BODY)
        target = parse_target(b"/b/a/key?uploadId=u")
        self.result = self.api.complete(None, self.request, target)  # type: ignore[arg-type]
        self.info = ObjectInfo("O", "a/key", 10, "abc-1", 0.0)

    def body(self) -> bytes:
        return b"".join(self.request.written) + self.successResultOf(self.result)

    def test_fast_completion_is_one_document(self) -> None:
        """A completion done at once is an ordinary response with the ETag header."""
        self.uploads.completing.callback(self.info)
        self.assertEqual(self.request.written, [])
        self.assertEqual(self.request.headers[b"ETag"], b'"abc-1"')
        self.assertIn(b"<ETag>&quot;abc-1&quot;</ETag>", self.body())

    def test_slow_completion_keeps_alive(self) -> None:
        """A slow completion starts a 200 at once, then sends spaces every few seconds."""
        self.clock.advance(KEEPALIVE_AFTER)
        self.assertEqual(self.request.code, 200)
        self.clock.advance(KEEPALIVE_EVERY)
        self.clock.advance(KEEPALIVE_EVERY)
        self.assertEqual(self.request.written[1:], [b" ", b" "])
        self.uploads.completing.callback(self.info)
        tree = parse(self.body(), "CompleteMultipartUploadResult")
        self.assertEqual(text(tree, "ETag"), '"abc-1"')
        self.clock.advance(KEEPALIVE_EVERY * 2)
        self.assertEqual(len(self.request.written), 3)

    def test_slow_failure_in_body(self) -> None:
        """A slow completion that fails sends the S3 error document in the 200 body."""
        self.clock.advance(KEEPALIVE_AFTER + KEEPALIVE_EVERY)
        self.uploads.completing.errback(S3Error.of("InvalidPart", "no"))
        self.assertEqual(text(parse(self.body(), "Error"), "Code"), "InvalidPart")
