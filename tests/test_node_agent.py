"""The network client's agent for its one node, over a real loopback connection."""

from __future__ import annotations

from typing import Any

from treq import content
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.client import BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from lambgw.network.httpagent import NodeAgent, NodeEndpoints, NodePool, host_header


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
    """Answers with the client's port: which connection carried the request."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"%d" % request.getClientAddress().port


class NodePoolTests(TestCase):
    """Idle connections are used again, most recent first, and closed by one timer."""

    def setUp(self) -> None:
        self.port = reactor.listenTCP(0, server.Site(ClientPort()), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.clock = Clock()
        # Connections are made by the real reactor; the pool's timer runs on the clock.
        self.pool = NodePool(self.clock, idle_timeout=60, max_idle=2)
        self.addCleanup(self.pool.closeCachedConnections)
        base = f"http://127.0.0.1:{self.port.getHost().port}"
        endpoints = NodeEndpoints(reactor, BrowserLikePolicyForHTTPS(), 5.0)
        self.agent = NodeAgent(reactor, base, endpoints, self.pool)
        self.url = f"{base}/x".encode("ascii")

    @inlineCallbacks
    def ports(self, count: int) -> Any:
        """Send ``count`` requests at once; the client ports that carried them."""
        responses = yield gatherResults(
            [self.agent.request(b"GET", self.url) for _ in range(count)]
        )
        bodies = yield gatherResults([content(response) for response in responses])
        return [int(body) for body in bodies]

    @inlineCallbacks
    def test_connection_used_again(self) -> None:
        """A connection that answered carries the next request."""
        (first,) = yield self.ports(1)
        (second,) = yield self.ports(1)
        self.assertEqual(first, second)

    @inlineCallbacks
    def test_one_timer_for_all_idle_connections(self) -> None:
        """However many connections are idle, one timer waits to close them."""
        ports = yield self.ports(2)
        self.assertEqual(len(set(ports)), 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    @inlineCallbacks
    def test_idle_connections_closed_after_timeout(self) -> None:
        """A connection idle for the timeout is closed; the next request opens another."""
        (first,) = yield self.ports(1)
        self.clock.advance(59)
        (again,) = yield self.ports(1)
        self.assertEqual(again, first)
        self.clock.advance(60)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        (fresh,) = yield self.ports(1)
        self.assertNotEqual(fresh, first)

    @inlineCallbacks
    def test_timer_follows_the_oldest(self) -> None:
        """The timer closes only what has been idle for the timeout, then waits for the rest."""
        (first,) = yield self.ports(1)
        self.clock.advance(30)
        ports = yield self.ports(2)  # the idle one, used again, and a second
        self.assertIn(first, ports)
        self.clock.advance(30)  # the timer of the first return fires: nothing is old enough
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        again = yield self.ports(2)
        self.assertEqual(sorted(again), sorted(ports))

    @inlineCallbacks
    def test_at_most_max_idle_kept(self) -> None:
        """Beyond ``max_idle``, the connection idle longest is closed."""
        ports = yield self.ports(3)
        self.assertEqual(len(set(ports)), 3)
        again = yield self.ports(3)
        self.assertEqual(len(set(ports) & set(again)), 2)
