"""Request bodies arriving at a ``lambnet`` node: spooled into ``incoming/`` and hashed.

:class:`NodeRequest` keeps small bodies in memory and writes larger ones to files in the
store's ``incoming/`` directory (one per part with ``x-lamb-part-sizes``), so that storing
the object is a rename.  A body signed with a trailer (``x-lamb-content-sha256:
STREAMING-TRAILER``) carries its declared size in the ``size`` query parameter; the bytes
after that size are the trailer, kept apart.

A spooled body is hashed and written in a pool thread (a :class:`~lambgw.lanes.Lane`), not
on the reactor: SHA-256 and file writes release the GIL, so the bodies of several uploads
are hashed and written at once while the reactor goes on reading them.  The lane hashes
each batch, then writes it to the body's :class:`SpoolFiles`, which start a new file at
each part's end; the reactor only reads from the connection.  The written bytes are
flushed to disk by another pool thread as they accumulate, so the final ``fsync`` of the
store finds little left to do.  The digests a streamed body's ``digests`` parameter asks
for (:mod:`lambgw.lambnet.digests`) are computed the same way: the checksums in the
SHA-256's lane, the MD5, the slowest, in a lane of its own.  The connection stops reading
while too much waits in a lane, and the request is handled only once its whole body is
hashed and written.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from itertools import accumulate
from typing import IO, Any
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from lambgw.httpchannel import LeanChannel, LeanRequest
from lambgw.lambnet.digests import BodyDigests
from lambgw.lanes import Buffer, Lane
from lambgw.network import signing, wire
from lambgw.network.interface import Segment
from lambgw.protocol.s3xml import http_date

log = Logger()

#: Bodies up to this size are kept in memory; larger ones go to a file.
MEMORY_BODY = 256 * 1024
#: Spooled bodies untouched for this many seconds are left over from a crash.
INCOMING_MAX_AGE = 600.0
#: The written bytes of a spooled body are flushed to disk each time this many more are written.
SYNC_EVERY = 32 * 1024 * 1024
#: The node reads up to this much from a connection at a time while a large body arrives.
READ_SIZE = 1024 * 1024
#: Twisted's read size, for everything else.
DEFAULT_READ = 64 * 1024
#: Stop reading a body when this much of it waits to be hashed ...
HASH_HIGH_WATER = 8 * 1024 * 1024
#: ... and read again below this.
HASH_LOW_WATER = 4 * 1024 * 1024


def _streamed_query(uri: bytes) -> tuple[int | None, str | None]:
    """The ``size`` query parameter of a streamed body's URI if it is a number, its ``digests``."""
    query = uri.partition(b"?")[2].decode("ascii", "replace")
    parameters = dict(parse_qsl(query, keep_blank_values=True))
    value = parameters.get("size", "")
    size = int(value) if value.isascii() and value.isdigit() else None
    return size, parameters.get(wire.DIGESTS_PARAMETER)


def _write_all(fd: int, data: memoryview) -> None:
    """Write all of ``data`` to the file ``fd``."""
    while data:
        data = data[os.write(fd, data) :]


class SpoolFiles:
    """The files of a spooled body in ``directory``, one per part, written in order.

    ``limits`` are the offsets in the body where parts end (the last part's end excluded).
    The first file is made at once; then :meth:`write` is called by one thread at a time
    (the body's hashing lane), and :attr:`sizes`, :attr:`error` and :meth:`close` are
    used only while it is not.  A file with ``SYNC_EVERY`` bytes not yet flushed, or a file
    ended with some, is handed to ``flush(fd, periodic)`` as a new descriptor, which
    ``flush`` closes.  The first error (``ENOSPC`` say) is kept in :attr:`error`, and
    nothing more is written.  Once :meth:`abandon` has returned the files made, no other is.
    """

    def __init__(
        self, directory: str, limits: Sequence[int], flush: Callable[[int, bool], None]
    ) -> None:
        self._directory = directory
        self._limits = limits
        self._flush = flush
        #: The files made, and the bytes written to each.
        self.paths: list[str] = []
        self.sizes: list[int] = []
        self.error: OSError | None = None
        self._fd = -1
        self._written = 0
        self._unsynced = 0
        self._lock = threading.Lock()
        self._abandoned = False
        self._guard(self._next_file)

    def _guard(self, act: Callable[[], object]) -> None:
        if self.error is not None:
            return
        try:
            act()
        except OSError as e:
            self.error = e
            self.close()

    def _next_file(self) -> bool:
        """End the file being written, and make the next unless abandoned (then False)."""
        if self._fd >= 0:
            if self._unsynced:
                self._flush(os.dup(self._fd), False)
            self.close()
        with self._lock:
            if self._abandoned:
                return False
            fd, path = tempfile.mkstemp(dir=self._directory, prefix="body-")
            self.paths.append(path)
        self._fd = fd
        self.sizes.append(0)
        self._unsynced = 0
        return True

    def write(self, data: Buffer) -> None:
        """Write the next bytes of the body, starting a new file at each part's end."""
        if not self._abandoned:
            self._guard(lambda: self._write(memoryview(data)))

    def _write(self, view: memoryview) -> None:
        while view:
            index = len(self.sizes) - 1
            end = self._limits[index] if index < len(self._limits) else None
            if end is not None and self._written >= end:
                if not self._next_file():
                    return
                continue
            take = len(view) if end is None else min(len(view), end - self._written)
            _write_all(self._fd, view[:take])
            self.sizes[-1] += take
            self._unsynced += take
            self._written += take
            view = view[take:]
        if self._unsynced >= SYNC_EVERY:
            self._unsynced = 0
            self._flush(os.dup(self._fd), True)

    def close(self) -> None:
        """Close the file being written, if any (the files stay)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def abandon(self) -> list[str]:
        """The files made; no other will be (any thread, while one writes or not)."""
        with self._lock:
            self._abandoned = True
            return list(self.paths)


class NodeChannel(LeanChannel):
    """An HTTP/1.1 connection to the node (see :class:`LeanChannel`)."""


class NodeRequest(LeanRequest, Request):
    """A request whose body is spooled into the store's ``incoming/`` and hashed on arrival.

    With an ``x-lamb-part-sizes`` header, the body is cut into one file per part as it
    arrives, so that a multipart object is stored with its parts as they were uploaded.
    A streamed body is also digested as its ``digests`` parameter asks (see
    :meth:`asked_digests`).
    """

    #: Bytes of the object received (the trailer, if any, not counted).
    received = 0
    #: The files of a spooled body (the list of its :class:`SpoolFiles`: read it only once
    #: the body is written, when the request is handled).
    spool_paths: tuple[str, ...] | list[str] = ()
    #: The body if kept in memory (or thrown away); empty if spooled.
    body: IO[bytes]
    channel: Any
    #: With a trailer: the object's declared size, and the bytes after it.
    declared: int | None = None
    tail: bytes = b""
    #: The files of a spooled body (None: kept in memory).
    _files: SpoolFiles | None = None
    #: The lane hashing a spooled body and writing it to its files (None: hashed as it
    #: arrives, on the reactor), with the checksums asked of it, if any ...
    _hashing: Lane | None = None
    #: ... and the lane of its MD5, if asked.
    _md5: Lane | None = None
    #: The digests asked of a streamed body, or why they cannot be.
    _digests: BodyDigests | None = None
    _digests_refused: wire.ProtocolError | None = None
    #: Whether reading is paused until the lane catches up.
    _held = False
    #: The arguments of ``requestReceived``, while the body's hashing is being finished.
    _waiting: tuple[bytes, bytes, bytes] | None = None
    #: Whether the request ended while a lane was busy: its file is closed once they are idle.
    _ended = False

    def gotLength(self, length: int | None) -> None:
        """Choose where the body goes: memory if small and announced, else spool files."""
        self._sha256 = hashlib.sha256()
        self._update: Callable[[Buffer], None] = self._sha256.update
        self.received = 0
        self._syncing = False
        self._syncs: list[Deferred[None]] = []
        self._sync_error: BaseException | None = None
        self._tail: list[bytes] = []
        self._tail_size = 0
        try:
            self.part_sizes = wire.parse_part_sizes(self.getHeader(wire.PART_SIZES_HEADER))
        except wire.ProtocolError:
            self.part_sizes = None
        self._limits = list(accumulate(self.part_sizes or []))[:-1]
        asked = None
        if self.getHeader(signing.SHA256_HEADER) == signing.TRAILER:
            self.declared, asked = _streamed_query(self.channel._path)
        authorization = self.getHeader("authorization") or ""
        if not authorization.startswith((signing.SCHEME, signing.SESSION_SCHEME)):
            # Refused before it is read: the body goes nowhere (it is still hashed).
            self.body = self.content = open(os.devnull, "w+b")  # type: ignore[assignment]  # noqa: SIM115
            return
        in_memory = length is not None and length <= MEMORY_BODY
        if asked is not None:
            self._ask_digests(asked, in_memory)
        if in_memory:
            self.body = self.content = io.BytesIO()  # type: ignore[assignment]
            return
        transport = self.channel.transport
        if transport is not None:
            transport.bufferSize = READ_SIZE
            self.notifyFinish().addBoth(self._small_reads, transport)
        self.notifyFinish().addBoth(self._discard_spool)
        self.body = self.content = io.BytesIO()  # type: ignore[assignment]
        node = self.channel.site.node
        files = self._files = SpoolFiles(
            self.channel.site.incoming,
            self._limits,
            lambda fd, periodic: node.reactor.callFromThread(self._sync_in_pool, fd, periodic),
        )
        self.spool_paths = files.paths
        update = self._update

        def hash_and_write(data: Buffer) -> None:
            update(data)
            files.write(data)

        self._hashing = Lane(
            node.reactor, node.threadpool, hash_and_write, self._hashed, self._all_hashed
        )
        if self._digests is not None and self._digests.md5 is not None:
            self._md5 = Lane(
                node.reactor,
                node.threadpool,
                self._digests.update_md5,
                self._hashed,
                self._all_hashed,
            )

    def _ask_digests(self, asked: str, in_memory: bool) -> None:
        """Digest the body as the ``digests`` parameter ``asked``; keep why not if malformed.

        A body kept in memory is digested as it arrives, on the reactor; a spooled one in
        the lanes: the checksums with the SHA-256 (``_update``), the MD5 in a lane of its own.
        """
        try:
            digests = self._digests = BodyDigests(wire.parse_digests(asked))
        except wire.ProtocolError as e:
            self._digests_refused = e
            return
        sha256 = self._sha256.update
        add = digests.update if in_memory else digests.update_checksums

        def update(data: Buffer) -> None:
            sha256(data)
            add(data)

        self._update = update

    def asked_digests(self) -> BodyDigests:
        """The digests of the body its ``digests`` parameter asked for, once it is hashed.

        Raise ``ProtocolError`` if the parameter is malformed or the body was not streamed.
        """
        if self._digests_refused is not None:
            raise self._digests_refused
        if self._digests is None:
            raise wire.ProtocolError(
                400, "BadRequest", "digests are computed only of a streamed body"
            )
        return self._digests

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Handle the request once its whole body is hashed."""
        if self._busy():
            self._waiting = (command, path, version)
            return
        self._handle(command, path, version)

    def _handle(self, command: bytes, path: bytes, version: bytes) -> None:
        """Answer the request: an object request straight from the site's resource.

        What ``twisted.web`` does first is not needed for those: their handlers read the
        query themselves (``args`` is not set), and the path names their handler (no resource
        tree).
        Every other request goes the usual way (Klein wants the path split in segments).
        """
        site = self.channel.site
        target = path.partition(b"?")[0]
        found = site.resource.object_handler(command, target)
        if found is None:
            super().requestReceived(command, path, version)
            return
        self.body.seek(0, 0)
        self.method, self.uri, self.clientproto, self.path = command, path, version, target
        self.site = site
        self.setHeader(b"date", http_date(time.time()).encode("ascii"))
        try:
            self.render(site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def _hash(self, data: bytes) -> None:
        """Hash and keep ``data``: a spooled body's in the lanes, pausing reading if they lag."""
        if self._hashing is None:
            self._update(data)
            self.body.write(data)
            return
        self._hashing.put(data)
        if self._md5 is not None:
            self._md5.put(data)
        if not self._held and self._pending() > HASH_HIGH_WATER:
            self._held = True
            self.channel.transport.pauseProducing()

    def _pending(self) -> int:
        """The most bytes waiting in one of the lanes (they wait for the same bytes)."""
        assert self._hashing is not None
        if self._md5 is None:
            return self._hashing.pending
        return max(self._hashing.pending, self._md5.pending)

    def _busy(self) -> bool:
        """Whether a lane still has some of the body to hash or write."""
        return (self._hashing is not None and self._hashing.busy) or (
            self._md5 is not None and self._md5.busy
        )

    def _hashed(self, size: int) -> None:
        """A batch is hashed (on the reactor): read again once the lanes have caught up."""
        if self._held and self._hashing is not None and self._pending() < HASH_LOW_WATER:
            self._release()

    def _release(self) -> None:
        self._held = False
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.resumeProducing()

    def _all_hashed(self) -> None:
        """A lane ran dry (on the reactor, after its every batch): handle a waiting request.

        Each lane calls this after its last update of its digests (and write to the files);
        the request is handled once no lane is busy, so that it reads the digests of the
        whole body, whose files are written.  A request that ended meanwhile closes its file.
        """
        if self._busy():
            return
        if self._ended:
            assert self._files is not None
            self._files.close()
        if self._held:
            self._release()
        waiting, self._waiting = self._waiting, None
        if waiting is not None and self.channel is not None:
            self._handle(*waiting)

    def connectionLost(self, reason: Failure) -> None:
        """Log a request whose connection went before it was answered; its body is dropped."""
        channel = self.channel
        if channel is not None:
            log.info(
                "The connection of {method} {uri} was lost after {received} bytes of its body, "
                "before the answer: {reason}",
                method=(getattr(channel, "_command", b"") or self.method).decode(
                    "ascii", "replace"
                ),
                uri=(getattr(channel, "_path", b"") or self.uri).decode("ascii", "replace"),
                received=self.received,
                reason=reason.getErrorMessage(),
            )
        for lane in (self._hashing, self._md5):
            if lane is not None:
                lane.clear()  # nothing will read the digests or the files
        super().connectionLost(reason)

    def handleContentChunk(self, data: bytes) -> None:
        """Hash and store a piece of the body (a spooled one's in its lanes), tail apart."""
        if self.declared is not None and self.received + len(data) > self.declared:
            keep = max(0, self.declared - self.received)
            self._keep_tail(data[keep:])
            data = data[:keep]
            if not data:
                return
        self.received += len(data)
        self._hash(data)

    def _keep_tail(self, data: bytes) -> None:
        """Keep the bytes after the declared size (the trailer), at most ``MAX_TRAILER``."""
        self._tail_size += len(data)
        if self._tail_size <= wire.MAX_TRAILER + 4:
            self._tail.append(data)

    def trailer(self) -> wire.Trailer:
        """The trailer that followed the object's bytes; raise ``ProtocolError`` if none."""
        if self.declared is None:
            raise wire.ProtocolError(400, "BadRequest", "the size parameter is missing")
        if self._tail_size > wire.MAX_TRAILER + 4:
            raise wire.ProtocolError(400, "BadRequest", "the body's trailer is too large")
        return wire.decode_trailer(b"".join(self._tail))

    def _sync_in_pool(self, fd: int, periodic: bool) -> None:
        """Flush a spool file's written bytes to disk in a pool thread, then close ``fd``.

        Called on the reactor by the files' writer, before its lane runs dry.  A file's
        periodic flushes go one at a time: one due while another runs is skipped.
        """
        if self.channel is None or (periodic and self._syncing):
            os.close(fd)
            return
        node = self.channel.site.node

        def sync() -> None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

        synced: Deferred[None] = deferToThreadPool(node.reactor, node.threadpool, sync)
        synced.addErrback(self._sync_failed)
        self._syncs.append(synced)
        if periodic:
            self._syncing = True
            synced.addBoth(self._synced)

    def _synced(self, result: object) -> None:
        self._syncing = False

    def _sync_failed(self, failure: Failure) -> None:
        # Reported once: the store's own fsync, on another descriptor, may not see it again.
        if self._sync_error is None:
            self._sync_error = failure.value

    def flushed(self) -> Deferred[None]:
        """Fire once every flush of the body to disk has ended; fail if a write or one failed."""
        syncs, self._syncs = self._syncs, []
        return gatherResults(syncs).addCallback(lambda _: self._check_written())

    def _check_written(self) -> None:
        """Raise ``ProtocolError`` (500) if the body could not be written or flushed."""
        error = self._sync_error
        if error is None and self._files is not None:
            error = self._files.error
        if error is not None:
            raise wire.ProtocolError(
                500, "InternalError", f"the body could not be written: {error}"
            )

    def body_sha256(self) -> str:
        """The SHA-256 of the body received (the trailer excluded), in hex."""
        return self._sha256.hexdigest()

    @staticmethod
    def _small_reads(result: object, transport: Any) -> None:
        """Read the connection at Twisted's size again: the next request may be small.

        A ``recv`` into a 1 MiB buffer allocates (maps, then unmaps) 1 MiB whatever arrives.
        """
        transport.bufferSize = DEFAULT_READ

    def _discard_spool(self, result: object) -> None:
        """Remove the spool files that were not moved into the store, at once.

        A request ends with its lanes busy only when its connection is lost (the node's
        shutdown too, after which the reactor runs nothing the lanes hand it): the files are
        abandoned, so that the lane makes no other, and removed.  The lane may still be
        writing to one, which it keeps open until the lanes are idle (see :meth:`_all_hashed`).
        """
        files = self._files
        assert files is not None
        for path in files.abandon():
            with suppress(FileNotFoundError):
                os.unlink(path)
        if self._busy():
            self._ended = True
        else:
            files.close()

    def segments(self) -> list[Segment]:
        """The body as segments for :meth:`Store.put`, one per part, once it is all written."""
        sizes = self.part_sizes or [self.received]
        if sum(sizes) != self.received:
            raise wire.ProtocolError(400, "BadRequest", "the part sizes do not add up to the body")
        if self._files is None:
            assert isinstance(self.body, io.BytesIO)
            data = self.body.getvalue()
            ends = list(accumulate(sizes))
            return [Segment("", n, data[end - n : end]) for n, end in zip(sizes, ends, strict=True)]
        self._check_written()
        files = self._files
        segments = [
            Segment(path, size) for path, size in zip(files.paths, files.sizes, strict=True)
        ]
        return segments + [Segment("", 0, b"") for _ in sizes[len(segments) :]]


def sweep_incoming(directory: str, min_age: float = INCOMING_MAX_AGE) -> int:
    """Remove the spooled bodies left in ``directory`` by a crash; how many were removed.

    A body being received is written to at least every silence timeout, so files untouched
    for ``min_age`` seconds belong to no request.
    """
    removed = 0
    now = time.time()
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        with suppress(FileNotFoundError):
            if name.startswith("body-") and now - os.stat(path).st_mtime >= min_age:
                os.unlink(path)
                removed += 1
    return removed
