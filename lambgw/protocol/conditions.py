"""Conditional writes, and the headers that change what a write does which are not acted upon.

S3 answers a header it does not implement with 501 NotImplemented naming it; a gateway that
ignored one would do something other than what the client asked (overwrite what it meant to
protect, store in the clear what it asked to have encrypted).  Headers have lower-case names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lambgw.protocol.acl import check_acl_headers
from lambgw.protocol.errors import S3Error

#: Operations whose headers are checked here.
PUT_OBJECT = "PutObject"
COPY_OBJECT = "CopyObject"
CREATE_MULTIPART = "CreateMultipartUpload"
UPLOAD_PART = "UploadPart"
COMPLETE_MULTIPART = "CompleteMultipartUpload"
DELETE_OBJECT = "DeleteObject"

#: Prefixes of headers no operation here acts upon: encryption with keys, object lock.
_UNSUPPORTED_PREFIXES = (
    "x-amz-server-side-encryption",
    "x-amz-copy-source-server-side-encryption",
    "x-amz-object-lock-",
)
#: Headers an operation does not act upon, beyond those prefixes.
_UNSUPPORTED: Mapping[str, frozenset[str]] = {
    PUT_OBJECT: frozenset(
        {
            "if-modified-since",
            "if-unmodified-since",
            "x-amz-website-redirect-location",
            "x-amz-write-offset-bytes",
        }
    ),
    COPY_OBJECT: frozenset(
        {
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "x-amz-website-redirect-location",
        }
    ),
    CREATE_MULTIPART: frozenset(
        {
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "x-amz-website-redirect-location",
        }
    ),
    UPLOAD_PART: frozenset(
        {"if-match", "if-none-match", "if-modified-since", "if-unmodified-since"}
    ),
    COMPLETE_MULTIPART: frozenset({"if-modified-since", "if-unmodified-since"}),
    DELETE_OBJECT: frozenset(
        {
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "x-amz-if-match-size",
            "x-amz-if-match-last-modified-time",
        }
    ),
}


def not_implemented_header(what: str) -> S3Error:
    """NotImplemented for a header this gateway does not act upon."""
    return S3Error(
        "NotImplemented",
        501,
        f"A header you provided implies functionality that is not implemented: {what}.",
    )


def refuse_unsupported(
    headers: Mapping[str, Sequence[str]], operation: str, owner_id: str | None = None
) -> None:
    """Raise NotImplemented if ``operation`` carries a header that would change it, unheeded.

    An operation that stores an object is given its owner, ``owner_id``, to check its ACL
    headers against.
    """
    unsupported = _UNSUPPORTED[operation]
    for name in sorted(headers):
        if name in unsupported or name.startswith(_UNSUPPORTED_PREFIXES):
            raise not_implemented_header(_display(name))
    if owner_id is None:
        return
    storage_class = headers.get("x-amz-storage-class")
    if storage_class and storage_class[0].strip() != "STANDARD":
        raise not_implemented_header(f"x-amz-storage-class {storage_class[0].strip()}")
    check_acl_headers(headers, owner_id)


def write_conditions(headers: Mapping[str, Sequence[str]]) -> tuple[bool, str | None]:
    """The conditions of a write: ``If-None-Match: *``, and the etag ``If-Match`` names.

    The etag comes without its quotes; ``*`` stands for any object.  ``If-None-Match``
    with anything but ``*`` is NotImplemented, as in S3.
    """
    if_none_match = headers.get("if-none-match")
    if if_none_match and if_none_match[0].strip() != "*":
        raise not_implemented_header("If-None-Match other than *")
    if_match = headers.get("if-match")
    return bool(if_none_match), unquote_etag(if_match[0]) if if_match else None


def unquote_etag(value: str) -> str:
    """An ETag as a condition names it, without quotes (or a weak marker); ``*`` stays."""
    value = value.strip()
    return value if value == "*" else value.removeprefix("W/").strip('"')


def _display(name: str) -> str:
    """A header name as S3 documents it (``If-Match``, ``x-amz-...``)."""
    return name if name.startswith("x-amz-") else "-".join(p.capitalize() for p in name.split("-"))
