"""How the network client reaches its one node: endpoints made once, URLs split not parsed.

Twisted's ``Agent`` makes an endpoint and parses the URL for every request, and adds a
``Host`` header by copying the request's headers; for a client that only ever talks to one
node, under one base URL, those costs are paid once here instead.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

#: Endpoints kept by :class:`NodeEndpoints` (one node, one or two schemes).
MAX_ENDPOINTS = 8
#: A request target as the network client builds them: printable ASCII, no space, no fragment.
_PLAIN_TARGET = re.compile(rb"[!-\"$-~]*")


def host_header(base_url: str) -> bytes:
    """The ``Host`` header of requests to ``base_url`` (its port unless the scheme's own)."""
    parsed = URI.fromBytes(base_url.encode("ascii"))
    host = b"[%s]" % parsed.host if b":" in parsed.host else parsed.host
    default = {b"http": 80, b"https": 443}.get(parsed.scheme)
    return host if parsed.port == default else b"%s:%d" % (host, parsed.port)


class QuietFactory(_HTTP11ClientFactory):
    """The pool's connection factory, without a log line per connection."""

    noisy = False


class QuietPool(HTTPConnectionPool):
    """Twisted's connection pool, whose connections are made without a log line each."""

    _factory = QuietFactory


def node_pool(reactor: Any, idle_timeout: int, max_idle: int) -> HTTPConnectionPool:
    """A persistent pool keeping up to ``max_idle`` idle connections per node.

    Each is closed once idle for ``idle_timeout`` seconds, by a timer of its own on
    ``reactor`` (Twisted's pool starts one per connection it takes back).  The pool only
    carries streamed uploads, the requests :class:`~lambgw.network.leanagent.LeanAgent`
    hands on: a timer per upload costs nothing measurable.
    """
    pool = QuietPool(reactor, persistent=True)
    pool.cachedConnectionTimeout = idle_timeout
    pool.maxPersistentPerHost = max_idle
    return pool


@implementer(IAgentEndpointFactory)
class NodeEndpoints:
    """The endpoints of the node's address, each made once.

    An ``Agent`` makes a new endpoint for every request by default (host name checks, IDNA,
    the TLS policy's look-ups), even when the pool then reuses a connection.  Only the node's
    address is ever asked for, so the few endpoints are kept.
    """

    def __init__(
        self, reactor: Any, policy: BrowserLikePolicyForHTTPS, connect_timeout: float
    ) -> None:
        """Connect with ``reactor`` within ``connect_timeout``; HTTPS checked by ``policy``."""
        self._reactor = reactor
        self._policy = policy
        self._timeout = connect_timeout
        self._made: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint of ``uri``'s scheme, host and port."""
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._made.get(key)
        if endpoint is None:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, self._timeout)
            if uri.scheme == b"https":
                creator = self._policy.creatorForNetloc(uri.host, uri.port)
                endpoint = wrapClientTLS(creator, endpoint)
            if len(self._made) < MAX_ENDPOINTS:
                self._made[key] = endpoint
        return endpoint


class NodeAgent(Agent):
    """An ``Agent`` for the one node: URLs under its base are not parsed for each request.

    ``Agent.request`` checks and parses every URL (some tens of microseconds, a few percent
    of a small request's whole cost); every URL here is the node's base address followed by
    a path and query this module built, so the base is parsed once and the rest appended.
    """

    def __init__(
        self, reactor: Any, base_url: str, endpoints: IAgentEndpointFactory, pool: Any
    ) -> None:
        """Send to the node at ``base_url``, over ``pool``'s connections to ``endpoints``."""
        super().__init__(reactor, pool=pool)
        self._endpointFactory = endpoints
        self._base = URI.fromBytes(base_url.rstrip("/").encode("ascii"))
        #: URLs starting with this are split rather than parsed.
        self._under = f"{base_url.rstrip('/')}/".encode("ascii")
        #: ``scheme://netloc``: what comes after it is the request's target.
        self._netloc_end = len(self._base.scheme) + 3 + len(self._base.netloc)

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[Any]:
        """Send the request; a URL under the node's base is split, not parsed."""
        if not uri.startswith(self._under) or not _PLAIN_TARGET.fullmatch(uri, len(self._under)):
            return super().request(method, uri, headers, bodyProducer)
        base = self._base
        path, _, query = uri[self._netloc_end :].partition(b"?")
        parsed = URI(base.scheme, base.netloc, base.host, base.port, path, b"", query, b"")
        endpoint = self._getEndpoint(parsed)
        key = (base.scheme, base.host, base.port)
        # The origin form, as ``URI.originForm`` would give it (without its ``urlunparse``).
        origin = b"%s?%s" % (path, query) if query else path or b"/"
        return self._requestWithEndpoint(
            key, endpoint, method, parsed, headers, bodyProducer, origin
        )

    def close(self) -> Deferred[None]:
        """Close the idle connections of the agent's pool."""
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed
