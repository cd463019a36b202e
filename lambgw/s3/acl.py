"""PutBucketAcl and PutObjectAcl: an ACL that keeps things private is what already holds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from lambgw.protocol.acl import acl_headers_given, check_acl_headers, check_policy
from lambgw.protocol.errors import S3Error
from lambgw.s3.front import header_map
from lambgw.s3.request import S3Request, Target

if TYPE_CHECKING:
    from lambgw.s3.api import S3API


@inlineCallbacks
def put_acl(api: S3API, request: S3Request, target: Target) -> Any:
    """PutBucketAcl/PutObjectAcl: accept an ACL private to the owner (headers or body).

    Nothing changes: every bucket and object is the owner's alone.  An ACL that would let
    anybody else in is NotImplemented.
    """
    body = request.s3.xml().strip()
    headers = header_map(request)
    yield api.gateway.bucket(target.bucket)
    if target.key:
        yield api.gateway.head_object(target.bucket, target.key)
    if acl_headers_given(headers):
        if body:
            raise S3Error.of("UnexpectedContent", "This request does not support content")
        check_acl_headers(headers, api.owner_id)
    elif body:
        check_policy(body, api.owner_id)
    else:
        raise S3Error.of("MissingSecurityHeader", "Your request was missing a required header")
    return b""
