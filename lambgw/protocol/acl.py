"""Access control lists: what keeps an object or bucket private, and what would open it.

Every object and bucket of the gateway belongs to the account and only to it.  An ACL that
says just that (the canned ``private``, a grant to the owner alone) is accepted as it is what
already holds; one that would grant anybody else anything is NotImplemented, never ignored.
Headers have lower-case names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import children, local, parse, text

#: Canned ACLs that grant nobody but the owner (the bucket's owner is the object's).
PRIVATE_CANNED = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})
#: Canned ACLs that would let others in.
OPEN_CANNED = frozenset(
    {
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "log-delivery-write",
    }
)
#: Headers that grant a permission to the grantees they list.
GRANT_HEADERS = (
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
)
#: One grantee of a grant header: ``id="..."``, ``uri="..."`` or ``emailAddress="..."``.
_GRANTEE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*"([^"]*)"\s*(?:,|$)')


def _opens(what: str) -> S3Error:
    return S3Error(
        "NotImplemented",
        501,
        "A header or body you provided implies functionality that is not implemented: "
        f"{what} would grant access to others than the owner.",
    )


def _grantees(value: str) -> list[tuple[str, str]]:
    """The ``(type, value)`` grantees of a grant header; InvalidArgument if malformed."""
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(value):
        match = _GRANTEE.match(value, position)
        if match is None or match.end() == position:
            raise S3Error.of("InvalidArgument", f"Invalid grantee in a grant header: {value}")
        found.append((match.group(1), match.group(2)))
        position = match.end()
    if not found:
        raise S3Error.of("InvalidArgument", "A grant header names no grantee.")
    return found


def acl_headers_given(headers: Mapping[str, Sequence[str]]) -> bool:
    """Whether a request sets an ACL by its headers."""
    return "x-amz-acl" in headers or any(name in headers for name in GRANT_HEADERS)


def check_acl_headers(headers: Mapping[str, Sequence[str]], owner_id: str) -> None:
    """Accept ACL headers that keep the resource private to ``owner_id``; refuse the others.

    An unknown canned ACL is InvalidArgument, a canned ACL with grant headers is
    InvalidRequest, as in S3; one that would open access is NotImplemented (501).
    """
    canned = headers.get("x-amz-acl")
    grants = [name for name in GRANT_HEADERS if name in headers]
    if canned is not None:
        if grants:
            raise S3Error.of(
                "InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed"
            )
        value = canned[0].strip()
        if value in OPEN_CANNED:
            raise _opens(f"x-amz-acl: {value}")
        if value not in PRIVATE_CANNED:
            raise S3Error.of("InvalidArgument", f"Invalid canned ACL: {value}")
    for name in grants:
        for kind, grantee in _grantees(",".join(headers[name])):
            if kind != "id" or grantee != owner_id:
                raise _opens(f'{name}: {kind}="{grantee}"')


def check_policy(body: bytes, owner_id: str) -> None:
    """Accept an ``AccessControlPolicy`` whose grants all go to ``owner_id``; refuse others."""
    tree = parse(body, "AccessControlPolicy")
    for acl in children(tree, "AccessControlList"):
        for grant in children(acl, "Grant"):
            grantees = children(grant, "Grantee")
            if len(grantees) != 1 or text(grant, "Permission") is None:
                raise S3Error.of("MalformedACLError", _MALFORMED)
            grantee = grantees[0]
            kind = next(
                (value for name, value in grantee.attrib.items() if local(name) == "type"), ""
            )
            if kind != "CanonicalUser" or (text(grantee, "ID") or "").strip() != owner_id:
                named = text(grantee, "ID") or text(grantee, "URI") or text(grantee, "EmailAddress")
                raise _opens(f"a grant to {kind or 'a grantee'} {named or ''}".rstrip())


_MALFORMED = (
    "The XML you provided was not well-formed or did not validate against our published schema"
)
