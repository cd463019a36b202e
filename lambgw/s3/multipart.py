"""The multipart operations of the S3 API, over :class:`~lambgw.gateway.multipart.MultipartUploads`.

The uploads themselves are the network's: these handlers read and write S3's XML and
headers, and a part's body goes from the spool to the network.

CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
AbortMultipartUpload, ListParts and ListMultipartUploads.  A completion that takes a while
answers 200 at once and sends whitespace every few seconds until the result (or an error
document) follows, as S3 does, so that clients do not time out on large objects.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import (
    IConsumer,
    IProducer,
    IPushProducer,
    IReactorFromThreads,
    IReactorTime,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from lambgw.gateway.multipart import (
    MAX_PART_NUMBER,
    MAX_PART_SIZE,
    MultipartUploads,
    check_part_number,
)
from lambgw.network.interface import (
    CompletedPart,
    MultipartUpload,
    NewObject,
    ObjectInfo,
    PartInfo,
    PartsPage,
    Segment,
    UploadsPage,
)
from lambgw.protocol.auth import PayloadMode
from lambgw.protocol.checksums import ALGORITHMS, CRC_ALGORITHMS, normalize_name
from lambgw.protocol.conditions import (
    COMPLETE_MULTIPART,
    CREATE_MULTIPART,
    UPLOAD_PART,
    refuse_unsupported,
    write_conditions,
)
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import (
    HEAD,
    children,
    document,
    element,
    error_document,
    iso8601,
    owner,
    parse,
    text,
    url_encode,
)
from lambgw.s3.front import first, header_map, new_object_from
from lambgw.s3.objects import copy_source, verify_body
from lambgw.s3.request import S3Request, Target
from lambgw.s3.spool import SpoolBody, SpooledFile

if TYPE_CHECKING:
    from lambgw.s3.api import S3API

log = Logger()

#: A completion not done after this many seconds answers 200 and keeps the connection alive.
KEEPALIVE_AFTER = 2.0
#: ... sending a space this often.
KEEPALIVE_EVERY = 5.0
#: The most uploads or parts one listing returns.
MAX_LISTED = 1000


def _content_sha256_ok(request: S3Request, body: bytes) -> None:
    auth = request.s3.auth
    if auth.payload is PayloadMode.SIGNED and not hmac.compare_digest(
        hashlib.sha256(body).hexdigest(), auth.content_sha256 or ""
    ):
        raise S3Error.of(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )


def parse_complete(body: bytes) -> list[CompletedPart]:
    """Parse a CompleteMultipartUpload document into the parts it names, in its order."""
    tree = parse(body, "CompleteMultipartUpload")
    parts = children(tree, "Part")
    if not parts:
        raise S3Error.of("MalformedXML", "The XML you provided named no part.")
    if len(parts) > MAX_PART_NUMBER:
        raise S3Error.of("MalformedXML", f"At most {MAX_PART_NUMBER} parts can be named.")
    out = []
    for node in parts:
        number = (text(node, "PartNumber") or "").strip()
        etag = text(node, "ETag")
        if not number.isdigit() or etag is None:
            raise S3Error.of("MalformedXML", "Every <Part> needs a <PartNumber> and an <ETag>.")
        checksums = {}
        for algorithm in ALGORITHMS:
            value = text(node, "Checksum" + algorithm.upper())
            if value:
                checksums[algorithm] = value.strip()
        out.append(CompletedPart(check_part_number(number), etag, checksums))
    return out


def _bounded(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise S3Error.of("InvalidArgument", f"Argument {name} must be a non-negative integer.")
    return int(value)


@implementer(IConsumer)
class _SpoolConsumer:
    """Writes what a producer delivers into a :class:`SpoolBody`, with backpressure."""

    def __init__(self) -> None:
        self.producer: IPushProducer | None = None
        self.spool: SpoolBody | None = None

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Take the (push) producer to pause when the spool is behind."""
        self.producer = cast(IPushProducer, producer)

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.producer = None

    def write(self, data: bytes) -> None:
        """Spool ``data``."""
        assert self.spool is not None
        self.spool.write(data)

    def pause(self) -> None:
        """Pause the producer (the spool has too much queued)."""
        if self.producer is not None:
            self.producer.pauseProducing()

    def resume(self) -> None:
        """Resume the producer."""
        if self.producer is not None:
            self.producer.resumeProducing()


def _shield(d: Deferred[Any]) -> Deferred[Any]:
    """Return a Deferred with ``d``'s result whose cancellation leaves ``d`` running."""
    out: Deferred[Any] = Deferred()

    def forward(result: Any) -> None:
        if out.called:
            return
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)

    d.addBoth(forward)
    return out


class MultipartAPI:
    """The handlers of the multipart operations (called by :class:`~lambgw.s3.api.S3API`)."""

    def __init__(
        self,
        uploads: MultipartUploads,
        reactor: IReactorTime,
        threads: IReactorFromThreads,
        pool: ThreadPool,
    ) -> None:
        self.uploads = uploads
        self._clock = reactor
        self._threads = threads
        self._pool = pool

    # -- create, abort ------------------------------------------------------------------

    @inlineCallbacks
    def create(self, api: S3API, request: S3Request, target: Target) -> Any:
        """CreateMultipartUpload: metadata, content type and checksum algorithm kept."""
        headers = header_map(request)
        refuse_unsupported(headers, CREATE_MULTIPART, api.owner_id)
        new = new_object_from(headers, 0, "")
        algorithm = first(headers, "x-amz-checksum-algorithm") or ""
        checksum_type = (first(headers, "x-amz-checksum-type") or "").upper()
        if algorithm:
            algorithm = normalize_name(algorithm)
            if algorithm == "md5":
                raise S3Error.of("InvalidRequest", "Checksum algorithm MD5 is not supported.")
            if not checksum_type:
                checksum_type = "FULL_OBJECT" if algorithm == "crc64nvme" else "COMPOSITE"
        if checksum_type:
            if checksum_type not in ("COMPOSITE", "FULL_OBJECT") or not algorithm:
                raise S3Error.of("InvalidRequest", "Invalid x-amz-checksum-type.")
            full = checksum_type == "FULL_OBJECT"
            if (full and algorithm not in CRC_ALGORITHMS) or (
                not full and algorithm == "crc64nvme"
            ):
                raise S3Error.of(
                    "InvalidRequest",
                    f"The {checksum_type} checksum type cannot be used with {algorithm.upper()}.",
                )
        described = NewObject(
            size=0,
            etag="",
            content_type=new.content_type,
            metadata=new.metadata,
            headers=new.headers,
            checksum_type=checksum_type,
            tags=new.tags,
        )
        upload: MultipartUpload = yield self.uploads.create(
            target.bucket, target.key, described, algorithm
        )
        if algorithm:
            request.setHeader(b"x-amz-checksum-algorithm", algorithm.upper().encode())
            request.setHeader(b"x-amz-checksum-type", checksum_type.encode())
        request.setHeader(b"Content-Type", b"application/xml")
        return document(
            "InitiateMultipartUploadResult",
            element("Bucket", target.bucket)
            + element("Key", target.key)
            + element("UploadId", upload.upload_id),
        )

    @inlineCallbacks
    def abort(self, api: S3API, request: S3Request, target: Target) -> Any:
        """AbortMultipartUpload: the parts are deleted and their space given back."""
        yield self.uploads.abort(target.bucket, target.key, target.query["uploadId"])
        request.setResponseCode(204)
        return b""

    # -- parts --------------------------------------------------------------------------

    @inlineCallbacks
    def upload_part(self, api: S3API, request: S3Request, target: Target) -> Any:
        """UploadPart (a spooled body) or UploadPartCopy (``x-amz-copy-source``)."""
        headers = header_map(request)
        refuse_unsupported(headers, UPLOAD_PART)
        number = check_part_number(target.query.get("partNumber", ""))
        if "x-amz-copy-source" in headers:
            result = yield self._copy_part(api, request, target, headers, number)
            return result
        spooled = request.s3.spooled()
        checksums = verify_body(request, headers, spooled)
        upload_id = target.query["uploadId"]
        part: PartInfo
        if spooled.upload is not None:
            new = NewObject(spooled.size, spooled.md5.hex(), checksums=checksums)
            part = yield self.uploads.finish_part(
                target.bucket,
                target.key,
                upload_id,
                number,
                spooled.upload,
                new,
                spooled.sha256 or "",
            )
            if spooled.network_digests:
                checksums = dict(part.checksums)
        else:
            segment = Segment(
                "" if spooled.data is not None else spooled.path, spooled.size, spooled.data
            )
            part = yield self.uploads.upload_part(
                target.bucket,
                target.key,
                upload_id,
                number,
                segment,
                spooled.md5.hex(),
                checksums,
            )
        request.setHeader(b"ETag", f'"{part.etag}"'.encode())
        for name, value in checksums.items():
            request.setHeader(f"x-amz-checksum-{name}".encode(), value.encode())
        request.setHeader(b"Content-Length", b"0")
        return b""

    @inlineCallbacks
    def _copy_part(
        self,
        api: S3API,
        request: S3Request,
        target: Target,
        headers: Mapping[str, Sequence[str]],
        number: int,
    ) -> Any:
        gateway = api.gateway
        upload_id = target.query["uploadId"]
        # The upload is looked up first, so that a wrong id copies nothing.
        page: PartsPage = yield self.uploads.list_parts(target.bucket, target.key, upload_id, 0, 0)
        upload = page.upload
        src_bucket, src_key, source = yield copy_source(api, headers)
        first_byte, last_byte = _copy_range(first(headers, "x-amz-copy-source-range"), source)
        size = last_byte - first_byte + 1
        if size > MAX_PART_SIZE:
            raise S3Error.of(
                "InvalidRequest",
                f"The specified copy source is larger than the maximum part size of "
                f"{MAX_PART_SIZE} bytes.",
            )
        gateway.precheck_upload(target.bucket, size)
        algorithms = [upload.checksum_algorithm] if upload.checksum_algorithm else []
        consumer = _SpoolConsumer()
        spool = SpoolBody(
            self._threads,
            self._pool,
            gateway.spool_dir,
            max_size=MAX_PART_SIZE,
            checksums=algorithms,
            pause=consumer.pause,
            resume=consumer.resume,
        )
        consumer.spool = spool
        try:
            if size > 0:
                _, body = yield gateway.get_object(src_bucket, src_key, first_byte, last_byte)
                yield body.deliver(consumer)
        except BaseException:
            spool.abort()
            raise
        spooled: SpooledFile = yield spool.finish()
        try:
            stored: PartInfo = yield self.uploads.upload_part(
                target.bucket,
                target.key,
                upload_id,
                number,
                Segment(spooled.path, spooled.size),
                spooled.md5.hex(),
                spooled.checksums,
            )
        finally:
            spooled.discard()
        for name, value in spooled.checksums.items():
            request.setHeader(f"x-amz-checksum-{name}".encode(), value.encode())
        request.setHeader(b"Content-Type", b"application/xml")
        return document(
            "CopyPartResult",
            element("LastModified", iso8601(stored.last_modified))
            + element("ETag", f'"{stored.etag}"'),
        )

    @inlineCallbacks
    def list_parts(self, api: S3API, request: S3Request, target: Target) -> Any:
        """ListParts, from ``part-number-marker``, at most ``max-parts`` (1,000) at a time."""
        query = target.query
        marker = _bounded(query, "part-number-marker", 0)
        max_parts = min(_bounded(query, "max-parts", MAX_LISTED), MAX_LISTED)
        listed: PartsPage = yield self.uploads.list_parts(
            target.bucket, target.key, query["uploadId"], marker, max_parts
        )
        upload, page, truncated = listed.upload, listed.parts, listed.is_truncated
        people = _people(api)
        out = [
            element("Bucket", target.bucket),
            element("Key", target.key),
            element("UploadId", upload.upload_id),
            people,
            "<StorageClass>STANDARD</StorageClass>",
            element("PartNumberMarker", marker),
            element("NextPartNumberMarker", page[-1].number if page else marker),
            element("MaxParts", max_parts),
            element("IsTruncated", truncated),
        ]
        for part in page:
            out.append(
                "<Part>"
                + element("PartNumber", part.number)
                + element("LastModified", iso8601(part.last_modified))
                + element("ETag", f'"{part.etag}"')
                + element("Size", part.size)
                + "".join(
                    element("Checksum" + name.upper(), value)
                    for name, value in part.checksums.items()
                    if name == upload.checksum_algorithm
                )
                + "</Part>"
            )
        if upload.checksum_algorithm:
            out.append(element("ChecksumAlgorithm", upload.checksum_algorithm.upper()))
            out.append(element("ChecksumType", upload.checksum_type))
        request.setHeader(b"Content-Type", b"application/xml")
        return document("ListPartsResult", "".join(out))

    @inlineCallbacks
    def list_uploads(self, api: S3API, request: S3Request, target: Target) -> Any:
        """ListMultipartUploads: prefix, delimiter, key and upload id markers, max-uploads."""
        query = target.query
        max_uploads = min(_bounded(query, "max-uploads", MAX_LISTED), MAX_LISTED)
        encode = query.get("encoding-type") == "url"
        if "encoding-type" in query and not encode:
            raise S3Error.of("InvalidArgument", "Invalid Encoding Method specified in Request")
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        key_marker = query.get("key-marker", "")
        upload_id_marker = query.get("upload-id-marker", "")
        page: UploadsPage = yield self.uploads.list_uploads(
            target.bucket, prefix, delimiter, key_marker, upload_id_marker, max_uploads
        )

        def key(value: str) -> str:
            return url_encode(value) if encode else value

        people = _people(api)
        out = [
            element("Bucket", target.bucket),
            element("KeyMarker", key(key_marker)),
            element("UploadIdMarker", upload_id_marker),
            element("NextKeyMarker", key(page.next_key_marker)),
            element("NextUploadIdMarker", page.next_upload_id_marker),
            element("Delimiter", key(delimiter)) if delimiter else "",
            element("Prefix", key(prefix)),
            element("MaxUploads", max_uploads),
            element("IsTruncated", page.is_truncated),
            element("EncodingType", "url") if encode else "",
        ]
        for upload in page.uploads:
            out.append(
                "<Upload>"
                + element("Key", key(upload.path))
                + element("UploadId", upload.upload_id)
                + people
                + "<StorageClass>STANDARD</StorageClass>"
                + element("Initiated", iso8601(upload.created))
                + (
                    element("ChecksumAlgorithm", upload.checksum_algorithm.upper())
                    + element("ChecksumType", upload.checksum_type)
                    if upload.checksum_algorithm
                    else ""
                )
                + "</Upload>"
            )
        out.extend(
            "<CommonPrefixes>" + element("Prefix", key(p)) + "</CommonPrefixes>"
            for p in page.common_prefixes
        )
        request.setHeader(b"Content-Type", b"application/xml")
        return document("ListMultipartUploadsResult", "".join(out))

    # -- complete -----------------------------------------------------------------------

    @inlineCallbacks
    def complete(self, api: S3API, request: S3Request, target: Target) -> Any:
        """CompleteMultipartUpload, keeping the connection alive while it runs."""
        body = request.s3.xml()
        _content_sha256_ok(request, body)
        requested = parse_complete(body)
        headers = header_map(request)
        refuse_unsupported(headers, COMPLETE_MULTIPART)
        conditions = write_conditions(headers)
        given = {}
        for algorithm in ALGORITHMS:
            value = first(headers, "x-amz-checksum-" + algorithm)
            if value is not None:
                given[algorithm] = value.strip()
        upload_id = target.query["uploadId"]
        keepalive = _KeepAlive(request, self._clock)
        try:
            info: ObjectInfo = yield _shield(
                self.uploads.complete(
                    target.bucket, target.key, upload_id, requested, given, *conditions
                )
            )
        except S3Error as e:
            if not keepalive.started:
                raise
            return error_document(e.code, e.message, None, request.s3.request_id)[len(HEAD) :]
        except Exception:
            if not keepalive.started:
                raise
            log.failure("Completing upload {upload_id} failed", upload_id=upload_id)
            return error_document(
                "InternalError",
                "We encountered an internal error. Please try again.",
                None,
                request.s3.request_id,
            )[len(HEAD) :]
        finally:
            keepalive.stop()
        if not keepalive.started:
            request.setHeader(b"Content-Type", b"application/xml")
            request.setHeader(b"ETag", f'"{info.etag}"'.encode())
        checksums = "".join(
            element("Checksum" + name.upper(), value) for name, value in info.checksums.items()
        )
        if checksums:
            checksums += element("ChecksumType", info.checksum_type)
        result = document(
            "CompleteMultipartUploadResult",
            element("Location", f"/{target.bucket}/{target.key}")
            + element("Bucket", target.bucket)
            + element("Key", target.key)
            + element("ETag", f'"{info.etag}"')
            + checksums,
        )
        return result[len(HEAD) :] if keepalive.started else result


class _KeepAlive:
    """Starts a 200 response after a while and sends whitespace until stopped."""

    def __init__(self, request: S3Request, clock: IReactorTime) -> None:
        self.started = False
        self._request = request
        self._loop: LoopingCall | None = None
        self._timer = clock.callLater(KEEPALIVE_AFTER, self._start, clock)

    def _start(self, clock: IReactorTime) -> None:
        self.started = True
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/xml")
        request.write(HEAD.encode())
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._loop.start(KEEPALIVE_EVERY, now=False)

    def _tick(self) -> None:
        if self._request.channel is None or self._request.finished:
            self.stop()
            return
        self._request.write(b" ")

    def stop(self) -> None:
        """Stop sending whitespace (and do not start)."""
        if self._timer.active():
            self._timer.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()


def _copy_range(value: str | None, source: ObjectInfo) -> tuple[int, int]:
    """Return the inclusive range ``x-amz-copy-source-range`` asks for (all if absent)."""
    if value is None:
        return 0, source.size - 1
    spec = value.strip()
    start, sep, end = spec.removeprefix("bytes=").partition("-")
    if not spec.startswith("bytes=") or not sep or not start.isdigit() or not end.isdigit():
        raise S3Error.of(
            "InvalidArgument",
            "The x-amz-copy-source-range value must be of the form bytes=first-last.",
        )
    first_byte, last_byte = int(start), int(end)
    if last_byte < first_byte or last_byte >= source.size:
        raise S3Error.of(
            "InvalidRange",
            f"The x-amz-copy-source-range {spec} is not within the source of {source.size} bytes.",
        )
    return first_byte, last_byte


def _people(api: S3API) -> str:
    initiator = (
        "<Initiator>"
        + element("ID", api.owner_id)
        + element("DisplayName", api.gateway.account)
        + "</Initiator>"
    )
    return initiator + owner(api.owner_id, api.gateway.account)
