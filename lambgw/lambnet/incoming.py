"""Request bodies arriving at a ``lambnet`` node: spooled into ``incoming/`` and hashed.

:class:`NodeRequest` keeps small bodies in memory and writes larger ones to files in the
store's ``incoming/`` directory (one per part with ``x-lamb-part-sizes``), so that storing
the object is a rename.  The written bytes are flushed to disk by a pool thread as they
accumulate, so the final ``fsync`` of the store finds little left to do.  A body signed
with a trailer (``x-lamb-content-sha256: STREAMING-TRAILER``) carries its declared size in
the ``size`` query parameter; the bytes after that size are the trailer, kept apart.

A spooled body is hashed in a pool thread (a :class:`~lambgw.lanes.Lane`), not on the
reactor: SHA-256 releases the GIL, so the bodies of several uploads are hashed at once
while the reactor goes on reading them.  The digests a streamed body's ``digests`` parameter
asks for (:mod:`lambgw.lambnet.digests`) are computed the same way: the checksums in the
SHA-256's lane, the MD5, the slowest, in a lane of its own.  The connection stops reading
while too much waits in a lane, and the request is handled only once its whole body is
hashed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from itertools import accumulate
from typing import IO, Any
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from lambgw.httpchannel import LeanChannel
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
#: The written bytes of a spooled body are flushed to disk each time this many more arrive.
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


class NodeChannel(LeanChannel):
    """An HTTP/1.1 connection to the node (see :class:`LeanChannel`)."""


class NodeRequest(Request):
    """A request whose body is spooled into the store's ``incoming/`` and hashed on arrival.

    With an ``x-lamb-part-sizes`` header, the body is cut into one file per part as it
    arrives, so that a multipart object is stored with its parts as they were uploaded.
    A streamed body is also digested as its ``digests`` parameter asks (see
    :meth:`asked_digests`).
    """

    #: Bytes of the object received (the trailer, if any, not counted).
    received = 0
    spool_paths: tuple[str, ...] | list[str] = ()
    body: IO[bytes]
    channel: Any
    #: With a trailer: the object's declared size, and the bytes after it.
    declared: int | None = None
    tail: bytes = b""
    #: The lane hashing a spooled body (None: hashed as it arrives, on the reactor), with the
    #: checksums asked of it, if any ...
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

    def gotLength(self, length: int | None) -> None:
        """Choose where the body goes: memory if small and announced, else spool files."""
        self._sha256 = hashlib.sha256()
        self._update: Callable[[Buffer], None] = self._sha256.update
        self.received = 0
        self.spool_paths = []
        self._sizes: list[int] = []
        self._unsynced = 0
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
        node = self.channel.site.node
        self._hashing = Lane(
            node.reactor, node.threadpool, self._update, self._hashed, self._all_hashed
        )
        if self._digests is not None and self._digests.md5 is not None:
            self._md5 = Lane(
                node.reactor,
                node.threadpool,
                self._digests.update_md5,
                self._hashed,
                self._all_hashed,
            )
        self._next_file()

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
        """Hash ``data``: in the lane for a spooled body, pausing the connection if it lags."""
        if self._hashing is None:
            self._update(data)
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
        """Whether a lane still has some of the body to hash."""
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

        Each lane calls this after its last update of its digests; the request is handled
        once no lane is busy, so that it reads the digests of the whole body.
        """
        if self._busy():
            return
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
                lane.clear()  # nothing will read the digests
        super().connectionLost(reason)

    def _next_file(self) -> None:
        if self.spool_paths:
            if self._unsynced:
                self._sync_in_pool()
            self.body.close()
        fd, path = tempfile.mkstemp(dir=self.channel.site.incoming, prefix="body-")
        self.spool_paths.append(path)  # type: ignore[union-attr]
        self._sizes.append(0)
        self._unsynced = 0
        self.body = self.content = os.fdopen(fd, "w+b")  # type: ignore[assignment]

    def handleContentChunk(self, data: bytes) -> None:
        """Hash and store a piece of the body, starting a new file at each part's end."""
        if self.declared is not None and self.received + len(data) > self.declared:
            keep = max(0, self.declared - self.received)
            self._keep_tail(data[keep:])
            data = data[:keep]
            if not data:
                return
        self._hash(data)
        written = self.received
        self.received += len(data)
        if not self.spool_paths:
            self.body.write(data)
            return
        view = memoryview(data)
        while view:
            index = len(self._sizes) - 1
            end = self._limits[index] if index < len(self._limits) else None
            if end is not None and written >= end:
                self._next_file()
                continue
            take = len(view) if end is None else min(len(view), end - written)
            self.body.write(view[:take])
            self._sizes[-1] += take
            self._unsynced += take
            written += take
            view = view[take:]
        self._maybe_sync()

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

    def _maybe_sync(self) -> None:
        """Flush what was written to disk in a pool thread, one flush at a time."""
        if self._unsynced >= SYNC_EVERY and not self._syncing:
            self._syncing = True
            self._sync_in_pool().addBoth(self._synced)

    def _synced(self, result: object) -> None:
        self._syncing = False

    def _sync_in_pool(self) -> Deferred[None]:
        """Flush the current file's written bytes to disk in a pool thread."""
        node = self.channel.site.node
        self.body.flush()
        self._unsynced = 0
        fd = os.dup(self.body.fileno())

        def sync() -> None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

        synced: Deferred[None] = deferToThreadPool(node.reactor, node.threadpool, sync)
        synced.addErrback(self._sync_failed)
        self._syncs.append(synced)
        return synced

    def _sync_failed(self, failure: Failure) -> None:
        # Reported once: the store's own fsync, on another descriptor, may not see it again.
        if self._sync_error is None:
            self._sync_error = failure.value

    def flushed(self) -> Deferred[None]:
        """Fire once every flush of the body to disk has ended; fail if one failed."""
        syncs, self._syncs = self._syncs, []

        def ended(_: object) -> None:
            if self._sync_error is not None:
                raise wire.ProtocolError(
                    500, "InternalError", f"the body could not be written: {self._sync_error}"
                )

        return gatherResults(syncs).addCallback(ended)

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
        """Remove the spool files that were not moved into the store."""
        for path in self.spool_paths:
            with suppress(FileNotFoundError):
                os.unlink(path)

    def segments(self) -> list[Segment]:
        """The body as segments for :meth:`Store.put`, one per part; files are flushed first."""
        sizes = self.part_sizes or [self.received]
        if sum(sizes) != self.received:
            raise wire.ProtocolError(400, "BadRequest", "the part sizes do not add up to the body")
        if not self.spool_paths:
            assert isinstance(self.body, io.BytesIO)
            data = self.body.getvalue()
            ends = list(accumulate(sizes))
            return [Segment("", n, data[end - n : end]) for n, end in zip(sizes, ends, strict=True)]
        self.body.flush()
        segments = [
            Segment(path, size) for path, size in zip(self.spool_paths, self._sizes, strict=True)
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
