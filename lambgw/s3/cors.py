"""Cross-origin resource sharing, so that a browser page can talk to the gateway.

The operator lists the origins allowed (``[gateway] cors_origins``, none by default), and may
narrow the methods and request headers.  A preflight ``OPTIONS`` is answered without
authentication: with the CORS headers if its origin, method and headers are allowed, with
``403 AccessForbidden`` otherwise.  Ordinary responses to an allowed origin carry
``Access-Control-Allow-Origin`` and expose the headers a page needs (``ETag``, ``x-amz-*``).
No Twisted here: the policy takes header values and gives header lists.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from attrs import frozen

from lambgw.protocol.errors import S3Error

DEFAULT_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
#: Response headers a page may read: what uploads and downloads tell their caller.
EXPOSED_HEADERS = (
    "ETag",
    "Content-Length",
    "Content-Range",
    "Last-Modified",
    "x-amz-request-id",
    "x-amz-id-2",
    "x-amz-version-id",
    "x-amz-delete-marker",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-checksum-type",
)
#: How long (seconds) a browser may keep a preflight's answer.
MAX_AGE = 3000

Headers = list[tuple[str, str]]


def _forbidden(message: str) -> S3Error:
    return S3Error("AccessForbidden", 403, message)


@frozen
class CorsPolicy:
    """Which origins, methods and request headers cross-origin requests may use.

    An origin is matched exactly or as a pattern (``https://*.example.com``, ``*`` for any);
    ``headers`` are lower-case names or patterns (``x-amz-*``, ``*``).
    """

    origins: tuple[str, ...] = ()
    methods: tuple[str, ...] = DEFAULT_METHODS
    headers: tuple[str, ...] = ("*",)

    @classmethod
    def of(
        cls,
        origins: Sequence[str],
        methods: Sequence[str] | None = None,
        headers: Sequence[str] | None = None,
    ) -> CorsPolicy:
        """Build a policy from configured lists, normalizing case."""
        return cls(
            tuple(origins),
            tuple(m.upper() for m in methods) if methods is not None else DEFAULT_METHODS,
            tuple(h.lower() for h in headers) if headers is not None else ("*",),
        )

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed."""
        return bool(self.origins)

    def allows_origin(self, origin: str | None) -> bool:
        """Whether ``origin`` may make cross-origin requests."""
        return bool(origin) and any(
            fnmatch.fnmatchcase(origin or "", allowed) for allowed in self.origins
        )

    def _allow_origin(self, origin: str) -> Headers:
        value = "*" if self.origins == ("*",) else origin
        headers = [("Access-Control-Allow-Origin", value)]
        if value != "*":
            headers.append(("Vary", "Origin"))
        return headers

    def response_headers(self, origin: str | None) -> Headers:
        """The CORS headers of an ordinary response to a request from ``origin``."""
        if origin is None or not self.allows_origin(origin):
            return []
        return [
            *self._allow_origin(origin),
            ("Access-Control-Expose-Headers", ", ".join(EXPOSED_HEADERS)),
        ]

    def preflight(
        self, origin: str | None, method: str | None, request_headers: str | None
    ) -> Headers:
        """The headers answering a preflight; raise ``AccessForbidden`` if it is refused."""
        if not origin or not method:
            raise _forbidden("CORSResponse: Origin and Access-Control-Request-Method are required.")
        if not self.allows_origin(origin):
            raise _forbidden("CORSResponse: This CORS request is not allowed.")
        if method.upper() not in self.methods:
            raise _forbidden(f"CORSResponse: The method {method} is not allowed.")
        asked = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
        for name in asked:
            if not any(fnmatch.fnmatchcase(name, allowed) for allowed in self.headers):
                raise _forbidden(f"CORSResponse: The header {name} is not allowed.")
        headers = [
            *self._allow_origin(origin),
            ("Access-Control-Allow-Methods", ", ".join(self.methods)),
            ("Access-Control-Max-Age", str(MAX_AGE)),
        ]
        if asked:
            headers.append(("Access-Control-Allow-Headers", ", ".join(asked)))
        return headers
