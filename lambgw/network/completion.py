"""The rules of multipart uploads that the network applies: ids, completion, listing.

Pure functions, shared by the implementations of the network: which stored parts a
completion takes (checked as S3 checks them), the ETag and checksum of the object they
make, and the page of open uploads that ListMultipartUploads shows.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
from collections.abc import Mapping, Sequence

from lambgw.network.errors import EntityTooSmall, InvalidPart, InvalidPartOrder
from lambgw.network.interface import (
    CompletedPart,
    MultipartUpload,
    PartInfo,
    UploadsPage,
)
from lambgw.protocol.checksums import combine_full_object, composite, decode_b64

#: Part numbers run from 1 to this, as in S3.
MAX_PART_NUMBER = 10000
#: The smallest part but the last, as in S3.
MIN_PART_SIZE = 5 * 1024**2
#: Uploads idle this long (seconds) are aborted by the network, by default.
DEFAULT_UPLOAD_EXPIRY = 7 * 24 * 3600.0
#: Ids accepted (those made by earlier releases may hold ``_`` and ``-``).
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: What new ids are made of: letters and digits only, so that an id never starts with ``-``
#: (the aws cli would take it for an option) and needs no quoting anywhere.
_ID_ALPHABET = string.ascii_letters + string.digits
#: The length of new ids: 32 of 62 symbols, about 190 random bits.
_ID_LENGTH = 32


def new_upload_id() -> str:
    """Return a new random upload id: 32 letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def bare_etag(etag: str) -> str:
    """Return an ETag as stored: without the quotes and spaces a client may send."""
    return etag.strip().strip('"')


def choose_parts(
    requested: Sequence[CompletedPart], stored: Mapping[int, PartInfo]
) -> list[PartInfo]:
    """Return the stored parts a completion names, checked as S3 checks them."""
    if not requested:
        raise InvalidPart("The XML you provided named no part.")
    chosen: list[PartInfo] = []
    previous = 0
    for wanted in requested:
        if wanted.number <= previous:
            raise InvalidPartOrder(
                "The list of parts was not in ascending order. Parts must be ordered by "
                "part number, each named once."
            )
        previous = wanted.number
        part = stored.get(wanted.number)
        if part is None or bare_etag(wanted.etag) != part.etag:
            raise InvalidPart(
                f"Part {wanted.number} could not be found, or its ETag does not match."
            )
        for name, value in wanted.checksums.items():
            if part.checksums.get(name) not in (None, value):
                raise InvalidPart(f"The {name.upper()} of part {wanted.number} does not match.")
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_SIZE:
            raise EntityTooSmall(
                f"Part {part.number} is {part.size} bytes: every part but the last must be at "
                f"least {MIN_PART_SIZE} bytes."
            )
    return chosen


def final_etag(parts: Sequence[PartInfo]) -> str:
    """Return the ETag of a multipart object: the MD5 of the parts' binary MD5s, ``-N``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in parts)).hexdigest()  # noqa: S324
    return f"{digest}-{len(parts)}"


def final_checksum(algorithm: str, checksum_type: str, parts: Sequence[PartInfo]) -> str | None:
    """Return the whole object's checksum (composite or full-object) if every part has one."""
    if not algorithm or any(algorithm not in p.checksums for p in parts):
        return None
    digests = [decode_b64(algorithm, p.checksums[algorithm]) for p in parts]
    if checksum_type == "FULL_OBJECT":
        combined = combine_full_object(
            algorithm, [(d, p.size) for d, p in zip(digests, parts, strict=True)]
        )
        return base64.b64encode(combined).decode("ascii")
    return composite(algorithm, digests)


def page_uploads(
    uploads: Sequence[MultipartUpload],
    prefix: str = "",
    delimiter: str = "",
    key_marker: str = "",
    upload_id_marker: str = "",
    max_uploads: int = 1000,
) -> UploadsPage:
    """Select a page of uploads as S3 does: by path in byte order, then by time created."""
    ordered = sorted(
        (u for u in uploads if u.path.startswith(prefix)),
        key=lambda u: (u.path.encode("utf-8"), u.created, u.upload_id),
    )
    marker = key_marker.encode("utf-8")
    if key_marker:
        after = []
        passed = not upload_id_marker
        for u in ordered:
            raw = u.path.encode("utf-8")
            if raw > marker or (raw == marker and passed and upload_id_marker):
                after.append(u)
            elif raw == marker and u.upload_id == upload_id_marker:
                passed = True
        ordered = after
    listed: list[MultipartUpload] = []
    prefixes: list[str] = []
    truncated = False
    last_key = last_id = ""
    for u in ordered:
        rest = u.path[len(prefix) :]
        cut = rest.find(delimiter) if delimiter else -1
        common = prefix + rest[: cut + len(delimiter)] if cut >= 0 else None
        if common is not None and prefixes and prefixes[-1] == common:
            continue
        if len(listed) + len(prefixes) >= max_uploads:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
            last_key, last_id = common, ""
        else:
            listed.append(u)
            last_key, last_id = u.path, u.upload_id
    return UploadsPage(
        listed,
        prefixes,
        truncated,
        last_key if truncated else "",
        last_id if truncated else "",
    )
