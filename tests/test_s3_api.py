"""Tests of how the S3 resource runs an operation and writes its answer or its error."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel

from lambgw.protocol.errors import S3Error
from lambgw.s3.api import S3API, serve
from lambgw.s3.request import RequestState, S3Request


class FakeGateway:
    account = "demo"


def request() -> tuple[S3Request, Any]:
    """A GET request as the S3 layer sees it once its body is in, and its fake connection."""
    channel = DummyChannel()
    made = S3Request(channel)
    made.method, made.uri, made.clientproto = b"GET", b"/b/k", b"HTTP/1.1"
    made.s3 = RequestState(request_id="0123456789ABCDEF", started=0.0)
    return made, channel


class ServeTests(SynchronousTestCase):
    def serve(self, answer: Deferred[Any]) -> tuple[S3Request, bytes]:
        """Serve a request whose operation answers with ``answer``; what was sent so far."""
        api = S3API(FakeGateway())  # type: ignore[arg-type]
        api.dispatch = lambda request: answer  # type: ignore[method-assign]
        made, channel = request()
        self.assertIs(serve(api, made), NOT_DONE_YET)
        written: bytes = channel.transport.written.getvalue()
        return made, written

    def test_body_written_and_finished(self) -> None:
        """The bytes an operation returns are the response body, then the request finishes."""
        made, sent = self.serve(succeed(b"<ok/>"))
        self.assertTrue(sent.startswith(b"HTTP/1.1 200 "))
        self.assertIn(b"<ok/>", sent)
        self.assertTrue(made.finished)

    def test_error_rendered(self) -> None:
        """An S3Error becomes its status and XML error document."""
        made, sent = self.serve(fail(S3Error("NoSuchKey", 404, "The key does not exist.")))
        self.assertTrue(sent.startswith(b"HTTP/1.1 404 "))
        self.assertIn(b"<Code>NoSuchKey</Code>", sent)
        self.assertTrue(made.finished)

    def test_client_leaving_cancels(self) -> None:
        """A client that goes away cancels the operation; nothing is written."""
        cancelled: list[Deferred[Any]] = []
        answer: Deferred[Any] = Deferred(cancelled.append)
        made, _ = self.serve(answer)
        made.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(cancelled), 1)
        self.assertFalse(made.finished)
        self.assertFalse(made.startedWriting)
        self.assertEqual(self.flushLoggedErrors(), [])
