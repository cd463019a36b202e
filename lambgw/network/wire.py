"""The network protocol's encodings, shared by the ``lambnet`` node and the HTTP client.

Orders, objects and listings travel as JSON; a listing page carries its objects as four
arrays, one per listed field (the node's SQLite writes them, and the gateway reads a thousand
objects with no Python work per object); an object's metadata
travels in the ``x-lamb-object`` header (compact ASCII JSON); errors are JSON ``{"code",
"message"}`` with an HTTP status, the code naming one of the exceptions of
:mod:`lambgw.network.errors`.  See ``docs/network-protocol.md``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote

from attrs import frozen

from lambgw.network import errors
from lambgw.network.interface import (
    CompletedPart,
    ListPage,
    MultipartUpload,
    NewObject,
    ObjectInfo,
    Order,
    PartInfo,
    PartsPage,
    UploadsPage,
    listed_objects,
    millis,
)
from lambgw.protocol.checksums import ALGORITHMS

#: The protocol version, first segment of every path.
VERSION = "v8"
OBJECT_HEADER = "x-lamb-object"
IF_NONE_MATCH_HEADER = "x-lamb-if-none-match"
#: Write or delete only if the object has this etag (``*``: if there is one).
IF_MATCH_HEADER = "x-lamb-if-match"
#: The sizes of the parts of a multipart object's body, in order (see :func:`format_part_sizes`).
PART_SIZES_HEADER = "x-lamb-part-sizes"
#: The most parts an object may have.
MAX_PARTS = 10_000
#: The most tags an object may have, and the longest tag key and value (as in S3).
MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE = 10, 128, 256
#: The error code, also in a header for the answers to HEAD, which have no body.
ERROR_HEADER = "x-lamb-error"
#: The query parameter of a streamed PUT that names the digests the node computes of its body.
DIGESTS_PARAMETER = "digests"
#: The digests a node computes when asked: the MD5 (an object's ETag) and S3's checksums.
DIGESTS = ("md5", *ALGORITHMS)

#: Error codes of the network's exceptions, with their HTTP status.
ERRORS: Mapping[str, tuple[type[errors.NetworkError], int]] = {
    "NoSuchAccount": (errors.NoSuchAccount, 404),
    "NoSuchOrder": (errors.NoSuchOrder, 404),
    "NoSuchPath": (errors.NoSuchPath, 404),
    "QuotaExceeded": (errors.QuotaExceeded, 413),
    "OrderExpired": (errors.OrderExpired, 403),
    "PreconditionFailed": (errors.PreconditionFailed, 412),
    "InvalidPath": (errors.InvalidPath, 400),
    "NoSuchUpload": (errors.NoSuchUpload, 404),
    "UploadExists": (errors.UploadExists, 409),
    "InvalidPart": (errors.InvalidPart, 400),
    "InvalidPartOrder": (errors.InvalidPartOrder, 400),
    "EntityTooSmall": (errors.EntityTooSmall, 400),
    "BadDigest": (errors.BadDigest, 400),
    "DigestMismatch": (errors.DigestMismatch, 400),
    "ServiceUnavailable": (errors.NetworkUnavailable, 503),
    "NetworkError": (errors.NetworkError, 400),
}

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class ProtocolError(Exception):
    """A request the node refuses: an HTTP status, an error code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        """Refuse with ``status`` and ``code``; ``message`` is for a person."""
        super().__init__(message)
        self.status = status
        self.code = code


def error_body(code: str, message: str) -> bytes:
    """Return the JSON body of an error."""
    return json.dumps({"code": code, "message": message}).encode("utf-8")


def code_of(error: errors.NetworkError) -> tuple[str, int]:
    """Return the code and status under which ``error`` is sent."""
    for code, (kind, status) in ERRORS.items():
        if type(error) is kind:
            return code, status
    return "NetworkError", 400


def error_from(status: int, body: bytes, header_code: str = "") -> errors.NetworkError:
    """Return the exception for an error answer of the node (``header_code``: its header)."""
    try:
        decoded = json.loads(body)
        code, message = str(decoded["code"]), str(decoded["message"])
    except (ValueError, KeyError, TypeError):
        code, message = header_code, body[:200].decode("utf-8", "replace") or header_code
    return error_named(status, code, message)


def error_named(status: int, code: str, message: str) -> errors.NetworkError:
    """Return the exception for an error of the node with ``status``, ``code`` and ``message``."""
    if code in ERRORS and code != "NetworkError":
        return ERRORS[code][0](message)
    if status >= 500:
        return errors.NetworkUnavailable(f"the network failed ({status}): {message}")
    return errors.NetworkError(f"the network refused the request ({status} {code}): {message}")


def conditions(if_none_match: bool, if_match: str | None) -> dict[str, str]:
    """The headers of a conditional write (none for an unconditional one)."""
    headers = {IF_NONE_MATCH_HEADER: "1"} if if_none_match else {}
    if if_match is not None:
        headers[IF_MATCH_HEADER] = if_match
    return headers


def quote_path(path: str) -> str:
    """Return ``path`` percent-encoded for a query parameter (every reserved byte quoted)."""
    try:
        return quote(path.encode("utf-8"), safe="")
    except UnicodeEncodeError:
        raise errors.InvalidPath("the path is not valid UTF-8") from None


def format_part_sizes(sizes: Sequence[int]) -> str:
    """Return the ``x-lamb-part-sizes`` value of ``sizes``: runs of a size as ``SIZE*COUNT``."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return ",".join(f"{size}*{count}" if count > 1 else str(size) for size, count in runs)


def parse_part_sizes(value: str | None) -> list[int] | None:
    """Return the part sizes of an ``x-lamb-part-sizes`` header (``None`` if absent)."""
    if value is None:
        return None
    sizes: list[int] = []
    for run in value.split(",") if value.strip() else []:
        size, star, count = run.strip().partition("*")
        if not size.isdigit() or (star and not count.isdigit()):
            raise ProtocolError(400, "BadRequest", f"malformed {PART_SIZES_HEADER}")
        repeat = int(count) if count else 1
        if len(sizes) + repeat > MAX_PARTS:
            raise ProtocolError(400, "BadRequest", f"more than {MAX_PARTS} parts")
        sizes += [int(size)] * repeat
    return sizes


def format_digests(names: Sequence[str]) -> str:
    """Return the ``digests`` parameter asking for ``names``."""
    return ",".join(names)


def parse_digests(value: str) -> tuple[str, ...]:
    """Return the digests a ``digests`` parameter names; raise ``ProtocolError`` if malformed.

    Each is one of :data:`DIGESTS`, named once.
    """
    names = tuple(value.split(","))
    if not set(names) <= set(DIGESTS) or len(set(names)) != len(names):
        raise ProtocolError(
            400,
            "BadRequest",
            f"{DIGESTS_PARAMETER} names each of {', '.join(DIGESTS)} once at most",
        )
    return names


def parse_range(value: str | None) -> tuple[int, int | None]:
    """Return the ``first`` and ``last`` of a ``Range: bytes=F-[L]`` header (whole if absent)."""
    if not value:
        return 0, None
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        raise ProtocolError(400, "BadRequest", f"unsupported Range: {value!r}")
    first, last = int(match[1]), int(match[2]) if match[2] else None
    if last is not None and last < first:
        raise ProtocolError(400, "BadRequest", f"empty Range: {value!r}")
    return first, last


def order_to_json(order: Order) -> dict[str, Any]:
    """Return an order as JSON."""
    return {
        "order_id": order.order_id,
        "account": order.account,
        "capacity": order.capacity,
        "used": order.used,
        "created": order.created,
        "expires": order.expires,
        "status": order.status,
    }


def order_from_json(data: Mapping[str, Any]) -> Order:
    """Return the order of its JSON."""
    return Order(
        order_id=str(data["order_id"]),
        account=str(data["account"]),
        capacity=int(data["capacity"]),
        used=int(data["used"]),
        created=float(data["created"]),
        expires=float(data["expires"]),
        status=str(data["status"]),
    )


def new_to_json(new: NewObject) -> dict[str, Any]:
    """Return what is known of an object to store, as JSON."""
    return {
        "size": new.size,
        "etag": new.etag,
        "content_type": new.content_type,
        "metadata": dict(new.metadata),
        "headers": dict(new.headers),
        "checksums": dict(new.checksums),
        "checksum_type": new.checksum_type,
        "tags": dict(new.tags),
    }


def description_json(new: NewObject, expect: Mapping[str, str] | None = None) -> str:
    """Return the description of a streamed body's trailer: ``new``, and the digests expected.

    ``expect`` maps digests asked of the node (``md5`` and checksum algorithms) to the
    base64 values the S3 client declared for them.
    """
    value = new_to_json(new)
    if expect:
        value["expect"] = dict(expect)
    return header_json(value)


def expect_from_json(data: Mapping[str, Any]) -> dict[str, str]:
    """Return the digests a description expects (none if it names none)."""
    try:
        return _strings(data.get("expect", {}))
    except TypeError:
        raise ProtocolError(400, "BadRequest", "expect is not a map of strings") from None


def tags_from_json(value: Any) -> dict[str, str]:
    """Return the tags of their JSON (a map); raise ``ProtocolError`` if malformed or too many."""
    try:
        tags = _strings(value)
    except TypeError:
        raise ProtocolError(400, "BadRequest", "the tags are not a map of strings") from None
    if len(tags) > MAX_TAGS or any(
        len(k) > MAX_TAG_KEY or len(v) > MAX_TAG_VALUE for k, v in tags.items()
    ):
        raise ProtocolError(400, "BadRequest", "too many tags, or a tag too long")
    return tags


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("expected an object of strings")
    return {str(k): str(v) for k, v in value.items()}


def new_from_json(data: Mapping[str, Any]) -> NewObject:
    """Return the :class:`NewObject` of its JSON; raise ``ProtocolError`` if malformed."""
    try:
        return NewObject(
            size=int(data["size"]),
            etag=str(data["etag"]),
            content_type=str(data["content_type"]),
            metadata=_strings(data["metadata"]),
            headers=_strings(data["headers"]),
            checksums=_strings(data["checksums"]),
            checksum_type=str(data["checksum_type"]),
            tags=tags_from_json(data.get("tags", {})),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(400, "BadRequest", f"malformed object description: {e}") from None


def info_to_json(info: ObjectInfo) -> dict[str, Any]:
    """Return an object's description as JSON."""
    return {
        "order_id": info.order_id,
        "path": info.path,
        "size": info.size,
        "etag": info.etag,
        "last_modified": info.last_modified,
        "content_type": info.content_type,
        "metadata": dict(info.metadata),
        "headers": dict(info.headers),
        "checksums": dict(info.checksums),
        "checksum_type": info.checksum_type,
        "part_sizes": list(info.part_sizes),
        "tag_count": info.tag_count,
    }


def info_from_json(data: Mapping[str, Any]) -> ObjectInfo:
    """Return the :class:`ObjectInfo` of its JSON."""
    part_sizes: Any = tuple(int(n) for n in data["part_sizes"])
    return ObjectInfo(
        order_id=str(data["order_id"]),
        path=str(data["path"]),
        size=int(data["size"]),
        etag=str(data["etag"]),
        last_modified=float(data["last_modified"]),
        content_type=str(data["content_type"]),
        metadata=_strings(data["metadata"]),
        headers=_strings(data["headers"]),
        checksums=_strings(data["checksums"]),
        checksum_type=str(data["checksum_type"]),
        part_sizes=part_sizes,
        tag_count=int(data.get("tag_count", 0)),
    )


class PageColumns(NamedTuple):
    """A listing page as it travels: its objects as four JSON arrays, one per listed field.

    The node's store writes the arrays (SQLite does, for a listing without a delimiter);
    :func:`page_body` puts them in the answer as they are.
    """

    #: JSON arrays of the listed objects' paths, sizes, ETags, and times in milliseconds.
    paths: str
    sizes: str
    etags: str
    millis: str
    common_prefixes: Sequence[str]
    is_truncated: bool
    next_marker: str | None

    @classmethod
    def of(cls, page: ListPage) -> PageColumns:
        """The columns of a page listed in Python."""
        objects = page.objects
        return cls(
            paths=json.dumps([o.path for o in objects]),
            sizes=json.dumps([o.size for o in objects]),
            etags=json.dumps([o.etag for o in objects]),
            millis=json.dumps([millis(o.last_modified) for o in objects]),
            common_prefixes=page.common_prefixes,
            is_truncated=page.is_truncated,
            next_marker=page.next_marker,
        )


def page_body(page: PageColumns) -> bytes:
    """The JSON answer of a listing: ``{"paths", "sizes", "etags", "millis", ...}``."""
    rest = json.dumps(
        {
            "common_prefixes": list(page.common_prefixes),
            "is_truncated": page.is_truncated,
            "next_marker": page.next_marker,
        }
    )
    return (
        f'{{"paths":{page.paths},"sizes":{page.sizes},"etags":{page.etags},'
        f'"millis":{page.millis},{rest[1:]}'
    ).encode()


def _all(values: Any, kind: type) -> bool:
    """Whether ``values`` is a list of exactly ``kind`` (``bool`` is not an ``int``)."""
    return type(values) is list and set(map(type, values)) <= {kind}


def page_from_json(data: Any) -> ListPage:
    """Return the listing page of its JSON; raise ``NetworkError`` if malformed."""
    try:
        paths, sizes, etags, times = data["paths"], data["sizes"], data["etags"], data["millis"]
        if not (_all(paths, str) and _all(etags, str) and _all(sizes, int) and _all(times, int)):
            raise TypeError("a listed column is not a list of strings or integers")
        objects = listed_objects(paths, sizes, etags, [t / 1000 for t in times])
        prefixes, marker = data["common_prefixes"], data["next_marker"]
        if not _all(prefixes, str) or not (marker is None or type(marker) is str):
            raise TypeError("the common prefixes or the next marker are not strings")
        return ListPage(
            objects=objects,
            common_prefixes=prefixes,
            is_truncated=bool(data["is_truncated"]),
            next_marker=marker,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise errors.NetworkError(f"the network node sent a malformed listing: {e!r}") from None


def upload_to_json(upload: MultipartUpload) -> dict[str, Any]:
    """Return an open multipart upload as JSON."""
    return {
        "upload_id": upload.upload_id,
        "order_id": upload.order_id,
        "path": upload.path,
        "created": upload.created,
        "content_type": upload.content_type,
        "metadata": dict(upload.metadata),
        "headers": dict(upload.headers),
        "checksum_algorithm": upload.checksum_algorithm,
        "checksum_type": upload.checksum_type,
        "last_active": upload.last_active,
        "parts": upload.parts,
        "size": upload.size,
    }


def upload_from_json(data: Mapping[str, Any]) -> MultipartUpload:
    """Return the multipart upload of its JSON."""
    return MultipartUpload(
        upload_id=str(data["upload_id"]),
        order_id=str(data["order_id"]),
        path=str(data["path"]),
        created=float(data["created"]),
        content_type=str(data["content_type"]),
        metadata=_strings(data["metadata"]),
        headers=_strings(data["headers"]),
        checksum_algorithm=str(data["checksum_algorithm"]),
        checksum_type=str(data["checksum_type"]),
        last_active=float(data["last_active"]),
        parts=int(data["parts"]),
        size=int(data["size"]),
    )


def part_to_json(part: PartInfo) -> dict[str, Any]:
    """Return a stored part as JSON."""
    return {
        "number": part.number,
        "size": part.size,
        "etag": part.etag,
        "last_modified": part.last_modified,
        "checksums": dict(part.checksums),
    }


def part_from_json(data: Mapping[str, Any]) -> PartInfo:
    """Return the stored part of its JSON."""
    return PartInfo(
        number=int(data["number"]),
        size=int(data["size"]),
        etag=str(data["etag"]),
        last_modified=float(data["last_modified"]),
        checksums=_strings(data["checksums"]),
    )


def uploads_page_to_json(page: UploadsPage) -> dict[str, Any]:
    """Return a page of open uploads as JSON."""
    return {
        "uploads": [upload_to_json(u) for u in page.uploads],
        "common_prefixes": list(page.common_prefixes),
        "is_truncated": page.is_truncated,
        "next_key_marker": page.next_key_marker,
        "next_upload_id_marker": page.next_upload_id_marker,
    }


def uploads_page_from_json(data: Mapping[str, Any]) -> UploadsPage:
    """Return the page of open uploads of its JSON."""
    return UploadsPage(
        uploads=[upload_from_json(u) for u in data["uploads"]],
        common_prefixes=[str(p) for p in data["common_prefixes"]],
        is_truncated=bool(data["is_truncated"]),
        next_key_marker=str(data["next_key_marker"]),
        next_upload_id_marker=str(data["next_upload_id_marker"]),
    )


def parts_page_to_json(page: PartsPage) -> dict[str, Any]:
    """Return an upload and a page of its parts as JSON."""
    return {
        "upload": upload_to_json(page.upload),
        "parts": [part_to_json(p) for p in page.parts],
        "is_truncated": page.is_truncated,
        "next_marker": page.next_marker,
    }


def parts_page_from_json(data: Mapping[str, Any]) -> PartsPage:
    """Return the upload and page of parts of its JSON."""
    return PartsPage(
        upload=upload_from_json(data["upload"]),
        parts=[part_from_json(p) for p in data["parts"]],
        is_truncated=bool(data["is_truncated"]),
        next_marker=int(data["next_marker"]),
    )


@frozen
class Completion:
    """A completion request: the named parts, the whole object's checksums, the conditions."""

    parts: list[CompletedPart]
    checksums: dict[str, str]
    if_none_match: bool = False
    if_match: str | None = None


def completion_to_json(
    parts: Sequence[CompletedPart],
    checksums: Mapping[str, str],
    if_none_match: bool = False,
    if_match: str | None = None,
) -> bytes:
    """Return the body of a completion: the named parts, checksums and write conditions."""
    named = [{"number": p.number, "etag": p.etag, "checksums": dict(p.checksums)} for p in parts]
    body = {
        "parts": named,
        "checksums": dict(checksums),
        "if_none_match": if_none_match,
        "if_match": if_match,
    }
    return json.dumps(body).encode("utf-8")


def completion_from_json(data: Any) -> Completion:
    """Return the completion a request body asks; ``ProtocolError`` if malformed."""
    try:
        parts = [
            CompletedPart(int(p["number"]), str(p["etag"]), _strings(p["checksums"]))
            for p in data["parts"]
        ]
        checksums = _strings(data["checksums"])
        if_none_match = data.get("if_none_match", False)
        if_match = data.get("if_match")
        if not isinstance(if_none_match, bool) or not isinstance(if_match, str | None):
            raise TypeError("the conditions are not a boolean and a string")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ProtocolError(400, "BadRequest", f"malformed completion: {e}") from None
    if len(parts) > MAX_PARTS:
        raise ProtocolError(400, "BadRequest", f"more than {MAX_PARTS} parts")
    return Completion(parts, checksums, if_none_match, if_match)


#: Encodes values as compact ASCII JSON (one encoder: ``json.dumps`` with options makes one
#: per call).
_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def header_json(value: Mapping[str, Any]) -> str:
    """Return ``value`` as compact ASCII JSON for a header."""
    return _HEADER_ENCODER.encode(value)


#: The largest trailer accepted after a streamed body, in bytes.
MAX_TRAILER = 64 * 1024
#: Room left in a trailer for what the description gains once the bytes are in (the etag,
#: checksum values, the checksum type), beyond the description known before.
TRAILER_SLACK = 1024


@frozen
class Trailer:
    """What follows a streamed body: its digest, the object it makes, and their signature."""

    #: The SHA-256 of the body before the trailer, lower-case hex.
    content_sha256: str
    #: The object's description, compact JSON as :func:`header_json` writes it.
    description: str
    signature: bytes


def trailer_room(described: NewObject, expect: Mapping[str, str] | None = None) -> int:
    """The bytes to keep for the trailer of an object described as ``described`` for now.

    ``expect`` are the digests its description will expect (see :func:`description_json`).
    The room is fixed before the body is sent, so that the request has a length (a chunked
    body costs the node more to read); the trailer is padded to fill it.
    """
    description = len(description_json(described, expect))
    # digest, newline, description, newline, base64 signature (88), the 4-byte length
    return min(MAX_TRAILER, 64 + 1 + description + TRAILER_SLACK + 1 + 88 + 4)


def encode_trailer(trailer: Trailer, room: int = 0) -> bytes:
    """Return the trailer's bytes: three lines, spaces up to ``room``, the lines' length.

    The lines are the digest, the description and the base64 signature; the length (4 bytes,
    big-endian) at the very end lets the node find them reading backwards.  Raise
    ``ValueError`` if they do not fit in ``room`` (when given).
    """
    text = "\n".join(
        [
            trailer.content_sha256,
            trailer.description,
            base64.b64encode(trailer.signature).decode("ascii"),
        ]
    ).encode("utf-8")
    padding = max(0, room - len(text) - 4)
    if room and len(text) + 4 > room:
        raise ValueError(f"the trailer needs {len(text) + 4} bytes, {room} were kept")
    return text + b" " * padding + struct.pack(">I", len(text))


def decode_trailer(data: bytes) -> Trailer:
    """Read a trailer written by :func:`encode_trailer`; raise ``ProtocolError`` if malformed."""
    length = struct.unpack(">I", data[-4:])[0] if len(data) >= 4 else -1
    if not 0 <= length <= len(data) - 4 or data[length:-4].strip(b" "):
        raise ProtocolError(400, "BadRequest", "the body's trailer is missing or cut")
    try:
        digest, description, signature = data[:length].decode("utf-8").split("\n")
        return Trailer(digest, description, base64.b64decode(signature, validate=True))
    except (UnicodeDecodeError, ValueError, binascii.Error):
        raise ProtocolError(400, "BadRequest", "the body's trailer is malformed") from None


#: The path, under an account, that reads several whole objects in one request.
READ_PATH = "read"
#: The most objects one read request names ...
MAX_READ = 32
#: ... and the longest its body may be (long paths, escaped: the client then reads them alone).
MAX_READ_BODY = 64 * 1024
#: The media type of a read answer.
READ_TYPE = "application/x-lamb-objects"


def read_request(entries: Sequence[tuple[str, str]]) -> bytes:
    """The body of a read request: the order and path of each object, in order."""
    value = {"objects": [[order_id, path] for order_id, path in entries]}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_read_request(value: Any) -> list[tuple[str, str]]:
    """The objects a read request names; raise ``ProtocolError`` for a malformed one."""
    try:
        entries = value["objects"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_READ:
            raise ValueError(f"from 1 to {MAX_READ} objects are read at once")
        pairs = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2:
                raise ValueError("each object is [order, path]")
            order_id, path = entry
            if not isinstance(order_id, str) or not isinstance(path, str):
                raise ValueError("order and path are strings")
            pairs.append((order_id, path))
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(400, "BadRequest", f"malformed read request: {e}") from None
    return pairs


def read_entry(info: ObjectInfo, data: bytes | None) -> bytes:
    """One object of a read answer: its description, then its bytes (``None``: not sent)."""
    head = {"object": info_to_json(info), "data": data is not None}
    line = json.dumps(head, separators=(",", ":")).encode("utf-8") + b"\n"
    return line if data is None else line + data


def read_error(error: errors.NetworkError) -> bytes:
    """One object of a read answer that could not be read: its error."""
    code, status = code_of(error)
    head = {"error": code, "status": status, "message": str(error)}
    return json.dumps(head, separators=(",", ":")).encode("utf-8") + b"\n"


def parse_read_answer(
    body: bytes, count: int
) -> list[tuple[ObjectInfo, bytes | None] | errors.NetworkError]:
    """The ``count`` objects of a read answer, in order: each read, or its error.

    An object read with ``None`` for its bytes was not sent (too large): read it alone.
    """
    results: list[tuple[ObjectInfo, bytes | None] | errors.NetworkError] = []
    at = 0
    try:
        for _ in range(count):
            end = body.index(b"\n", at)
            head = json.loads(body[at:end])
            at = end + 1
            if "error" in head:
                results.append(
                    error_named(int(head["status"]), str(head["error"]), str(head["message"]))
                )
                continue
            info = info_from_json(head["object"])
            data = None
            if head["data"] is True:
                data = body[at : at + info.size]
                if len(data) != info.size:
                    raise ValueError("an object's bytes are cut short")
                at += info.size
            results.append((info, data))
    except (KeyError, TypeError, ValueError, ProtocolError) as e:
        raise errors.NetworkError(f"the network node sent a malformed read answer: {e}") from None
    if at != len(body):
        raise errors.NetworkError("the network node sent more than the objects read")
    return results
