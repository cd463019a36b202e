"""Object tagging: PutObjectTagging, GetObjectTagging and DeleteObjectTagging.

Tags are stored in the network with the object; PutObject, CopyObject and
CreateMultipartUpload set them from ``x-amz-tagging`` (see :mod:`lambgw.protocol.tagging`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks

from lambgw.protocol.auth import PayloadMode
from lambgw.protocol.checksums import new_checksum, normalize_name
from lambgw.protocol.errors import S3Error
from lambgw.protocol.tagging import parse_tagging, parse_tagging_header, tagging_document
from lambgw.s3.front import CHECKSUM_HEADER, first, header_map, requested_checksums
from lambgw.s3.request import S3Request, Target

if TYPE_CHECKING:
    from lambgw.s3.api import S3API


def verified_xml(request: S3Request, headers: Mapping[str, Sequence[str]]) -> bytes:
    """The request's XML body, checked against its SHA-256, Content-MD5 and checksums."""
    body = request.s3.xml()
    auth = request.s3.auth
    if auth.payload is PayloadMode.SIGNED and not hmac.compare_digest(
        hashlib.sha256(body).hexdigest(), auth.content_sha256 or ""
    ):
        raise S3Error.of(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    content_md5 = first(headers, "content-md5")
    md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
    if content_md5 is not None and content_md5 != md5:
        raise S3Error.of(
            "BadDigest", "The Content-MD5 you specified did not match what we received."
        )
    for name in requested_checksums(headers):
        given = first(headers, CHECKSUM_HEADER + name)
        if given is None:
            continue
        computed = new_checksum(normalize_name(name))
        computed.update(body)
        if given != computed.b64():
            raise S3Error.of(
                "BadDigest",
                f"The {name.upper()} you specified did not match the calculated checksum.",
            )
    return body


def copy_tags(headers: Mapping[str, Sequence[str]]) -> dict[str, str] | None:
    """The tags a CopyObject gives its copy (``None``: the source's).

    ``x-amz-tagging-directive: REPLACE`` takes ``x-amz-tagging`` (none if absent).
    """
    directive = (first(headers, "x-amz-tagging-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error.of("InvalidArgument", "Unknown tagging directive.")
    if directive == "COPY":
        return None
    return parse_tagging_header(first(headers, "x-amz-tagging") or "")


@inlineCallbacks
def get_object_tagging(
    api: S3API, request: S3Request, target: Target
) -> Generator[Deferred[Any], Any, bytes]:
    """GetObjectTagging: the object's tag set."""
    tags = yield api.gateway.get_tags(target.bucket, target.key)
    request.setHeader(b"Content-Type", b"application/xml")
    return tagging_document(tags)


@inlineCallbacks
def put_object_tagging(
    api: S3API, request: S3Request, target: Target
) -> Generator[Deferred[Any], Any, bytes]:
    """PutObjectTagging: the object's tag set replaced by the document's."""
    tags = parse_tagging(verified_xml(request, header_map(request)))
    yield api.gateway.put_tags(target.bucket, target.key, tags)
    request.setHeader(b"Content-Length", b"0")
    return b""


@inlineCallbacks
def delete_object_tagging(
    api: S3API, request: S3Request, target: Target
) -> Generator[Deferred[Any], Any, bytes]:
    """DeleteObjectTagging: the object's tags removed; 204."""
    yield api.gateway.put_tags(target.bucket, target.key, {})
    request.setResponseCode(204)
    return b""


TAGGING_HANDLERS = {
    "GET": get_object_tagging,
    "PUT": put_object_tagging,
    "DELETE": delete_object_tagging,
}
