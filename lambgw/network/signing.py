"""Signing of network protocol requests with an account's Ed25519 key, and their verification.

Every request to a ``lambnet`` node carries four headers::

    x-lamb-date: 1764071234                 (Unix time, whole seconds)
    x-lamb-nonce: 5f0c...                   (32 random hex digits, never reused)
    x-lamb-content-sha256: e3b0c442...       (SHA-256 of the body, hex; of b"" if none)
    authorization: LAMB1-ED25519 account=demo,signature=BASE64

The signature covers :func:`string_to_sign`: the scheme, the method, the raw path, the
query with its parameters sorted, the date, the nonce and the body digest, one per line.
The node checks the signature with the account's public key, the date against its clock
(at most :data:`MAX_SKEW` seconds apart), that the nonce was not seen within that window
(:class:`NonceCache`), and the body's digest as the body arrives.

A body streamed before its digest is known says ``x-lamb-content-sha256: STREAMING-TRAILER``
and ends with a trailer (see ``lambgw.network.wire``) holding the digest and the object's
description, signed over :func:`trailer_to_sign`, which includes the request's signature.
A trailer's digest may be :data:`UNSIGNED_PAYLOAD`: the body's SHA-256 is then not checked.

A request may instead be MACed with a session's key (``LAMB1-HMAC-SHA256 session=ID,...``,
:mod:`lambgw.network.sessions`); :func:`parse` reads both kinds.  Its nonce is its sequence
number in the session, checked by the session's window instead of :class:`NonceCache`.

Nothing here does I/O except the small key file helpers at the end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Mapping

from attrs import define, field, frozen
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: The name of the signing scheme, first word of the ``authorization`` header.
SCHEME = "LAMB1-ED25519"
#: The scheme of requests authenticated by a session's key (:mod:`lambgw.network.sessions`).
SESSION_SCHEME = "LAMB1-HMAC-SHA256"
#: The largest difference allowed between a request's date and the node's clock, in seconds.
MAX_SKEW = 300
#: The body digest of a request without a body.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: The ``x-lamb-content-sha256`` of a body whose digest follows it, in a signed trailer.
TRAILER = "STREAMING-TRAILER"
#: A trailer's digest when the body's SHA-256 is not known (the node then checks none).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: The first line of what a trailer's signature covers.
TRAILER_SCHEME = "LAMB1-ED25519-TRAILER"
#: The environment variable holding the password of encrypted private key files.
PASSWORD_ENV = "LAMBGW_KEY_PASSWORD"  # noqa: S105 - the name of a variable

DATE_HEADER = "x-lamb-date"
NONCE_HEADER = "x-lamb-nonce"
SHA256_HEADER = "x-lamb-content-sha256"

#: Account names: also used as file names, so no separators and no leading dot.
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_AUTHORIZATION = re.compile(
    rf"{SCHEME} account=(?P<account>[^,\s]+),\s*signature=(?P<signature>[A-Za-z0-9+/=]+)"
)
_SESSION_AUTHORIZATION = re.compile(
    rf"{SESSION_SCHEME} session=(?P<session>[0-9a-f]{{32}}),"
    r"\s*signature=(?P<signature>[A-Za-z0-9+/=]+)"
)


class SignatureError(Exception):
    """A request's signature, date, nonce or digest is missing or wrong; ``str()`` says which."""


@frozen
class RequestToSign:
    """The parts of a request its signature covers."""

    method: str
    #: The path as sent on the wire (percent-encoded), without the query.
    path: str
    #: The query as sent on the wire, without the ``?``.
    query: str
    date: int
    nonce: str
    content_sha256: str


def valid_account(name: str) -> bool:
    """Whether ``name`` is a usable account name (letters, digits, ``.``, ``_``, ``-``)."""
    return ACCOUNT_NAME.fullmatch(name) is not None


def canonical_query(query: str) -> str:
    """Return the query's ``&``-separated parameters sorted, as sent (not decoded)."""
    return "&".join(sorted(part for part in query.split("&") if part))


def string_to_sign(request: RequestToSign, scheme: str = SCHEME) -> bytes:
    """Return the bytes the signature (or, under ``scheme``, the MAC) of ``request`` covers."""
    lines = [
        scheme,
        request.method.upper(),
        request.path,
        canonical_query(request.query),
        str(request.date),
        request.nonce,
        request.content_sha256,
    ]
    return "\n".join(lines).encode("utf-8")


def new_nonce() -> str:
    """Return a fresh random nonce."""
    return secrets.token_hex(16)


def sign(
    key: Ed25519PrivateKey,
    account: str,
    method: str,
    path: str,
    query: str,
    content_sha256: str,
    date: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return the headers that sign a request of ``account``."""
    request = RequestToSign(method, path, query, date, nonce or new_nonce(), content_sha256)
    signature = base64.b64encode(key.sign(string_to_sign(request))).decode("ascii")
    return headers_of(request, f"{SCHEME} account={account},signature={signature}")


def headers_of(request: RequestToSign, authorization: str) -> dict[str, str]:
    """Return the headers that carry ``request``'s signed parts and its ``authorization``."""
    return {
        DATE_HEADER: str(request.date),
        NONCE_HEADER: request.nonce,
        SHA256_HEADER: request.content_sha256,
        "authorization": authorization,
    }


@frozen
class Signed:
    """What a request's headers claim: who signed it, and the signed parts.

    A request of a session names the session, not the account (``account`` is empty).
    """

    account: str
    signature: bytes
    request: RequestToSign
    session: str = ""


def parse(method: str, path: str, query: str, headers: Mapping[str, str]) -> Signed:
    """Read the signing headers of a request (lower-case names); raise ``SignatureError``.

    The request is signed by an account (:data:`SCHEME`) or MACed in a session
    (:data:`SESSION_SCHEME`).
    """
    authorization = headers.get("authorization", "").strip()
    match = _AUTHORIZATION.fullmatch(authorization) or _SESSION_AUTHORIZATION.fullmatch(
        authorization
    )
    if match is None:
        raise SignatureError(
            f"the request is not signed ({SCHEME} or {SESSION_SCHEME} authorization expected)"
        )
    groups = match.groupdict()
    try:
        signature = base64.b64decode(match["signature"], validate=True)
    except binascii.Error:
        raise SignatureError("the signature is not base64") from None
    date = headers.get(DATE_HEADER, "")
    if not date.isdigit() or len(date) > 12:
        raise SignatureError(f"the {DATE_HEADER} header is missing or not a Unix time")
    nonce = headers.get(NONCE_HEADER, "")
    if _NONCE.fullmatch(nonce) is None:
        raise SignatureError(f"the {NONCE_HEADER} header is missing or malformed")
    digest = headers.get(SHA256_HEADER, "")
    if digest != TRAILER and _SHA256.fullmatch(digest) is None:
        raise SignatureError(f"the {SHA256_HEADER} header is missing or malformed")
    return Signed(
        groups.get("account") or "",
        signature,
        RequestToSign(method, path, query, int(date), nonce, digest),
        groups.get("session") or "",
    )


def check_date(signed: Signed, now: float, max_skew: int = MAX_SKEW) -> None:
    """Refuse ``signed`` (``SignatureError``) if dated more than ``max_skew`` from ``now``."""
    if abs(now - signed.request.date) > max_skew:
        raise SignatureError(f"the request's date is more than {max_skew} s from the node's clock")


def verify(key: Ed25519PublicKey, signed: Signed, now: float, max_skew: int = MAX_SKEW) -> None:
    """Check the signature and the date of ``signed``; raise ``SignatureError`` if wrong."""
    check_date(signed, now, max_skew)
    if signed.session:
        raise SignatureError(f"the request is not signed with the account's key ({SCHEME})")
    try:
        key.verify(signed.signature, string_to_sign(signed.request))
    except InvalidSignature:
        raise SignatureError("the signature does not match the account's key") from None


def trailer_to_sign(request_signature: bytes, content_sha256: str, description: str) -> bytes:
    """Return the bytes a trailer's signature covers.

    The trailer is bound to its request by the request's own signature, so it cannot be
    moved to another request; it vouches for the body's digest and the object description.
    """
    lines = [
        TRAILER_SCHEME,
        base64.b64encode(request_signature).decode("ascii"),
        content_sha256,
        description,
    ]
    return "\n".join(lines).encode("utf-8")


def sign_trailer(
    key: Ed25519PrivateKey, request_signature: bytes, content_sha256: str, description: str
) -> bytes:
    """Return the signature of a trailer (see :func:`trailer_to_sign`)."""
    return key.sign(trailer_to_sign(request_signature, content_sha256, description))


def verify_trailer(
    key: Ed25519PublicKey,
    request_signature: bytes,
    content_sha256: str,
    description: str,
    signature: bytes,
) -> None:
    """Check a trailer's signature; raise ``SignatureError`` if wrong.

    ``content_sha256`` is hex, or :data:`UNSIGNED_PAYLOAD`.
    """
    if content_sha256 != UNSIGNED_PAYLOAD and _SHA256.fullmatch(content_sha256) is None:
        raise SignatureError("the trailer's SHA-256 is malformed")
    try:
        key.verify(signature, trailer_to_sign(request_signature, content_sha256, description))
    except InvalidSignature:
        raise SignatureError("the trailer's signature does not match the account's key") from None


def signature_of(headers: Mapping[str, str]) -> bytes:
    """The signature carried by the ``authorization`` header of signed ``headers``."""
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", "").strip())
    if match is None:
        raise SignatureError("the headers are not signed")
    return base64.b64decode(match["signature"])


#: Seconds of nonce expiry forgotten together by :class:`NonceCache`.
NONCE_BUCKET = 10


@define
class NonceCache:
    """The nonces of the requests whose dates are still accepted, to refuse replays.

    A request dated ``d`` is accepted while the node's clock is within ``window`` seconds of
    ``d``, so its nonce is kept until ``d + window`` has passed, and not much longer.  The
    nonces are held in one set per account, for an O(1) look-up, and listed by when they
    expire in buckets of ``width`` seconds.  Each check first drops the buckets that have
    expired: every nonce is added once and dropped once, so a request costs O(1) amortised,
    and the cache holds the nonces of the last ``2 * window + width`` seconds at most.
    """

    window: int = MAX_SKEW
    width: int = NONCE_BUCKET
    #: The nonces kept, as numbers, per account.
    _seen: dict[str, set[int]] = field(factory=dict)
    #: Bucket number (expiry // width) -> account -> the nonces that expire in it.
    _expiring: dict[int, dict[str, list[int]]] = field(factory=dict)
    #: No bucket before this one holds anything.
    _first: int | None = None
    _size: int = 0

    def __len__(self) -> int:
        """How many nonces are kept."""
        return self._size

    @property
    def buckets(self) -> int:
        """How many expiry buckets hold nonces."""
        return len(self._expiring)

    def check(self, account: str, nonce: str, date: int, now: float) -> None:
        """Remember ``nonce``; raise ``SignatureError`` if it was seen before.

        A request dated outside the window is refused too: its nonce could no longer be
        told from a replay's.
        """
        self._expire(now)
        if abs(now - date) > self.window:
            raise SignatureError(
                f"the request's date is more than {self.window} s from the node's clock"
            )
        try:
            value = int(nonce, 16)
        except ValueError:
            raise SignatureError("the nonce is not hexadecimal") from None
        seen = self._seen.setdefault(account, set())
        if value in seen:
            raise SignatureError("the request was replayed (its nonce was already used)")
        seen.add(value)
        bucket = (date + self.window) // self.width
        self._expiring.setdefault(bucket, {}).setdefault(account, []).append(value)
        self._size += 1
        if self._first is None or bucket < self._first:
            self._first = bucket

    def _expire(self, now: float) -> None:
        """Drop the buckets whose nonces all expired before ``now``."""
        current = int(now) // self.width
        if self._first is None or self._first >= current:
            return
        gone: Iterable[int] = range(self._first, current)
        if current - self._first > len(self._expiring):
            # The clock jumped ahead: fewer buckets than bucket numbers to try.
            gone = [bucket for bucket in self._expiring if bucket < current]
        for bucket in gone:
            for account, values in self._expiring.pop(bucket, {}).items():
                seen = self._seen[account]
                seen.difference_update(values)
                self._size -= len(values)
                if not seen:
                    del self._seen[account]
        self._first = current


# -- key files -----------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """Return a new private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey, password: bytes | None = None) -> bytes:
    """Return ``key`` as PKCS#8 PEM, encrypted with ``password`` if given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """Return ``key`` as SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(data: bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """Read a PEM private key; raise ``ValueError`` if it is not an Ed25519 one."""
    try:
        key = serialization.load_pem_private_key(data, password or None)
    except TypeError as e:
        raise ValueError(
            f"the key is encrypted: set {PASSWORD_ENV}"
            if password is None
            else f"the key is not encrypted: unset {PASSWORD_ENV}"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the key is not an Ed25519 key")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """Read a PEM public key; raise ``ValueError`` if it is not an Ed25519 one."""
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the key is not an Ed25519 key")
    return key


def env_password() -> bytes | None:
    """The key password from the environment, if set."""
    value = os.environ.get(PASSWORD_ENV)
    return value.encode("utf-8") if value else None
