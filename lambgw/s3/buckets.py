"""Bucket operations: ListBuckets, Head/Create/DeleteBucket, location, ListObjects v1 and v2."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from lambgw.protocol.acl import check_acl_headers
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import (
    common_prefixes,
    contents,
    document,
    element,
    iso8601,
    owner,
    url_encode,
)
from lambgw.s3.front import header_map
from lambgw.s3.request import S3Request, Target

if TYPE_CHECKING:
    from lambgw.s3.api import S3API

#: The most keys one listing page returns, as in S3.
MAX_KEYS = 1000
#: The most buckets one ListBuckets page may ask for, as in S3.
MAX_BUCKETS = 10000
#: The region every bucket is in.
REGION = "us-east-1"


def _xml(request: S3Request, body: bytes) -> bytes:
    request.setHeader(b"Content-Type", b"application/xml")
    return body


def _max_buckets(query: Any) -> int | None:
    raw = query.get("max-buckets")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_BUCKETS:
        raise S3Error.of(
            "InvalidArgument",
            f"Argument max-buckets must be an integer between 1 and {MAX_BUCKETS}",
        )
    return int(raw)


@inlineCallbacks
def list_buckets(api: S3API, request: S3Request, target: Target) -> Any:
    """ListBuckets: the orders (lambgw) or the buckets of the order (s3gw), synced now.

    Buckets come in name order, ``prefix`` and ``bucket-region`` filter them, and with
    ``max-buckets`` they come in pages joined by ``continuation-token``, as in S3.
    """
    query = target.query
    limit = _max_buckets(query)
    token = query.get("continuation-token")
    after = _untoken(token) if token else ""
    prefix = query.get("prefix", "")
    region = query.get("bucket-region", REGION)
    found = yield api.gateway.list_buckets()
    wanted = sorted(
        (b for b in found if b.name.startswith(prefix) and b.name > after and region == REGION),
        key=lambda b: b.name,
    )
    page = wanted if limit is None else wanted[:limit]
    items = "".join(
        "<Bucket>"
        + element("Name", b.name)
        + element("CreationDate", iso8601(b.created))
        + element("BucketRegion", REGION)
        + "</Bucket>"
        for b in page
    )
    more = len(page) < len(wanted)
    return _xml(
        request,
        document(
            "ListAllMyBucketsResult",
            owner(api.owner_id, api.gateway.account)
            + f"<Buckets>{items}</Buckets>"
            + (element("ContinuationToken", _token(page[-1].name)) if more else "")
            + (element("Prefix", prefix) if "prefix" in query else ""),
        ),
    )


@inlineCallbacks
def head_bucket(api: S3API, request: S3Request, target: Target) -> Any:
    """HeadBucket: 200 if the bucket exists for this account."""
    yield api.gateway.bucket(target.bucket)
    request.setHeader(b"x-amz-bucket-region", b"us-east-1")
    return b""


@inlineCallbacks
def get_location(api: S3API, request: S3Request, target: Target) -> Any:
    """GetBucketLocation: the default region (an empty constraint, as for us-east-1)."""
    yield api.gateway.bucket(target.bucket)
    return _xml(request, document("LocationConstraint", ""))


@inlineCallbacks
def get_versioning(api: S3API, request: S3Request, target: Target) -> Any:
    """GetBucketVersioning: versioning has never been enabled."""
    yield api.gateway.bucket(target.bucket)
    return _xml(request, document("VersioningConfiguration", ""))


@inlineCallbacks
def get_acl(api: S3API, request: S3Request, target: Target) -> Any:
    """GetBucketAcl/GetObjectAcl: the owner has full control, nobody else has access."""
    yield api.gateway.bucket(target.bucket)
    if target.key:
        yield api.gateway.head_object(target.bucket, target.key)
    grantee = (
        '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">'
        + element("ID", api.owner_id)
        + element("DisplayName", api.gateway.account)
        + "</Grantee>"
    )
    return _xml(
        request,
        document(
            "AccessControlPolicy",
            owner(api.owner_id, api.gateway.account)
            + f"<AccessControlList><Grant>{grantee}"
            + "<Permission>FULL_CONTROL</Permission></Grant></AccessControlList>",
        ),
    )


@inlineCallbacks
def create_bucket(api: S3API, request: S3Request, target: Target) -> Any:
    """CreateBucket (s3gw); in lambgw mode only one's own order "exists already".

    An ACL that would open the bucket to others is NotImplemented.
    """
    request.s3.xml()
    check_acl_headers(header_map(request), api.owner_id)
    yield api.gateway.create_bucket(target.bucket)
    request.setHeader(b"Location", b"/" + target.bucket.encode())
    return b""


@inlineCallbacks
def delete_bucket(api: S3API, request: S3Request, target: Target) -> Any:
    """DeleteBucket: only an empty bucket, only in s3gw mode."""
    yield api.gateway.delete_bucket(target.bucket)
    request.setResponseCode(204)
    return b""


def _max_keys(query: dict[str, str] | Any) -> int:
    raw = query.get("max-keys")
    if raw is None:
        return MAX_KEYS
    if not raw.isdigit():
        raise S3Error.of(
            "InvalidArgument", "Provided max-keys not an integer or within integer range"
        )
    return min(int(raw), MAX_KEYS)


def _encoding(query: Any) -> bool:
    kind = query.get("encoding-type")
    if kind is None:
        return False
    if kind != "url":
        raise S3Error.of("InvalidArgument", "Invalid Encoding Method specified in Request")
    return True


@inlineCallbacks
def _page(api: S3API, target: Target, marker: str) -> Any:
    query = target.query
    max_keys = _max_keys(query)
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    if max_keys == 0:
        yield api.gateway.bucket(target.bucket)
        from lambgw.network.interface import ListPage

        return ListPage([], [], False, None), prefix, delimiter, max_keys
    page = yield api.gateway.list_objects(target.bucket, prefix, delimiter, marker, max_keys)
    return page, prefix, delimiter, max_keys


@inlineCallbacks
def list_objects_v1(api: S3API, request: S3Request, target: Target) -> Any:
    """ListObjects (v1): marker, prefix, delimiter, max-keys, encoding-type."""
    encode = _encoding(target.query)
    marker = target.query.get("marker", "")
    page, prefix, delimiter, max_keys = yield _page(api, target, marker)
    enc = url_encode if encode else (lambda s: s)
    body = (
        element("Name", target.bucket)
        + element("Prefix", enc(prefix))
        + element("Marker", enc(marker))
        + element("MaxKeys", max_keys)
        + (element("Delimiter", enc(delimiter)) if delimiter else "")
        + element("IsTruncated", page.is_truncated)
        + (
            element("NextMarker", enc(page.next_marker))
            if page.is_truncated and delimiter and page.next_marker
            else ""
        )
        + (element("EncodingType", "url") if encode else "")
        + contents(page.objects, encode, owner(api.owner_id, api.gateway.account))
        + common_prefixes(page.common_prefixes, encode)
    )
    return _xml(request, document("ListBucketResult", body))


def _token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode("ascii")


def _untoken(token: str) -> str:
    try:
        raw = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise S3Error.of(
            "InvalidArgument", "The continuation token provided is incorrect"
        ) from None


@inlineCallbacks
def list_objects_v2(api: S3API, request: S3Request, target: Target) -> Any:
    """ListObjectsV2: continuation-token, start-after, fetch-owner, key-count."""
    query = target.query
    encode = _encoding(query)
    token = query.get("continuation-token")
    start_after = query.get("start-after", "")
    marker = _untoken(token) if token is not None else start_after
    page, prefix, delimiter, max_keys = yield _page(api, target, marker)
    enc = url_encode if encode else (lambda s: s)
    fetch_owner = query.get("fetch-owner", "false").lower() == "true"
    body = (
        element("Name", target.bucket)
        + element("Prefix", enc(prefix))
        + (element("StartAfter", enc(start_after)) if start_after else "")
        + element("KeyCount", len(page.objects) + len(page.common_prefixes))
        + element("MaxKeys", max_keys)
        + (element("Delimiter", enc(delimiter)) if delimiter else "")
        + element("IsTruncated", page.is_truncated)
        + (element("ContinuationToken", token) if token is not None else "")
        + (
            element("NextContinuationToken", _token(page.next_marker))
            if page.is_truncated and page.next_marker
            else ""
        )
        + (element("EncodingType", "url") if encode else "")
        + contents(
            page.objects,
            encode,
            owner(api.owner_id, api.gateway.account) if fetch_owner else None,
        )
        + common_prefixes(page.common_prefixes, encode)
    )
    return _xml(request, document("ListBucketResult", body))
