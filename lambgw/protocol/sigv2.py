"""AWS Signature Version 2 for S3 (``Authorization: AWS AK:sig`` and presigned ``Signature=``).

Older clients (s3cmd with ``signature_v2``, boto's ``s3`` signature) still sign this way.
The string to sign covers the method, ``Content-MD5``, ``Content-Type``, the date (or the
expiry of a presigned URL), the ``x-amz-*`` headers and the resource: the raw path plus the
sub-resources S3 signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final

from lambgw.protocol.sigv4 import parse_query

#: The query parameters that are part of the signed resource.
SUBRESOURCES: Final = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "defaultObjectAcl",
        "delete",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "partNumber",
        "policy",
        "replication",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "select",
        "select-type",
        "storageClass",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)


def canonical_resource(raw_path: str, raw_query: str, bucket_from_host: str | None = None) -> str:
    """Return the signed resource: the raw path and the sorted signed sub-resources.

    For virtual-hosted requests the bucket named by the host is prefixed to the path.
    Sub-resource values are decoded; a sub-resource without ``=`` stays bare.
    """
    path = raw_path or "/"
    if bucket_from_host is not None:
        path = f"/{bucket_from_host}{path}"
    subresources = []
    for item in raw_query.split("&"):
        name, eq, _ = item.partition("=")
        if name in SUBRESOURCES:
            value = parse_query(item)[0][1] if eq else None
            subresources.append((name, value))
    if not subresources:
        return path
    subresources.sort(key=lambda pair: pair[0])
    signed = "&".join(name if value is None else f"{name}={value}" for name, value in subresources)
    return f"{path}?{signed}"


def string_to_sign(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, Sequence[str]],
    date: str,
    bucket_from_host: str | None = None,
) -> str:
    """Return the SigV2 string to sign.

    ``headers`` has lower-case names; ``date`` is the ``Date`` header, ``""`` when
    ``x-amz-date`` is sent, or the ``Expires`` of a presigned URL.
    """

    def first(name: str) -> str:
        values = headers.get(name, ())
        return values[0].strip() if values else ""

    amz_lines = "".join(
        f"{name}:{','.join(v.strip() for v in headers[name])}\n"
        for name in sorted(n for n in headers if n.startswith("x-amz-"))
    )
    resource = canonical_resource(raw_path, raw_query, bucket_from_host)
    return (
        f"{method}\n{first('content-md5')}\n{first('content-type')}\n{date}\n{amz_lines}{resource}"
    )


def sign(secret: str, text: str) -> str:
    """Return the base64 HMAC-SHA1 signature of ``text``."""
    message = text.encode("utf-8", "surrogateescape")
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")
