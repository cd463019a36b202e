"""What the S3 layer does when a request's headers are in: target, signature, body sink.

Runs before any byte of the body is stored, so a request with a bad signature, a body that
cannot fit in the order, or a malformed target never reaches the disk.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping, Sequence

from attrs import define
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lambgw.gateway.core import MAX_PUT_SIZE, Gateway
from lambgw.network.completion import MAX_PART_NUMBER
from lambgw.network.interface import IUpload, NewObject
from lambgw.protocol.auth import AuthResult, PayloadMode, RequestView, authenticate
from lambgw.protocol.checksums import decode_b64, normalize_name
from lambgw.protocol.chunked import AwsChunkedDecoder
from lambgw.protocol.conditions import write_conditions
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import error_document
from lambgw.protocol.tagging import parse_tagging_header
from lambgw.s3.formbody import FormBody, is_form_post
from lambgw.s3.hosts import bucket_from_host, virtual_target
from lambgw.s3.relaybody import SPLICE_MIN, UNSIGNED, RelayBody, can_splice
from lambgw.s3.request import (
    MAX_XML_BODY,
    DiscardBody,
    MemoryBody,
    S3Request,
    Target,
    parse_target,
)
from lambgw.s3.spool import SmallBody, SpoolBody
from lambgw.spooldir import FULL_ERRNOS

CHECKSUM_HEADER = "x-amz-checksum-"
#: Headers named like a checksum value that say something else.
_NOT_CHECKSUM_VALUES = frozenset(
    {"x-amz-checksum-type", "x-amz-checksum-algorithm", "x-amz-checksum-mode"}
)
#: How much the reactor reads from the socket at a time during an upload.
UPLOAD_READ_SIZE = 1024 * 1024
#: Uploads up to this size are kept in memory rather than spooled by pool threads.
SMALL_UPLOAD = 256 * 1024

log = Logger()

#: The most bytes of user metadata (names and values of ``x-amz-meta-*``), as in S3.
MAX_METADATA = 2048
#: Stored with the object and returned on GET and HEAD.
STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)


def header_map(request: S3Request) -> dict[str, list[str]]:
    """The request's headers with lower-case names and text values.

    Values are the UTF-8 the clients send (bytes that are not UTF-8 kept as surrogate
    escapes): they are signed, stored and returned as the very bytes that came.  Made once,
    when the headers are in, and kept with the request: callers only read it.
    """
    state = getattr(request, "s3", None)
    if state is not None and state.headers is not None:
        return state.headers
    headers = {
        name.decode("latin-1").lower(): [header_text(v) for v in values]
        for name, values in request.requestHeaders.getAllRawHeaders()
    }
    if state is not None:
        state.headers = headers
    return headers


def header_text(value: bytes) -> str:
    """The text of a header value as sent (UTF-8; other bytes as surrogate escapes)."""
    return value.decode("utf-8", "surrogateescape")


def header_bytes(value: str) -> bytes:
    """The bytes of a header value read by :func:`header_text`, or stored from one."""
    return value.encode("utf-8", "surrogateescape")


def without_aws_chunked(value: str) -> str:
    """A ``Content-Encoding`` less its ``aws-chunked`` token, otherwise byte for byte."""
    tokens = value.split(",")
    kept = [t for t in tokens if t.strip().lower() != "aws-chunked"]
    return value if len(kept) == len(tokens) else ",".join(kept).strip()


def first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The first value of header ``name``."""
    values = headers.get(name)
    return values[0] if values else None


def requested_checksums(headers: Mapping[str, Sequence[str]]) -> list[str]:
    """The checksum algorithms a request asks to be computed over its body."""
    names: set[str] = set()
    for name in headers:
        if name.startswith(CHECKSUM_HEADER) and name not in _NOT_CHECKSUM_VALUES:
            names.add(normalize_name(name[len(CHECKSUM_HEADER) :]))
    for trailer in (first(headers, "x-amz-trailer") or "").split(","):
        trailer = trailer.strip().lower()
        if trailer.startswith(CHECKSUM_HEADER):
            names.add(normalize_name(trailer[len(CHECKSUM_HEADER) :]))
    algorithm = first(headers, "x-amz-sdk-checksum-algorithm") or first(
        headers, "x-amz-checksum-algorithm"
    )
    if algorithm:
        names.add(normalize_name(algorithm))
    return sorted(names)


def new_object_from(
    headers: Mapping[str, Sequence[str]],
    size: int,
    etag: str,
    checksums: Mapping[str, str] | None = None,
) -> NewObject:
    """The content type, metadata, stored headers and tags a request gives a new object.

    ``checksums``: those of the whole object, if the request asked for any.
    """
    metadata = {
        name[len("x-amz-meta-") :]: ",".join(values)
        for name, values in headers.items()
        if name.startswith("x-amz-meta-")
    }
    if sum(len(header_bytes(k + v)) for k, v in metadata.items()) > MAX_METADATA:
        raise S3Error(
            "MetadataTooLarge",
            400,
            "Your metadata headers exceed the maximum allowed metadata size "
            f"({MAX_METADATA} bytes).",
        )
    stored = {}
    for name in STORED_HEADERS:
        value = first(headers, name)
        if name == "content-encoding" and value:
            value = without_aws_chunked(value)
        if value:
            stored[name] = value
    return NewObject(
        size=size,
        etag=etag,
        content_type=first(headers, "content-type") or "binary/octet-stream",
        metadata=metadata,
        headers=stored,
        checksums=checksums or {},
        checksum_type="FULL_OBJECT" if checksums else "",
        tags=parse_tagging_header(first(headers, "x-amz-tagging") or ""),
    )


def declared_size(headers: Mapping[str, Sequence[str]], length: int | None) -> int | None:
    """The size of the payload: the decoded length of aws-chunked bodies."""
    decoded = first(headers, "x-amz-decoded-content-length")
    if decoded is not None:
        if not (decoded.isascii() and decoded.isdigit()):
            raise S3Error.of("InvalidArgument", "Invalid x-amz-decoded-content-length.")
        return int(decoded)
    return length


def is_upload(
    method: str, key: str, query: Mapping[str, str], headers: Mapping[str, Sequence[str]]
) -> bool:
    """Whether a request carries object bytes (PutObject or UploadPart, not a copy)."""
    return (
        method == "PUT"
        and bool(key)
        and "x-amz-copy-source" not in headers
        and not (set(query) & {"acl", "tagging", "retention", "legal-hold"})
    )


def _nothing(count: int) -> None:
    """Count nothing (the splice counter before one is given)."""


@define
class Front:
    """Checks requests at their headers and chooses where their bodies go.

    ``gateway_for`` gives the gateway of the account an access key acts for; ``domains``
    are those under which the host names the bucket (virtual-hosted style).  A CORS
    preflight (``OPTIONS``) is not authenticated: browsers send it without credentials.  A
    browser upload (a form POSTed to a bucket) is authenticated by the policy in its fields.
    """

    gateway_for: Callable[[str], Gateway]
    reactor: IReactorFromThreads
    pool: ThreadPool
    lookup_secret: Callable[[str], str | None]
    clock: Callable[[], float] = time.time
    domains: Sequence[str] = ()
    #: Called with the count of body bytes each time some are spliced to the network.
    spliced: Callable[[int], None] = _nothing

    def begin(self, request: S3Request, method: bytes, uri: bytes, length: int | None) -> None:
        """Set ``request.s3`` and ``request.content`` from the request's headers."""
        try:
            self._begin(request, method, uri, length)
        except Exception:
            log.failure(
                "Unexpected failure reading the headers of {path!r}", path=uri.partition(b"?")[0]
            )
            request.s3.error = S3Error(
                "InternalError", 500, "We encountered an internal error. Please try again."
            )
            request.content = DiscardBody()

    def _begin(self, request: S3Request, method: bytes, uri: bytes, length: int | None) -> None:
        state = request.s3
        headers = header_map(request)
        try:
            host = first(headers, "host")
            host_bucket = bucket_from_host(host, self.domains)
            if host_bucket is None:
                target = parse_target(uri)
            else:
                target = virtual_target(uri, host_bucket)
                # SigV2 signs the bucket as the client wrote it in the host.
                host_bucket = (host or "").strip()[: len(host_bucket)]
            state.target = target
            verb = method.decode("ascii", "replace").upper()
            if verb == "OPTIONS":
                request.content = DiscardBody()
                return
            if is_form_post(verb, target, headers):
                # A browser upload: the policy in the form authenticates it.
                request.content = FormBody(
                    request,
                    target,
                    first(headers, "content-type"),
                    length,
                    self.gateway_for,
                    self.reactor,
                    self.pool,
                    self.lookup_secret,
                    self.clock,
                )
                return
            auth = authenticate(
                RequestView(verb, target.raw_path, target.raw_query, headers, host_bucket),
                self.lookup_secret,
                self.clock(),
            )
            state.auth = auth
            state.access_key = auth.access_key
            if is_upload(verb, target.key, target.query, headers):
                request.content = self._spool(request, target, headers, length, auth)
            else:
                if length is not None and length > MAX_XML_BODY:
                    raise S3Error("MaxMessageLengthExceeded", 400, "Your request was too big.")
                request.content = MemoryBody(MAX_XML_BODY)
        except S3Error as e:
            state.error = e
            request.content = DiscardBody()
            expect = (first(headers, "expect") or "").lower()
            if expect == "100-continue" and (length or length is None):
                request.respond_early(
                    e.status,
                    [
                        (b"Content-Type", b"application/xml"),
                        (b"x-amz-request-id", state.request_id.encode()),
                    ],
                    error_document(e.code, e.message, e.resource, state.request_id),
                )

    def _spool(
        self,
        request: S3Request,
        target: Target,
        headers: Mapping[str, Sequence[str]],
        length: int | None,
        auth: AuthResult,
    ) -> SpoolBody | SmallBody | RelayBody:
        size = declared_size(headers, length)
        if size is None and not auth.payload.is_chunked and length is None:
            # Transfer-Encoding: chunked without a declared size: bounded by MAX_PUT_SIZE.
            size = 0
        gateway = self.gateway_for(auth.access_key)
        gateway.precheck_upload(target.bucket, size or 0)
        if (
            length is not None
            and length <= SMALL_UPLOAD
            and not auth.payload.is_chunked
            and "uploadId" not in target.query
        ):
            return SmallBody(
                length, requested_checksums(headers), auth.payload is PayloadMode.SIGNED
            )
        # A large body that is not aws-chunked may go from socket to socket: the network
        # then computes its digests and checks those the client declared.
        relayed = (
            length is not None
            and length >= SPLICE_MIN
            and not auth.payload.is_chunked
            and can_splice(request.channel.transport)
        )
        digests: list[str] = []
        expect: dict[str, str] = {}
        if relayed:
            digests, expect = network_digests(headers)
        upload = None
        if size is not None and size > SMALL_UPLOAD and "uploadId" not in target.query:
            conditions = write_conditions(headers)
            described = new_object_from(headers, size, "")
            upload = gateway.open_upload(
                target.bucket, target.key, described, *conditions, digests=digests, expect=expect
            )
        elif size is not None and size > SMALL_UPLOAD and "x-amz-copy-source" not in headers:
            upload = _open_part(gateway, target, size, digests, expect)
        if relayed and upload is not None and size is not None:
            signed = auth.payload is PayloadMode.SIGNED
            return RelayBody(
                self.reactor,
                request,
                upload,
                size,
                (auth.content_sha256 or "") if signed else UNSIGNED,
                spliced=self.spliced,
            )
        decoder = None
        if auth.payload.is_chunked:
            decoder = AwsChunkedDecoder(
                signer=auth.chunk_signer,
                expect_trailer=auth.payload.has_trailer,
                decoded_length=size,
            )
        spool = gateway.spool
        if upload is None and size:
            spool.check_room(size)
        transport = request.channel.transport
        # Read the body in large pieces: fewer trips through the reactor and the lanes.
        transport.bufferSize = UPLOAD_READ_SIZE
        try:
            return SpoolBody(
                self.reactor,
                self.pool,
                gateway.spool_dir,
                max_size=MAX_PUT_SIZE,
                decoder=decoder,
                checksums=requested_checksums(headers),
                sha256=auth.payload is PayloadMode.SIGNED,
                pause=request.channel.hold_body,
                resume=request.channel.release_body,
                sink=upload,
                declared_sha256=(
                    auth.content_sha256 if auth.payload is PayloadMode.SIGNED else None
                ),
                on_full=lambda received: spool.ran_out(max(size or 0, received)),
            )
        except OSError as e:  # the spooled file could not be made
            if e.errno in FULL_ERRNOS:
                raise spool.ran_out(size or 0) from None
            raise


def _open_part(
    gateway: Gateway,
    target: Target,
    size: int,
    digests: Sequence[str],
    expect: Mapping[str, str],
) -> IUpload | None:
    """Start streaming an UploadPart's body to the network, if the request names a part."""
    number = target.query.get("partNumber", "")
    if not number.isdigit() or not 1 <= int(number) <= MAX_PART_NUMBER:
        return None
    return gateway.open_part(
        target.bucket,
        target.key,
        target.query["uploadId"],
        int(number),
        size,
        digests=digests,
        expect=expect,
    )


def network_digests(headers: Mapping[str, Sequence[str]]) -> tuple[list[str], dict[str, str]]:
    """The digests the network is to compute of a body, and those the client declared.

    The MD5 (the ETag) and the checksums the request asks for; declared are
    ``Content-MD5`` and the ``x-amz-checksum-*`` values of the headers, which are checked
    for form here, so that a malformed one is refused before the body is read.
    """
    names = requested_checksums(headers)
    expect: dict[str, str] = {}
    content_md5 = first(headers, "content-md5")
    if content_md5 is not None:
        decode_md5(content_md5)
        expect["md5"] = content_md5
    for name in names:
        given = first(headers, CHECKSUM_HEADER + name)
        if given is not None:
            decode_b64(name, given)
            expect[name] = given
    return ["md5", *names], expect


def decode_md5(value: str) -> bytes:
    """The 16 bytes of a ``Content-MD5`` value; raise ``InvalidDigest`` if it is not one."""
    try:
        declared = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        declared = b""
    if len(declared) != 16:
        raise S3Error.of("InvalidDigest", "The Content-MD5 you specified was invalid.")
    return declared
