"""Object operations: PutObject, GetObject/HeadObject, DeleteObject(s), CopyObject."""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from attrs import evolve
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from lambgw.httpchannel import header_name
from lambgw.network.files import BytesBody
from lambgw.network.interface import IObjectBody, ObjectInfo, Segment
from lambgw.protocol.auth import PayloadMode
from lambgw.protocol.checksums import decode_b64, normalize_name
from lambgw.protocol.conditions import (
    COPY_OBJECT,
    DELETE_OBJECT,
    PUT_OBJECT,
    not_implemented_header,
    refuse_unsupported,
    unquote_etag,
    write_conditions,
)
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import (
    document,
    element,
    esc,
    http_date,
    iso8601,
    parse_delete,
    parse_http_date,
)
from lambgw.s3.front import (
    CHECKSUM_HEADER,
    decode_md5,
    first,
    header_bytes,
    header_map,
    new_object_from,
    requested_checksums,
)
from lambgw.s3.request import S3Request, Target
from lambgw.s3.spool import SpooledFile
from lambgw.s3.tagging import copy_tags

if TYPE_CHECKING:
    from lambgw.s3.api import S3API

log = Logger()

#: Response headers every GET and HEAD of an object has, under twisted.web's names for them.
_ETAG, _LAST_MODIFIED, _ACCEPT_RANGES, _CONTENT_LENGTH = map(
    header_name, (b"ETag", b"Last-Modified", b"Accept-Ranges", b"Content-Length")
)

#: A ``%`` not followed by two hex digits.
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

#: Query parameters of a signed GET that override response headers.
OVERRIDES = {
    "response-content-type": b"Content-Type",
    "response-content-language": b"Content-Language",
    "response-expires": b"Expires",
    "response-cache-control": b"Cache-Control",
    "response-content-disposition": b"Content-Disposition",
    "response-content-encoding": b"Content-Encoding",
}


def verify_body(
    request: S3Request, headers: Mapping[str, Sequence[str]], spooled: SpooledFile
) -> dict[str, str]:
    """Check the body against every digest the request declared; return its checksums.

    A body whose network computes its digests is checked there, when it is stored (and
    its checksums are those the network answers with).
    """
    if spooled.network_digests:
        return {}
    auth = request.s3.auth
    if auth.payload is PayloadMode.SIGNED and not hmac.compare_digest(
        spooled.sha256 or "", auth.content_sha256 or ""
    ):
        raise S3Error.of(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    content_md5 = first(headers, "content-md5")
    if content_md5 is not None:
        declared = decode_md5(content_md5)
        if not hmac.compare_digest(declared, spooled.md5):
            raise S3Error.of(
                "BadDigest", "The Content-MD5 you specified did not match what we received."
            )
    checksums: dict[str, str] = {}
    # The body's checksums are those the request asked for (``requested_checksums``).
    for name in spooled.checksums:
        given = first(headers, CHECKSUM_HEADER + name) or spooled.trailers.get(
            CHECKSUM_HEADER + name
        )
        computed = spooled.checksums[name]
        if given is not None:
            decode_b64(name, given)
            if not hmac.compare_digest(given, computed):
                raise S3Error.of(
                    "BadDigest",
                    f"The {name.upper()} you specified did not match the calculated checksum.",
                )
        checksums[name] = computed
    return checksums


def object_headers(request: S3Request, info: ObjectInfo) -> None:
    """Set the headers that describe an object on a GET or HEAD response."""
    raw = request.responseHeaders._rawHeaders
    raw[_ETAG] = [f'"{info.etag}"'.encode()]
    raw[_LAST_MODIFIED] = [http_date(info.last_modified).encode()]
    request.setHeader(b"Content-Type", header_bytes(info.content_type))
    raw[_ACCEPT_RANGES] = [b"bytes"]
    for name, value in info.headers.items():
        request.setHeader(name.encode(), header_bytes(value))
    # User metadata goes back with the names' case as stored (lower case, as S3 does):
    # twisted.web would title-case them, which clients keep in the metadata keys.
    for name, value in info.metadata.items():
        raw[b"x-amz-meta-" + header_bytes(name)] = [header_bytes(value)]
    if info.part_sizes:
        request.setHeader(b"x-amz-mp-parts-count", str(len(info.part_sizes)).encode())
    if info.tag_count:
        request.setHeader(b"x-amz-tagging-count", str(info.tag_count).encode())


def checksum_headers(request: S3Request, info: ObjectInfo) -> None:
    """Return the stored checksums (GET/HEAD with ``x-amz-checksum-mode: ENABLED``)."""
    for name, value in info.checksums.items():
        request.setHeader(f"x-amz-checksum-{name}".encode(), value.encode())
    if info.checksum_type:
        request.setHeader(b"x-amz-checksum-type", info.checksum_type.encode())


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks for, ``None`` for the whole object.

    Syntax S3 ignores (several ranges, garbage) gives the whole object; a range that starts
    past the end is ``InvalidRange``.
    """
    if not value or not value.isascii() or not value.startswith("bytes=") or "," in value:
        return None
    start, sep, end = value[len("bytes=") :].strip().partition("-")
    if (
        not sep
        or not (start.isdigit() or end.isdigit())
        or (start and not start.isdigit())
        or (end and not end.isdigit())
    ):
        return None
    if not start:
        length = int(end)
        if length == 0:
            raise S3Error.of("InvalidRange", "The requested range is not satisfiable")
        if size == 0:
            return None
        return max(0, size - length), size - 1
    first_byte = int(start)
    if end and int(end) < first_byte:
        return None
    last_byte = int(end) if end else size - 1
    if first_byte >= size:
        raise S3Error.of("InvalidRange", "The requested range is not satisfiable")
    return first_byte, min(last_byte, size - 1)


def part_range(value: str, info: ObjectInfo) -> tuple[int, int] | None:
    """The inclusive byte range of part ``value`` of an object (``None``: all of it).

    An object not made by a multipart upload has one part, the whole object.
    """
    if not value.isdigit() or not 1 <= int(value) <= 10000:
        raise S3Error.of(
            "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive."
        )
    number = int(value)
    sizes = info.part_sizes or (info.size,)
    if number > len(sizes):
        raise S3Error("InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
    if not info.part_sizes:
        return None
    start = sum(sizes[: number - 1])
    return start, start + sizes[number - 1] - 1


def etag_matches(header: str, etag: str) -> bool:
    """Whether an ``If-Match``/``If-None-Match`` list names ``etag`` (or is ``*``)."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/").strip('"') == etag:
            return True
    return False


def check_conditions(headers: Mapping[str, Sequence[str]], info: ObjectInfo) -> int | None:
    """The status a conditional GET earns (304 or 412), or ``None`` to serve it."""
    if_match = first(headers, "if-match")
    if_unmodified = first(headers, "if-unmodified-since")
    if_none_match = first(headers, "if-none-match")
    if_modified = first(headers, "if-modified-since")
    modified = int(info.last_modified)
    if if_match is not None:
        if not etag_matches(if_match, info.etag):
            return 412
    elif if_unmodified is not None:
        when = parse_http_date(if_unmodified)
        if when is not None and modified > when:
            return 412
    if if_none_match is not None:
        if etag_matches(if_none_match, info.etag):
            return 304
    elif if_modified is not None:
        when = parse_http_date(if_modified)
        if when is not None and modified <= when:
            return 304
    return None


def put_object(api: S3API, request: S3Request, target: Target) -> Deferred[bytes]:
    """PutObject, or CopyObject when ``x-amz-copy-source`` is given."""
    headers = header_map(request)
    if "x-amz-copy-source" in headers:
        copied: Deferred[bytes] = copy_object(api, request, target, headers)
        return copied
    refuse_unsupported(headers, PUT_OBJECT, api.owner_id)
    if_none_match, if_match = write_conditions(headers)
    spooled = request.s3.spooled()
    checksums = verify_body(request, headers, spooled)
    new = new_object_from(headers, spooled.size, spooled.md5.hex(), checksums)
    if spooled.network_digests:
        # The network fills in the ETag and the checksums: the kind is known already.
        new = evolve(new, checksum_type="FULL_OBJECT" if requested_checksums(headers) else "")

    def stored(info: ObjectInfo, by_network: bool = False) -> bytes:
        request.setHeader(b"ETag", f'"{info.etag}"'.encode())
        answered = dict(info.checksums) if by_network else checksums
        for name, value in answered.items():
            request.setHeader(f"x-amz-checksum-{name}".encode(), value.encode())
        request.setHeader(b"Content-Length", b"0")
        return b""

    if spooled.upload is not None:
        finished = api.gateway.finish_upload(
            target.bucket, target.key, spooled.upload, new, spooled.sha256 or ""
        )
        return finished.addCallback(stored, bool(spooled.network_digests))
    return api.gateway.put_object(
        target.bucket,
        target.key,
        [Segment(spooled.path, spooled.size, spooled.data)],
        new,
        if_none_match,
        if_match,
    ).addCallback(stored)


def get_object(api: S3API, request: S3Request, target: Target) -> Deferred[Any]:
    """GetObject and HeadObject, with ranges, conditions and header overrides.

    A plain GET of a whole object asks the network once; a HEAD, a range or a part number
    first needs the object's size and parts.
    """
    headers = header_map(request)
    if "partNumber" in target.query and api.multipart is None:
        raise not_implemented_header("partNumber")
    if request.method == b"HEAD" or "range" in headers or "partNumber" in target.query:
        return _get_after_head(api, request, target, headers)
    return api.gateway.get_object(target.bucket, target.key).addCallback(
        lambda got: _answer(request, target, headers, got[0], None, got[1])
    )


@inlineCallbacks
def _get_after_head(
    api: S3API, request: S3Request, target: Target, headers: Mapping[str, Sequence[str]]
) -> Generator[Any, Any, Any]:
    head = request.method == b"HEAD"
    part_number = target.query.get("partNumber")
    info = yield api.gateway.head_object(target.bucket, target.key)
    wanted: tuple[int, int] | None = None
    if part_number is not None:
        wanted = part_range(part_number, info)
    elif not head:
        wanted = parse_range(first(headers, "range"), info.size)
    if head:
        return _answer(request, target, headers, info, wanted, None)
    first_byte, last_byte = wanted if wanted is not None else (0, None)
    info, body = yield api.gateway.get_object(target.bucket, target.key, first_byte, last_byte)
    result = yield _answer(request, target, headers, info, wanted, body)
    return result


def _answer(
    request: S3Request,
    target: Target,
    headers: Mapping[str, Sequence[str]],
    info: ObjectInfo,
    wanted: tuple[int, int] | None,
    body: IObjectBody | None,
) -> bytes | Deferred[None]:
    """Answer a GET or HEAD of ``info`` (bytes ``wanted``, or all): headers, then ``body``.

    ``body`` is delivered or closed, whatever happens.
    """
    try:
        length = _describe(request, target, headers, info, wanted)
    except BaseException:
        if body is not None:
            body.close()
        raise
    if body is None or not length:
        if body is not None:
            body.close()
        return b""
    if type(body) is BytesBody:
        # Bytes already read are the answer itself: no producer, no Deferred.
        return body.take()
    return _deliver(request, target, body)


def _describe(
    request: S3Request,
    target: Target,
    headers: Mapping[str, Sequence[str]],
    info: ObjectInfo,
    wanted: tuple[int, int] | None,
) -> int | None:
    """Set the status and headers of a GET or HEAD; the body's length, or None for none."""
    status = check_conditions(headers, info)
    if status is not None:
        request.setResponseCode(status)
        request.setHeader(b"ETag", f'"{info.etag}"'.encode())
        request.setHeader(b"Last-Modified", http_date(info.last_modified).encode())
        if status == 412:
            raise S3Error(
                "PreconditionFailed",
                412,
                "At least one of the pre-conditions you specified did not hold",
            )
        return None
    object_headers(request, info)
    if (first(headers, "x-amz-checksum-mode") or "").upper() == "ENABLED" and wanted is None:
        checksum_headers(request, info)
    for name, header in OVERRIDES.items():
        if name in target.query:
            request.setHeader(header, target.query[name].encode("utf-8"))
    if wanted is not None:
        request.setResponseCode(206)
        request.setHeader(b"Content-Range", f"bytes {wanted[0]}-{wanted[1]}/{info.size}".encode())
        length = wanted[1] - wanted[0] + 1
    else:
        length = info.size
    request.responseHeaders._rawHeaders[_CONTENT_LENGTH] = [str(length).encode()]
    return length


def _deliver(request: S3Request, target: Target, body: IObjectBody) -> Deferred[None]:
    """Stream ``body`` to the client; cut the connection if it fails after the headers."""

    def failed(failure: Failure) -> Failure | Deferred[None]:
        if not failure.check(Exception) or not request.startedWriting or request.channel is None:
            return failure  # nothing sent yet, or the client already left
        # The status line is out: the only honest signal left is to cut the connection,
        # so the client sees a short body instead of waiting for the rest.
        if not failure.check(ConnectionLost):  # a client that left: the access log tells
            request.s3.delivery_failed = True
            log.failure(
                "Download of {key} failed after its headers were sent", failure, key=target.key
            )
        gone = request.notifyFinish()
        request.channel.transport.abortConnection()
        return gone.addErrback(lambda _: None)

    try:
        delivering = body.deliver(request)
    except Exception:
        delivering = fail()
    return delivering.addCallbacks(lambda _: None, failed)


@inlineCallbacks
def delete_object(api: S3API, request: S3Request, target: Target) -> Any:
    """DeleteObject: 204 whether or not the key existed, unless ``If-Match`` says otherwise."""
    headers = header_map(request)
    refuse_unsupported(headers, DELETE_OBJECT)
    yield api.gateway.delete_object(target.bucket, target.key, write_conditions(headers)[1])
    request.setResponseCode(204)
    return b""


def parse_copy_source(value: str) -> tuple[str, str]:
    """The bucket and key of ``x-amz-copy-source`` (``/bucket/key``, URL-encoded).

    Bad percent-encoding, or bytes that are not UTF-8 once decoded, are InvalidArgument.
    """
    source, _, version = value.partition("?")
    if version:
        raise not_implemented_header("x-amz-copy-source with a versionId")
    try:
        if _BAD_PERCENT.search(source):
            raise UnicodeError
        source = unquote_to_bytes(header_bytes(source)).decode("utf-8").lstrip("/")
    except UnicodeError:
        raise S3Error.of("InvalidArgument", "Invalid copy source encoding") from None
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise S3Error.of(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.",
        )
    return bucket, key


@inlineCallbacks
def copy_source(
    api: S3API, headers: Mapping[str, Sequence[str]]
) -> Generator[Deferred[Any], Any, tuple[str, str, ObjectInfo]]:
    """The bucket, key and object ``x-amz-copy-source`` names, its conditions checked."""
    src_bucket, src_key = parse_copy_source(first(headers, "x-amz-copy-source") or "")
    source: ObjectInfo = yield api.gateway.head_object(src_bucket, src_key)
    conditions = {
        name[len("x-amz-copy-source-") :]: values
        for name, values in headers.items()
        if name.startswith("x-amz-copy-source-if-")
    }
    if check_conditions(conditions, source) is not None:
        raise S3Error(
            "PreconditionFailed",
            412,
            "At least one of the pre-conditions you specified did not hold",
        )
    return src_bucket, src_key, source


@inlineCallbacks
def copy_object(
    api: S3API, request: S3Request, target: Target, headers: Mapping[str, Sequence[str]]
) -> Any:
    """CopyObject: metadata and tags copied or replaced (``x-amz-*-directive``)."""
    refuse_unsupported(headers, COPY_OBJECT, api.owner_id)
    directive = (first(headers, "x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error.of("InvalidArgument", "Unknown metadata directive.")
    tags = copy_tags(headers)
    src_bucket, src_key, source = yield copy_source(api, headers)
    replace = new_object_from(headers, source.size, source.etag) if directive == "REPLACE" else None
    if (src_bucket, src_key) == (target.bucket, target.key) and replace is None:
        raise S3Error.of(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.",
        )
    info = yield api.gateway.copy_object(
        src_bucket, src_key, target.bucket, target.key, replace, tags
    )
    request.setHeader(b"Content-Type", b"application/xml")
    return document(
        "CopyObjectResult",
        element("LastModified", iso8601(info.last_modified)) + element("ETag", f'"{info.etag}"'),
    )


@inlineCallbacks
def delete_objects(api: S3API, request: S3Request, target: Target) -> Any:
    """DeleteObjects: up to 1,000 keys in one request, with or without Content-MD5."""
    import hashlib

    body = request.s3.xml()
    headers = header_map(request)
    auth = request.s3.auth
    if auth.payload is PayloadMode.SIGNED and not hmac.compare_digest(
        hashlib.sha256(body).hexdigest(), auth.content_sha256 or ""
    ):
        raise S3Error.of(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    content_md5 = first(headers, "content-md5")
    if (
        content_md5 is not None
        and content_md5
        != base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
    ):
        raise S3Error.of(
            "BadDigest", "The Content-MD5 you specified did not match what we received."
        )
    for name in requested_checksums(headers):
        given = first(headers, CHECKSUM_HEADER + name)
        if given is not None:
            from lambgw.protocol.checksums import new_checksum

            computed = new_checksum(normalize_name(name))
            computed.update(body)
            if given != computed.b64():
                raise S3Error.of(
                    "BadDigest",
                    f"The {name.upper()} you specified did not match the calculated checksum.",
                )
    wanted = parse_delete(body)
    yield api.gateway.bucket(target.bucket)
    out = []
    etags = wanted.etags or [None] * len(wanted.keys)
    for key, etag in zip(wanted.keys, etags, strict=True):
        try:
            if_match = unquote_etag(etag) if etag is not None else None
            yield api.gateway.delete_object(target.bucket, key, if_match)
        except S3Error as e:
            out.append(
                "<Error>"
                + element("Key", key)
                + element("Code", e.code)
                + element("Message", e.message)
                + "</Error>"
            )
        else:
            if not wanted.quiet:
                out.append(f"<Deleted><Key>{esc(key)}</Key></Deleted>")
    request.setHeader(b"Content-Type", b"application/xml")
    return document("DeleteResult", "".join(out))
