"""The HTTP network: :class:`INetwork` spoken to a ``lambnet`` node with HTTP agents.

Requests are MACed in a session with the node (:mod:`lambgw.network.sessions`), opened by a
request signed with the account's key (:mod:`lambgw.network.signing`); a streamed upload is
signed with the key, its trailer too.  Requests go straight to an agent, not through treq's
``HTTPClient``: ``HTTPClient.request`` parses every URL with hyperlink and IDNA and wraps the
agent in cookie, redirect and content decoding agents for each call, some thirty times the
agent's own cost, for nothing this protocol uses; treq still reads the answers.  Requests
with a body in memory, or none, go to :class:`~lambgw.network.leanagent.LeanAgent`, which
writes each in one piece and parses its answer's head in one pass; streamed uploads go to
Twisted's ``Agent`` (:class:`~lambgw.network.httpagent.NodeAgent`) over Twisted's own
connection pool (:func:`~lambgw.network.httpagent.node_pool`).  Uploads stream the
spooled segments in order through :class:`SegmentsProducer`; small downloads are read whole,
larger ones are pushed to the consumer by :class:`HTTPObjectBody`, which pauses the
connection when the consumer is full.  Connections are kept alive in pools.  A request that
makes no progress for ``silence`` seconds is cancelled; idempotent requests are retried with
backoff when the node cannot be reached or answers 503.  Every failure to reach the node
becomes :class:`NetworkUnavailable`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from treq import content
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IReactorFDSet,
    IReactorFromThreads,
    IReactorTime,
)
from twisted.internet.ssl import Certificate, platformTrust
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent
from zope.interface import implementer

from lambgw.network import sessions, signing, wire
from lambgw.network.errors import NetworkError, NetworkUnavailable
from lambgw.network.files import SMALL_READ, BytesBody
from lambgw.network.httpagent import NodeAgent, NodeEndpoints, host_header, node_pool
from lambgw.network.httpbody import (
    BytesProducer,
    HTTPObjectBody,
    SegmentsProducer,
    Silence,
    remove_segments,
)
from lambgw.network.httpupload import StreamedUpload, trailer_maker
from lambgw.network.httpuploads import MultipartOverHTTP
from lambgw.network.interface import (
    INetwork,
    IObjectBody,
    IUpload,
    ListPage,
    NewObject,
    ObjectInfo,
    Order,
    Segment,
)
from lambgw.network.leanagent import LeanAgent, LeanResponse

#: Seconds to wait for a connection to the node.
CONNECT_TIMEOUT = 10.0
#: Seconds without any progress after which a request is given up.
SILENCE_TIMEOUT = 30.0
#: Delays before the retries of an idempotent request, in seconds.
RETRY_DELAYS = (0.2, 1.0, 3.0)
#: Idle connections to the node kept for reuse.  A far node answers many requests at once,
#: each on a connection of its own: one made afresh costs a round trip before its request.
MAX_IDLE_CONNECTIONS = 256
#: Seconds an idle connection to the node is kept: well under the node's own limit (60 s,
#: twisted.web's), so that the gateway closes an idle connection before the node does.  A
#: connection the node closes just as a request is written to it fails that request, and
#: only a GET, HEAD or DELETE is sent again.
IDLE_TIMEOUT = 20
#: The largest error or JSON answer read.
MAX_ANSWER = 16 * 1024 * 1024
#: Reads of one turn sent as a group as soon as there are this many (at most ``MAX_READ``).
EARLY_GROUP = 16


def _unavailable(failure: Failure) -> Failure:
    """Turn transport failures into ``NetworkUnavailable``; network errors pass."""
    if failure.check(NetworkError):
        return failure
    reason = failure.value
    inner = getattr(reason, "reasons", None)
    if inner:
        reason = inner[0].value
    return Failure(NetworkUnavailable(f"the network node cannot be reached: {reason!r}"))


@implementer(INetwork)
class HTTPNetwork(MultipartOverHTTP):
    """The Lambda network reached over HTTP(S) at ``base_url``, as one account.

    Its multipart upload methods are those of :class:`MultipartOverHTTP`.
    """

    def __init__(
        self,
        base_url: str,
        account: str,
        key: Any,
        agent: IAgent,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        threadpool: ThreadPool,
        cooperator: task.Cooperator,
        silence: float = SILENCE_TIMEOUT,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        fds: IReactorFDSet | None = None,
    ) -> None:
        """Talk to the node at ``base_url`` through ``agent``, signing with ``key``.

        Digests of uploads are computed in ``threadpool``.  With ``fds`` (the reactor),
        large downloads move between plain TCP sockets inside the kernel.
        """
        self._base = base_url.rstrip("/")
        self._base_path = urlsplit(self._base).path
        self._host = host_header(self._base)
        self._account = account
        self._key = key
        self._agent = agent
        self._reactor = reactor
        self._clock = clock
        self._threadpool = threadpool
        self._cooperator = cooperator
        self._silence = silence
        self._retry_delays = tuple(retry_delays)
        self._fds = fds
        self._sessions = sessions.SessionKeeper(clock, self._open_session)
        self._reads = _Reads(self, clock)

    @classmethod
    def connect(
        cls,
        base_url: str,
        account: str,
        key: Any,
        reactor: Any,
        threadpool: ThreadPool,
        ca_file: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        silence: float = SILENCE_TIMEOUT,
    ) -> HTTPNetwork:
        """Build the network with an agent over a persistent connection pool.

        HTTPS certificates are verified, with the host name, against ``ca_file`` (PEM) if
        given, else the system's trusted authorities.  A request that makes no progress for
        ``silence`` seconds is given up.
        """
        if not base_url.startswith(("http://", "https://")):
            base_url = f"http://{base_url}"
        pool = node_pool(reactor, IDLE_TIMEOUT, MAX_IDLE_CONNECTIONS)
        if ca_file:
            with open(ca_file, "rb") as f:
                trust: Any = Certificate.loadPEM(f.read())
        else:
            trust = platformTrust()
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
        endpoints = NodeEndpoints(reactor, policy, connect_timeout)
        streams = NodeAgent(reactor, base_url, endpoints, pool)
        endpoint = endpoints.endpointForURI(URI.fromBytes(base_url.rstrip("/").encode("ascii")))
        agent = LeanAgent(reactor, base_url, endpoint, streams, IDLE_TIMEOUT, MAX_IDLE_CONNECTIONS)
        cooperator = task.Cooperator(scheduler=lambda work: reactor.callLater(0, work))
        return cls(
            base_url,
            account,
            key,
            agent,
            reactor,
            reactor,
            threadpool,
            cooperator,
            silence=silence,
            fds=reactor,
        )

    def close(self) -> Deferred[None]:
        """Close the idle connections to the node (at stop)."""
        close = getattr(self._agent, "close", None)
        closed: Deferred[None] = succeed(None) if close is None else close()
        return closed

    # -- requests ----------------------------------------------------------------------

    def _url(self, account: str, rest: str, query: dict[str, str] | None = None) -> str:
        path = f"{self._base_path}/{wire.VERSION}/accounts/{account}/orders{rest}"
        if not query:
            return path
        quote = wire.quote_path
        return path + "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())

    def _check_account(self, account: str) -> None:
        if account != self._account:
            raise NetworkError(f"this gateway holds the key of {self._account}, not {account}")

    async def _send(
        self,
        method: str,
        target: str,
        body: Any = None,
        content_sha256: str = signing.EMPTY_SHA256,
        headers: dict[str, str] | None = None,
        unbuffered: bool = False,
        signed: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; return the answer's body (or raise its error).

        With ``unbuffered``, return the response and its body, read whole only if it is at
        most :data:`SMALL_READ` bytes (``None`` otherwise: the caller streams it).
        ``signed``: the headers that sign the request with the account's key, if the caller
        made them (see :meth:`_sign`); ``body`` may then be any producer.  Otherwise the
        request is MACed in the node session and ``body`` is ``None`` or bytes, so that it
        can be sent once more: in a new session if the node has forgotten the old one, with
        a fresh sequence number if later requests overtook this one by the whole window.
        """
        for last in (False, True):
            try:
                session, authorization = await self._authorization(
                    method, target, content_sha256, signed
                )
            except NetworkError:
                raise
            except Exception:
                raise _unavailable(Failure()).value from None
            raw = Headers(
                {
                    name.encode("ascii"): [value.encode("latin-1")]
                    for name, value in authorization.items()
                }
            )
            for name, value in (headers or {}).items():
                raw.setRawHeaders(name.encode("ascii"), [value.encode("latin-1")])
            # Named here, so that the agent does not copy the headers to add it.
            raw.setRawHeaders(b"host", [self._host])
            url = f"{self._base}{target[len(self._base_path) :]}".encode("ascii")
            producer = BytesProducer(body) if isinstance(body, bytes) else body
            request: Deferred[Any] = self._agent.request(method.encode("ascii"), url, raw, producer)
            watch = Silence(self._clock, self._silence, request)
            if isinstance(producer, SegmentsProducer | StreamedUpload):
                producer.progress = watch.touch
            try:
                response = await request
                length = response.length
                small = unbuffered and length != UNKNOWN_LENGTH and length <= SMALL_READ
                if response.code >= 400 or not unbuffered or small:
                    reading = _read(response)
                    watch.follow(reading)
                    content = await reading
                    if response.code >= 400:
                        code = _header(response, wire.ERROR_HEADER)
                        # The node did nothing with a request refused for these.
                        if session is not None and not last:
                            if code == sessions.NO_SUCH_SESSION:
                                self._sessions.forget(session)
                                continue
                            if code == sessions.STALE_SEQUENCE:
                                continue
                        raise wire.error_from(response.code, content, code)
                    return (response, content) if unbuffered else content
            except NetworkError:
                raise
            except Exception:
                raise _unavailable(Failure()).value from None
            finally:
                watch.stop()
            return response, None
        raise AssertionError("unreachable")

    async def _authorization(
        self, method: str, target: str, content_sha256: str, signed: dict[str, str] | None
    ) -> tuple[sessions.ClientSession | None, dict[str, str]]:
        """The session a request is MACed in (``None`` if ``signed``) and its headers."""
        if signed is not None:
            return None, signed
        session = await self._sessions.current()
        path, _, query = target.partition("?")
        date = int(self._clock.seconds())
        return session, sessions.mac_headers(
            session.session_id,
            session.key,
            session.next_sequence(),
            method,
            path,
            query,
            content_sha256,
            date,
        )

    async def _open_session(self) -> sessions.ClientSession:
        """Open a session on the node, with a request signed by the account's key."""
        private, public = sessions.new_exchange()
        data = json.dumps({"key": base64.b64encode(public).decode("ascii")}).encode("ascii")
        digest = hashlib.sha256(data).hexdigest()
        target = f"{self._base_path}/{wire.VERSION}/accounts/{self._account}/sessions"
        opened = self._clock.seconds()
        signed = self._sign("POST", target, digest)
        answer = await self._send("POST", target, data, digest, signed=signed)
        try:
            value = json.loads(answer)
            session_id, lifetime = str(value["session"]), int(value["lifetime"])
            node_public = base64.b64decode(value["key"], validate=True)
            if not sessions.SESSION_ID.fullmatch(session_id) or lifetime < 1:
                raise ValueError(session_id)
            key = sessions.derive(
                private, node_public, self._account, session_id, public, node_public
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise NetworkError("the network node opened a malformed session") from None
        renew_at = opened + lifetime - min(sessions.RENEW_MARGIN, lifetime / 2)
        return sessions.ClientSession(session_id, key, renew_at)

    def _sign(self, method: str, target: str, content_sha256: str) -> dict[str, str]:
        """The headers that sign a request for ``target`` (path and query) with the key."""
        path, _, query = target.partition("?")
        return signing.sign(
            self._key,
            self._account,
            method,
            path,
            query,
            content_sha256,
            int(self._clock.seconds()),
        )

    async def _idempotent(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        unbuffered: bool = False,
        body: bytes | None = None,
        content_sha256: str = signing.EMPTY_SHA256,
    ) -> Any:
        """Send a request that may be repeated, retrying with backoff while unreachable."""
        for delay in (*self._retry_delays, None):
            try:
                return await self._send(
                    method, target, body, content_sha256, headers, unbuffered=unbuffered
                )
            except NetworkUnavailable:
                if delay is None:
                    raise
            await task.deferLater(self._clock, delay)
        raise AssertionError("unreachable")

    async def _json(self, target: str) -> Any:
        return json.loads(await self._idempotent("GET", target))

    def ensure_account(
        self, account: str, default_capacity: int, default_days: float
    ) -> Deferred[Sequence[Order]]:
        """Return the orders of ``account``, which must exist on the node.

        Accounts and orders are made on the node (``python -m lambgw --data DIR``), not by
        the gateway, so the defaults are not used.
        """
        return self.orders(account)

    # -- INetwork ----------------------------------------------------------------------

    def orders(self, account: str) -> Deferred[Sequence[Order]]:
        """Return all orders of ``account``."""

        async def run() -> Sequence[Order]:
            self._check_account(account)
            data = await self._json(self._url(account, ""))
            return [wire.order_from_json(item) for item in data]

        return Deferred.fromCoroutine(run())

    def order(self, account: str, order_id: str) -> Deferred[Order]:
        """Return one order of ``account``."""

        async def run() -> Order:
            self._check_account(account)
            return wire.order_from_json(await self._json(self._url(account, f"/{order_id}")))

        return Deferred.fromCoroutine(run())

    def put_object(
        self,
        account: str,
        order_id: str,
        path: str,
        segments: Sequence[Segment],
        new: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Upload the spooled ``segments`` as one object; the segments are removed after."""

        async def run() -> ObjectInfo:
            try:
                self._check_account(account)
                if len(segments) == 1 and segments[0].data is not None and "-" not in new.etag:
                    return await self._put_small(
                        account, order_id, path, segments[0].data, new, if_none_match, if_match
                    )
                size = sum(segment.size for segment in segments)
                query = {"path": path, "size": str(size)}
                target = self._url(account, f"/{order_id}/object", query)
                signed = self._sign("PUT", target, signing.TRAILER)
                headers = wire.conditions(if_none_match, if_match)
                if len(segments) > 1 or "-" in new.etag:
                    sizes = [segment.size for segment in segments]
                    headers[wire.PART_SIZES_HEADER] = wire.format_part_sizes(sizes)
                room = wire.trailer_room(new)
                trailer = trailer_maker(self._key, signing.signature_of(signed), new, room)
                body = SegmentsProducer(segments, self._cooperator, trailer=(trailer, room))
                answer = await self._send("PUT", target, body, headers=headers, signed=signed)
                return wire.info_from_json(json.loads(answer))
            finally:
                if any(segment.data is None for segment in segments):
                    await deferToThreadPool(
                        self._reactor, self._threadpool, remove_segments, segments
                    )

        return Deferred.fromCoroutine(run())

    async def _put_small(
        self,
        account: str,
        order_id: str,
        path: str,
        data: bytes,
        new: NewObject,
        if_none_match: bool,
        if_match: str | None,
    ) -> ObjectInfo:
        """PUT an object held in memory: its digest and description go in the signed headers.

        One signature and one body write, where a streamed PUT needs a signed trailer too.
        """
        target = self._url(account, f"/{order_id}/object", {"path": path})
        headers = wire.conditions(if_none_match, if_match)
        headers[wire.OBJECT_HEADER] = wire.header_json(wire.new_to_json(new))
        answer = await self._send("PUT", target, data, hashlib.sha256(data).hexdigest(), headers)
        return wire.info_from_json(json.loads(answer))

    def open_upload(
        self,
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start a PUT to the node whose body is the object's bytes as they come.

        The request is signed now; its digest follows the body in a signed trailer, in
        room kept for it from what ``described`` and ``expect`` say.  The node computes
        ``digests`` and checks those ``expect`` names (see :meth:`INetwork.open_upload`).
        """
        self._check_account(account)
        query = {"path": path, "size": str(described.size)}
        if digests:
            query[wire.DIGESTS_PARAMETER] = wire.format_digests(digests)
        target = self._url(account, f"/{order_id}/object", query)
        signed = self._sign("PUT", target, signing.TRAILER)
        room = wire.trailer_room(described, expect)
        upload = StreamedUpload(
            self._key, signing.signature_of(signed), described.size, room, expect
        )
        headers = wire.conditions(if_none_match, if_match)

        async def run() -> ObjectInfo:
            answer = await self._send("PUT", target, upload, headers=headers, signed=signed)
            return wire.info_from_json(json.loads(answer))

        upload.answered(Deferred.fromCoroutine(run()))
        return upload

    def head_object(self, account: str, order_id: str, path: str) -> Deferred[ObjectInfo]:
        """Return what is stored at ``path``."""

        async def run() -> ObjectInfo:
            self._check_account(account)
            target = self._url(account, f"/{order_id}/object", {"path": path})
            response, _ = await self._idempotent("HEAD", target, unbuffered=True)
            return _info_header(response)

        return Deferred.fromCoroutine(run())

    def get_object(
        self, account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """Return the object at ``path`` and a body streaming bytes ``first`` to ``last``.

        Whole objects asked for in one turn of the reactor are read in one request.
        """
        if first == 0 and last is None and account == self._account:
            return self._reads.read(order_id, path)
        return self._get_object(account, order_id, path, first, last)

    def _get_object(
        self, account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """Read the object at ``path`` alone, bytes ``first`` to ``last``."""

        async def run() -> tuple[ObjectInfo, IObjectBody]:
            self._check_account(account)
            target = self._url(account, f"/{order_id}/object", {"path": path})
            headers = {}
            if first or last is not None:
                headers["range"] = f"bytes={first}-{'' if last is None else last}"
            response, data = await self._idempotent("GET", target, headers, unbuffered=True)
            info = _info_header(response)
            if data is not None:
                # Read whole, as the embedded network reads a small object: no streaming.
                return info, BytesBody(data)
            return info, HTTPObjectBody(response, self._clock, self._silence, self._fds)

        return Deferred.fromCoroutine(run())

    async def _read_many(self, body: bytes, count: int) -> list[Any]:
        """Read the ``count`` objects a read request's ``body`` names, in one request.

        Each is ``(info, bytes or None)``, or its error.
        """
        target = f"{self._base_path}/{wire.VERSION}/accounts/{self._account}/{wire.READ_PATH}"
        digest = hashlib.sha256(body).hexdigest()
        answer = await self._idempotent("POST", target, body=body, content_sha256=digest)
        return wire.parse_read_answer(answer, count)

    def delete_object(
        self, account: str, order_id: str, path: str, if_match: str | None = None
    ) -> Deferred[bool]:
        """Remove the object at ``path``; fire with whether there was one."""

        async def run() -> bool:
            self._check_account(account)
            target = self._url(account, f"/{order_id}/object", {"path": path})
            answer = await self._idempotent("DELETE", target, wire.conditions(False, if_match))
            return bool(json.loads(answer)["deleted"])

        return Deferred.fromCoroutine(run())

    def copy_object(
        self,
        account: str,
        src_order_id: str,
        src_path: str,
        dst_order_id: str,
        dst_path: str,
        replace: NewObject | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Deferred[ObjectInfo]:
        """Copy an object between orders of ``account``, on the node."""

        async def run() -> ObjectInfo:
            self._check_account(account)
            target = self._url(account, f"/{dst_order_id}/copy", {"path": dst_path})
            request = {
                "source_order_id": src_order_id,
                "source_path": src_path,
                "replace": None if replace is None else wire.new_to_json(replace),
                "tags": None if tags is None else dict(tags),
            }
            answer = await self._send_json("POST", target, request)
            return wire.info_from_json(json.loads(answer))

        return Deferred.fromCoroutine(run())

    def _send_json(self, method: str, target: str, value: Any) -> Deferred[Any]:
        """Send ``value`` as the JSON body of a signed request; fire with the answer."""
        data = json.dumps(value).encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        return Deferred.fromCoroutine(self._send(method, target, data, digest))

    def get_tags(self, account: str, order_id: str, path: str) -> Deferred[Mapping[str, str]]:
        """Return the tags of the object at ``path``."""

        async def run() -> Mapping[str, str]:
            self._check_account(account)
            target = self._url(account, f"/{order_id}/tags", {"path": path})
            return wire.tags_from_json((await self._json(target))["tags"])

        return Deferred.fromCoroutine(run())

    def put_tags(
        self, account: str, order_id: str, path: str, tags: Mapping[str, str]
    ) -> Deferred[None]:
        """Replace the tags of the object at ``path``."""

        async def run() -> None:
            self._check_account(account)
            target = self._url(account, f"/{order_id}/tags", {"path": path})
            await self._send_json("PUT", target, {"tags": dict(tags)})

        return Deferred.fromCoroutine(run())

    def list_objects(
        self,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: int = 1000,
    ) -> Deferred[ListPage]:
        """List up to ``max_keys`` objects and common prefixes after ``marker``."""

        async def run() -> ListPage:
            self._check_account(account)
            query = {"prefix": prefix, "delimiter": delimiter, "marker": marker}
            query = {k: v for k, v in query.items() if v}
            query["max-keys"] = str(max_keys)
            target = self._url(account, f"/{order_id}/list", query)
            return wire.page_from_json(await self._json(target))

        return Deferred.fromCoroutine(run())


def _info_header(response: Any) -> ObjectInfo:
    try:
        return wire.info_from_json(json.loads(_header(response, wire.OBJECT_HEADER)))
    except (ValueError, KeyError, TypeError):
        raise NetworkError("the network node sent a malformed object description") from None


def _header(response: Any, name: str) -> str:
    """The first value of the answer's header ``name`` (lower case), or ``""``.

    A lean agent's answer is asked directly, without making its ``Headers``.
    """
    if isinstance(response, LeanResponse):
        value = response.header(name.encode("ascii"))
        return "" if value is None else value.decode("latin-1")
    values = response.headers.getRawHeaders(name) or [""]
    return str(values[0])


def _read(response: Any) -> Deferred[bytes]:
    """Read a (small) answer body whole, refusing one larger than :data:`MAX_ANSWER`."""
    if response.length != UNKNOWN_LENGTH and response.length > MAX_ANSWER:
        raise NetworkError("the network node's answer is too large")
    result: Deferred[bytes] = content(response)
    return result


def network_address(validator_addr: str, dht_gateway_addr: str) -> str:
    """The node's base URL from the ``[broker]`` addresses (``http://`` if no scheme)."""
    address = validator_addr or dht_gateway_addr
    return address if "://" in address else f"http://{address}"


def account_key(home: str, account: str, key_file: str = "") -> Any:
    """Read ``account``'s private key from ``key_file`` or ``HOME/keys/ACCOUNT.key``.

    An encrypted key is opened with :data:`~lambgw.network.signing.PASSWORD_ENV`; raises
    ``ValueError`` saying what is wrong.
    """
    from lambgw.lambnet.keys import private_key_path, read_private_key

    return read_private_key(key_file or private_key_path(home, account), signing.env_password())


class _Read:
    """One whole-object read waiting for its turn's end: the object, and who waits for it."""

    def __init__(self, order_id: str, path: str) -> None:
        self.order_id = order_id
        self.path = path
        self.done: Deferred[tuple[ObjectInfo, IObjectBody]] = Deferred(self._cancel)
        #: The request that reads it alone, once there is one.
        self.alone: Deferred[tuple[ObjectInfo, IObjectBody]] | None = None

    def _cancel(self, done: Deferred[tuple[ObjectInfo, IObjectBody]]) -> None:
        if self.alone is not None:
            self.alone.cancel()

    def give(self, result: Any) -> None:
        """Fire with ``result`` (a failure too), unless the read was given up."""
        if self.done.called:
            return
        if isinstance(result, Failure | BaseException):
            self.done.errback(result)
        else:
            self.done.callback(result)


class _Reads:
    """Whole-object reads asked for in one turn of the reactor, sent to the node together.

    A small GET costs the node and the client more in its request (the head parsed, the
    MAC checked, the answer framed) than in the object's bytes, and a busy gateway asks for
    several objects in each turn of its reactor (3.4 on average at 16 clients): the first
    read of a turn schedules a call for the turn's end, which sends the reads waiting as
    one request, or a read alone as a plain GET.  Once :data:`EARLY_GROUP` are waiting they
    are sent at once: a turn that takes in a hundred requests lasts tens of milliseconds,
    and the reads of its start need not wait for those of its end (over a far node, where
    each request waits a round trip, they would all come back together).  An object the
    answer does not carry (over ``SMALL_READ``) is then read alone, streamed; an object's
    error fails that read only.
    """

    def __init__(self, network: HTTPNetwork, clock: IReactorTime) -> None:
        self._network = network
        self._clock = clock
        self._waiting: list[_Read] = []
        #: Whether a call at the turn's end is scheduled.
        self._due = False

    def read(self, order_id: str, path: str) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """Read the whole object at ``path`` in ``order_id``, with the others of this turn."""
        if not self._due:
            self._due = True
            self._clock.callLater(0, self._turn_ended)
        read = _Read(order_id, path)
        waiting = self._waiting
        waiting.append(read)
        if len(waiting) == EARLY_GROUP:
            self._send()
        return read.done

    def _turn_ended(self) -> None:
        self._due = False
        self._send()

    def _send(self) -> None:
        group, self._waiting = self._waiting, []
        if len(group) == 1:
            self._alone(group[0])
        elif group:
            Deferred.fromCoroutine(self._together(group))

    def _alone(self, read: _Read) -> None:
        if read.done.called:  # given up before it was sent
            return
        network = self._network
        read.alone = network._get_object(network._account, read.order_id, read.path)
        read.alone.addBoth(read.give)

    async def _together(self, group: list[_Read]) -> None:
        body = wire.read_request([(read.order_id, read.path) for read in group])
        if len(body) > wire.MAX_READ_BODY:  # long paths: the node would refuse them together
            for read in group:
                self._alone(read)
            return
        try:
            results = await self._network._read_many(body, len(group))
        except Exception:
            failure = Failure()
            for read in group:
                read.give(failure)
            return
        for read, result in zip(group, results, strict=True):
            if isinstance(result, NetworkError):
                read.give(result)
            elif result[1] is None:
                self._alone(read)
            else:
                read.give((result[0], BytesBody(result[1])))
