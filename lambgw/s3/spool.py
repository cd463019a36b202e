"""Request bodies spooled to disk as they arrive, hashed on the way, off the reactor thread.

The reactor thread only queues the bytes it reads from the socket.  Pool threads do the
rest, in three lanes that run at once: the first decodes ``aws-chunked`` framing, updates
SHA-256 and any ``x-amz-checksum-*`` and writes the file; the second updates MD5 (the
slowest digest, so it gets a lane of its own); the third flushes the written bytes to disk
as they accumulate, so that committing the object does not wait for one long ``fsync``.
hashlib, the CRCs and file I/O release the GIL, so the lanes use every core.  When too much
is queued the connection stops reading: memory stays bounded whatever the body size.

On a network that streams uploads (:meth:`INetwork.open_upload`), the first lane hands the
decoded bytes to the upload instead of a file (no local disk is written, and the network
makes the object durable); the connection also stops reading while the network is full.
The network checks the bytes against the SHA-256 it is given (:meth:`IUpload.finish`), so
when the client signed the body's SHA-256 the lanes do not compute it again: the signed
digest goes to the network, which refuses the body if the bytes do not match it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from lambgw.lanes import Buffer, Lane
from lambgw.network.interface import IUpload
from lambgw.protocol.checksums import Checksum, new_checksum
from lambgw.protocol.errors import S3Error
from lambgw.spooldir import FULL_ERRNOS

#: Stop reading from the client when this much is queued for the worker ...
HIGH_WATER = 8 * 1024 * 1024
#: ... and read again below this.
LOW_WATER = 4 * 1024 * 1024
#: The written bytes are flushed to disk each time this many more are written.
SYNC_EVERY = 32 * 1024 * 1024


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
    #: The bytes, for a small body kept in memory (then ``path`` is empty).
    data: bytes | None = None
    #: The network upload the bytes went to, for a streamed body (then ``path`` is empty).
    upload: IUpload | None = None
    #: Whether ``sha256`` is the digest the client declared, not computed here: the
    #: upload's network checks the bytes against it when it stores them.
    sha256_declared: bool = False
    #: Whether the upload's network computes the MD5 and checksums and checks those the
    #: client declared (then ``md5`` and ``checksums`` are empty).
    network_digests: bool = False

    def discard(self) -> None:
        """Delete the file, if it is still there, or give up the upload."""
        if self.upload is not None:
            self.upload.abort()
        elif self.data is None:
            with suppress(FileNotFoundError):
                os.unlink(self.path)


class SmallBody:
    """A small body of known length, kept in memory and hashed when complete.

    For bodies of a few KiB the pool threads of :class:`SpoolBody` cost more than the
    hashing itself; the object's file is then written by the network when it stores it.
    """

    def __init__(self, limit: int, checksums: Iterable[str] = (), sha256: bool = False) -> None:
        self._limit = limit
        self._checksums = list(checksums)
        self._sha256 = sha256
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        """Keep ``data`` (twisted.web never delivers more than the declared length)."""
        self._size += len(data)
        if self._size <= self._limit:
            self._parts.append(data)

    def finish(self) -> Deferred[SpooledFile]:
        """Fire with the body and its digests."""
        if self._size > self._limit:
            return fail(S3Error.of("IncompleteBody", "The body is longer than declared."))
        data = b"".join(self._parts)
        checksums = {}
        for name in self._checksums:
            checksum = new_checksum(name)
            checksum.update(data)
            checksums[name] = checksum.b64()
        return succeed(
            SpooledFile(
                path="",
                size=len(data),
                md5=hashlib.md5(data, usedforsecurity=False).digest(),
                sha256=hashlib.sha256(data).hexdigest() if self._sha256 else None,
                checksums=checksums,
                trailers={},
                data=data,
            )
        )

    def tell(self) -> int:
        """Bytes received so far."""
        return self._size

    def seek(self, offset: int, whence: int = 0) -> None:
        """Do nothing; the body is taken with :meth:`finish`."""

    def read(self, size: int = -1) -> bytes:
        """Nothing: the body is not parsed as a form."""
        return b""

    def close(self) -> None:
        """Forget the body."""
        self._parts = []


class SpoolBody:
    """A body being received into ``directory``, hashed and written by pool threads.

    The reactor calls :meth:`write` for each piece read from the socket and :meth:`finish`
    at the end, which fires with a :class:`SpooledFile` or fails with the ``S3Error`` that
    the body earned (bad chunk signature, too large, truncated).  ``pause`` and ``resume``
    stop and restart reading from the client.  With a ``sink``, the bytes go to that
    network upload instead of a file in ``directory``, and their SHA-256 is computed unless
    ``declared_sha256`` gives the one the client signed (the network checks the bytes
    against it).  When the file system is full, ``on_full(received)`` gives the error the
    body earns.
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
        sink: IUpload | None = None,
        declared_sha256: str | None = None,
        on_full: Callable[[int], S3Error] | None = None,
    ) -> None:
        self._decoder = decoder
        self._on_full = on_full
        self._max_size = max_size
        self._pause = pause
        self._resume = resume
        self._reactor = reactor
        self._sink = sink
        self._file: Any = None
        self.path = ""
        if sink is None:
            self.path = os.path.join(directory, secrets.token_hex(16) + ".part")
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed when the lanes are done
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._declared_sha256 = declared_sha256 if sink is not None else None
        computed = sha256 or sink is not None
        self._sha256 = hashlib.sha256() if computed and self._declared_sha256 is None else None
        self._checksums: dict[str, Checksum] = {name: new_checksum(name) for name in checksums}
        self._write_lane = Lane(reactor, pool, self._write_work, self._written, self._maybe_done)
        self._md5_lane = Lane(reactor, pool, self._md5_work, self._maybe_resume, self._maybe_done)
        self._sync_lane = Lane(reactor, pool, self._sync_work, self._maybe_resume, self._maybe_done)
        self._queued = 0
        self._paused = False
        self._sink_paused = False
        self._size = 0
        self._unsynced = 0
        self._received = 0
        self._error: BaseException | None = None
        self._finishing: Deferred[SpooledFile] | None = None
        self._done = False
        if sink is not None:
            sink.throttle(self._sink_pause, self._sink_resume)

    # -- the reactor side -------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the lanes (called on the reactor thread)."""
        if self._done or not data or self._error is not None:
            return
        self._received += len(data)
        self._queued += len(data)
        self._write_lane.put(data)
        if self._queued + self._md5_lane.pending > HIGH_WATER and not self._paused:
            self._paused = True
            if not self._sink_paused:
                self._pause()

    def _sink_pause(self) -> None:  # the network can take no more for now
        if not self._sink_paused:
            self._sink_paused = True
            if not self._paused:
                self._pause()

    def _sink_resume(self) -> None:
        if self._sink_paused:
            self._sink_paused = False
            if not self._paused:
                self._resume()

    def finish(self) -> Deferred[SpooledFile]:
        """Fire when every byte is written, with the spooled file and its digests."""
        if self._finishing is None:
            self._finishing = Deferred()
            if self._done:
                self._finishing.errback(
                    self._error or S3Error.of("IncompleteBody", "The request was cancelled.")
                )
            else:
                self._maybe_done()
        return self._finishing

    def abort(self) -> None:
        """Drop the body: nothing more is written and the file is deleted."""
        self._error = self._error or S3Error.of("IncompleteBody", "The request was cancelled.")
        self._write_lane.clear()
        self._md5_lane.clear()
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

    def _written(self, size: int) -> None:  # the write lane's batch is done
        self._queued -= size
        self._maybe_resume(size)

    def _maybe_resume(self, size: int) -> None:
        if self._paused and self._queued + self._md5_lane.pending < LOW_WATER:
            self._paused = False
            if not self._sink_paused:
                self._resume()

    def _maybe_done(self) -> None:
        if self._done or self._write_lane.busy or self._md5_lane.busy or self._sync_lane.busy:
            return
        if self._finishing is None and self._error is None:
            return
        self._done = True
        if self._file is not None:
            self._file.close()
        result: SpooledFile | Failure
        try:
            result = self._result()
        except BaseException as e:
            self._discard()
            result = Failure(e)
        if self._finishing is None:
            self._discard()
        elif isinstance(result, Failure):
            self._finishing.errback(result)
        else:
            self._finishing.callback(result)

    def _result(self) -> SpooledFile:
        if self._error is not None:
            full = isinstance(self._error, OSError) and self._error.errno in FULL_ERRNOS
            if full and self._on_full is not None:
                # Kept: finish() may come later and fail with it.
                self._error = self._on_full(self._received)
            raise self._error
        trailers = self._decoder.finish() if self._decoder is not None else {}
        sha256 = self._declared_sha256
        if self._sha256 is not None:
            sha256 = self._sha256.hexdigest()
        return SpooledFile(
            path=self.path,
            size=self._size,
            md5=self._md5.digest(),
            sha256=sha256,
            checksums={name: c.b64() for name, c in self._checksums.items()},
            trailers=trailers,
            upload=self._sink,
            sha256_declared=self._declared_sha256 is not None,
        )

    def _discard(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            return
        with suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- the lanes (pool threads) -------------------------------------------

    def _write_work(self, data: Buffer) -> None:
        if self._error is not None:
            return
        try:
            payload: Sequence[Any] = (
                [data] if self._decoder is None else self._decoder.feed(bytes(data))
            )
            for piece in payload:
                self._size += len(piece)
                if self._size > self._max_size:
                    raise S3Error.of(
                        "EntityTooLarge",
                        f"Your proposed upload exceeds the maximum allowed size of "
                        f"{self._max_size} bytes.",
                    )
                if self._sha256 is not None:
                    self._sha256.update(piece)
                for checksum in self._checksums.values():
                    checksum.update(piece)
                if self._sink is None:
                    self._file.write(piece)
                else:
                    self._reactor.callFromThread(self._sink.write, bytes(piece))
                self._md5_lane.put(piece)
            if self._sink is None:
                self._file.flush()  # a full disk fails this write, not the closing
        except BaseException as e:
            self._error = e
            if self._sink is None:
                with suppress(OSError):
                    self._file.close()  # drops what could not be written
            return
        if self._sink is not None:
            return
        self._unsynced += len(data)
        if self._unsynced >= SYNC_EVERY:
            self._unsynced = 0
            self._file.flush()
            self._sync_lane.put(b"")

    def _md5_work(self, piece: Buffer) -> None:
        if self._error is None:
            self._md5.update(piece)

    def _sync_work(self, _: Buffer) -> None:
        if self._error is not None:
            return
        try:
            os.fdatasync(self._file.fileno())
        except ValueError:
            pass  # the file was closed: the body was given up
        except OSError as e:
            # Reported once: a later fsync on another descriptor may not see it again.
            self._error = e
