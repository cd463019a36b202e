"""AWS Signature Version 4 for S3: canonical requests, signing keys and chunk signatures.

Everything is computed on the request as it came over the wire (raw path, raw query), the
way S3 does it: S3 does not normalize ``//`` or ``..`` in paths, since keys may hold them.
This module only computes and parses; :mod:`lambgw.protocol.auth` decides what to check.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import unquote_to_bytes

from attrs import define, field, frozen

from lambgw.protocol.errors import S3Error

ALGORITHM: Final = "AWS4-HMAC-SHA256"
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD: Final = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER: Final = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER: Final = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
#: A path of unreserved characters and slashes only: its own canonical URI.
_CANONICAL_PATH: Final = re.compile("/[A-Za-z0-9._~/-]*")
#: A signature as clients send it: hex digits.
_HEX: Final = re.compile("[0-9a-fA-F]+")
_ENCODE: Final = tuple(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256))
_ENCODE_PATH: Final = tuple("/" if b == ord("/") else _ENCODE[b] for b in range(256))


def uri_encode(data: bytes, *, keep_slash: bool = False) -> str:
    """Percent-encode every byte but ``A-Za-z0-9-._~`` (and ``/`` if ``keep_slash``)."""
    table = _ENCODE_PATH if keep_slash else _ENCODE
    return "".join([table[b] for b in data])


def canonical_uri(raw_path: str) -> str:
    """Return the canonical URI of a raw (percent-encoded) request path.

    The path is decoded once and encoded again, so that clients which encode more or less
    than the canonical set still match; non-ASCII characters are taken as UTF-8.
    """
    if _CANONICAL_PATH.fullmatch(raw_path):
        return raw_path  # nothing to decode, nothing to encode: already canonical
    return uri_encode(unquote_to_bytes(raw_path or "/"), keep_slash=True)


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split a raw query string into decoded ``(name, value)`` pairs, in order.

    ``+`` is a literal plus in S3, not a space. A parameter without ``=`` has an empty value.
    """
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append(
            (
                unquote_to_bytes(name).decode("utf-8", "replace"),
                unquote_to_bytes(value).decode("utf-8", "replace"),
            )
        )
    return pairs


def canonical_query(raw_query: str, *, presigned: bool = False) -> str:
    """Return the canonical query of a raw query (less ``X-Amz-Signature`` if presigned)."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        encoded_name = uri_encode(unquote_to_bytes(name))
        if presigned and encoded_name == "X-Amz-Signature":
            continue
        pairs.append((encoded_name, uri_encode(unquote_to_bytes(value))))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_headers(headers: Mapping[str, Sequence[str]], signed: Sequence[str]) -> str:
    r"""Return the canonical headers block (each ``name:value\n``) for the signed header names.

    Values are trimmed, runs of white space inside them collapsed, and repeated headers
    joined with ``,``. ``headers`` has lower-case names.
    """
    lines = []
    for name in signed:
        values = headers.get(name, ())
        if len(values) == 1:  # nearly always: no generator to make
            lines.append(f"{name}:{' '.join(values[0].split())}\n")
        else:
            lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, Sequence[str]],
    signed_headers: Sequence[str],
    payload_hash: str,
    *,
    presigned: bool = False,
) -> str:
    """Return the SigV4 canonical request of an S3 request."""
    return "\n".join(
        (
            method,
            canonical_uri(raw_path),
            canonical_query(raw_query, presigned=presigned),
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """Return the SigV4 string to sign of a canonical request."""
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


@functools.lru_cache(maxsize=256)
def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key of a secret for a day (``YYYYMMDD``), region and service.

    A key serves every request of its day, so recent keys are kept rather than derived anew.
    """
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign(signing_key: bytes, text: str) -> str:
    """Return the hex HMAC-SHA256 signature of ``text``."""
    return hmac.digest(signing_key, text.encode("utf-8"), "sha256").hex()


def signatures_match(expected: str, given: str) -> bool:
    """Compare two hex signatures in constant time."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.digest(key, text.encode("utf-8"), "sha256")


@frozen
class Credential:
    """The ``Credential`` of a SigV4 request: access key and scope (day, region, service)."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        """Return the credential scope, ``date/region/service/aws4_request``."""
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    @classmethod
    def parse(cls, value: str, error_code: str) -> Credential:
        """Parse ``AK/20130524/us-east-1/s3/aws4_request``; malformed -> ``error_code``."""
        parts = value.rsplit("/", 4)
        if len(parts) != 5 or not parts[0] or parts[4] != "aws4_request":
            raise S3Error.of(error_code, f"The credential {value!r} is malformed.")
        access_key, date, region, service, _ = parts
        if len(date) != 8 or not date.isdigit():
            raise S3Error.of(error_code, f"Invalid credential date {date!r}.")
        if service != "s3":
            raise S3Error.of(
                error_code, f"The credential service {service!r} is incorrect; expecting 's3'."
            )
        return cls(access_key, date, region, service)


@frozen
class AuthorizationHeader:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str

    @classmethod
    def parse(cls, value: str) -> AuthorizationHeader:
        """Parse the header value; raise ``AuthorizationHeaderMalformed`` if it is malformed.

        A client sends the same credential and signed headers with every request and only
        the signature changes: what comes before a last ``Signature=`` of hex digits is
        parsed once and kept (:func:`_parse_unsigned`).
        """
        head, mark, signature = value.rpartition("Signature=")
        if not mark or not _HEX.fullmatch(signature):
            return _parse_authorization(value)
        unsigned = _parse_unsigned(head + mark)
        return cls(unsigned.credential, unsigned.signed_headers, signature)


def _parse_authorization(value: str) -> AuthorizationHeader:
    """Parse a whole ``Authorization`` value (:meth:`AuthorizationHeader.parse`)."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error.of("AuthorizationHeaderMalformed", f"Unsupported algorithm {algorithm!r}.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, field_value = item.strip().partition("=")
        if not eq:
            raise S3Error.of(
                "AuthorizationHeaderMalformed",
                f"The authorization header is malformed near {item.strip()!r}.",
            )
        fields[name.strip()] = field_value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    if missing:
        raise S3Error.of(
            "AuthorizationHeaderMalformed",
            f"The authorization header is malformed; missing {', '.join(missing)}.",
        )
    return AuthorizationHeader(
        Credential.parse(fields["Credential"], "AuthorizationHeaderMalformed"),
        parse_signed_headers(fields["SignedHeaders"], "AuthorizationHeaderMalformed"),
        fields["Signature"],
    )


#: The parse of the recent values of ``Authorization`` with their signature left out.
_parse_unsigned = functools.lru_cache(maxsize=256)(_parse_authorization)


def parse_signed_headers(value: str, error_code: str) -> tuple[str, ...]:
    """Parse a ``SignedHeaders`` list (``host;range;x-amz-date``) into lower-case names."""
    names = tuple(n.strip().lower() for n in value.split(";"))
    if not value or not all(names):
        raise S3Error.of(error_code, f"The SignedHeaders {value!r} are malformed.")
    if "host" not in names:
        raise S3Error.of(error_code, "The host header must be signed.")
    return names


@define
class ChunkSigner:
    """Computes and checks the chained signatures of an aws-chunked body.

    Starts from the request's (seed) signature; each chunk signature covers the previous
    one, so chunks can be neither reordered nor dropped.
    """

    _signing_key: bytes = field(alias="signing_key", repr=False)
    _amz_date: str = field(alias="amz_date")
    _scope: str = field(alias="scope")
    _previous: str = field(alias="seed_signature")

    def chunk_signature(self, chunk_sha256: str) -> str:
        """Return the expected signature of the next chunk, given its hex SHA-256."""
        text = (
            f"{ALGORITHM}-PAYLOAD\n{self._amz_date}\n{self._scope}\n"
            f"{self._previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
        )
        return sign(self._signing_key, text)

    def trailer_signature(self, canonical_trailer: bytes) -> str:
        r"""Return the expected signature of the trailer (``name:value\n`` lines)."""
        digest = hashlib.sha256(canonical_trailer).hexdigest()
        text = f"{ALGORITHM}-TRAILER\n{self._amz_date}\n{self._scope}\n{self._previous}\n{digest}"
        return sign(self._signing_key, text)

    def verify_chunk(self, signature: str, chunk_sha256: str) -> None:
        """Check the signature of the next chunk and chain it; ``SignatureDoesNotMatch`` if bad."""
        self._verify(self.chunk_signature(chunk_sha256), signature, "chunk")

    def verify_trailer(self, signature: str, canonical_trailer: bytes) -> None:
        """Check the trailer signature; ``SignatureDoesNotMatch`` if bad."""
        self._verify(self.trailer_signature(canonical_trailer), signature, "trailer")

    def _verify(self, expected: str, given: str, what: str) -> None:
        if not signatures_match(expected, given):
            raise S3Error.of(
                "SignatureDoesNotMatch",
                f"The {what} signature we calculated does not match the signature you provided.",
            )
        self._previous = expected
