"""Tests of the multipart upload store, completion rules, uploads listing and keep-alive."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from lambgw.gateway.multipart import (
    COMPLETING,
    MIN_PART_SIZE,
    Completion,
    Part,
    Upload,
    UploadStore,
    check_part_number,
    choose_parts,
    final_checksum,
    final_etag,
)
from lambgw.network.interface import ObjectInfo
from lambgw.protocol.auth import PayloadMode
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import parse, text
from lambgw.s3.multipart import (
    KEEPALIVE_AFTER,
    KEEPALIVE_EVERY,
    MultipartAPI,
    page_uploads,
    parse_complete,
)
from lambgw.s3.request import RequestState, parse_target


def _upload(key: str = "a/key", bucket: str = "b", account: str = "demo") -> Upload:
    return Upload(
        upload_id="",
        account=account,
        bucket=bucket,
        key=key,
        order_id="ORDER",
        path=key,
        created=0.0,
        metadata={"color": "blue"},
        checksum_algorithm="crc32",
        checksum_type="COMPOSITE",
    )


def _part(number: int, size: int, etag: str = "") -> Part:
    return Part(number, size, etag or hashlib.md5(str(number).encode()).hexdigest(), 0.0)


class UploadStoreTests(SynchronousTestCase):
    """The uploads directory: parts committed by rename, state read back from disk."""

    def setUp(self) -> None:
        self.root = self.mktemp()
        self.now = 1000.0
        self.store = UploadStore(self.root, clock=lambda: self.now, durable=False)
        self.spool = self.mktemp()
        os.makedirs(self.spool)

    def spooled(self, data: bytes) -> str:
        path = os.path.join(self.spool, hashlib.md5(data + os.urandom(4)).hexdigest())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def add(self, upload: Upload, number: int, data: bytes) -> Part:
        part = Part(number, len(data), hashlib.md5(data).hexdigest(), 0.0, {})
        stored, _ = self.store.add_part(upload.upload_id, part, self.spooled(data))
        return stored

    def test_create_random_ids(self) -> None:
        """Upload ids are random, of letters and digits only, and at least 128 bits."""
        ids = {self.store.create(_upload()).upload_id for _ in range(200)}
        self.assertEqual(len(ids), 200)
        for upload_id in ids:
            self.assertRegex(upload_id, r"^[A-Za-z0-9]{32}$")  # 32 * log2(62) > 190 bits

    def test_ids_with_dashes_still_accepted(self) -> None:
        """An upload whose id holds ``-`` and ``_`` (as ids once did) is still found."""
        upload = self.store.create(_upload())
        older = "-k" + upload.upload_id[2:20] + "_x"
        root = self.store.root
        os.rename(os.path.join(root, upload.upload_id), os.path.join(root, older))
        self.assertEqual(self.store.get(older).upload_id, older)

    def test_manifest_survives_a_new_store(self) -> None:
        """A new store on the same directory (a restart) sees the upload as it was created."""
        upload = self.store.create(_upload())
        again = UploadStore(self.root, durable=False).get(upload.upload_id)
        self.assertEqual(again, upload)

    def test_parts_survive_a_new_store(self) -> None:
        """Parts are read back from disk, by part number, with size and ETag."""
        upload = self.store.create(_upload())
        self.add(upload, 2, b"two")
        self.add(upload, 1, b"one!")
        parts = UploadStore(self.root, durable=False).parts(upload.upload_id)
        self.assertEqual([(p.number, p.size) for p in parts], [(1, 4), (2, 3)])
        self.assertEqual(parts[0].etag, hashlib.md5(b"one!").hexdigest())
        self.assertEqual(parts[0].last_modified, self.now)

    def test_part_moved_not_copied(self) -> None:
        """The spooled file is moved into the upload (it is gone from the spool)."""
        upload = self.store.create(_upload())
        source = self.spooled(b"data")
        self.store.add_part(upload.upload_id, _part(1, 4), source)
        self.assertFalse(os.path.exists(source))

    def test_part_from_bytes(self) -> None:
        """A part given as bytes is written into the upload."""
        upload = self.store.create(_upload())
        self.store.add_part(upload.upload_id, _part(1, 5), b"small")
        (part,) = self.store.parts(upload.upload_id)
        with open(os.path.join(self.root, upload.upload_id, part.file), "rb") as f:
            self.assertEqual(f.read(), b"small")

    def test_reupload_replaces(self) -> None:
        """Uploading a part number again replaces the part and deletes the old file."""
        upload = self.store.create(_upload())
        old = self.add(upload, 1, b"old bytes")
        new = self.add(upload, 1, b"new")
        (part,) = self.store.parts(upload.upload_id)
        self.assertEqual(part, new)
        self.assertFalse(os.path.exists(os.path.join(self.root, upload.upload_id, old.file)))

    def test_replaced_size_returned(self) -> None:
        """add_part reports the size of the part it replaced, for the capacity count."""
        upload = self.store.create(_upload())
        self.add(upload, 1, b"123456")
        _, replaced = self.store.add_part(upload.upload_id, _part(1, 2), b"12")
        self.assertEqual(replaced, 6)

    def test_torn_part_never_served(self) -> None:
        """A data file without a record (a crash mid-part) is not a part, and is swept."""
        upload = self.store.create(_upload())
        self.add(upload, 1, b"kept")
        torn = os.path.join(self.root, upload.upload_id, "2.deadbeef.data")
        with open(torn, "wb") as f:
            f.write(b"half a par")
        os.utime(torn, (0, 0))
        self.assertEqual([p.number for p in self.store.parts(upload.upload_id)], [1])
        self.now += 7200
        self.store.sweep(min_age=3600)
        self.assertFalse(os.path.exists(torn))
        self.assertEqual([p.number for p in self.store.parts(upload.upload_id)], [1])

    def test_unknown_upload(self) -> None:
        """An unknown or malformed upload id is NoSuchUpload."""
        for upload_id in ("nope", "../etc", "", "a.completing"):
            with self.assertRaises(S3Error) as e:
                self.store.get(upload_id)
            self.assertEqual(e.exception.code, "NoSuchUpload")

    def test_part_after_abort(self) -> None:
        """A part for an aborted upload is NoSuchUpload and leaves nothing behind."""
        upload = self.store.create(_upload())
        self.add(upload, 1, b"x")
        self.store.abort(upload.upload_id)
        with self.assertRaises(S3Error) as e:
            self.add(upload, 2, b"y")
        self.assertEqual(e.exception.code, "NoSuchUpload")
        self.assertEqual(os.listdir(self.root), [])

    def test_complete_once(self) -> None:
        """Only the first of two completions takes the upload; the second is NoSuchUpload."""
        upload = self.store.create(_upload())
        part = self.add(upload, 1, b"x")
        claim = self.store.begin_complete(upload.upload_id, [Completion(1, part.etag)])
        self.assertEqual(claim.parts, [part])
        with self.assertRaises(S3Error) as e:
            self.store.begin_complete(upload.upload_id, [Completion(1, part.etag)])
        self.assertEqual(e.exception.code, "NoSuchUpload")

    def test_bad_completion_gives_back(self) -> None:
        """A completion naming a wrong ETag fails with InvalidPart and the upload stays open."""
        upload = self.store.create(_upload())
        self.add(upload, 1, b"x")
        with self.assertRaises(S3Error) as e:
            self.store.begin_complete(upload.upload_id, [Completion(1, "0" * 32)])
        self.assertEqual(e.exception.code, "InvalidPart")
        self.assertEqual(len(self.store.parts(upload.upload_id)), 1)

    def test_interrupted_completion_given_back(self) -> None:
        """A completion left by a crash is given back by the sweep once stale."""
        upload = self.store.create(_upload())
        part = self.add(upload, 1, b"x")
        self.store.begin_complete(upload.upload_id, [Completion(1, part.etag)])
        os.utime(os.path.join(self.root, upload.upload_id + COMPLETING), (0, 0))
        self.now += 7200
        self.store.sweep(min_age=3600)
        self.assertEqual(self.store.parts(upload.upload_id), [part])

    def test_link_segments_keeps_parts(self) -> None:
        """Segments handed to the network are links: the upload keeps its files."""
        upload = self.store.create(_upload())
        part = self.add(upload, 1, b"bytes")
        claim = self.store.begin_complete(upload.upload_id, [Completion(1, part.etag)])
        (segment,) = self.store.link_segments(claim.directory, claim.parts, self.spool)
        os.unlink(segment.path)
        self.store.give_back(upload.upload_id)
        self.assertEqual(self.store.parts(upload.upload_id), [part])

    def test_sweep_spool(self) -> None:
        """Bodies left in the spool by a crash are deleted once stale, fresh ones kept."""
        fresh = self.spooled(b"in progress")
        self.now = os.stat(fresh).st_ctime + 10
        self.assertEqual(self.store.sweep_spool(self.spool, min_age=3600), 0)
        self.now += 7200
        self.assertEqual(self.store.sweep_spool(self.spool, min_age=3600), 1)
        self.assertEqual(os.listdir(self.spool), [])

    def test_reserved_and_expiry(self) -> None:
        """Open uploads hold their bytes per order until they expire."""
        upload = self.store.create(_upload())
        self.add(upload, 1, b"12345")
        self.assertEqual(self.store.reserved(), {"ORDER": 5})
        self.assertEqual(self.store.expire(3600), [])
        self.now = os.stat(os.path.join(self.root, upload.upload_id)).st_mtime + 7200
        self.assertEqual([u.upload_id for u in self.store.expire(3600)], [upload.upload_id])
        self.assertEqual(self.store.reserved(), {})
        self.assertEqual(os.listdir(self.root), [])


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

    def _codes(self, requested: list[Completion], parts: dict[int, Part]) -> str:
        with self.assertRaises(S3Error) as e:
            choose_parts(requested, parts)
        return e.exception.code

    def test_errors(self) -> None:
        """Empty, out of order, duplicate, unknown, wrong ETag and small parts are refused."""
        big = MIN_PART_SIZE
        parts = {1: _part(1, big), 2: _part(2, big), 3: _part(3, 10)}
        ok = [Completion(n, parts[n].etag) for n in (1, 2, 3)]
        self.assertEqual(choose_parts(ok, parts), [parts[1], parts[2], parts[3]])
        self.assertEqual(self._codes([], parts), "MalformedXML")
        self.assertEqual(self._codes([ok[1], ok[0]], parts), "InvalidPartOrder")
        self.assertEqual(self._codes([ok[0], ok[0]], parts), "InvalidPartOrder")
        self.assertEqual(self._codes([Completion(4, "x")], parts), "InvalidPart")
        self.assertEqual(self._codes([Completion(1, "0" * 32)], parts), "InvalidPart")
        self.assertEqual(self._codes([ok[2], Completion(4, "x")], parts), "InvalidPart")
        small = {1: _part(1, 10), 2: _part(2, 10)}
        self.assertEqual(
            self._codes([Completion(1, small[1].etag), Completion(2, small[2].etag)], small),
            "EntityTooSmall",
        )

    def test_quoted_etags(self) -> None:
        """ETags in Complete may be quoted, as clients send them."""
        part = _part(1, 3)
        self.assertEqual(choose_parts([Completion(1, f'"{part.etag}"')], {1: part}), [part])

    def test_final_etag(self) -> None:
        """The ETag is the MD5 of the binary part MD5s followed by -N."""
        a, b = hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()
        parts = [_part(1, 1, a.hex()), _part(2, 1, b.hex())]
        self.assertEqual(final_etag(parts), hashlib.md5(a + b).hexdigest() + "-2")

    def test_full_object_crc32(self) -> None:
        """A FULL_OBJECT CRC32 is the CRC32 of the whole object."""
        chunks = [b"hello ", b"multipart ", b"world"]
        parts = [
            Part(
                i + 1,
                len(c),
                "",
                0.0,
                {"crc32": base64.b64encode(zlib.crc32(c).to_bytes(4, "big")).decode()},
            )
            for i, c in enumerate(chunks)
        ]
        upload = Upload("u", "a", "b", "k", "o", "k", 0.0, checksum_algorithm="crc32",
                        checksum_type="FULL_OBJECT")  # fmt: skip
        whole = zlib.crc32(b"".join(chunks)).to_bytes(4, "big")
        self.assertEqual(final_checksum(upload, parts), base64.b64encode(whole).decode())

    def test_composite_crc32(self) -> None:
        """A COMPOSITE CRC32 is the CRC32 of the parts' CRC32s, followed by -N."""
        digests = [zlib.crc32(c).to_bytes(4, "big") for c in (b"x", b"y")]
        parts = [
            Part(i + 1, 1, "", 0.0, {"crc32": base64.b64encode(d).decode()})
            for i, d in enumerate(digests)
        ]
        upload = _upload()
        outer = zlib.crc32(b"".join(digests)).to_bytes(4, "big")
        self.assertEqual(final_checksum(upload, parts), base64.b64encode(outer).decode() + "-2")

    def test_no_checksum_without_every_part(self) -> None:
        """No whole-object checksum when a part has none."""
        self.assertIsNone(final_checksum(_upload(), [_part(1, 1)]))

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
            [Completion(2, '"e2"', {"crc32": "AAAAAA=="}), Completion(1, "e1")],
        )

    def test_parse_complete_malformed(self) -> None:
        """Malformed XML and parts without numbers are MalformedXML."""
        for body in (b"<CompleteMultipartUpload>", b"<Other/>",
                     b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part>"
                     b"</CompleteMultipartUpload>"):  # fmt: skip
            with self.assertRaises(S3Error) as e:
                parse_complete(body)
            self.assertEqual(e.exception.code, "MalformedXML")


class ListUploadsTests(SynchronousTestCase):
    """ListMultipartUploads paging: prefix, delimiter, markers, max-uploads."""

    def setUp(self) -> None:
        self.uploads = [
            Upload(f"id{i}", "a", "b", key, "o", key, float(i))
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
        self.assertEqual([u.key for u in page.uploads], ["z"])

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

    def get(self, upload_id: str, bucket: str, key: str) -> Deferred[Upload]:
        return succeed(_upload(key, bucket))

    def complete(
        self, upload: Upload, requested: Any, full: Any, if_none_match: bool, if_match: Any
    ) -> Deferred[ObjectInfo]:
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
