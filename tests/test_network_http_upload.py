"""Tests of uploads streamed to a lambnet node with their digest in a signed trailer.

The client and the node run in memory (see ``tests.test_network_http.Harness``).
"""

from __future__ import annotations

import errno
import hashlib
import os
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import LengthEnforcingConsumer

from lambgw.lambnet import incoming
from lambgw.network import errors, signing, wire
from lambgw.network.httpbody import DEFAULT_READ
from lambgw.network.httpupload import STREAM_BUFFER, STREAM_SEND, StreamedUpload
from lambgw.network.interface import NewObject
from tests.test_network_http import Harness


def _new(data: bytes) -> NewObject:
    return NewObject(size=len(data), etag=hashlib.md5(data).hexdigest(), metadata={"k": "v"})


class NodeStoreCase(SynchronousTestCase):
    """A client and a node in memory, with what the node's store holds at hand."""

    def setUp(self) -> None:
        self.root = self.mktemp()
        self.h = Harness(self.root)
        self.order_id = self.h.order.order_id

    def used(self) -> int:
        """The bytes the test's order uses."""
        return self.h.store.order("demo", self.order_id).used

    def incoming(self) -> list[str]:
        """The bodies left in the node's ``incoming/``."""
        incoming = os.path.join(self.root, "incoming")
        return [n for _, _, names in os.walk(incoming) for n in names]

    def assertRefused(self, result: Any, kind: type[Exception], text: str) -> None:
        """``result`` is a failure of ``kind`` whose message holds ``text``."""
        self.assertIsInstance(result, Failure)
        self.assertTrue(result.check(kind), result)
        self.assertIn(text, str(result.value))


class StreamedUploadTests(NodeStoreCase):
    def open(self, size: int, path: str = "k", if_none_match: bool = False) -> Any:
        described = NewObject(size=size, etag="", metadata={"k": "v"})
        upload = self.h.network.open_upload("demo", self.order_id, path, described, if_none_match)
        assert upload is not None
        return upload

    def stream(self, data: bytes, path: str = "k", digest: str = "", **kw: Any) -> Any:
        upload = self.open(len(data), path, **kw)
        for start in range(0, len(data), 100_000):
            upload.write(data[start : start + 100_000])
        finished = upload.finish(_new(data), digest or hashlib.sha256(data).hexdigest())
        return self.h.run(finished)

    def stored(self, path: str) -> bytes:
        _, ranges = self.h.store.open_range("demo", self.order_id, path)
        return b"".join(os.pread(r.file.fileno(), r.length, r.offset) for r in ranges)

    def test_stored_as_streamed(self) -> None:
        """The bytes written, then the trailer, make the object the trailer describes."""
        data = os.urandom(700_000)
        info = self.stream(data, "a/b c")
        self.assertEqual(
            (info.size, info.etag, dict(info.metadata)), (700_000, _new(data).etag, {"k": "v"})
        )
        self.assertEqual(self.stored("a/b c"), data)
        self.assertEqual(self.used(), 700_000)
        self.assertEqual(self.incoming(), [])

    def test_wrong_digest_refused(self) -> None:
        """A trailer whose digest is not the body's stores nothing and charges nothing."""
        data = os.urandom(400_000)
        result = self.stream(data, digest=hashlib.sha256(b"other").hexdigest())
        self.assertRefused(result, errors.NetworkError, "SHA-256")
        self.assertRaises(errors.NoSuchPath, self.h.store.head, "demo", self.order_id, "k")
        self.assertEqual((self.used(), self.incoming()), (0, []))

    def test_failed_flush_refused(self) -> None:
        """A body whose flush to disk fails (EIO) is refused; nothing is stored or left."""

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.patch(incoming, "SYNC_EVERY", 100_000)
        self.patch(incoming.os, "fdatasync", failing)
        result = self.stream(os.urandom(400_000))
        self.assertRefused(result, errors.NetworkError, "could not be written")
        self.assertRaises(errors.NoSuchPath, self.h.store.head, "demo", self.order_id, "k")
        self.assertEqual((self.used(), self.incoming()), (0, []))

    def test_failed_write_refused(self) -> None:
        """A body whose file system fills as it is written (ENOSPC) is refused; nothing is left."""
        incoming_dir = os.path.realpath(os.path.join(self.root, "incoming"))
        write = os.write

        def full(fd: int, data: Any) -> int:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(incoming_dir + os.sep):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(fd, data)

        self.patch(incoming.os, "write", full)
        result = self.stream(os.urandom(400_000))
        self.assertRefused(result, errors.NetworkError, "could not be written")
        self.assertIn("No space left on device", str(result.value))
        self.assertRaises(errors.NoSuchPath, self.h.store.head, "demo", self.order_id, "k")
        self.assertEqual((self.used(), self.incoming()), (0, []))

    def test_short_body_refused(self) -> None:
        """Fewer bytes than the declared size fail the upload; nothing is stored."""
        data = os.urandom(400_000)
        upload = self.open(len(data) + 1)
        upload.write(data)
        result = self.h.run(upload.finish(_new(data), hashlib.sha256(data).hexdigest()))
        self.h.agent.flush()
        self.assertRefused(result, errors.NetworkError, "bytes")
        self.assertEqual((self.used(), self.incoming()), (0, []))

    def test_abort_stores_nothing(self) -> None:
        """An upload given up halfway leaves no object, no charge and no spooled file."""
        upload = self.open(600_000)
        upload.write(os.urandom(300_000))
        self.h.agent.flush()
        upload.abort()
        result = self.h.run(upload.finish(_new(b"x" * 600_000), "0" * 64))
        self.h.agent.flush()
        self.assertIsInstance(result, Failure)
        self.assertRaises(errors.NoSuchPath, self.h.store.head, "demo", self.order_id, "k")
        self.assertEqual((self.used(), self.incoming()), (0, []))

    def test_quota_refused(self) -> None:
        """An object larger than the order's free space is refused at the end, not charged."""
        data = os.urandom(self.h.order.capacity + 1)
        self.assertRefused(self.stream(data), errors.QuotaExceeded, "bytes free")
        self.assertEqual((self.used(), self.incoming()), (0, []))

    def test_if_none_match(self) -> None:
        """With if_none_match, an existing object is kept and the upload refused."""
        first = os.urandom(300_000)
        self.stream(first)
        result = self.stream(os.urandom(300_000), if_none_match=True)
        self.assertRefused(result, errors.PreconditionFailed, "exists")
        self.assertEqual(self.stored("k"), first)

    def test_throttled_until_connected(self) -> None:
        """The source is paused until the connection is ready, then resumed."""
        events: list[str] = []
        upload = StreamedUpload(self.h.key, b"signature", 10, 100)
        upload.throttle(lambda: events.append("pause"), lambda: events.append("resume"))
        upload.write(b"early")
        self.assertEqual(events, ["pause"])
        consumer = StringTransport()
        upload.startProducing(consumer)
        upload.write(b" then")
        self.assertEqual((events, consumer.value()), (["pause", "resume"], b"early then"))
        upload.pauseProducing()
        self.assertEqual(events[-1], "pause")

    def test_failure_resumes_source(self) -> None:
        """A failed connection resumes a paused source, so its client is not left hanging."""
        events: list[str] = []
        upload = StreamedUpload(self.h.key, b"signature", 10, 100)
        upload.throttle(lambda: events.append("pause"), lambda: events.append("resume"))
        upload.stopProducing()
        upload.write(b"dropped")
        self.assertEqual(events, ["pause", "resume"])

    def test_large_writes_while_streaming(self) -> None:
        """The connection buffers and sends in large pieces until the body's trailer is sent."""
        upload = StreamedUpload(self.h.key, b"signature", 5, wire.trailer_room(_new(b"bytes")))
        socket, consumer = _socket(upload)
        upload.startProducing(consumer)
        self.assertEqual((socket.bufferSize, socket.SEND_LIMIT), (STREAM_BUFFER, STREAM_SEND))
        upload.write(b"bytes")
        upload.finish(_new(b"bytes"), hashlib.sha256(b"bytes").hexdigest())
        self.assertEqual((socket.bufferSize, socket.SEND_LIMIT), (DEFAULT_READ, 128 * 1024))

    def test_large_writes_end_with_the_connection(self) -> None:
        """A connection lost mid-body gets Twisted's sizes back."""
        upload = StreamedUpload(self.h.key, b"signature", 5, 100)
        socket, consumer = _socket(upload)
        upload.startProducing(consumer)
        upload.stopProducing()
        self.assertEqual((socket.bufferSize, socket.SEND_LIMIT), (DEFAULT_READ, 128 * 1024))


class _Socket(FileDescriptor):
    """A connection's socket that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__(MemoryReactor())
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _socket(upload: StreamedUpload) -> tuple[_Socket, LengthEnforcingConsumer]:
    """A socket, and the consumer Twisted's HTTP client hands ``upload`` to write to it."""
    socket = _Socket()
    return socket, LengthEnforcingConsumer(upload, socket, Deferred())


class TrailerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key = signing.generate_key()
        self.digest = hashlib.sha256(b"body").hexdigest()

    def test_round_trip(self) -> None:
        """A trailer's bytes decode to what was encoded."""
        trailer = wire.Trailer(self.digest, '{"size":4}', b"\x00\xff" * 32)
        self.assertEqual(wire.decode_trailer(wire.encode_trailer(trailer)), trailer)

    def test_padded_to_its_room(self) -> None:
        """A trailer fills the room kept for it with spaces and still decodes."""
        trailer = wire.Trailer(self.digest, '{"size":4}', b"s" * 64)
        encoded = wire.encode_trailer(trailer, 1000)
        self.assertEqual(len(encoded), 1000)
        self.assertEqual(wire.decode_trailer(encoded), trailer)

    def test_larger_than_its_room_refused(self) -> None:
        """A trailer that does not fit the room kept for it is not written."""
        trailer = wire.Trailer(self.digest, "x" * 500, b"s" * 64)
        self.assertRaises(ValueError, wire.encode_trailer, trailer, 200)

    def test_room_fits_what_the_object_gains(self) -> None:
        """The room kept from a description fits its trailer once etag and checksums are in."""
        described = NewObject(size=5, etag="", metadata={"m": "é" * 100})
        final = NewObject(
            size=5,
            etag="d" * 32,
            metadata={"m": "é" * 100},
            checksums={
                name: "A" * 44 for name in ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
            },
            checksum_type="FULL_OBJECT",
        )
        room = wire.trailer_room(described)
        description = wire.header_json(wire.new_to_json(final))
        trailer = wire.Trailer(self.digest, description, b"s" * 64)
        self.assertEqual(len(wire.encode_trailer(trailer, room)), room)

    def test_cut_or_padded_refused(self) -> None:
        """A trailer missing its end, or with bytes before it unaccounted for, is refused."""
        encoded = wire.encode_trailer(wire.Trailer(self.digest, "{}", b"s"))
        padded = wire.encode_trailer(wire.Trailer(self.digest, "{}", b"s"), 300)
        spoiled = padded[:150] + b"x" + padded[151:]
        for bad in (encoded[:-1], b"x" + encoded, b"", encoded[:3], spoiled):
            self.assertRaises(wire.ProtocolError, wire.decode_trailer, bad)

    def test_signature_bound_to_request(self) -> None:
        """A trailer signed for one request does not verify for another."""
        public = self.key.public_key()
        signature = signing.sign_trailer(self.key, b"request-1", self.digest, "{}")
        signing.verify_trailer(public, b"request-1", self.digest, "{}", signature)
        for request, digest, description in (
            (b"request-2", self.digest, "{}"),
            (b"request-1", hashlib.sha256(b"x").hexdigest(), "{}"),
            (b"request-1", self.digest, '{"size":1}'),
        ):
            self.assertRaises(
                signing.SignatureError,
                signing.verify_trailer,
                public,
                request,
                digest,
                description,
                signature,
            )

    def test_other_key_refused(self) -> None:
        """A trailer signed with another account's key is refused."""
        signature = signing.sign_trailer(signing.generate_key(), b"r", self.digest, "{}")
        self.assertRaises(
            signing.SignatureError,
            signing.verify_trailer,
            self.key.public_key(),
            b"r",
            self.digest,
            "{}",
            signature,
        )
