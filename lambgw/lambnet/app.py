"""The ``lambnet`` node: the network protocol (``docs/network-protocol.md``) over a Store.

:class:`NodeSite` spools each request body as it arrives (small ones in memory, larger ones
to a file in the store's ``incoming/`` directory, so that storing it is a rename) and hashes
it on the way; its root resource (:class:`~lambgw.lambnet.resource.NodeResource`) hands
object requests straight to their handlers.  :class:`Node` is the Klein app: it checks the
request's signature, date, nonce and body digest, then calls the store in a thread pool
(reads, and writes of small objects, each queued to one of its threads).  Small objects are
read with their lookup and sent with the answer's headers; larger ones stream back from the
open files through :class:`~lambgw.network.files.FileRangeBody`, with backpressure (with
sendfile(2) on a plain TCP connection).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.iweb import IRequest
from twisted.web.server import Request, Site

from lambgw.lambnet.incoming import NodeChannel, NodeRequest, sweep_incoming
from lambgw.lambnet.keys import PublicKeys
from lambgw.lambnet.resource import NodeResource
from lambgw.network import sessions, signing, wire
from lambgw.network.errors import ANSWERS, NetworkError
from lambgw.network.files import SMALL_READ, FileRangeBody, read_small
from lambgw.network.interface import IObjectBody, NewObject, ObjectInfo
from lambgw.network.quick import QuickCalls, TurnWrites, checkpoint_if_due
from lambgw.network.serial import SerialCalls
from lambgw.network.store import FileRange, Store, held_inline
from lambgw.network.uploads import StoredUploads
from lambgw.spooldir import SpoolDirectory

log = Logger()
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: The first segment of a protocol path: its version.
_VERSION_PATH = re.compile(rb"/(v[0-9]+)(?:/|$)")
#: The largest JSON request body accepted (a copy or tagging request).
MAX_JSON_BODY = 64 * 1024
#: The largest completion request accepted (10,000 parts, with checksums).
MAX_COMPLETION_BODY = 4 * 1024 * 1024


class NodeSite(Site):
    """The node's site: requests spool their bodies into ``incoming``."""

    requestFactory = NodeRequest
    protocol = NodeChannel  # type: ignore[assignment]

    def __init__(self, node: Node) -> None:
        """Serve ``node``'s resource; bodies go to its store's ``incoming/`` directory."""
        super().__init__(NodeResource(node))
        self.node = node
        incoming = os.path.join(node.store.root, "incoming")
        os.makedirs(incoming, exist_ok=True)
        sweep_incoming(incoming)
        #: This process's own directory in ``incoming/``, released when the node stops (a
        #: crash's bodies go at the next start).
        self.spool = SpoolDirectory.claim(incoming)
        self.incoming = self.spool.path
        self.displayTracebacks = False
        self.noisy = False


def _query(request: Request) -> dict[str, str]:
    """The query's parameters, decoded as ``parse_qsl`` with blank values kept would."""
    raw = request.uri.partition(b"?")[2].decode("ascii", "strict")
    try:
        return dict(map(_parameter, filter(None, raw.split("&"))))
    except UnicodeDecodeError:
        raise wire.ProtocolError(400, "InvalidPath", "a query parameter is not UTF-8") from None


def _parameter(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return (
        unquote(name.replace("+", " "), errors="strict"),
        unquote(value.replace("+", " "), errors="strict"),
    )


def _header(request: Request, name: str) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value


def _client(request: Request) -> str:
    """The client's address, for a log line."""
    peer = request.getClientAddress()
    return str(getattr(peer, "host", peer))


def _json(request: Request, value: Any) -> bytes:
    return _json_body(request, json.dumps(value).encode("utf-8"))


def _json_body(request: Request, body: bytes) -> bytes:
    """``body``, a JSON answer, sent with its length (twisted.web would send it in chunks)."""
    request.setHeader("content-type", "application/json")
    request.setHeader("content-length", str(len(body)))
    return body


def _page_body(store: Store, account: str, order_id: str, *args: Any) -> bytes:
    """The answer to a listing (pool thread only): its columns, as the store wrote them."""
    return wire.page_body(store.list_columns(account, order_id, *args))


def _open(
    store: Store, account: str, order_id: str, path: str, first: int, last: int | None
) -> tuple[ObjectInfo, list[FileRange] | bytes]:
    """Open an object's byte range; a small one is read at once (pool thread only).

    A small body then goes out with the answer's headers in one write, with no further
    trip through the pool.
    """
    info, ranges = store.open_range(account, order_id, path, first, last)
    if sum(piece.length for piece in ranges) <= SMALL_READ:
        return info, read_small(ranges)
    return info, ranges


def _open_held(
    store: Store, account: str, order_id: str, path: str, first: int, last: int | None
) -> tuple[ObjectInfo, bytes]:
    """An object's byte range held in the index, read on the reactor (:class:`QuickCalls`)."""
    return store.read_held_now(account, order_id, path, first, last)


def _read_whole(
    store: Store, account: str, order_id: str, path: str
) -> tuple[ObjectInfo, bytes | None]:
    """An object and its bytes, or ``None`` for bytes over ``SMALL_READ`` (pool thread only)."""
    info, ranges = store.open_range(account, order_id, path, 0, None)
    if info.size <= SMALL_READ:
        return info, read_small(ranges)
    for piece in ranges:
        piece.file.close()
    return info, None


def _read_held_whole(
    store: Store, account: str, order_id: str, path: str
) -> tuple[ObjectInfo, bytes | None]:
    """An object whose bytes the index holds, read on the reactor (:class:`QuickCalls`)."""
    return store.read_held_now(account, order_id, path)


async def _stream(request: Request, body: IObjectBody) -> None:
    """Deliver ``body`` as the answer to ``request``; if that fails, cut the connection.

    The headers are sent by then: an error answer would be read as more of the object's
    bytes, so the client must see a connection cut before the announced length instead.
    """
    try:
        await body.deliver(request)
    except Exception:
        failure = Failure()
        if not failure.check(ConnectionDone, ConnectionLost, CancelledError):
            log.failure("A download failed after its headers", failure)
        transport: Any = request.transport
        transport.abortConnection()


def _count(query: dict[str, str], name: str, default: int = 1000, limit: int = 1000) -> int:
    """A number of the query from 0 to ``limit`` (``default`` if absent)."""
    value = query.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or int(value) > limit:
        raise wire.ProtocolError(400, "BadRequest", f"{name} must be a number from 0 to {limit}")
    return int(value)


def _check_sequence(session: sessions.NodeSession, signed: signing.Signed) -> None:
    """Accept a session request's sequence number once, or refuse the request."""
    try:
        # parse() let through only 32 hex digits.
        session.window.check(int(signed.request.nonce, 16))
    except sessions.StaleSequence as e:
        raise wire.ProtocolError(401, sessions.STALE_SEQUENCE, str(e)) from None


class Node:
    """The Klein app of the network protocol over ``store``."""

    app = Klein()

    def __init__(
        self,
        store: Store,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        threadpool: ThreadPool,
        uploads: StoredUploads | None = None,
    ) -> None:
        """Serve ``store``, calling it in ``threadpool``; ``clock`` dates requests and ends turns.

        ``uploads`` are the store's multipart uploads (with the default expiry if not given).
        """
        self.store = store
        self.uploads = uploads or StoredUploads(store)
        self._reactor = reactor
        self._clock = clock
        self._threadpool = threadpool
        self._keys = PublicKeys(store.root, clock.seconds)
        self._reads = SerialCalls(reactor, threadpool)
        self._quick = QuickCalls(self._reads.call)
        self._writes = SerialCalls(reactor, threadpool, store.index.group)
        self._quick_writes = QuickCalls(self._writes.call_grouped)
        self._turn_writes = TurnWrites(clock, store.index, self._quick_writes)
        #: The nonces of requests signed with an account's key; those of a session are numbered.
        self._nonces = signing.NonceCache()
        self._sessions = sessions.SessionTable()

    @property
    def reactor(self) -> IReactorFromThreads:
        """The reactor the node runs on."""
        return self._reactor

    @property
    def threadpool(self) -> ThreadPool:
        """The pool the store is called in."""
        return self._threadpool

    def _call(self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        """Run a store call that writes in the pool: writes wait for the disk side by side."""
        return deferToThreadPool(self._reactor, self._threadpool, f, *args, **kwargs)

    def _put_now(self, *args: Any) -> ObjectInfo:
        """:meth:`Store.put` without waiting, then a checkpoint in the pool if now due."""
        info = self.store.put(*args, now=True)
        checkpoint_if_due(self.store.index, self._writes)
        return info

    def _read(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Run a store call that only reads, queued with the others in one pool thread.

        Reads are short: handed over in batches, they cost no thread wake-up each.
        """
        return self._reads.call(f, *args)

    # -- errors ------------------------------------------------------------------------

    @app.handle_errors(Exception)
    def render_error(self, request: IRequest, failure: Failure) -> bytes:
        """Render any failure as a JSON error: the one place errors become answers."""
        error = failure.value
        assert isinstance(request, Request)
        if isinstance(error, wire.ProtocolError):
            code, status = error.code, error.status
        elif isinstance(error, signing.SignatureError):
            code, status = "Unauthorized", 401
        elif isinstance(error, NetworkError):
            code, status = wire.code_of(error)
        else:
            log.failure("Request failed", failure)
            code, status, error = "InternalError", 500, Exception("internal error")
        if not isinstance(error, ANSWERS):
            log.warn(
                "Refused {method} {uri} from {client}: {status} {code}: {message}",
                method=request.method.decode("ascii", "replace"),
                uri=request.uri.decode("ascii", "replace"),
                client=_client(request),
                status=status,
                code=code,
                message=str(error),
            )
        request.setResponseCode(status)
        request.setHeader(wire.ERROR_HEADER, code)
        return _json_body(request, wire.error_body(code, str(error)))

    # -- authentication ----------------------------------------------------------------

    def _authenticate(
        self, request: Request, account: str, account_key: bool = False
    ) -> str | None:
        """Refuse the request unless ``account`` signed exactly it, recently, once.

        It is signed with the account's key or MACed in one of the account's sessions (not
        if ``account_key``).  Return the object description of the body's trailer, if the
        body had one.
        """
        raw_path, _, raw_query = request.uri.partition(b"?")
        try:
            path, query = raw_path.decode("ascii"), raw_query.decode("ascii")
        except UnicodeDecodeError:
            raise wire.ProtocolError(400, "BadRequest", "the URI is not ASCII") from None
        if any(part in ("", ".", "..") for part in path.split("/")[1:]):
            raise wire.ProtocolError(400, "BadRequest", "the path has empty or dot segments")
        if not signing.valid_account(account):
            raise wire.ProtocolError(400, "BadRequest", "not a valid account name")
        headers = {
            name.decode("latin-1").lower(): values[0].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        method = request.method.decode("ascii")
        signed = signing.parse(method, path, query, headers)
        now = self._clock.seconds()
        key = session = None
        if not signed.session:
            key = self._check_signature(signed, account, now)
        elif account_key:
            raise signing.SignatureError(
                f"this request must be signed with the account's key ({signing.SCHEME})"
            )
        else:
            session = self._check_session(signed, account, now)
        assert isinstance(request, NodeRequest)
        description = None
        digest = signed.request.content_sha256
        if digest == signing.TRAILER:
            if key is None:
                raise wire.ProtocolError(
                    400, "BadRequest", "a streamed body is signed with the account's key"
                )
            trailer = request.trailer()
            signing.verify_trailer(
                key,
                signed.signature,
                trailer.content_sha256,
                trailer.description,
                trailer.signature,
            )
            digest, description = trailer.content_sha256, trailer.description
            if request.received != request.declared:
                raise wire.ProtocolError(
                    400,
                    "BadRequest",
                    f"the body holds {request.received} bytes before its "
                    f"trailer, not {request.declared}",
                )
        # Only a trailer's digest may be UNSIGNED-PAYLOAD (signing.parse refuses it in a header).
        if digest != signing.UNSIGNED_PAYLOAD and request.body_sha256() != digest:
            raise wire.ProtocolError(400, "BadDigest", "the body does not match its SHA-256")
        if session is None:
            self._nonces.check(account, signed.request.nonce, signed.request.date, now)
        else:
            _check_sequence(session, signed)
        return description

    def _check_signature(
        self, signed: signing.Signed, account: str, now: float
    ) -> Ed25519PublicKey:
        """Check a request signed with ``account``'s key; return the key."""
        if signed.account != account:
            raise wire.ProtocolError(
                403, "AccessDenied", f"the request is signed by {signed.account}, not {account}"
            )
        key = self._keys.get(account)
        if key is None:
            raise signing.SignatureError(f"the account {account} has no key on this node")
        signing.verify(key, signed, now)
        return key

    def _check_session(
        self, signed: signing.Signed, account: str, now: float
    ) -> sessions.NodeSession:
        """Check a request MACed in a session: one the node knows, of ``account``, still keyed.

        A session whose account's public key changed since it was opened is forgotten.
        """
        session = self._sessions.get(signed.session, now)
        if session is not None and session.owner is not self._keys.get(session.account):
            self._sessions.forget(signed.session)
            session = None
        if session is None:
            raise wire.ProtocolError(
                401,
                sessions.NO_SUCH_SESSION,
                f"this node has no session {signed.session}: open another",
            )
        if session.account != account:
            raise wire.ProtocolError(
                403, "AccessDenied", f"the session is {session.account}'s, not {account}'s"
            )
        sessions.verify_mac(session.key, signed, now)
        return session

    def _described_body(
        self, request: Request, account: str, what: str
    ) -> tuple[NewObject, dict[str, str]]:
        """Authenticate a body's request; the description it carries, checked against the body.

        The description comes in the signed trailer, or else in the signed headers.  With
        the ``digests`` parameter, its etag and checksums are completed with the digests the
        node computed, which must be those it expects.  Return it with the request's query.
        """
        description = self._authenticate(request, account)
        if description is None:
            description = _header(request, wire.OBJECT_HEADER) or ""
        try:
            data = json.loads(description)
            new = wire.new_from_json(data)
        except (ValueError, KeyError, TypeError):
            raise wire.ProtocolError(
                400, "BadRequest", f"the {what} description is not valid"
            ) from None
        assert isinstance(request, NodeRequest)
        if request.received != new.size:
            raise wire.ProtocolError(
                400, "BadRequest", f"the body holds {request.received} bytes, not {new.size}"
            )
        query = _query(request)
        expect = wire.expect_from_json(data)
        if wire.DIGESTS_PARAMETER in query:
            new = request.asked_digests().describe(new, expect)
        elif expect:
            raise wire.ProtocolError(400, "BadRequest", "digests are expected, none asked")
        return new, query

    @staticmethod
    def _path(request: Request, query: dict[str, str] | None = None) -> str:
        """The ``path`` parameter of the request's query (``query``, if already read)."""
        path = (_query(request) if query is None else query).get("path")
        if path is None:
            raise wire.ProtocolError(400, "BadRequest", "the path parameter is missing")
        return path

    # -- orders ------------------------------------------------------------------------

    @app.route(f"/{wire.VERSION}/accounts/<account>/sessions", methods=["POST"])
    def open_session(self, request: Request, account: str) -> bytes:
        """Open a session of the account: the body names the gateway's X25519 public key."""
        self._authenticate(request, account, account_key=True)
        value = self._json_body(request, sessions.MAX_OPEN_BODY)
        try:
            client_public = base64.b64decode(value["key"], validate=True)
            opened = self._sessions.open(
                account, self._keys.get(account), client_public, self._clock.seconds()
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise wire.ProtocolError(
                400, "BadRequest", "the session's key is not a base64 X25519 public key"
            ) from None
        session_id, node_public = opened
        request.setResponseCode(201)
        answer = {
            "session": session_id,
            "key": base64.b64encode(node_public).decode("ascii"),
            "lifetime": self._sessions.lifetime,
        }
        return _json(request, answer)

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders", methods=["GET"])
    async def orders(self, request: Request, account: str) -> bytes:
        """The orders of the account."""
        self._authenticate(request, account)
        orders = await self._read(self.store.orders, account)
        return _json(request, [wire.order_to_json(order) for order in orders])

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>", methods=["GET"])
    async def order(self, request: Request, account: str, order_id: str) -> bytes:
        """One order of the account."""
        self._authenticate(request, account)
        order = await self._read(self.store.order, account, order_id)
        return _json(request, wire.order_to_json(order))

    # -- objects -----------------------------------------------------------------------

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/object", methods=["PUT"])
    async def put(self, request: Request, account: str, order_id: str) -> bytes:
        """Store the body at the path, atomically."""
        new, query = self._described_body(request, account, "object")
        path = self._path(request, query)
        assert isinstance(request, NodeRequest)
        wire.parse_part_sizes(_header(request, wire.PART_SIZES_HEADER))
        if_none_match = _header(request, wire.IF_NONE_MATCH_HEADER) == "1"
        if_match = _header(request, wire.IF_MATCH_HEADER)
        await request.flushed()
        segments = request.segments()
        # A small body goes into the index, with no fsync of its own: at the end of the
        # reactor's turn, with the others of the turn, if that needs no wait, else committed
        # together with the others queued beside it.
        args = (account, order_id, path, segments, new, if_none_match, if_match)
        if held_inline(segments, new.size):
            info = await self._turn_writes.call(self._put_now, self.store.put, *args)
        else:
            info = await self._call(self.store.put, *args)
        request.setResponseCode(201)
        return _json(request, wire.info_to_json(info))

    @app.route(
        f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/object", methods=["GET", "HEAD"]
    )
    async def get(self, request: Request, account: str, order_id: str) -> bytes | None:
        """The object at the path (HEAD: its description only), whole or a byte range."""
        self._authenticate(request, account)
        path = self._path(request)
        if request.method == b"HEAD":
            info = await self._quick.call(
                self.store.head_now, self.store.head, account, order_id, path
            )
            request.setHeader(wire.OBJECT_HEADER, wire.header_json(wire.info_to_json(info)))
            request.setHeader("content-length", str(info.size))
            return b""
        first, last = wire.parse_range(_header(request, "range"))
        info, opened = await self._quick.call(
            _open_held, _open, self.store, account, order_id, path, first, last
        )
        end = info.size if last is None else min(last + 1, info.size)
        length = max(0, end - first)
        request.setHeader(wire.OBJECT_HEADER, wire.header_json(wire.info_to_json(info)))
        request.setHeader("content-type", "application/octet-stream")
        request.setHeader("content-length", str(length))
        if _header(request, "range"):
            request.setResponseCode(206)
            request.setHeader("content-range", f"bytes {first}-{first + length - 1}/{info.size}")
        if isinstance(opened, bytes):
            return opened
        body = FileRangeBody(opened, self._reactor, self._threadpool)
        try:
            if length:
                await _stream(request, body)
        finally:
            body.close()
        return None if length else b""

    @app.route(f"/{wire.VERSION}/accounts/<account>/{wire.READ_PATH}", methods=["POST"])
    async def read(self, request: Request, account: str) -> bytes:
        """Several whole objects of the account, each with its description or its error.

        An object over ``SMALL_READ`` bytes comes without its bytes: the client reads it
        alone, streamed.
        """
        self._authenticate(request, account)
        entries = wire.parse_read_request(self._json_body(request, wire.MAX_READ_BODY))
        # All asked at once: those the pool reads go over to its thread together.
        reading = [
            self._quick.call(_read_held_whole, _read_whole, self.store, account, order, path)
            for order, path in entries
        ]
        parts = []
        for read in reading:
            try:
                info, data = await read
            except NetworkError as e:
                parts.append(wire.read_error(e))
                continue
            parts.append(wire.read_entry(info, data))
        body = b"".join(parts)
        request.setHeader("content-type", wire.READ_TYPE)
        request.setHeader("content-length", str(len(body)))
        return body

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/object", methods=["DELETE"])
    async def delete(self, request: Request, account: str, order_id: str) -> bytes:
        """Remove the object at the path."""
        self._authenticate(request, account)
        path, if_match = self._path(request), _header(request, wire.IF_MATCH_HEADER)
        deleted = await self._call(self.store.delete, account, order_id, path, if_match)
        return _json(request, {"deleted": deleted})

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/copy", methods=["POST"])
    async def copy(self, request: Request, account: str, order_id: str) -> bytes:
        """Copy an object of the account to the path, in this order."""
        self._authenticate(request, account)
        path = self._path(request)
        assert isinstance(request, NodeRequest)
        if request.received > MAX_JSON_BODY or request.spool_paths:
            raise wire.ProtocolError(400, "BadRequest", "the copy request is too large")
        try:
            data = json.loads(request.segments()[0].data or b"")
            source_order, source_path = str(data["source_order_id"]), str(data["source_path"])
            replace, tags = data.get("replace"), data.get("tags")
        except (ValueError, KeyError, TypeError):
            raise wire.ProtocolError(400, "BadRequest", "malformed copy request") from None
        new = None if replace is None else wire.new_from_json(replace)
        copied_tags = None if tags is None else wire.tags_from_json(tags)
        info = await self._call(
            self.store.copy, account, source_order, source_path, order_id, path, new, copied_tags
        )
        return _json(request, wire.info_to_json(info))

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/tags", methods=["GET"])
    async def get_tags(self, request: Request, account: str, order_id: str) -> bytes:
        """The tags of the object at the path."""
        self._authenticate(request, account)
        tags = await self._call(self.store.get_tags, account, order_id, self._path(request))
        return _json(request, {"tags": tags})

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/tags", methods=["PUT"])
    async def put_tags(self, request: Request, account: str, order_id: str) -> bytes:
        """Replace the tags of the object at the path."""
        self._authenticate(request, account)
        path = self._path(request)
        assert isinstance(request, NodeRequest)
        if request.received > MAX_JSON_BODY or request.spool_paths:
            raise wire.ProtocolError(400, "BadRequest", "the tagging request is too large")
        try:
            tags = json.loads(request.segments()[0].data or b"")["tags"]
        except (ValueError, KeyError, TypeError):
            raise wire.ProtocolError(400, "BadRequest", "malformed tagging request") from None
        await self._call(self.store.put_tags, account, order_id, path, wire.tags_from_json(tags))
        return _json(request, {"tags": tags})

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/list", methods=["GET"])
    async def listing(self, request: Request, account: str, order_id: str) -> bytes:
        """One page of the order's listing."""
        self._authenticate(request, account)
        query = _query(request)
        try:
            max_keys = int(query.get("max-keys", "1000"))
        except ValueError:
            raise wire.ProtocolError(400, "BadRequest", "max-keys is not a number") from None
        if not 0 <= max_keys <= 1000:
            raise wire.ProtocolError(400, "BadRequest", "max-keys must be from 0 to 1000")
        listing = (query.get(name, "") for name in ("prefix", "delimiter", "marker"))
        body = await self._read(_page_body, self.store, account, order_id, *listing, max_keys)
        return _json_body(request, body)

    # -- multipart uploads -------------------------------------------------------------

    @staticmethod
    def _json_body(request: Request, limit: int) -> Any:
        """The request's body, read as JSON (at most ``limit`` bytes)."""
        assert isinstance(request, NodeRequest)
        if request.received > limit:
            raise wire.ProtocolError(400, "BadRequest", "the request body is too large")
        data = b""
        for segment in request.segments():
            if segment.data is not None:
                data += segment.data
            else:
                with open(segment.path, "rb") as f:
                    data += f.read()
        try:
            return json.loads(data)
        except ValueError:
            raise wire.ProtocolError(400, "BadRequest", "the body is not JSON") from None

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/uploads", methods=["POST"])
    async def create_upload(self, request: Request, account: str, order_id: str) -> bytes:
        """Open a multipart upload to the path."""
        self._authenticate(request, account)
        path = self._path(request)
        data = self._json_body(request, MAX_JSON_BODY)
        try:
            described = wire.new_from_json(data["described"])
            algorithm, upload_id = str(data["checksum_algorithm"]), str(data["upload_id"])
        except (KeyError, TypeError):
            raise wire.ProtocolError(400, "BadRequest", "malformed upload request") from None
        upload = await self._call(
            self.uploads.create, account, order_id, path, described, algorithm, upload_id
        )
        request.setResponseCode(201)
        return _json(request, wire.upload_to_json(upload))

    @app.route(f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/uploads", methods=["GET"])
    async def list_uploads(self, request: Request, account: str, order_id: str) -> bytes:
        """One page of the order's open uploads."""
        self._authenticate(request, account)
        query = _query(request)
        page = await self._call(
            self.uploads.list_uploads,
            account,
            order_id,
            query.get("prefix", ""),
            query.get("delimiter", ""),
            query.get("key-marker", ""),
            query.get("upload-id-marker", ""),
            _count(query, "max-uploads"),
        )
        return _json(request, wire.uploads_page_to_json(page))

    @app.route(
        f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/uploads/<upload_id>/part",
        methods=["PUT"],
    )
    async def upload_part(
        self, request: Request, account: str, order_id: str, upload_id: str
    ) -> bytes:
        """Store the body as a part; its size, ETag and checksums come in its description."""
        new, query = self._described_body(request, account, "part")
        path = self._path(request, query)
        number = _count(query, "number", 0, 10_000)
        assert isinstance(request, NodeRequest)
        await request.flushed()
        (segment,) = request.segments()
        part = await self._call(
            self.uploads.upload_part,
            account,
            order_id,
            path,
            upload_id,
            number,
            segment,
            new.etag,
            new.checksums,
        )
        return _json(request, wire.part_to_json(part))

    @app.route(
        f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/uploads/<upload_id>", methods=["GET"]
    )
    async def list_parts(
        self, request: Request, account: str, order_id: str, upload_id: str
    ) -> bytes:
        """The upload and one page of its parts."""
        self._authenticate(request, account)
        query = _query(request)
        page = await self._call(
            self.uploads.list_parts,
            account,
            order_id,
            self._path(request),
            upload_id,
            _count(query, "marker", 0, 10_000),
            _count(query, "max-parts"),
        )
        return _json(request, wire.parts_page_to_json(page))

    @app.route(
        f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/uploads/<upload_id>",
        methods=["DELETE"],
    )
    async def abort_upload(
        self, request: Request, account: str, order_id: str, upload_id: str
    ) -> bytes:
        """Remove the upload and its parts."""
        self._authenticate(request, account)
        path = self._path(request)
        await self._call(self.uploads.abort, account, order_id, path, upload_id)
        return _json(request, {"aborted": True})

    @app.route(
        f"/{wire.VERSION}/accounts/<account>/orders/<order_id>/uploads/<upload_id>/complete",
        methods=["POST"],
    )
    async def complete_upload(
        self, request: Request, account: str, order_id: str, upload_id: str
    ) -> bytes:
        """Make the object of the named parts, by reference."""
        self._authenticate(request, account)
        path = self._path(request)
        data = self._json_body(request, MAX_COMPLETION_BODY)
        asked = wire.completion_from_json(data)
        info = await self._call(
            self.uploads.complete,
            account,
            order_id,
            path,
            upload_id,
            asked.parts,
            asked.checksums,
            asked.if_none_match,
            asked.if_match,
        )
        return _json(request, wire.info_to_json(info))

    def expire_uploads(self) -> Deferred[int | None]:
        """Abort the uploads idle longer than the expiry (a failure is logged)."""
        expired: Deferred[int | None] = self._call(self.uploads.expire)
        expired.addErrback(lambda f: log.failure("Expiring multipart uploads failed", f))
        return expired

    @app.route("/", branch=True)
    def unknown(self, request: Request) -> bytes:
        """Anything else; a path of another version of the protocol names both versions."""
        version = _VERSION_PATH.match(request.path)
        if version is not None and version[1].decode("ascii") != wire.VERSION:
            raise wire.ProtocolError(
                400,
                "VersionMismatch",
                f"the client speaks protocol {version[1].decode('ascii')}, "
                f"this node speaks {wire.VERSION}",
            )
        raise wire.ProtocolError(404, "NotFound", f"no such resource in protocol {wire.VERSION}")
