"""Incremental checksums of S3 bodies: CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256 and MD5.

``new_checksum(name)`` gives an object fed piece by piece as the body arrives;
``b64()`` is the value of the matching ``x-amz-checksum-*`` header. The multipart helpers
combine the checksums of parts into the checksum of the whole object (CRCs only) or
into the composite ``<b64>-<N>`` form S3 reports for multipart uploads.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from attrs import define, field
from awscrt import checksums as crt

from lambgw.protocol.errors import S3Error

Buffer = bytes | bytearray | memoryview

#: The algorithms of ``x-amz-checksum-algorithm``, lower-case, as accepted by :func:`new_checksum`.
ALGORITHMS: Final = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")

#: The algorithms whose checksums of parts combine into a checksum of the whole object.
CRC_ALGORITHMS: Final = ("crc32", "crc32c", "crc64nvme")


class Checksum(Protocol):
    """A running checksum of a byte stream."""

    name: str

    def update(self, data: Buffer) -> None:
        """Add ``data`` to the checksummed stream."""

    def digest(self) -> bytes:
        """Return the checksum of everything added so far, as raw big-endian bytes."""

    def b64(self) -> str:
        """Return the checksum in base64, as in the ``x-amz-checksum-*`` headers."""


_CRC_UPDATE: Final[dict[str, Callable[[Buffer, int], int]]] = {
    "crc32": zlib.crc32,
    "crc32c": crt.crc32c,
    "crc64nvme": crt.crc64nvme,
}
_CRC_COMBINE: Final[dict[str, Callable[[int, int, int], int]]] = {
    "crc32": crt.combine_crc32,
    "crc32c": crt.combine_crc32c,
    "crc64nvme": crt.combine_crc64nvme,
}
_CRC_WIDTH: Final = {"crc32": 4, "crc32c": 4, "crc64nvme": 8}
_HASHES: Final = {"sha1": "sha1", "sha256": "sha256", "md5": "md5"}


@define
class CrcChecksum:
    """A running CRC (CRC32, CRC32C or CRC64NVME)."""

    name: str
    _value: int = field(default=0, alias="value")

    def update(self, data: Buffer) -> None:
        """Add ``data`` to the checksummed stream."""
        self._value = _CRC_UPDATE[self.name](data, self._value)

    def digest(self) -> bytes:
        """Return the CRC so far, big-endian."""
        return self._value.to_bytes(_CRC_WIDTH[self.name], "big")

    def b64(self) -> str:
        """Return the CRC in base64."""
        return base64.b64encode(self.digest()).decode("ascii")


@define
class HashChecksum:
    """A running cryptographic hash (SHA-1, SHA-256 or MD5)."""

    name: str
    _hash: hashlib._Hash = field(alias="hash")

    def update(self, data: Buffer) -> None:
        """Add ``data`` to the hashed stream."""
        self._hash.update(data)

    def digest(self) -> bytes:
        """Return the hash so far."""
        return self._hash.digest()

    def b64(self) -> str:
        """Return the hash in base64."""
        return base64.b64encode(self.digest()).decode("ascii")


def normalize_name(name: str) -> str:
    """Return the lower-case algorithm name; raise ``InvalidRequest`` if unknown."""
    lowered = name.lower()
    if lowered not in _CRC_UPDATE and lowered not in _HASHES:
        raise S3Error.of("InvalidRequest", f"Checksum algorithm {name!r} is not supported.")
    return lowered


def new_checksum(name: str) -> Checksum:
    """Start a running checksum: crc32, crc32c, crc64nvme, sha1, sha256 or md5, any case."""
    lowered = normalize_name(name)
    if lowered in _CRC_UPDATE:
        return CrcChecksum(lowered)
    return HashChecksum(lowered, hashlib.new(_HASHES[lowered]))


def digest_length(name: str) -> int:
    """Return the length in bytes of a raw digest of the algorithm ``name``."""
    lowered = normalize_name(name)
    if lowered in _CRC_WIDTH:
        return _CRC_WIDTH[lowered]
    return hashlib.new(_HASHES[lowered]).digest_size


def decode_b64(name: str, value: str) -> bytes:
    """Decode a base64 ``x-amz-checksum-*`` value; raise ``InvalidRequest`` if malformed."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise S3Error.of("InvalidRequest", f"Value for x-amz-checksum-{name} is invalid.") from e
    if len(raw) != digest_length(name):
        raise S3Error.of("InvalidRequest", f"Value for x-amz-checksum-{name} is invalid.")
    return raw


def combine_full_object(name: str, parts: Sequence[tuple[bytes, int]]) -> bytes:
    """Return the CRC of the concatenated parts given as ``(raw digest, length)`` pairs.

    Only CRC algorithms combine; others raise ``InvalidRequest``.
    """
    lowered = normalize_name(name)
    if lowered not in _CRC_COMBINE:
        raise S3Error.of(
            "InvalidRequest", f"The FULL_OBJECT checksum type is not supported for {name}."
        )
    combine = _CRC_COMBINE[lowered]
    value = 0
    for digest, length in parts:
        value = combine(value, int.from_bytes(digest, "big"), length)
    return value.to_bytes(_CRC_WIDTH[lowered], "big")


def composite(name: str, part_digests: Sequence[bytes]) -> str:
    """Return the composite multipart checksum ``<b64>-<N>`` of ``N`` parts' raw digests.

    ``<b64>`` is the base64 checksum of the concatenated part digests.
    """
    outer = new_checksum(name)
    for digest in part_digests:
        outer.update(digest)
    return f"{outer.b64()}-{len(part_digests)}"
