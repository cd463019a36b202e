"""The access log: one line per S3 request through twisted.logger, in text or JSON.

A line names the request (id, access key, operation, bucket, key, status, bytes in and out,
duration) and never its secrets: the query string (which carries presigned signatures and
credentials) and the headers (``Authorization``) are left out; only the path is logged.
Each finished request also moves the request metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from attrs import define, field, frozen
from twisted.logger import Logger

from lambgw.observe.metrics import GatewayMetrics, RateWindow
from lambgw.protocol.errors import S3Error
from lambgw.s3.api import S3API
from lambgw.s3.request import S3Request

#: The formats of the access log.
FORMATS = ("text", "json")

#: S3's names of the operations, by handler name (and method, where one handler serves two).
OPERATIONS = {
    "list_buckets": "ListBuckets",
    "head_bucket": "HeadBucket",
    "get_location": "GetBucketLocation",
    "get_versioning": "GetBucketVersioning",
    "create_bucket": "CreateBucket",
    "delete_bucket": "DeleteBucket",
    "list_objects_v1": "ListObjects",
    "list_objects_v2": "ListObjectsV2",
    "delete_objects": "DeleteObjects",
    "put_object": "PutObject",
    "delete_object": "DeleteObject",
    "create": "CreateMultipartUpload",
    "upload_part": "UploadPart",
    "complete": "CompleteMultipartUpload",
    "abort": "AbortMultipartUpload",
    "list_parts": "ListParts",
    "list_uploads": "ListMultipartUploads",
    "get_object_tagging": "GetObjectTagging",
    "put_object_tagging": "PutObjectTagging",
    "delete_object_tagging": "DeleteObjectTagging",
    "get_object_attributes": "GetObjectAttributes",
    "post_object": "PostObject",
}


def operation_name(api: S3API, request: S3Request) -> str:
    """S3's name of the operation ``request`` asked for (``Unknown`` if it names none)."""
    target = getattr(getattr(request, "s3", None), "target", None)
    if target is None:
        return "Unknown"
    if request.method.upper() == b"OPTIONS":
        return "PreflightCORS"
    handler = request.s3.handler
    if handler is None:
        try:
            handler = api.choose(request, target)
        except S3Error:
            return "Unsupported"
    name = getattr(handler, "__name__", "")
    method = request.method.upper()
    copy = request.requestHeaders.hasHeader(b"x-amz-copy-source")
    if name == "get_object":
        return "HeadObject" if method == b"HEAD" else "GetObject"
    if name == "get_acl":
        return "GetObjectAcl" if target.key else "GetBucketAcl"
    if name == "put_object" and copy:
        return "CopyObject"
    if name == "upload_part" and copy:
        return "UploadPartCopy"
    return OPERATIONS.get(name, "Unknown")


@frozen
class AccessRecord:
    """What the access log says of one request."""

    request_id: str
    client: str
    access_key: str
    operation: str
    method: str
    bucket: str
    key: str
    path: str
    status: int
    bytes_in: int
    bytes_out: int
    duration: float
    #: False when the client went away before the whole response was sent.
    completed: bool

    def text(self) -> str:
        """The record as one line of text."""
        aborted = "" if self.completed else " aborted"
        return (
            f"{self.request_id} {self.client} {self.access_key or '-'} {self.operation} "
            f"{self.method} {encode_basestring(self.path)} {self.status} "
            f"in={self.bytes_in} out={self.bytes_out} {self.duration * 1000:.1f}ms{aborted}"
        )

    def json(self) -> str:
        """The record as one JSON object."""
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "client": self.client,
            "access_key": self.access_key,
            "operation": self.operation,
            "method": self.method,
            "bucket": self.bucket,
            "key": self.key,
            "path": self.path,
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration": round(self.duration, 6),
            "completed": self.completed,
        }
        return json.dumps(fields, ensure_ascii=False)


def body_due(request: S3Request) -> int | None:
    """The length of the body a GET's response announced once its headers went out, or None."""
    if request.method == b"HEAD" or not request.startedWriting or request.code not in (200, 206):
        return None
    length = request.responseHeaders.getRawHeaders(b"content-length")
    try:
        return int(length[0]) if length else None
    except ValueError:
        return None


def _client(request: S3Request) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", "-"))


def access_record(
    api: S3API,
    request: S3Request,
    received: int,
    now: float,
    completed: bool = True,
    status: int | None = None,
) -> AccessRecord:
    """The access record of ``request`` with a body of ``received`` bytes, finished at ``now``.

    ``now`` is on the clock of the request's ``started``; ``status`` replaces the request's
    own (for an answer written straight to the connection).
    """
    state = request.s3
    target = state.target
    return AccessRecord(
        request_id=state.request_id,
        client=_client(request),
        access_key=state.access_key or "",
        operation=operation_name(api, request),
        method=request.method.decode("ascii", "replace"),
        bucket=target.bucket if target else "",
        key=target.key if target else "",
        path=target.raw_path if target else "",
        status=request.code if status is None else status,
        bytes_in=received,
        bytes_out=request.sentLength,
        duration=max(0.0, now - state.started),
        completed=completed,
    )


@define
class AccessLog:
    """Logs each finished request and counts it in the metrics."""

    api: S3API
    metrics: GatewayMetrics
    rates: RateWindow
    format: str = "text"
    clock: Callable[[], float] = time.monotonic
    log: Logger = field(factory=lambda: Logger(namespace="lambgw.access"))
    #: Where a download cut by its client is told (a warning, in the twistd log).
    warnings: Logger = field(factory=lambda: Logger(namespace="lambgw.observe.access"))
    #: Where the lines go instead of the twistd log (an :class:`AccessLogFile`'s ``write``).
    sink: Callable[[str], None] | None = None

    def request_factory(self, factory: Callable[..., S3Request]) -> Callable[..., S3Request]:
        """A request factory whose requests refused at their headers are logged too.

        Such a request is answered at once (``Expect: 100-continue``) and never rendered;
        it is logged before its answer is written.
        """

        def make(channel: Any, *args: Any) -> S3Request:
            request = factory(channel, *args)
            request.answered_early.append(lambda answered: self._answered_early(answered, channel))
            return request

        return make

    def _answered_early(self, request: S3Request, channel: Any) -> None:
        state = request.s3
        if state.error is not None:
            # The request line is known to the channel only: the request stopped at its headers.
            request.method = getattr(channel, "_command", request.method)
            self.finished(request, 0, True, state.error.status)

    def begin(self, request: S3Request) -> Callable[[bool], None]:
        """Note what ``request`` received (its whole body is in); return what logs it."""
        received = request.content.tell()
        return lambda completed: self.finished(request, received, completed)

    def finished(
        self, request: S3Request, received: int, completed: bool, status: int | None = None
    ) -> None:
        """Log ``request``, answered (``completed``) or given up by its client.

        A client that leaves once the body's last byte is handed to the kernel got it all:
        the request is completed.  One that leaves earlier cut its download: that is one
        warning, unless the gateway's side failed (and said so).
        """
        due = None if completed else body_due(request)
        if due is not None and request.sentLength >= due:
            completed = True
        if not completed and due is not None and not request.s3.delivery_failed:
            self.warnings.warn(
                "Download of {key} cut by the client after {sent} of {due} bytes",
                key=request.s3.target.key if request.s3.target else "",
                sent=request.sentLength,
                due=due,
            )
        record = access_record(self.api, request, received, self.clock(), completed, status)
        line = record.json() if self.format == "json" else record.text()
        if self.sink is None:
            self.log.info("{access_line}", access_line=line)
        else:
            self.sink(line)
        metrics = self.metrics
        metrics.requests.inc(record.operation, str(record.status))
        metrics.request_seconds.observe(record.duration, record.operation)
        metrics.received_bytes.inc(record.operation, amount=record.bytes_in)
        metrics.sent_bytes.inc(record.operation, amount=record.bytes_out)
        self.rates.record(record.status if completed else 499)
