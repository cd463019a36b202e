"""Authentication of S3 requests: SigV4 and SigV2, header and presigned forms.

:func:`authenticate` is the one entry point the HTTP layer calls, with a view of the request
as it came over the wire. It checks everything that can be checked before the body is read
and says how the body must be handled: its SHA-256 checked, aws-chunked signatures
verified, or nothing.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

from attrs import frozen

from lambgw.protocol import sigv2, sigv4
from lambgw.protocol.errors import S3Error

#: The largest difference between the request's time and ours, in seconds.
MAX_CLOCK_SKEW: Final = 15 * 60
#: The longest validity of a presigned SigV4 URL, in seconds (seven days).
MAX_PRESIGNED_EXPIRES: Final = 7 * 24 * 3600

_AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
_AMZ_DATE: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_NO_DATE: Final = "AWS authentication requires a valid Date or x-amz-date header"
_QUERY_V4_PARAMS: Final = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)


class PayloadMode(enum.Enum):
    """How the body of an authenticated request is protected, and so how to read it."""

    #: Nothing to check (``UNSIGNED-PAYLOAD``, presigned URLs, SigV2).
    UNSIGNED = "UNSIGNED-PAYLOAD"
    #: The body's SHA-256 must equal :attr:`AuthResult.content_sha256`.
    SIGNED = "SIGNED"
    #: aws-chunked body, every chunk signed.
    STREAMING_SIGNED = sigv4.STREAMING_PAYLOAD
    #: aws-chunked body, every chunk signed, then a signed trailer.
    STREAMING_SIGNED_TRAILER = sigv4.STREAMING_PAYLOAD_TRAILER
    #: aws-chunked body, chunks unsigned, then an unsigned trailer.
    STREAMING_UNSIGNED_TRAILER = sigv4.STREAMING_UNSIGNED_TRAILER

    @property
    def is_chunked(self) -> bool:
        """Tell whether the body is aws-chunked."""
        return self.name.startswith("STREAMING_")

    @property
    def has_trailer(self) -> bool:
        """Tell whether an aws-chunked body ends with trailer headers."""
        return self.name.endswith("_TRAILER")


@frozen
class RequestView:
    """What authentication needs of a request, as it came over the wire.

    ``raw_path`` is percent-encoded and without the query; ``headers`` have lower-case
    names. ``bucket_from_host`` is the bucket named by the host of a virtual-hosted
    request (SigV2 signs it as part of the path).
    """

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, Sequence[str]]
    bucket_from_host: str | None = None

    def header(self, name: str) -> str | None:
        """Return the first value of the lower-case header ``name``, or None."""
        values = self.headers.get(name)
        return values[0] if values else None


@frozen
class AuthResult:
    """An authenticated request: who sent it and how to check its body.

    ``chunk_signer`` checks the chunk signatures of ``STREAMING_SIGNED*`` bodies;
    ``content_sha256`` is the lower-case hex SHA-256 a ``SIGNED`` body must have.
    """

    access_key: str
    payload: PayloadMode
    chunk_signer: sigv4.ChunkSigner | None = None
    content_sha256: str | None = None


def authenticate(
    view: RequestView, lookup_secret: Callable[[str], str | None], now: float
) -> AuthResult:
    """Authenticate a request at time ``now`` (POSIX seconds); raise :class:`S3Error` if not.

    ``lookup_secret`` gives the secret key of an access key, or None if there is none.
    """
    authorization = view.header("authorization")
    if authorization is not None:
        if authorization.startswith(sigv4.ALGORITHM + " "):
            return _sigv4_header(view, authorization, lookup_secret, now)
        if authorization.startswith("AWS "):
            return _sigv2_header(view, authorization, lookup_secret, now)
        raise S3Error.of("InvalidArgument", "Unsupported Authorization Type")
    params = dict(reversed(sigv4.parse_query(view.raw_query)))
    if "X-Amz-Algorithm" in params or "X-Amz-Signature" in params:
        return _sigv4_query(view, params, lookup_secret, now)
    if "Signature" in params or "AWSAccessKeyId" in params:
        return _sigv2_query(view, params, lookup_secret, now)
    raise S3Error.of("AccessDenied", "Anonymous access is not allowed.")


def _secret(lookup_secret: Callable[[str], str | None], access_key: str) -> str:
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error.of(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    return secret


def _check_skew(request_time: float, now: float) -> None:
    if abs(now - request_time) > MAX_CLOCK_SKEW:
        raise S3Error.of(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )


def _parse_amz_date(value: str, error_code: str, message: str) -> float:
    """The time of an ``x-amz-date`` (``YYYYMMDDTHHMMSSZ``), as a POSIX timestamp."""
    when = _amz_timestamp(value)
    if when is None:
        raise S3Error.of(error_code, message)
    return when


@functools.lru_cache(maxsize=256)
def _amz_timestamp(value: str) -> float | None:
    """The timestamp of an ``x-amz-date``, None if it is not one (requests share seconds)."""
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:
        when = datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return when.timestamp()


def _parse_http_date(value: str) -> float:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError) as e:
        raise S3Error.of("AccessDenied", _NO_DATE) from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _payload_mode(content_sha256: str) -> PayloadMode:
    if content_sha256 == sigv4.UNSIGNED_PAYLOAD:
        return PayloadMode.UNSIGNED
    if content_sha256.startswith("STREAMING-"):
        try:
            return PayloadMode(content_sha256)
        except ValueError:
            pass
    elif _SHA256_HEX.fullmatch(content_sha256):
        return PayloadMode.SIGNED
    raise S3Error.of(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, STREAMING-UNSIGNED-PAYLOAD-TRAILER "
        "or a valid sha256 value.",
    )


def _signature_mismatch() -> S3Error:
    return S3Error.of(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def _sigv4_header(
    view: RequestView,
    authorization: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
) -> AuthResult:
    parsed = sigv4.AuthorizationHeader.parse(authorization)
    content_sha256 = view.header("x-amz-content-sha256")
    if content_sha256 is None:
        raise S3Error.of(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    mode = _payload_mode(content_sha256)
    amz_date = view.header("x-amz-date")
    if amz_date is not None:
        request_time = _parse_amz_date(amz_date, "AccessDenied", _NO_DATE)
    else:
        http_date = view.header("date")
        if http_date is None:
            raise S3Error.of("AccessDenied", _NO_DATE)
        request_time = _parse_http_date(http_date)
        amz_date = datetime.fromtimestamp(request_time, UTC).strftime(_AMZ_DATE_FORMAT)
    credential = parsed.credential
    if credential.date != amz_date[:8]:
        raise S3Error.of(
            "AuthorizationHeaderMalformed",
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        )
    secret = _secret(lookup_secret, credential.access_key)
    _check_skew(request_time, now)
    canonical = sigv4.canonical_request(
        view.method,
        view.raw_path,
        view.raw_query,
        view.headers,
        parsed.signed_headers,
        content_sha256,
    )
    key = sigv4.derive_signing_key(secret, credential.date, credential.region, credential.service)
    expected = sigv4.sign(key, sigv4.string_to_sign(amz_date, credential.scope, canonical))
    if not sigv4.signatures_match(expected, parsed.signature):
        raise _signature_mismatch()
    signer = None
    if mode in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER):
        signer = sigv4.ChunkSigner(key, amz_date, credential.scope, expected)
    return AuthResult(
        credential.access_key,
        mode,
        chunk_signer=signer,
        content_sha256=content_sha256 if mode is PayloadMode.SIGNED else None,
    )


def _sigv4_query(
    view: RequestView,
    params: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: float,
) -> AuthResult:
    error = "AuthorizationQueryParametersError"
    if any(name not in params for name in _QUERY_V4_PARAMS):
        raise S3Error.of(
            error,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters.",
        )
    if params["X-Amz-Algorithm"] != sigv4.ALGORITHM:
        raise S3Error.of(error, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_PRESIGNED_EXPIRES:
        raise S3Error.of(
            error,
            "X-Amz-Expires must be a number of seconds between 1 and 604800 (seven days).",
        )
    amz_date = params["X-Amz-Date"]
    request_time = _parse_amz_date(
        amz_date, error, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
    )
    credential = sigv4.Credential.parse(params["X-Amz-Credential"], error)
    if credential.date != amz_date[:8]:
        raise S3Error.of(error, "Invalid credential date. Date is not the same as X-Amz-Date.")
    signed_headers = sigv4.parse_signed_headers(params["X-Amz-SignedHeaders"], error)
    secret = _secret(lookup_secret, credential.access_key)
    if now < request_time - MAX_CLOCK_SKEW:
        raise S3Error.of("AccessDenied", "Request is not valid yet")
    if now > request_time + int(expires_text):
        raise S3Error.of("AccessDenied", "Request has expired")
    canonical = sigv4.canonical_request(
        view.method,
        view.raw_path,
        view.raw_query,
        view.headers,
        signed_headers,
        params.get("X-Amz-Content-Sha256", sigv4.UNSIGNED_PAYLOAD),
        presigned=True,
    )
    key = sigv4.derive_signing_key(secret, credential.date, credential.region, credential.service)
    expected = sigv4.sign(key, sigv4.string_to_sign(amz_date, credential.scope, canonical))
    if not sigv4.signatures_match(expected, params["X-Amz-Signature"]):
        raise _signature_mismatch()
    return AuthResult(credential.access_key, PayloadMode.UNSIGNED)


def _sigv2_header(
    view: RequestView,
    authorization: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
) -> AuthResult:
    access_key, colon, signature = authorization[len("AWS ") :].strip().rpartition(":")
    if not colon or not access_key or not signature:
        raise S3Error.of("InvalidArgument", "AWS authorization header is invalid.")
    amz_date = view.header("x-amz-date")
    http_date = view.header("date")
    if amz_date is not None:
        request_time = _parse_http_date(amz_date)
        signed_date = ""
    elif http_date is not None:
        request_time = _parse_http_date(http_date)
        signed_date = http_date.strip()
    else:
        raise S3Error.of("AccessDenied", _NO_DATE)
    secret = _secret(lookup_secret, access_key)
    _check_skew(request_time, now)
    if not _sigv2_matches(view, view.headers, signed_date, secret, signature):
        raise _signature_mismatch()
    return AuthResult(access_key, PayloadMode.UNSIGNED)


def _sigv2_query(
    view: RequestView,
    params: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: float,
) -> AuthResult:
    if any(name not in params for name in ("AWSAccessKeyId", "Expires", "Signature")):
        raise S3Error.of(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
            "parameters",
        )
    expires = params["Expires"]
    if not expires.isdigit():
        raise S3Error.of("AccessDenied", "Invalid date (should be seconds since epoch)")
    secret = _secret(lookup_secret, params["AWSAccessKeyId"])
    if now > int(expires):
        raise S3Error.of("AccessDenied", "Request has expired")
    headers = dict(view.headers)
    for name, value in params.items():
        lowered = name.lower()
        if lowered.startswith("x-amz-") or lowered in ("content-type", "content-md5"):
            headers[lowered] = (value,)
    if not _sigv2_matches(view, headers, expires, secret, params["Signature"]):
        raise _signature_mismatch()
    return AuthResult(params["AWSAccessKeyId"], PayloadMode.UNSIGNED)


def _sigv2_matches(
    view: RequestView,
    headers: Mapping[str, Sequence[str]],
    date: str,
    secret: str,
    signature: str,
) -> bool:
    """Check a SigV2 signature; a bucket path may be signed with or without its last slash.

    botocore signs ``/BUCKET/`` for a path-style request it sends to ``/BUCKET``.
    """
    paths = [view.raw_path]
    if view.bucket_from_host is None and view.raw_path.count("/") == 1 and view.raw_path != "/":
        paths.append(view.raw_path + "/")
    matched = False
    for path in paths:
        text = sigv2.string_to_sign(
            view.method, path, view.raw_query, headers, date, view.bucket_from_host
        )
        matched |= sigv4.signatures_match(sigv2.sign(secret, text), signature)
    return matched
