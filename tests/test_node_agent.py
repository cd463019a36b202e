"""The network client's agent for its one node, over a real loopback connection."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from treq import content
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.client import (
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from lambgw.network.httpagent import NodeAgent, NodeEndpoints, host_header, node_pool


class Echo(Resource):
    """Answers with the request's target and ``Host`` header, as the server read them."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        hosts = request.requestHeaders.getRawHeaders(b"host")
        return request.uri + b" " + b",".join(hosts)


class HostHeaderTests(SynchronousTestCase):
    """The ``Host`` header named for a base URL."""

    def test_values(self) -> None:
        """The port is named unless it is the scheme's; IPv6 addresses are bracketed."""
        self.assertEqual(host_header("http://127.0.0.1:9100"), b"127.0.0.1:9100")
        self.assertEqual(host_header("https://node.example"), b"node.example")
        self.assertEqual(host_header("http://node.example:80/base"), b"node.example")
        self.assertEqual(host_header("http://[::1]:9100"), b"[::1]:9100")


class NodeAgentTests(TestCase):
    """Requests under the node's base go out as built; others as ``Agent`` sends them."""

    def setUp(self) -> None:
        self.port = reactor.listenTCP(0, server.Site(Echo()), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}/base"
        endpoints = NodeEndpoints(reactor, BrowserLikePolicyForHTTPS(), 5.0)
        self.agent = NodeAgent(reactor, self.base, endpoints, self.pool)

    @inlineCallbacks
    def answer(self, url: str, headers: Headers | None = None) -> Any:
        response = yield self.agent.request(b"GET", url.encode("ascii"), headers)
        body = yield content(response)
        return body.decode("ascii")

    @inlineCallbacks
    def test_path_and_query_under_base(self) -> None:
        """The target is the base's path, then the path and query given."""
        host = f"127.0.0.1:{self.port.getHost().port}"
        got = yield self.answer(f"{self.base}/v3/accounts/demo/orders?path=a%2Fb&size=3")
        self.assertEqual(got, f"/base/v3/accounts/demo/orders?path=a%2Fb&size=3 {host}")

    @inlineCallbacks
    def test_host_named_by_caller(self) -> None:
        """A ``Host`` header the caller names is sent once, as named."""
        headers = Headers({b"host": [b"node.example:1"]})
        got = yield self.answer(f"{self.base}/v3/x", headers)
        self.assertEqual(got, "/base/v3/x node.example:1")

    @inlineCallbacks
    def test_other_urls_parsed(self) -> None:
        """A URL outside the base (or not plain) is parsed as any agent would."""
        host = f"127.0.0.1:{self.port.getHost().port}"
        got = yield self.answer(f"http://{host}/elsewhere?q=1")
        self.assertEqual(got, f"/elsewhere?q=1 {host}")
        got = yield self.answer(f"{self.base}/v3/x#fragment")
        self.assertEqual(got, f"/base/v3/x {host}")


class ClientPort(Resource):
    """Answers an upload with the client's port: which connection carried it."""

    isLeaf = True

    def render_PUT(self, request: Any) -> bytes:
        request.content.read()
        return b"%d" % request.getClientAddress().port


class WatchedChannel(HTTPChannel):
    """A server connection that tells its site when it is closed."""

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.site.lost(self.transport.getPeer().port)


class WatchedSite(server.Site):
    """A site that tells when the connection from a given client port is closed."""

    protocol = WatchedChannel

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.closed: set[int] = set()
        self._waiting: dict[int, Deferred[None]] = {}

    def lost(self, port: int) -> None:
        self.closed.add(port)
        waiting = self._waiting.pop(port, None)
        if waiting is not None:
            waiting.callback(None)

    def closing(self, port: int) -> Deferred[None]:
        """Fires once the connection from ``port`` is closed."""
        if port in self.closed:
            return succeed(None)
        return self._waiting.setdefault(port, Deferred())


class UploadPoolTests(TestCase):
    """The streamed uploads' pool: connections reused, closed when idle too long or too many."""

    timeout = 10

    def setUp(self) -> None:
        self.site = WatchedSite(ClientPort())
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.clock = Clock()
        # Connections are made by the real reactor; the pool's timers run on the clock.
        self.pool = node_pool(self.clock, idle_timeout=20, max_idle=3)
        self.addCleanup(self.pool.closeCachedConnections)
        base = f"http://127.0.0.1:{self.port.getHost().port}"
        endpoints = NodeEndpoints(reactor, BrowserLikePolicyForHTTPS(), 5.0)
        self.agent = NodeAgent(reactor, base, endpoints, self.pool)
        self.url = f"{base}/x".encode("ascii")

    @inlineCallbacks
    def ports(self, count: int) -> Any:
        """Send ``count`` streamed uploads at once; the client ports that carried them."""
        responses = yield gatherResults(
            [
                self.agent.request(b"PUT", self.url, None, FileBodyProducer(BytesIO(b"x" * 1000)))
                for _ in range(count)
            ]
        )
        bodies = yield gatherResults([content(response) for response in responses])
        return [int(body) for body in bodies]

    @inlineCallbacks
    def test_connection_used_again(self) -> None:
        """A connection that carried an upload carries the next one."""
        (first,) = yield self.ports(1)
        (second,) = yield self.ports(1)
        self.assertEqual(first, second)

    @inlineCallbacks
    def test_idle_connection_closed_after_timeout(self) -> None:
        """A connection idle for the timeout is closed; the next upload opens another."""
        (first,) = yield self.ports(1)
        self.clock.advance(19)
        (again,) = yield self.ports(1)
        self.assertEqual(again, first)
        self.clock.advance(20)
        yield self.site.closing(first)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        (fresh,) = yield self.ports(1)
        self.assertNotEqual(fresh, first)

    @inlineCallbacks
    def test_at_most_max_idle_kept(self) -> None:
        """Beyond ``max_idle``, the connection idle longest is closed."""
        ports = yield self.ports(4)
        self.assertEqual(len(set(ports)), 4)
        again = yield self.ports(4)
        (dropped,) = set(ports) - set(again)
        yield self.site.closing(dropped)
        self.assertEqual(len(set(ports) & set(again)), 3)

    @inlineCallbacks
    def test_close(self) -> None:
        """Closing the agent closes its idle connections and leaves no timer."""
        ports = yield self.ports(2)
        yield self.agent.close()
        yield gatherResults([self.site.closing(port) for port in ports])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_no_log_line_per_connection(self) -> None:
        """Connections are made and closed without a log line each."""
        events: list[LogEvent] = []
        observer: Callable[[LogEvent], None] = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        ports = yield self.ports(2)
        yield self.agent.close()
        yield gatherResults([self.site.closing(port) for port in ports])
        client = [e for e in events if isinstance(e.get("factory"), _HTTP11ClientFactory)]
        self.assertEqual(client, [])
