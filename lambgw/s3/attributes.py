"""GetObjectAttributes: an object's ETag, checksum, parts, storage class and size, in XML.

``x-amz-object-attributes`` names what to return; a multipart object's parts are listed a
page at a time (``x-amz-max-parts``, ``x-amz-part-number-marker``), as ListParts does.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks

from lambgw.network.interface import ObjectInfo
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import document, element, http_date
from lambgw.s3.front import first, header_map
from lambgw.s3.request import S3Request, Target

if TYPE_CHECKING:
    from lambgw.s3.api import S3API

#: The attributes S3 knows, in the order its answer lists them.
ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
#: The most parts listed in one answer (and the default).
MAX_PARTS = 1000
#: The XML names of the stored checksums' algorithms.
CHECKSUM_ELEMENTS = {
    "crc32": "ChecksumCRC32",
    "crc32c": "ChecksumCRC32C",
    "crc64nvme": "ChecksumCRC64NVME",
    "sha1": "ChecksumSHA1",
    "sha256": "ChecksumSHA256",
}


def requested_attributes(headers: Mapping[str, Sequence[str]]) -> set[str]:
    """The attributes ``x-amz-object-attributes`` asks for (comma-separated, repeatable)."""
    names = {
        name.strip()
        for value in headers.get("x-amz-object-attributes", [])
        for name in value.split(",")
        if name.strip()
    }
    if not names:
        raise S3Error.of(
            "InvalidRequest",
            "The x-amz-object-attributes header specifying the attributes to be retrieved "
            "is either missing or empty",
        )
    if not names <= set(ATTRIBUTES):
        raise S3Error.of("InvalidArgument", "Invalid attribute name specified.")
    return names


def _number(value: str | None, default: int) -> int:
    """A whole number header; S3 ignores one that is not."""
    if value is None or not value.strip().isdigit():
        return default
    return int(value.strip())


def object_parts(info: ObjectInfo, max_parts: int, marker: int) -> str:
    """The ``<ObjectParts>`` of a multipart object: the parts after ``marker``, one page."""
    sizes = list(info.part_sizes)
    page = [(number, sizes[number - 1]) for number in range(marker + 1, len(sizes) + 1)]
    truncated = len(page) > max_parts
    page = page[:max_parts]
    listed = "".join(
        "<Part>" + element("PartNumber", number) + element("Size", size) + "</Part>"
        for number, size in page
    )
    return (
        "<ObjectParts>"
        + element("PartsCount", len(sizes))
        + element("PartNumberMarker", marker)
        + element("NextPartNumberMarker", page[-1][0] if page else marker)
        + element("MaxParts", max_parts)
        + element("IsTruncated", truncated)
        + listed
        + "</ObjectParts>"
    )


def attributes_document(
    info: ObjectInfo, wanted: set[str], max_parts: int = MAX_PARTS, marker: int = 0
) -> bytes:
    """The GetObjectAttributes answer for ``info``: the ``wanted`` attributes it has."""
    body = ""
    if "ETag" in wanted:
        body += element("ETag", info.etag)
    if "Checksum" in wanted and info.checksums:
        checksums = "".join(
            element(CHECKSUM_ELEMENTS[name], value)
            for name, value in sorted(info.checksums.items())
            if name in CHECKSUM_ELEMENTS
        )
        body += f"<Checksum>{checksums}{element('ChecksumType', info.checksum_type or None)}"
        body += "</Checksum>"
    if "ObjectParts" in wanted and info.part_sizes:
        body += object_parts(info, max_parts, marker)
    if "StorageClass" in wanted:
        body += element("StorageClass", "STANDARD")
    if "ObjectSize" in wanted:
        body += element("ObjectSize", info.size)
    return document("GetObjectAttributesOutput", body)


@inlineCallbacks
def get_object_attributes(
    api: S3API, request: S3Request, target: Target
) -> Generator[Deferred[Any], Any, bytes]:
    """GetObjectAttributes of the target's object."""
    headers = header_map(request)
    wanted = requested_attributes(headers)
    max_parts = min(MAX_PARTS, _number(first(headers, "x-amz-max-parts"), MAX_PARTS))
    marker = _number(first(headers, "x-amz-part-number-marker"), 0)
    info: ObjectInfo = yield api.gateway.head_object(target.bucket, target.key)
    request.setHeader(b"Last-Modified", http_date(info.last_modified).encode())
    request.setHeader(b"Content-Type", b"application/xml")
    return attributes_document(info, wanted, max_parts, marker)
