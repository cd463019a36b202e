"""The node's root resource: object requests answered directly, the rest by Klein."""

from __future__ import annotations

from typing import Any

from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from lambgw.lambnet.resource import NodeResource, object_route, read_route
from lambgw.network import wire

PREFIX = f"/{wire.VERSION}/accounts/".encode()


class FakeNode:
    """Handlers that record their calls; ``other`` is a route only Klein knows."""

    app = Klein()

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.waiting: Deferred[bytes] = Deferred()
        self.answer: Any = b"the bytes"

    async def get(self, request: Any, account: str, order_id: str) -> bytes | None:
        self.calls.append(("get", account, order_id))
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer is None:
            try:
                return await self.waiting
            except CancelledError:
                self.calls.append(("cancelled", account, order_id))
                raise
        return bytes(self.answer)

    put = get
    delete = get

    @app.route(f"/{wire.VERSION}/other", methods=["GET"])
    def other(self, request: Any) -> bytes:
        return b"from klein"

    def render_error(self, request: Any, failure: Failure) -> bytes:
        request.setResponseCode(418)
        return f"error: {failure.value}".encode()


def request_for(method: bytes, path: bytes) -> DummyRequest:
    """A bare request for ``path``, rendered by hand."""
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.method = method
    request.path = path
    request.uri = path
    return request


class ObjectRouteTests(SynchronousTestCase):
    """Which paths are object requests."""

    def test_object_path(self) -> None:
        """The account and the order of an object path are found."""
        path = PREFIX + b"demo/orders/0a1b/object"
        self.assertEqual(object_route(path, PREFIX), ("demo", "0a1b"))

    def test_other_paths(self) -> None:
        """Other shapes, empty segments and escaped segments are not object requests."""
        for rest in (
            b"demo/orders/0a1b/list",
            b"demo/orders/0a1b/x/object",
            b"demo/orders//object",
            b"/orders/0a1b/object",
            b"demo/order/0a1b/object",
            b"de%6Do/orders/0a1b/object",
            b"d\xc3\xa9mo/orders/0a1b/object",
        ):
            self.assertIsNone(object_route(PREFIX + rest, PREFIX), rest)
        self.assertIsNone(object_route(b"/v1/accounts/demo/orders/0a1b/object", PREFIX))


class ReadRouteTests(SynchronousTestCase):
    """Which paths are reads of several objects."""

    def test_read_path(self) -> None:
        """The account of a read path is found."""
        self.assertEqual(read_route(PREFIX + b"demo/read", PREFIX), "demo")

    def test_other_paths(self) -> None:
        """Other shapes, empty or escaped accounts are not reads."""
        for rest in (
            b"read",
            b"/read",
            b"demo/orders/read",
            b"demo/reads",
            b"de%6Do/read",
            b"d\xc3\xa9mo/read",
        ):
            self.assertIsNone(read_route(PREFIX + rest, PREFIX), rest)
        self.assertIsNone(read_route(b"/v1/accounts/demo/read", PREFIX))


class NodeResourceTests(SynchronousTestCase):
    """Object requests run their handler; others go to Klein."""

    def setUp(self) -> None:
        self.node = FakeNode()
        self.resource = NodeResource(self.node)  # type: ignore[arg-type]

    def test_answer_written(self) -> None:
        """A handler's bytes are the answer, and the request is finished."""
        request = request_for(b"GET", PREFIX + b"demo/orders/o1/object")
        self.assertIs(self.resource.render(request), NOT_DONE_YET)
        self.assertEqual((request.written, request.finished), ([b"the bytes"], 1))
        self.assertEqual(self.node.calls, [("get", "demo", "o1")])

    def test_failure_rendered_by_node(self) -> None:
        """A handler's failure is answered by the node's error renderer."""
        self.node.answer = ValueError("bad")
        request = request_for(b"PUT", PREFIX + b"demo/orders/o1/object")
        self.resource.render(request)
        self.assertEqual(request.responseCode, 418)
        self.assertEqual((request.written, request.finished), ([b"error: bad"], 1))

    def test_answer_has_its_length(self) -> None:
        """An answer is sent with its length, so that it is not cut in chunks."""
        request = request_for(b"PUT", PREFIX + b"demo/orders/o1/object")
        self.resource.render(request)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-length"), [b"9"])

    def test_error_has_its_own_length(self) -> None:
        """A length the handler set before it failed is replaced by the error answer's."""
        node = self.node

        async def fail_after_length(request: Any, account: str, order_id: str) -> bytes:
            request.setHeader(b"content-length", b"1000")
            raise ValueError("bad")

        node.put = fail_after_length  # type: ignore[method-assign]
        resource = NodeResource(node)  # type: ignore[arg-type]
        request = request_for(b"PUT", PREFIX + b"demo/orders/o1/object")
        resource.render(request)
        self.assertEqual(request.written, [b"error: bad"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-length"), [b"10"])

    def test_client_gone_cancels_handler(self) -> None:
        """When the connection is lost, the handler is cancelled and nothing is written."""
        self.node.answer = None
        request = request_for(b"GET", PREFIX + b"demo/orders/o1/object")
        self.resource.render(request)
        request.processingFailed(Failure(ConnectionDone()))
        self.assertEqual(self.node.calls[-1], ("cancelled", "demo", "o1"))
        self.assertEqual(request.written, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def klein_answer(self, method: str, path: str) -> tuple[int, bytes]:
        """Send a request through the resource with an in-memory client."""
        client = StubTreq(self.resource)
        response = self.successResultOf(client.request(method, f"http://node{path}"))
        return response.code, self.successResultOf(response.content())

    def test_other_routes_served_by_klein(self) -> None:
        """A path that is not an object's goes through the Klein app."""
        self.assertEqual(self.klein_answer("GET", f"/{wire.VERSION}/other"), (200, b"from klein"))
        self.assertEqual(self.node.calls, [])

    def test_other_methods_served_by_klein(self) -> None:
        """A POST to an object path is not an object request: Klein answers (no such route)."""
        code, _ = self.klein_answer("POST", f"/{wire.VERSION}/accounts/demo/orders/o1/object")
        self.assertEqual((code, self.node.calls), (404, []))

    def test_object_request_through_http(self) -> None:
        """Over a real HTTP exchange (in memory), an object request gets its handler's bytes."""
        code, body = self.klein_answer("GET", f"/{wire.VERSION}/accounts/demo/orders/o1/object")
        self.assertEqual(
            (code, body, self.node.calls), (200, b"the bytes", [("get", "demo", "o1")])
        )
