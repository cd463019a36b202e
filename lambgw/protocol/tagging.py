"""Object tags: S3's tag sets, read from ``x-amz-tagging`` or a ``<Tagging>`` document.

A tag set holds at most 10 tags with unique keys; a key is 1 to 128 characters, a value 0
to 256, both letters, digits, spaces and ``_ . : / = + - @`` only, and no key starts with
``aws:``.  A set that breaks a rule earns the error S3 gives.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from urllib.parse import quote, unquote_to_bytes

from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import children, document, element, parse, text

#: The most tags an object may have.
MAX_TAGS = 10
#: The longest tag key and value, in characters.
MAX_KEY = 128
MAX_VALUE = 256
#: The largest ``<Tagging>`` document read (10 tags of the longest, escaped, fit easily).
MAX_TAGGING_BODY = 64 * 1024

_PUNCTUATION = frozenset("_.:/=+-@")
_BAD_HEADER = (
    "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query "
    "parameters without tag name duplicates."
)


def _allowed(value: str) -> bool:
    return all(c in _PUNCTUATION or unicodedata.category(c)[0] in "LZN" for c in value)


def check_tags(tags: Mapping[str, str]) -> None:
    """Refuse a tag set that S3 would refuse, with S3's error."""
    if len(tags) > MAX_TAGS:
        raise S3Error.of("BadRequest", f"Object tags cannot be greater than {MAX_TAGS}")
    for key, value in tags.items():
        if len(key) > MAX_KEY:
            raise S3Error.of(
                "InvalidTag", f"The TagKey you have provided is too long, max {MAX_KEY}"
            )
        if len(value) > MAX_VALUE:
            raise S3Error.of(
                "InvalidTag", f"The TagValue you have provided is too long, max {MAX_VALUE}"
            )
        if not key or not _allowed(key):
            raise S3Error.of("InvalidTag", "The TagKey you have provided is invalid")
        if not _allowed(value):
            raise S3Error.of("InvalidTag", "The TagValue you have provided is invalid")
        if key.lower().startswith("aws:"):
            raise S3Error.of("InvalidTag", "Your TagKey cannot be prefixed with aws:")


def parse_tagging_header(value: str) -> dict[str, str]:
    """The tags of an ``x-amz-tagging`` header: ``k1=v1&k2=v2``, URL-encoded UTF-8."""
    tags: dict[str, str] = {}
    for item in value.split("&"):
        if not item:
            continue
        name, _, tag_value = item.partition("=")
        try:
            key = unquote_to_bytes(name.replace("+", " ")).decode("utf-8")
            decoded = unquote_to_bytes(tag_value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error.of("InvalidArgument", _BAD_HEADER) from None
        if key in tags:
            raise S3Error.of("InvalidArgument", _BAD_HEADER)
        tags[key] = decoded
    check_tags(tags)
    return tags


def tagging_header(tags: Mapping[str, str]) -> str:
    """The ``x-amz-tagging`` form of ``tags`` (what :func:`parse_tagging_header` reads)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in tags.items())


def parse_tagging(body: bytes) -> dict[str, str]:
    """The tags of a PutObjectTagging document (``<Tagging><TagSet><Tag>...``)."""
    if len(body) > MAX_TAGGING_BODY:
        raise S3Error.of("MalformedXML", "The Tagging document is too large.")
    tree = parse(body, "Tagging")
    sets = children(tree, "TagSet")
    if len(sets) != 1:
        raise S3Error.of(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our "
            "published schema.",
        )
    tags: dict[str, str] = {}
    elements = children(sets[0], "Tag")
    if len(elements) > MAX_TAGS:
        raise S3Error.of("BadRequest", f"Object tags cannot be greater than {MAX_TAGS}")
    for tag in elements:
        key, value = text(tag, "Key"), text(tag, "Value")
        if key is None or value is None:
            raise S3Error.of(
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our "
                "published schema.",
            )
        if key in tags:
            raise S3Error.of("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[key] = value
    check_tags(tags)
    return tags


def tagging_document(tags: Mapping[str, str]) -> bytes:
    """The GetObjectTagging answer for ``tags``."""
    body = "".join(
        "<Tag>" + element("Key", key) + element("Value", value) + "</Tag>"
        for key, value in tags.items()
    )
    return document("Tagging", f"<TagSet>{body}</TagSet>")
