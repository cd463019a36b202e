"""Tests for request bodies spooled to disk by pool threads, on the real reactor."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from awscrt import checksums as crt
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from lambgw.protocol.chunked import AwsChunkedDecoder
from lambgw.protocol.errors import S3Error
from lambgw.s3 import spool
from lambgw.s3.spool import HIGH_WATER, SmallBody, SpoolBody, SpooledFile

MiB = 1024 * 1024
REACTOR: IReactorFromThreads = reactor  # type: ignore[assignment]


def b64(digest: bytes) -> str:
    """Base64, as ``x-amz-checksum-*`` values are written."""
    return base64.b64encode(digest).decode()


def expected_checksums(data: bytes) -> dict[str, str]:
    """Every checksum of ``data``, computed independently of the gateway."""
    return {
        "crc32": b64(zlib.crc32(data).to_bytes(4, "big")),
        "crc32c": b64(crt.crc32c(data).to_bytes(4, "big")),
        "crc64nvme": b64(crt.crc64nvme(data).to_bytes(8, "big")),
        "sha1": b64(hashlib.sha1(data).digest()),
        "sha256": b64(hashlib.sha256(data).digest()),
    }


def pieces(data: bytes, seed: int, largest: int) -> Iterator[bytes]:
    """``data`` cut at random places into pieces of 1 to ``largest`` bytes."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(1, largest)
        yield data[pos : pos + size]
        pos += size


def aws_chunked(payload: bytes, chunk: int, trailers: dict[str, str]) -> bytes:
    """``payload`` framed as an unsigned aws-chunked body with ``trailers``."""
    out = [
        b"%x\r\n%s\r\n" % (len(payload[i : i + chunk]), payload[i : i + chunk])
        for i in range(0, len(payload), chunk)
    ]
    out.append(b"0\r\n")
    out += [f"{name}:{value}\r\n".encode() for name, value in trailers.items()]
    out.append(b"\r\n")
    return b"".join(out)


class SpoolBodyTests(TestCase):
    """SpoolBody with a real thread pool and the real reactor."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.pool = ThreadPool(minthreads=0, maxthreads=4, name="test-spool")
        self.pool.start()
        self.addCleanup(self.pool.stop)

    def body(self, **kwargs: Any) -> SpoolBody:
        """A SpoolBody into the test's directory, at most 1 GiB unless told."""
        kwargs.setdefault("max_size", 1024 * MiB)
        return SpoolBody(REACTOR, self.pool, self.directory, **kwargs)

    def read(self, spooled: SpooledFile) -> bytes:
        """The bytes of the spooled file."""
        with open(spooled.path, "rb") as f:
            return f.read()

    def assertNoFiles(self) -> None:
        """Nothing is left in the spool directory."""
        self.assertEqual(os.listdir(self.directory), [])

    @inlineCallbacks
    def wait_until(self, condition: Callable[[], bool]) -> Any:
        """Let the reactor run until ``condition`` holds (at most 5 seconds)."""
        deadline = time.monotonic() + 5
        while not condition():
            self.assertLess(time.monotonic(), deadline, "condition not reached")
            yield deferLater(reactor, 0.005, lambda: None)

    @inlineCallbacks
    def test_many_pieces(self) -> Any:
        """Writes in many pieces give the right file, size, MD5, SHA-256 and checksums."""
        data = random.Random(1).randbytes(3 * MiB + 17)
        body = self.body(checksums=sorted(expected_checksums(b"")), sha256=True)
        for piece in pieces(data, 2, 64 * 1024):
            body.write(piece)
        spooled = yield body.finish()
        self.assertEqual(self.read(spooled), data)
        self.assertEqual(spooled.size, len(data))
        self.assertEqual(spooled.md5, hashlib.md5(data).digest())
        self.assertEqual(spooled.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(spooled.checksums, expected_checksums(data))
        self.assertEqual(spooled.trailers, {})
        self.assertEqual(os.path.dirname(spooled.path), self.directory)

    @inlineCallbacks
    def test_tiny_pieces(self) -> Any:
        """Thousands of one- to seven-byte writes keep their order."""
        data = random.Random(3).randbytes(20000)
        body = self.body(checksums=["crc32"])
        for piece in pieces(data, 4, 7):
            body.write(piece)
        spooled = yield body.finish()
        self.assertEqual(self.read(spooled), data)
        self.assertEqual(spooled.checksums, {"crc32": expected_checksums(data)["crc32"]})

    @inlineCallbacks
    def test_empty(self) -> Any:
        """A body without bytes is an empty file with the empty digests."""
        body = self.body(sha256=True)
        spooled = yield body.finish()
        self.assertEqual((self.read(spooled), spooled.size), (b"", 0))
        self.assertEqual(spooled.md5, hashlib.md5(b"").digest())
        self.assertEqual(spooled.sha256, hashlib.sha256(b"").hexdigest())

    @inlineCallbacks
    def test_no_sha256(self) -> Any:
        """SHA-256 is computed only when asked for."""
        body = self.body()
        body.write(b"abc")
        spooled = yield body.finish()
        self.assertIsNone(spooled.sha256)
        self.assertEqual(spooled.checksums, {})

    @inlineCallbacks
    def test_received(self) -> Any:
        """Tell and received count the bytes given, read returns nothing."""
        body = self.body()
        body.write(b"a" * 100)
        body.write(b"")
        body.write(b"b" * 28)
        self.assertEqual((body.tell(), body.received, body.read()), (128, 128, b""))
        yield body.finish()

    @inlineCallbacks
    def test_discard(self) -> Any:
        """A spooled file's discard deletes it, and a second discard is harmless."""
        body = self.body()
        body.write(b"x")
        spooled = yield body.finish()
        spooled.discard()
        spooled.discard()
        self.assertNoFiles()

    @inlineCallbacks
    def test_max_size(self) -> Any:
        """A body of exactly max_size bytes is accepted."""
        body = self.body(max_size=1000)
        for piece in pieces(b"z" * 1000, 5, 100):
            body.write(piece)
        spooled = yield body.finish()
        self.assertEqual(spooled.size, 1000)

    @inlineCallbacks
    def test_too_large(self) -> Any:
        """One byte past max_size fails with EntityTooLarge and leaves no file."""
        body = self.body(max_size=1000)
        for piece in pieces(b"z" * 1001, 6, 100):
            body.write(piece)
        with self.assertRaises(S3Error) as caught:
            yield body.finish()
        self.assertEqual((caught.exception.code, caught.exception.status), ("EntityTooLarge", 400))
        self.assertNoFiles()

    @inlineCallbacks
    def test_far_too_large(self) -> Any:
        """Writes after the limit is passed are dropped, and no file is left."""
        body = self.body(max_size=10)
        body.write(b"y" * 11)
        yield self.wait_until(lambda: body._error is not None)
        for _ in range(100):
            body.write(b"y" * 1000)
        with self.assertRaises(S3Error):
            yield body.finish()
        self.assertNoFiles()

    def test_abort_idle(self) -> None:
        """Abort before any byte deletes the file at once."""
        body = self.body()
        body.abort()
        self.assertNoFiles()

    @inlineCallbacks
    def test_abort_while_writing(self) -> Any:
        """Abort with writes in flight leaves no file once the workers stop."""
        body = self.body(sha256=True)
        for piece in pieces(random.Random(7).randbytes(4 * MiB), 8, 256 * 1024):
            body.write(piece)
        body.abort()
        yield self.wait_until(lambda: not os.listdir(self.directory))

    @inlineCallbacks
    def test_close_before_finish(self) -> Any:
        """Close (as twisted.web does for a lost client) before finish leaves no file."""
        body = self.body()
        body.write(b"q" * MiB)
        body.close()
        with self.assertRaises(S3Error) as caught:
            yield body.finish()
        self.assertEqual(caught.exception.code, "IncompleteBody")
        self.assertNoFiles()

    @inlineCallbacks
    def test_close_after_finish(self) -> Any:
        """Close after finish keeps the spooled file."""
        body = self.body()
        body.write(b"q" * 10)
        spooled = yield body.finish()
        body.close()
        self.assertEqual(self.read(spooled), b"q" * 10)

    @inlineCallbacks
    def test_write_after_abort(self) -> Any:
        """Writes after abort are dropped."""
        body = self.body()
        body.abort()
        body.write(b"late")
        self.assertEqual(body.received, 0)
        with self.assertRaises(S3Error):
            yield body.finish()
        self.assertNoFiles()

    @inlineCallbacks
    def test_aws_chunked(self) -> Any:
        """With a decoder, the decoded payload is written, hashed and its trailers kept."""
        payload = random.Random(9).randbytes(2 * MiB + 5)
        crc = expected_checksums(payload)["crc32"]
        framed = aws_chunked(payload, 64 * 1024, {"x-amz-checksum-crc32": crc})
        decoder = AwsChunkedDecoder(signer=None, expect_trailer=True, decoded_length=len(payload))
        body = self.body(decoder=decoder, checksums=["crc32"], sha256=True)
        for piece in pieces(framed, 10, 100 * 1024):
            body.write(piece)
        spooled = yield body.finish()
        self.assertEqual(self.read(spooled), payload)
        self.assertEqual(spooled.size, len(payload))
        self.assertEqual(body.received, len(framed))
        self.assertEqual(spooled.md5, hashlib.md5(payload).digest())
        self.assertEqual(spooled.sha256, hashlib.sha256(payload).hexdigest())
        self.assertEqual(spooled.checksums, {"crc32": crc})
        self.assertEqual(spooled.trailers, {"x-amz-checksum-crc32": crc})

    @inlineCallbacks
    def test_aws_chunked_truncated(self) -> Any:
        """A truncated aws-chunked body fails with IncompleteBody and leaves no file."""
        payload = b"p" * 5000
        framed = aws_chunked(payload, 1000, {})
        decoder = AwsChunkedDecoder(signer=None, expect_trailer=True, decoded_length=len(payload))
        body = self.body(decoder=decoder)
        body.write(framed[: len(framed) // 2])
        with self.assertRaises(S3Error) as caught:
            yield body.finish()
        self.assertEqual(caught.exception.code, "IncompleteBody")
        self.assertNoFiles()

    @inlineCallbacks
    def test_aws_chunked_malformed(self) -> Any:
        """Bad framing fails the body and leaves no file."""
        decoder = AwsChunkedDecoder(signer=None, expect_trailer=True)
        body = self.body(decoder=decoder)
        body.write(b"zz\r\nnot hex\r\n")
        with self.assertRaises(S3Error):
            yield body.finish()
        self.assertNoFiles()

    @inlineCallbacks
    def test_aws_chunked_too_large(self) -> Any:
        """max_size applies to the decoded payload."""
        framed = aws_chunked(b"d" * 101, 50, {})
        decoder = AwsChunkedDecoder(signer=None, expect_trailer=True)
        body = self.body(decoder=decoder, max_size=100)
        body.write(framed)
        with self.assertRaises(S3Error) as caught:
            yield body.finish()
        self.assertEqual(caught.exception.code, "EntityTooLarge")
        self.assertNoFiles()

    @inlineCallbacks
    def test_pause_and_resume(self) -> Any:
        """Pause is called once more than HIGH_WATER is queued, resume once it drains."""
        self.patch(spool, "HIGH_WATER", 64 * 1024)
        self.patch(spool, "LOW_WATER", 16 * 1024)
        stopped = ThreadPool(minthreads=0, maxthreads=2, name="test-spool-later")
        self.addCleanup(stopped.stop)
        calls: list[str] = []
        body = SpoolBody(
            REACTOR,
            stopped,
            self.directory,
            max_size=MiB,
            pause=lambda: calls.append("pause"),
            resume=lambda: calls.append("resume"),
        )
        body.write(b"w" * (32 * 1024))
        body.write(b"w" * (32 * 1024))
        self.assertEqual(calls, [])
        body.write(b"w")
        self.assertEqual(calls, ["pause"])
        body.write(b"w" * 1000)
        self.assertEqual(calls, ["pause"])
        stopped.start()
        spooled = yield body.finish()
        self.assertEqual(calls, ["pause", "resume"])
        self.assertEqual(spooled.size, 64 * 1024 + 1001)

    @inlineCallbacks
    def test_pause_at_high_water(self) -> Any:
        """With the real HIGH_WATER, a client far ahead of the workers is paused and resumed."""
        stopped = ThreadPool(minthreads=0, maxthreads=2, name="test-spool-later")
        self.addCleanup(stopped.stop)
        paused: list[bool] = []
        body = SpoolBody(
            REACTOR,
            stopped,
            self.directory,
            max_size=HIGH_WATER + MiB,
            pause=lambda: paused.append(True),
            resume=lambda: paused.append(False),
        )
        block = b"h" * MiB
        for _ in range(HIGH_WATER // MiB):
            body.write(block)
        self.assertEqual(paused, [])
        body.write(b"h")
        self.assertEqual(paused, [True])
        stopped.start()
        spooled = yield body.finish()
        self.assertEqual(paused, [True, False])
        self.assertEqual(spooled.size, HIGH_WATER + 1)


class SmallBodyTests(TestCase):
    """Small bodies of known length, kept in memory."""

    def test_digests(self) -> None:
        """The body comes back with its size, MD5, SHA-256 and checksums, and no file."""
        data = b"small body"
        body = SmallBody(len(data), ["crc32c", "sha1"], sha256=True)
        body.write(data[:4])
        body.write(data[4:])
        spooled = self.successResultOf(body.finish())
        self.assertEqual((spooled.data, spooled.size, spooled.path), (data, len(data), ""))
        self.assertEqual(spooled.md5, hashlib.md5(data).digest())
        self.assertEqual(spooled.sha256, hashlib.sha256(data).hexdigest())
        wanted = expected_checksums(data)
        self.assertEqual(spooled.checksums, {"crc32c": wanted["crc32c"], "sha1": wanted["sha1"]})
        spooled.discard()

    def test_longer_than_declared(self) -> None:
        """More bytes than declared fail with IncompleteBody."""
        body = SmallBody(3)
        body.write(b"abcd")
        failure = self.failureResultOf(body.finish(), S3Error)
        self.assertEqual(failure.value.code, "IncompleteBody")
