"""The one exception type of the S3 API: an S3 error code, its HTTP status and a message."""

from __future__ import annotations

from typing import Final

#: The HTTP status of each S3 error code the gateway raises.
STATUS: Final[dict[str, int]] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "MissingSecurityHeader": 400,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(Exception):
    """An S3 error response: ``code`` (e.g. ``NoSuchKey``), HTTP ``status``, ``message``.

    ``resource`` is the bucket or key the error is about, if any, for the ``<Resource>``
    element of the error document. ``S3Error.of(code, message)`` takes the status from
    :data:`STATUS`.
    """

    code: str
    status: int
    message: str
    resource: str | None

    def __init__(self, code: str, status: int, message: str, resource: str | None = None) -> None:
        super().__init__(code, status, message)
        self.code = code
        self.status = status
        self.message = message
        self.resource = resource

    @classmethod
    def of(cls, code: str, message: str, resource: str | None = None) -> S3Error:
        """Build the error ``code`` with its usual HTTP status (400 if the code is not known)."""
        return cls(code, STATUS.get(code, 400), message, resource)

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"
