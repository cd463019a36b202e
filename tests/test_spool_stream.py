"""Tests for request bodies streamed to a network upload by the spool's lanes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from lambgw.network.interface import IUpload, NewObject, ObjectInfo
from lambgw.protocol.chunked import AwsChunkedDecoder
from lambgw.protocol.errors import S3Error
from lambgw.s3.spool import SpoolBody, SpooledFile
from tests.test_spool import REACTOR, aws_chunked, pieces

MiB = 1024 * 1024


@implementer(IUpload)
class RecordingUpload:
    """An upload that keeps what it is sent and whether it was given up."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.aborted = False
        self.pause: Any = None
        self.resume: Any = None

    def throttle(self, pause: Any, resume: Any) -> None:
        self.pause, self.resume = pause, resume

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def finish(self, new: NewObject, content_sha256: str) -> Deferred[ObjectInfo]:
        raise NotImplementedError

    def abort(self) -> None:
        self.aborted = True


class StreamedBodyTests(TestCase):
    """SpoolBody with a sink, a real thread pool and the real reactor."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.pool = ThreadPool(minthreads=0, maxthreads=4, name="test-stream")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.sink = RecordingUpload()
        self.calls: list[str] = []

    def body(self, **kwargs: Any) -> SpoolBody:
        return SpoolBody(
            REACTOR,
            self.pool,
            self.directory,
            max_size=64 * MiB,
            sink=self.sink,
            pause=lambda: self.calls.append("pause"),
            resume=lambda: self.calls.append("resume"),
            **kwargs,
        )

    @inlineCallbacks
    def test_bytes_reach_the_upload_in_order(self) -> Any:
        """Every byte goes to the upload, in order, hashed; no file is written."""
        data = os.urandom(3 * MiB + 17)
        body = self.body()
        for piece in pieces(data, 1, 300_000):
            body.write(piece)
        spooled = yield body.finish()
        self.assertEqual(b"".join(self.sink.data), data)
        self.assertEqual(spooled.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(spooled.md5, hashlib.md5(data).digest())
        self.assertIs(spooled.upload, self.sink)
        self.assertEqual((spooled.path, os.listdir(self.directory)), ("", []))

    @inlineCallbacks
    def test_declared_sha256_goes_to_the_network(self) -> Any:
        """A SHA-256 the client signed is handed on as declared, for the network to check."""
        data = os.urandom(MiB + 3)
        declared = hashlib.sha256(b"what the client signed").hexdigest()
        body = self.body(sha256=True, declared_sha256=declared)
        body.write(data)
        spooled = yield body.finish()
        self.assertEqual((spooled.sha256, spooled.sha256_declared), (declared, True))
        self.assertEqual(b"".join(self.sink.data), data)
        self.assertEqual(spooled.md5, hashlib.md5(data).digest())

    @inlineCallbacks
    def test_declared_sha256_checked_here_without_a_network(self) -> Any:
        """Spooled to a file, a body's SHA-256 is computed, whatever was declared."""
        data = os.urandom(MiB + 3)
        body = SpoolBody(
            REACTOR,
            self.pool,
            self.directory,
            max_size=64 * MiB,
            sha256=True,
            declared_sha256=hashlib.sha256(b"other").hexdigest(),
        )
        body.write(data)
        spooled = yield body.finish()
        self.addCleanup(spooled.discard)
        self.assertEqual(spooled.sha256, hashlib.sha256(data).hexdigest())
        self.assertFalse(spooled.sha256_declared)

    @inlineCallbacks
    def test_aws_chunked_decoded(self) -> Any:
        """An aws-chunked body reaches the upload decoded."""
        payload = os.urandom(MiB + 5)
        body = self.body(
            decoder=AwsChunkedDecoder(
                signer=None, expect_trailer=False, decoded_length=len(payload)
            )
        )
        for piece in pieces(aws_chunked(payload, 65536, {}), 2, 100_000):
            body.write(piece)
        spooled = yield body.finish()
        self.assertEqual((b"".join(self.sink.data), spooled.size), (payload, len(payload)))

    @inlineCallbacks
    def test_bad_body_aborts_the_upload(self) -> Any:
        """A body that fails (too large) gives the upload up."""
        body = SpoolBody(REACTOR, self.pool, self.directory, max_size=10, sink=self.sink)
        body.write(b"x" * 11)
        with self.assertRaises(S3Error):
            yield body.finish()
        self.assertTrue(self.sink.aborted)

    def test_network_backpressure_pauses_the_client(self) -> None:
        """The client is paused while the network is full, and resumed after."""
        body = self.body()
        self.sink.pause()
        self.sink.pause()
        self.assertEqual(self.calls, ["pause"])
        self.sink.resume()
        self.assertEqual(self.calls, ["pause", "resume"])
        body.abort()


class StepReactor:
    """``callFromThread`` that only queues: the test says when the reactor runs the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.calls.append((f, args))

    def run_calls(self) -> None:
        """Run every queued call, in order, and those they queue."""
        while self.calls:
            f, args = self.calls.pop(0)
            f(*args)


class StepPool:
    """``callInThread`` that only queues: the test runs the jobs as a pool thread would."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], object]] = []

    def callInThread(self, f: Callable[[], object]) -> None:
        self.jobs.append(f)

    def run_jobs(self) -> None:
        """Run every queued job to its end, and those they queue."""
        while self.jobs:
            self.jobs.pop(0)()


class DeliveryOrderTests(SynchronousTestCase):
    """Completion never overtakes the bytes the write lane hands to the reactor."""

    def setUp(self) -> None:
        self.reactor = StepReactor()
        self.pool = StepPool()
        self.sink = RecordingUpload()
        self.body = SpoolBody(
            self.reactor,  # type: ignore[arg-type]
            self.pool,  # type: ignore[arg-type]
            self.mktemp(),
            max_size=64 * MiB,
            sink=self.sink,
        )
        self.at_finish: list[bytes] = []

    def finish(self) -> Deferred[SpooledFile]:
        """Finish the body, noting what the upload had when the result fired."""
        finished = self.body.finish()
        finished.addCallback(lambda spooled: self.at_finish.append(b"".join(self.sink.data)))
        return finished

    def test_finish_waits_for_queued_writes(self) -> None:
        """Lanes that ran dry in their threads are not done until the reactor ran their calls."""
        data = os.urandom(300_000)
        self.body.write(data[:100_000])
        self.body.write(data[100_000:])
        self.pool.run_jobs()  # the write and MD5 lanes have done all their work ...
        self.assertNotEqual(self.reactor.calls, [])  # ... and the writes wait for the reactor
        self.finish()
        self.assertEqual(self.at_finish, [])
        self.reactor.run_calls()
        self.pool.run_jobs()
        self.reactor.run_calls()
        self.assertEqual(self.at_finish, [data])

    def test_put_while_reactor_catches_up(self) -> None:
        """A piece queued after a lane ran dry, before the reactor heard, is still worked on."""
        first, second = os.urandom(1000), os.urandom(2000)
        self.body.write(first)
        self.pool.run_jobs()
        self.body.write(second)  # the lane's thread has ended; the reactor has not heard yet
        self.assertEqual(self.pool.jobs, [])
        self.finish()
        while self.reactor.calls or self.pool.jobs:
            self.reactor.run_calls()
            self.pool.run_jobs()
        self.assertEqual(self.at_finish, [first + second])

    def test_client_gone_aborts_the_upload(self) -> None:
        """A body closed before it was finished gives the upload up once its lanes are done."""
        self.body.write(b"x" * 1000)
        self.body.close()
        self.assertFalse(self.sink.aborted)  # the write lane still holds the bytes
        while self.reactor.calls or self.pool.jobs:
            self.pool.run_jobs()
            self.reactor.run_calls()
        self.assertTrue(self.sink.aborted)
