"""The failures of the network interface, shared by its implementations."""

from __future__ import annotations


class NetworkError(Exception):
    """A request to the network failed; ``str()`` says why, for a person."""


class NoSuchAccount(NetworkError):
    """The account does not exist on the network."""


class NoSuchOrder(NetworkError):
    """The order does not exist, or belongs to another account."""


class NoSuchPath(NetworkError):
    """No object is stored at that path of the order."""


class QuotaExceeded(NetworkError):
    """Storing this would exceed the order's capacity."""


class OrderExpired(NetworkError):
    """The order has expired (or is not active) and cannot be written."""


class PreconditionFailed(NetworkError):
    """A conditional write found an object where none was allowed, or another etag."""


class InvalidPath(NetworkError):
    """The path is not a valid object name (empty, too long, or not UTF-8)."""


class NetworkUnavailable(NetworkError):
    """The network could not be reached or did not answer in time."""


class NoSuchUpload(NetworkError):
    """The multipart upload does not exist (aborted, completed, expired, or another's)."""


class UploadExists(NetworkError):
    """An upload with that id exists already."""


class InvalidPart(NetworkError):
    """A part named by a completion is not stored, or its ETag or checksum differs."""


class InvalidPartOrder(NetworkError):
    """A completion's parts are not in ascending order of part number."""


class EntityTooSmall(NetworkError):
    """A part other than the last of a completion is below the minimum part size."""


class BadDigest(NetworkError):
    """A checksum given with a completion does not match the parts'."""


class DigestMismatch(NetworkError):
    """A streamed body's MD5 or checksum, computed by the network, is not the one expected.

    ``str()`` is S3's message for the digest that differs.
    """


#: The network's ordinary answers to a request: they say what is (or is not) stored, not that
#: the network failed, so they are neither logged nor counted as failed calls.
ANSWERS: tuple[type[NetworkError], ...] = (
    NoSuchAccount,
    NoSuchOrder,
    NoSuchPath,
    QuotaExceeded,
    OrderExpired,
    PreconditionFailed,
    InvalidPath,
    NoSuchUpload,
    UploadExists,
    InvalidPart,
    InvalidPartOrder,
    EntityTooSmall,
    BadDigest,
    DigestMismatch,
)
