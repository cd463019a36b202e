"""Upload bodies the network hashes: passed on as they come, the rest spliced socket to socket.

When a lambnet node computes an upload's digests (the MD5 that is its ETag and the
checksums the client asked for, checked against those the client declared), the gateway
has nothing to do with the bytes but pass them on.  :class:`RelayBody` writes what
twisted.web reads to the upload, without hashing.  Once the upload's request is being
sent to the node over plain TCP, if the client's connection is plain TCP too and enough of
the body is still to come, it stops reading the client's connection and has the kernel
move the rest of the body from the client's socket to the node's
(:class:`~lambgw.network.splice.SpliceRelay`); then it tells the channel that the body is
in, and twisted.web handles the request as if it had read every byte.

A client that fails or leaves mid-body loses its connection, and the upload is dropped.  When
the node's connection fails mid-body, the request is answered as a failed store is (``503``,
the failed network call logged), and its connection closes with the rest of its body unread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from lambgw.network import signing, splice
from lambgw.network.errors import NetworkUnavailable
from lambgw.network.interface import IUpload
from lambgw.network.splice import SpliceRelay
from lambgw.protocol.errors import S3Error
from lambgw.s3.spool import SpooledFile

log = Logger()

#: Bodies with at least this much still to come are spliced when both ends allow it.
SPLICE_MIN = 1024 * 1024
#: What the network checks a relayed body's bytes against when the client signed none.
UNSIGNED = signing.UNSIGNED_PAYLOAD


class ClientFailed(Exception):
    """The client's socket failed or ended in the middle of a spliced body."""


def _client_failed(why: str) -> Exception:
    return ClientFailed(why)


def _node_failed(why: str) -> Exception:
    return NetworkUnavailable(f"the network node's connection failed: {why}")


def can_splice(transport: Any) -> bool:
    """Whether a body arriving on ``transport`` could be spliced (plain TCP, and Linux)."""
    return splice.available() and isinstance(transport, tcp.Server) and not transport.TLS


class RelayBody:
    """The body of an upload whose network computes its digests, on its way to the network.

    ``request`` is the S3 request (on an ``S3Channel``) whose body of ``size`` bytes this
    is, ``upload`` the network's upload, ``sha256`` what the network is to check the bytes
    against (the digest the client signed, or ``UNSIGNED-PAYLOAD``).  ``reactor`` runs the
    relay; ``spliced`` is called with the count of bytes each time some are spliced.
    """

    def __init__(
        self,
        reactor: Any,
        request: Any,
        upload: IUpload,
        size: int,
        sha256: str,
        spliced: Callable[[int], None],
    ) -> None:
        self._reactor = reactor
        self._request = request
        self._channel = request.channel
        self._transport = self._channel.transport
        self._upload = upload
        self._size = size
        self._sha256 = sha256
        self._spliced = spliced
        self._passed = 0
        self._held = False
        self._relay: SpliceRelay | None = None
        self._finishing = False
        self._ended = False
        #: The node's socket, while the rest of the body goes into it by splice.
        self._node: tcp.Connection | None = None
        #: Whether the node's connection failed in the middle of the body.
        self._cut = False
        upload.throttle(self._hold, self._release)
        if size >= SPLICE_MIN and can_splice(self._transport):
            upload.direct(self._writable, self._upload_failed).addCallback(self._connected)

    # -- what twisted.web calls --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Pass on bytes of the body read by twisted.web."""
        if self._ended or not data:
            return
        if self._relay is not None:
            # The relay owns the socket: a read behind its back would reorder the bytes.
            log.error("Body bytes were read while the rest of the body was being spliced")
            self.abort()
            self._transport.abortConnection()
            return
        self._passed += len(data)
        self._upload.write(data)

    def finish(self) -> Deferred[SpooledFile]:
        """Fire with the body's description once every byte is passed on."""
        self._finishing = True
        if self._ended or (self._passed != self._size and not self._cut):
            return fail(S3Error.of("IncompleteBody", "The request was cancelled."))
        return succeed(
            SpooledFile(
                path="",
                size=self._size,
                md5=b"",
                sha256=self._sha256,
                checksums={},
                trailers={},
                upload=self._upload,
                sha256_declared=self._sha256 != UNSIGNED,
                network_digests=True,
            )
        )

    def abort(self) -> None:
        """Drop the body and the upload: nothing is stored."""
        if self._ended:
            return
        self._ended = True
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.close()
        self._upload.abort()

    @property
    def received(self) -> int:
        """Bytes of the body passed on so far."""
        return self._passed

    # twisted.web.http.Request treats its content as a file: tell, seek, read, close.

    def tell(self) -> int:
        """Bytes passed on so far."""
        return self._passed

    def seek(self, offset: int, whence: int = 0) -> None:
        """Do nothing: the body is not read back."""

    def read(self, size: int = -1) -> bytes:
        """Nothing: the body is not parsed as a form."""
        return b""

    def close(self) -> None:
        """Drop the upload unless the body was finished (twisted.web closes content at the end)."""
        if not self._finishing:
            self.abort()

    # -- backpressure ------------------------------------------------------------------

    def _hold(self) -> None:  # the network can take no more for now
        if not self._held and self._relay is None and not self._ended:
            self._held = True
            self._channel.hold_body()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._channel.release_body()

    def _writable(self) -> None:  # the node's socket can take more
        if self._relay is not None:
            self._relay.resume()

    def _upload_failed(self) -> None:
        """The upload failed (its connection was lost or given up): end the relay as cut.

        Not at once: this is called inside the upload's own failure.
        """
        relay = self._relay
        if relay is not None:
            why = NetworkUnavailable("the upload to the network failed")
            self._reactor.callLater(0, relay.fail, Failure(why))

    # -- the relay ---------------------------------------------------------------------

    def _connected(self, socket: tcp.Connection | None) -> None:
        """The upload is being sent; with its socket, splice the rest (not inside this read)."""
        if socket is not None:
            self._reactor.callLater(0, self._splice, socket)

    def _splice(self, socket: tcp.Connection) -> None:
        left = self._size - self._passed
        if self._ended or self._finishing or left < SPLICE_MIN or not self._transport.connected:
            self._upload.indirect()
            return
        self._release()
        self._transport.pauseProducing()
        try:
            relay = SpliceRelay(
                self._reactor,
                self._transport,
                socket,
                left,
                self._moved,
                self._upload.sent_directly,
                source_error=_client_failed,
                target_error=_node_failed,
            )
        except OSError:  # out of descriptors: the bytes go through the process instead
            self._upload.indirect()
            self._transport.resumeProducing()
            return
        self._relay = relay
        self._node = socket
        relay.done.addCallbacks(self._relayed, self._failed)
        relay.start()

    def _moved(self, count: int) -> None:
        self._passed += count
        self._channel.body_moved(count)
        self._spliced(count)

    def _relayed(self, _: None) -> None:
        """Every byte is in the node's socket: twisted.web takes the request from here."""
        self._relay = self._node = None
        self._upload.indirect()
        self._channel.body_ended()
        self._transport.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        self._relay = None
        self._upload.indirect()
        if reason.check(ClientFailed):
            self.abort()
            self._transport.abortConnection()
            return
        # The node's connection failed: it is dropped, so that the upload fails as a store
        # whose connection broke does; the request is answered as such a store is, and then
        # its connection closes with the rest of its body unread.
        self._cut = True
        if self._node is not None and self._node.connected:
            self._node.abortConnection()
        self._channel.persistent = False
        self._channel.body_ended()
