"""Request bodies spooled to disk as they arrive, hashed on the way, off the reactor thread.

The reactor thread only queues the bytes it reads from the socket.  A worker in a thread pool
decodes ``aws-chunked`` framing, updates MD5, SHA-256 and any ``x-amz-checksum-*`` (hashlib
and the CRCs release the GIL on large buffers) and writes the file, so hashing runs on a
second core.  When too much is queued the connection stops reading: memory stays bounded
whatever the body size.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from lambgw.protocol.checksums import Checksum, new_checksum
from lambgw.protocol.errors import S3Error

#: Stop reading from the client when this much is queued for the worker ...
HIGH_WATER = 8 * 1024 * 1024
#: ... and read again below this.
LOW_WATER = 2 * 1024 * 1024
#: The worker joins queued pieces into writes of about this size.
WRITE_SIZE = 1024 * 1024


class IChunkDecoder(Protocol):
    """What the spool needs of an ``aws-chunked`` decoder (see lambgw.protocol.chunked)."""

    def feed(self, data: bytes) -> list[memoryview]:
        """Decode more framing; return the payload pieces now complete."""

    def finish(self) -> dict[str, str]:
        """Check the body is complete; return its trailer headers."""


@frozen
class SpooledFile:
    """A request body written to disk, with the digests computed on the way."""

    path: str
    size: int
    md5: bytes
    sha256: str | None
    checksums: dict[str, str]
    trailers: dict[str, str]

    def discard(self) -> None:
        """Delete the file, if it is still there."""
        with suppress(FileNotFoundError):
            os.unlink(self.path)


class SpoolBody:
    """A body being received into ``directory``, hashed and written by a pool thread.

    The reactor calls :meth:`write` for each piece read from the socket and :meth:`finish`
    at the end, which fires with a :class:`SpooledFile` or fails with the ``S3Error`` that
    the body earned (bad chunk signature, too large, truncated).  ``pause`` and ``resume``
    stop and restart reading from the client.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        pool: ThreadPool,
        directory: str,
        *,
        max_size: int,
        decoder: IChunkDecoder | None = None,
        checksums: Iterable[str] = (),
        sha256: bool = False,
        pause: Callable[[], None] = lambda: None,
        resume: Callable[[], None] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._decoder = decoder
        self._max_size = max_size
        self._pause = pause
        self._resume = resume
        self.path = os.path.join(directory, secrets.token_hex(16) + ".part")
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed by the worker
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256() if sha256 else None
        self._checksums: dict[str, Checksum] = {name: new_checksum(name) for name in checksums}
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._running = False
        self._paused = False
        self._size = 0
        self._received = 0
        self._error: BaseException | None = None
        self._finishing: Deferred[SpooledFile] | None = None
        self._done = False

    # -- the reactor side -------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the worker (called on the reactor thread)."""
        if self._done or not data:
            return
        self._received += len(data)
        with self._lock:
            self._queue.append(data)
            self._queued += len(data)
            start = not self._running
            if start:
                self._running = True
        if start:
            self._pool.callInThread(self._work)
        if self._queued > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause()

    def finish(self) -> Deferred[SpooledFile]:
        """Fire when every byte is written, with the spooled file and its digests."""
        if self._finishing is None:
            self._finishing = Deferred()
            self._maybe_done()
        return self._finishing

    def abort(self) -> None:
        """Drop the body: nothing more is written and the file is deleted."""
        self._error = self._error or S3Error.of("IncompleteBody", "The request was cancelled.")
        with self._lock:
            self._queue.clear()
            self._queued = 0
        self._maybe_done()

    @property
    def received(self) -> int:
        """Bytes received from the client so far (before any decoding)."""
        return self._received

    # twisted.web.http.Request treats its content as a file: tell, seek, read, close.

    def tell(self) -> int:
        """Bytes received so far."""
        return self._received

    def seek(self, offset: int, whence: int = 0) -> None:
        """Do nothing: the body is read back from the spooled file, not from here."""

    def read(self, size: int = -1) -> bytes:
        """Nothing: the body is not parsed as a form."""
        return b""

    def close(self) -> None:
        """Abort the body unless it was finished (twisted.web closes content at the end)."""
        if self._finishing is None:
            self.abort()

    def _after_batch(self, size: int) -> None:
        self._queued -= size
        if self._paused and self._queued < LOW_WATER:
            self._paused = False
            self._resume()
        self._maybe_done()

    def _maybe_done(self) -> None:
        with self._lock:
            busy = self._running or bool(self._queue)
        if busy or self._done:
            return
        if self._finishing is None and self._error is None:
            return
        self._done = True
        self._file.close()
        result: SpooledFile | Failure
        try:
            result = self._result()
        except BaseException as e:
            self._discard()
            result = Failure(e)
        if self._finishing is None:
            self._discard()
        else:
            if isinstance(result, Failure):
                self._finishing.errback(result)
            else:
                self._finishing.callback(result)

    def _result(self) -> SpooledFile:
        if self._error is not None:
            raise self._error
        trailers = self._decoder.finish() if self._decoder is not None else {}
        return SpooledFile(
            path=self.path,
            size=self._size,
            md5=self._md5.digest(),
            sha256=self._sha256.hexdigest() if self._sha256 is not None else None,
            checksums={name: c.b64() for name, c in self._checksums.items()},
            trailers=trailers,
        )

    def _discard(self) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- the worker side --------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    break
                pieces = []
                size = 0
                while self._queue and size < WRITE_SIZE:
                    piece = self._queue.popleft()
                    pieces.append(piece)
                    size += len(piece)
            if self._error is None:
                try:
                    self._consume(b"".join(pieces) if len(pieces) > 1 else pieces[0])
                except BaseException as e:
                    self._error = e
            self._reactor.callFromThread(self._after_batch, size)
        self._reactor.callFromThread(self._maybe_done)

    def _consume(self, data: bytes) -> None:
        payload: Sequence[Any] = [data] if self._decoder is None else self._decoder.feed(data)
        for piece in payload:
            self._size += len(piece)
            if self._size > self._max_size:
                raise S3Error.of(
                    "EntityTooLarge",
                    f"Your proposed upload exceeds the maximum allowed size of "
                    f"{self._max_size} bytes.",
                )
            self._md5.update(piece)
            if self._sha256 is not None:
                self._sha256.update(piece)
            for checksum in self._checksums.values():
                checksum.update(piece)
            self._file.write(piece)
