"""Tests of the digests a node computes over a streamed body (``digests``, ``expect``).

The client and the node run in memory (see ``tests.test_network_http.Harness``); the
expected digests are computed here with ``hashlib`` and ``zlib``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lambgw.lambnet.incoming import HASH_HIGH_WATER, READ_SIZE, NodeRequest
from lambgw.network import errors, signing, wire
from lambgw.network.interface import NewObject
from lambgw.protocol.checksums import ALGORITHMS
from tests.test_network_http import held_node_request
from tests.test_network_http_upload import NodeStoreCase

MD5_MISMATCH = "The Content-MD5 you specified did not match what we received."
CRC32_MISMATCH = "The CRC32 you specified did not match the calculated checksum."


def md5_hex(data: bytes) -> str:
    """The lower-case hex MD5 of ``data``."""
    return hashlib.md5(data).hexdigest()


def md5_b64(data: bytes) -> str:
    """The MD5 of ``data`` in base64, as in ``Content-MD5``."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def crc32_b64(data: bytes) -> str:
    """The CRC32 of ``data`` in base64, as in ``x-amz-checksum-crc32``."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


class DigestedUploadTests(NodeStoreCase):
    """Objects and parts streamed with digests the node computes and checks."""

    def setUp(self) -> None:
        super().setUp()
        self.network = self.h.network

    def put(
        self,
        data: bytes,
        digests: Sequence[str] = ("md5", "crc32"),
        expect: Mapping[str, str] | None = None,
        new: NewObject | None = None,
        digest: str = "",
    ) -> Any:
        """Stream ``data`` to ``k`` asking ``digests``; the stored object or the failure."""
        described = NewObject(size=len(data), etag="", metadata={"k": "v"})
        upload = self.network.open_upload(
            "demo", self.order_id, "k", described, digests=digests, expect=expect
        )
        assert upload is not None
        for start in range(0, len(data), 100_000):
            upload.write(data[start : start + 100_000])
        finished = upload.finish(new or described, digest or hashlib.sha256(data).hexdigest())
        return self.h.run(finished)

    def ok(self, d: Any) -> Any:
        """Run ``d`` to its result, which must not be a failure."""
        result = self.h.run(d)
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def assertNothingStored(self) -> None:
        self.assertRaises(errors.NoSuchPath, self.h.store.head, "demo", self.order_id, "k")
        self.assertEqual((self.used(), self.incoming()), (0, []))

    def test_spooled_object_digested(self) -> None:
        """A spooled object's ETag is its MD5 and its CRC32 is stored, as HEAD shows."""
        data = os.urandom(700_000)
        info = self.put(data)
        self.assertEqual(
            (info.etag, dict(info.checksums)), (md5_hex(data), {"crc32": crc32_b64(data)})
        )
        head = self.ok(self.network.head_object("demo", self.order_id, "k"))
        self.assertEqual(
            (head.etag, dict(head.checksums)), (md5_hex(data), {"crc32": crc32_b64(data)})
        )
        self.assertEqual((head.metadata, self.used(), self.incoming()), ({"k": "v"}, 700_000, []))

    def test_small_object_digested(self) -> None:
        """An object whose body the node keeps in memory is digested too, with every checksum."""
        data = os.urandom(1000)
        info = self.put(data, ("md5", *ALGORITHMS))
        self.assertEqual(info.etag, md5_hex(data))
        self.assertEqual(info.checksums["crc32"], crc32_b64(data))
        sha1 = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
        self.assertEqual(info.checksums["sha1"], sha1)
        self.assertEqual(sorted(info.checksums), sorted(ALGORITHMS))

    def test_checksums_kept_beside_computed(self) -> None:
        """Checksums the description gives are kept beside those computed, with its type."""
        data = os.urandom(300_000)
        new = NewObject(len(data), "", checksums={"sha256": "given"}, checksum_type="FULL_OBJECT")
        info = self.put(data, ("crc32",), new=new)
        self.assertEqual(
            (info.etag, dict(info.checksums), info.checksum_type),
            ("", {"sha256": "given", "crc32": crc32_b64(data)}, "FULL_OBJECT"),
        )

    def test_expected_md5_stored(self) -> None:
        """An object whose MD5 is the one expected is stored."""
        data = os.urandom(700_000)
        info = self.put(data, expect={"md5": md5_b64(data), "crc32": crc32_b64(data)})
        self.assertEqual(info.etag, md5_hex(data))
        self.assertEqual(self.used(), 700_000)

    def test_other_md5_refused(self) -> None:
        """An MD5 not the one expected stores nothing and charges nothing, with S3's message."""
        data = os.urandom(700_000)
        result = self.put(data, expect={"md5": md5_b64(b"other")})
        self.assertRefused(result, errors.DigestMismatch, MD5_MISMATCH)
        self.assertEqual(str(result.value), MD5_MISMATCH)
        self.assertNothingStored()

    def test_other_crc32_refused(self) -> None:
        """A CRC32 not the one expected is refused, with S3's message naming CRC32."""
        data = os.urandom(1000)
        result = self.put(data, expect={"crc32": crc32_b64(b"other")})
        self.assertRefused(result, errors.DigestMismatch, CRC32_MISMATCH)
        self.assertEqual(str(result.value), CRC32_MISMATCH)
        self.assertNothingStored()

    def test_unsigned_payload_accepted(self) -> None:
        """A trailer saying UNSIGNED-PAYLOAD has the body stored without a SHA-256 check."""
        data = os.urandom(700_000)
        info = self.put(data, expect={"md5": md5_b64(data)}, digest=signing.UNSIGNED_PAYLOAD)
        self.assertEqual((info.etag, self.used()), (md5_hex(data), 700_000))

    def test_wrong_sha256_still_refused(self) -> None:
        """With digests asked, a SHA-256 that is not the body's is still BadDigest."""
        data = os.urandom(700_000)
        result = self.put(data, digest=hashlib.sha256(b"other").hexdigest())
        self.assertRefused(result, errors.BadDigest, "SHA-256")
        self.assertNothingStored()

    def test_bad_digests_refused(self) -> None:
        """An unknown or repeated digest name is refused as a bad request."""
        for digests in (("md5", "md4"), ("crc32", "crc32"), ("",)):
            result = self.put(os.urandom(300_000), digests)
            self.assertRefused(result, errors.NetworkError, "400 BadRequest): digests names")
            self.assertNothingStored()

    def test_etag_with_md5_asked_refused(self) -> None:
        """A description with an etag, when the node computes the MD5, is refused."""
        data = os.urandom(1000)
        result = self.put(data, new=NewObject(len(data), md5_hex(data)))
        self.assertRefused(result, errors.NetworkError, "must be empty")
        self.assertNothingStored()

    def test_checksum_given_and_asked_refused(self) -> None:
        """A checksum the description gives and the node computes is refused."""
        data = os.urandom(1000)
        result = self.put(data, new=NewObject(len(data), "", checksums={"crc32": crc32_b64(data)}))
        self.assertRefused(result, errors.NetworkError, "both given and asked: crc32")
        self.assertNothingStored()

    def test_expected_but_not_asked_refused(self) -> None:
        """A digest expected but not computed is refused, with digests or without."""
        data = os.urandom(1000)
        for digests in (("md5",), ()):
            result = self.put(data, digests, expect={"crc32": crc32_b64(data)})
            self.assertRefused(result, errors.NetworkError, "400 BadRequest): digests")
            self.assertIn("expected", str(result.value))
            self.assertNothingStored()

    def test_trailer_room_holds_expect(self) -> None:
        """The trailer's room grows with what the description expects."""
        described = NewObject(5, "")
        expect = {name: "A" * 44 for name in ("md5", *ALGORITHMS)}
        self.assertGreater(
            wire.trailer_room(described, expect), wire.trailer_room(described) + 6 * 44
        )

    def stream_part(
        self, upload_id: str, data: bytes, expect: Mapping[str, str] | None = None
    ) -> Any:
        """Stream ``data`` as part 1 asking its MD5 and CRC32; the part or the failure."""
        upload = self.network.open_part(
            "demo", self.order_id, "k", upload_id, 1, len(data), ("md5", "crc32"), expect
        )
        assert upload is not None
        for start in range(0, len(data), 100_000):
            upload.write(data[start : start + 100_000])
        finished = upload.finish(NewObject(len(data), ""), hashlib.sha256(data).hexdigest())
        return self.h.run(finished)

    def test_part_digested(self) -> None:
        """A streamed part's ETag and CRC32 are computed by the node, and listed."""
        upload = self.ok(self.network.create_upload("demo", self.order_id, "k", NewObject(0, "")))
        data = os.urandom(700_000)
        info = self.stream_part(upload.upload_id, data, {"md5": md5_b64(data)})
        self.assertEqual(
            (info.etag, dict(info.checksums)), (md5_hex(data), {"crc32": crc32_b64(data)})
        )
        page = self.ok(self.network.list_parts("demo", self.order_id, "k", upload.upload_id))
        self.assertEqual(
            [(p.etag, dict(p.checksums)) for p in page.parts],
            [(md5_hex(data), {"crc32": crc32_b64(data)})],
        )
        self.assertEqual(self.used(), 700_000)

    def test_part_with_other_md5_refused(self) -> None:
        """A part whose MD5 is not the one expected is not stored, nor charged."""
        upload = self.ok(self.network.create_upload("demo", self.order_id, "k", NewObject(0, "")))
        result = self.stream_part(upload.upload_id, os.urandom(700_000), {"md5": md5_b64(b"x")})
        self.assertRefused(result, errors.DigestMismatch, MD5_MISMATCH)
        page = self.ok(self.network.list_parts("demo", self.order_id, "k", upload.upload_id))
        self.assertEqual((list(page.parts), self.used(), self.incoming()), ([], 0, []))


class DigestLaneTests(SynchronousTestCase):
    """The MD5 of a spooled body is computed in a lane of its own, which reading waits for."""

    def held_request(
        self, size: int, digests: str = "md5,crc32"
    ) -> tuple[NodeRequest, list[Callable[[], None]], list[str]]:
        """A streamed request of ``size`` bytes asking ``digests``, whose pool waits to be run.

        Returns the request, the pool's calls and what happened to the connection.
        """
        request, calls, events = held_node_request(
            self, f"/{wire.VERSION}/x?size={size}&digests={digests}".encode()
        )
        request.requestHeaders.setRawHeaders(signing.SHA256_HEADER.encode(), [b"STREAMING-TRAILER"])
        request.gotLength(size)
        return request, calls, events

    def test_handled_once_every_lane_is_done(self) -> None:
        """The request is handled once the MD5's lane has seen the whole body too."""
        data = os.urandom(HASH_HIGH_WATER + 2 * READ_SIZE)
        request, calls, events = self.held_request(len(data))
        for start in range(0, len(data), READ_SIZE):
            request.handleContentChunk(data[start : start + READ_SIZE])
        request.requestReceived(b"PUT", f"/{wire.VERSION}/x".encode(), b"HTTP/1.1")
        self.assertEqual(events, ["pause"])
        # The SHA-256's lane runs, and its news reach the reactor; the MD5's lane waits.
        sha256_lane, md5_lane = calls.pop(0), calls.pop(0)
        sha256_lane()
        while calls:
            calls.pop(0)()
        self.assertEqual(events, ["pause"])
        md5_lane()
        while calls:
            calls.pop(0)()
        self.assertEqual(events, ["pause", "resume", "process"])
        digests = request.asked_digests()
        assert digests.md5 is not None
        self.assertEqual(digests.md5.hexdigest(), md5_hex(data))
        self.assertEqual([c.b64() for c in digests.checksums], [crc32_b64(data)])
        self.assertEqual(request.body_sha256(), hashlib.sha256(data).hexdigest())

    def test_no_md5_lane_unless_asked(self) -> None:
        """Without the MD5 asked, a spooled body is hashed in one lane, its checksums with it."""
        data = os.urandom(2 * READ_SIZE)
        request, calls, _ = self.held_request(len(data), "crc32")
        request.handleContentChunk(data)
        self.assertEqual(len(calls), 1)
        while calls:
            calls.pop(0)()
        self.assertEqual([c.b64() for c in request.asked_digests().checksums], [crc32_b64(data)])

    def test_malformed_digests_kept_for_the_handler(self) -> None:
        """A malformed digests parameter digests nothing; the handler is told why."""
        request, _, _ = self.held_request(10, "md5,md5")
        request.handleContentChunk(b"x" * 10)
        self.assertRaises(wire.ProtocolError, request.asked_digests)


class DigestNamesTests(SynchronousTestCase):
    def test_names(self) -> None:
        """The digests a node computes are the MD5 and S3's checksum algorithms."""
        self.assertEqual(
            set(wire.DIGESTS), {"md5", "crc32", "crc32c", "crc64nvme", "sha1", "sha256"}
        )
        self.assertEqual(wire.parse_digests("sha1,md5"), ("sha1", "md5"))

    def test_error_travels(self) -> None:
        """DigestMismatch is an answer, sent and read back under its own code."""
        error = errors.DigestMismatch(MD5_MISMATCH)
        self.assertIn(errors.DigestMismatch, errors.ANSWERS)
        self.assertEqual(wire.code_of(error), ("DigestMismatch", 400))
        back = wire.error_from(400, wire.error_body("DigestMismatch", MD5_MISMATCH))
        self.assertEqual((type(back), str(back)), (errors.DigestMismatch, MD5_MISMATCH))
