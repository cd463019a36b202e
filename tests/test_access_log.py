"""Tests of the access log: operation names, the text and JSON lines, no secrets, metrics."""

from __future__ import annotations

import gc
import json
import weakref
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyChannel

from lambgw.observe.access import AccessLog, operation_name
from lambgw.observe.metrics import GatewayMetrics, RateWindow
from lambgw.options import LambgwOptions
from lambgw.protocol.errors import S3Error
from lambgw.s3.api import S3API
from lambgw.s3.request import MemoryBody, RequestState, S3Request, parse_target

SIGNATURE = "4d2f9f3b0c1e5a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
PRESIGNED = (
    "/bucket/photos/cat.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=accesskey%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE}"
)


class FakeGateway:
    account = "demo"


class FakeMultipart:
    """Stands for the multipart handlers: only their names matter here."""

    def create(self) -> None: ...
    def upload_part(self) -> None: ...
    def complete(self) -> None: ...
    def abort(self) -> None: ...
    def list_parts(self) -> None: ...
    def list_uploads(self) -> None: ...


class FakeRequest:
    """The parts of an S3Request the access log reads."""

    def __init__(self, method: str, uri: str, headers: dict[str, str] | None = None) -> None:
        self.method = method.encode()
        self.uri = uri.encode()
        self.requestHeaders = Headers(
            {k.encode(): [v.encode()] for k, v in (headers or {}).items()}
        )
        self.s3 = RequestState(request_id="0123456789ABCDEF", started=100.0)
        self.s3.target = parse_target(self.uri)
        self.s3.access_key = "accesskey"
        self.content = MemoryBody(1024)
        self.code = 200
        self.sentLength = 0
        self.startedWriting = 0
        self.responseHeaders = Headers()
        self.answered_early: list[Any] = []

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.7", 50000)


def api() -> S3API:
    """An S3 API over stand-ins: enough to choose handlers."""
    return S3API(FakeGateway(), FakeMultipart())  # type: ignore[arg-type]


class OperationNameTests(SynchronousTestCase):
    """Requests are named as S3 names its operations."""

    def name(self, method: str, uri: str, headers: dict[str, str] | None = None) -> str:
        return operation_name(api(), FakeRequest(method, uri, headers))  # type: ignore[arg-type]

    def test_object_operations(self) -> None:
        """GET, HEAD, PUT and DELETE of a key, and a copy."""
        self.assertEqual(self.name("GET", "/b/k"), "GetObject")
        self.assertEqual(self.name("HEAD", "/b/k"), "HeadObject")
        self.assertEqual(self.name("PUT", "/b/k"), "PutObject")
        self.assertEqual(self.name("DELETE", "/b/k"), "DeleteObject")
        self.assertEqual(self.name("PUT", "/b/k", {"x-amz-copy-source": "/b/j"}), "CopyObject")

    def test_bucket_operations(self) -> None:
        """Listings, bucket creation and ListBuckets."""
        self.assertEqual(self.name("GET", "/"), "ListBuckets")
        self.assertEqual(self.name("GET", "/b?list-type=2"), "ListObjectsV2")
        self.assertEqual(self.name("GET", "/b"), "ListObjects")
        self.assertEqual(self.name("PUT", "/b"), "CreateBucket")
        self.assertEqual(self.name("POST", "/b?delete"), "DeleteObjects")

    def test_multipart_operations(self) -> None:
        """The multipart operations, by their sub-resources."""
        self.assertEqual(self.name("POST", "/b/k?uploads"), "CreateMultipartUpload")
        self.assertEqual(self.name("PUT", "/b/k?partNumber=1&uploadId=u"), "UploadPart")
        self.assertEqual(self.name("POST", "/b/k?uploadId=u"), "CompleteMultipartUpload")
        self.assertEqual(self.name("GET", "/b?uploads"), "ListMultipartUploads")

    def test_tagging_operations(self) -> None:
        """The object tagging operations, by their sub-resource."""
        self.assertEqual(self.name("GET", "/b/k?tagging"), "GetObjectTagging")
        self.assertEqual(self.name("PUT", "/b/k?tagging"), "PutObjectTagging")
        self.assertEqual(self.name("DELETE", "/b/k?tagging"), "DeleteObjectTagging")
        self.assertEqual(self.name("GET", "/b?tagging"), "Unsupported")

    def test_attributes(self) -> None:
        """GetObjectAttributes, by its sub-resource."""
        self.assertEqual(self.name("GET", "/b/k?attributes"), "GetObjectAttributes")

    def test_post_object(self) -> None:
        """A POST to a bucket without a sub-resource is a browser upload."""
        self.assertEqual(self.name("POST", "/b"), "PostObject")

    def test_unsupported(self) -> None:
        """A request for an operation the gateway lacks is named Unsupported."""
        self.assertEqual(self.name("GET", "/b?lifecycle"), "Unsupported")


class AccessLogTests(SynchronousTestCase):
    """One line per request, in text or JSON, that never holds a secret."""

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        self.metrics = GatewayMetrics()
        self.now = 100.25
        self.rates = RateWindow(lambda: self.now)

    def access_log(self, format: str = "text") -> AccessLog:
        return AccessLog(
            api(),
            self.metrics,
            self.rates,
            format,
            clock=lambda: self.now,
            log=Logger(namespace="lambgw.access", observer=cast(ILogObserver, self.events.append)),
        )

    def serve(self, log: AccessLog, request: FakeRequest, completed: bool = True) -> str:
        """Run ``request`` through ``log``; the line it logged."""
        finished = log.begin(request)  # type: ignore[arg-type]
        finished(completed)
        (event,) = self.events
        return str(formatEvent(event))

    def put(self) -> FakeRequest:
        request = FakeRequest("PUT", PRESIGNED)
        request.content.write(b"x" * 300)
        request.sentLength = 12
        return request

    def test_text_line(self) -> None:
        """The text line has the id, client, key, operation, path, status, sizes and time."""
        line = self.serve(self.access_log(), self.put())
        self.assertEqual(
            line,
            '0123456789ABCDEF 192.0.2.7 accesskey PutObject PUT "/bucket/photos/cat.jpg" 200 '
            "in=300 out=12 250.0ms",
        )

    def test_json_line(self) -> None:
        """The JSON line is one object with every field."""
        record = json.loads(self.serve(self.access_log("json"), self.put()))
        self.assertEqual(
            {k: record[k] for k in ("operation", "bucket", "key", "status", "bytes_in")},
            {
                "operation": "PutObject",
                "bucket": "bucket",
                "key": "photos/cat.jpg",
                "status": 200,
                "bytes_in": 300,
            },
        )
        self.assertEqual((record["duration"], record["completed"]), (0.25, True))

    def test_no_query_string(self) -> None:
        """Neither the presigned signature nor the credential reaches the event."""
        for format in ("text", "json"):
            self.events.clear()
            self.serve(self.access_log(format), self.put())
            text = repr(self.events)
            self.assertNotIn(SIGNATURE, text)
            self.assertNotIn("X-Amz-Credential", text)

    def test_answered_early(self) -> None:
        """A request refused at its headers, and never rendered, is logged with its status.

        It is logged when the early answer is about to be written (as ``respond_early``
        calls its observers), not when the connection is later lost.
        """
        log = self.access_log()
        request: Any = log.request_factory(lambda *args: FakeRequest("PUT", "/b/k"))(None)
        request.s3.error = S3Error("SignatureDoesNotMatch", 403, "No.")
        request.s3.responded = True
        for observer in request.answered_early:
            observer(request)
        (event,) = self.events
        self.assertIn(' PutObject PUT "/b/k" 403 in=0 out=0', formatEvent(event))

    def test_request_freed_when_dropped(self) -> None:
        """A request of the log's factory is in no cycle: freed when dropped, no collector run.

        A request in a cycle waits for the cyclic collector, whose runs stall the gateway.
        """
        gc.disable()
        self.addCleanup(gc.enable)
        request = self.access_log().request_factory(S3Request)(DummyChannel())
        self.assertTrue(request.answered_early)
        dropped = weakref.ref(request)
        del request
        self.assertIsNone(dropped())

    def test_early_hook_only_for_refusals(self) -> None:
        """The early-answer hook logs only a refused request: a rendered one is the render's."""
        log = self.access_log()
        request: Any = log.request_factory(lambda *args: FakeRequest("GET", "/b/k"))(None)
        for observer in request.answered_early:
            observer(request)
        self.assertEqual(self.events, [])

    def test_given_up(self) -> None:
        """A request whose client went away is logged as aborted."""
        line = self.serve(self.access_log(), FakeRequest("GET", "/b/k"), completed=False)
        self.assertTrue(line.endswith(" aborted"), line)

    def download(self, sent: int, due: int) -> FakeRequest:
        """A GET whose headers went out announcing ``due`` bytes, ``sent`` of them sent."""
        request = FakeRequest("GET", "/b/k")
        request.startedWriting = 1
        request.responseHeaders.setRawHeaders(b"content-length", [str(due).encode()])
        request.sentLength = sent
        return request

    def test_left_after_last_byte(self) -> None:
        """A client that leaves once every byte is handed to the kernel got a whole download."""
        line = self.serve(self.access_log(), self.download(1000, 1000), completed=False)
        self.assertTrue(line.endswith("ms"), line)
        self.assertIn(" 200 in=0 out=1000 ", line)
        self.assertEqual(self.rates.rates().client_errors, 0)

    def test_cut_download_warned(self) -> None:
        """A download its client cut is one warning with the key, bytes sent and bytes due."""
        warnings: list[LogEvent] = []
        log = self.access_log()
        log.warnings = Logger(observer=cast(ILogObserver, warnings.append))
        line = self.serve(log, self.download(400, 1000), completed=False)
        self.assertTrue(line.endswith(" aborted"), line)
        (warning,) = warnings
        self.assertEqual(warning["log_level"].name, "warn")
        self.assertEqual((warning["key"], warning["sent"], warning["due"]), ("k", 400, 1000))
        self.assertIsNone(warning.get("log_failure"))

    def test_metrics_move(self) -> None:
        """Each request counts in the requests, latency and bytes metrics."""
        log = self.access_log()
        self.serve(log, self.put())
        request = FakeRequest("GET", "/b/missing")
        request.code = 404
        self.events.clear()
        self.serve(log, request)
        self.assertEqual(self.metrics.requests.value("PutObject", "200"), 1)
        self.assertEqual(self.metrics.requests.value("GetObject", "404"), 1)
        self.assertEqual(self.metrics.request_seconds.count("PutObject"), 1)
        self.assertEqual(self.metrics.received_bytes.value("PutObject"), 300)
        self.assertEqual(self.metrics.sent_bytes.value("PutObject"), 12)
        rates = self.rates.rates()
        self.assertEqual((rates.requests, rates.client_errors), (2, 1))


class OptionTests(SynchronousTestCase):
    """The access log's format is chosen on the command line."""

    def test_unknown_format(self) -> None:
        """A format other than text or json is refused."""
        options = LambgwOptions()
        error = self.assertRaises(
            UsageError,
            options.parseOptions,
            ["--account", "demo", "--home", self.mktemp(), "--access-log-format", "xml"],
        )
        self.assertIn("text, json", str(error))
