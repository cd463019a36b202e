"""The S3 API resource: each request goes to its operation; errors become S3 XML.

Operations are chosen from the method, whether a bucket and a key are named, and the query's
sub-resources, as S3 does.  Every response carries ``x-amz-request-id``; every failure is
rendered in one place as an S3 error document.

The API is a Klein app with one catch-all route.  :class:`S3Resource` runs that route's
handler itself, as Klein's resource would, but without binding and matching a URL map per
request: there is nothing to match, and on small requests the matching cost as much as the
operation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

import lambgw.s3.acl as acl
import lambgw.s3.attributes as attributes
import lambgw.s3.buckets as buckets
import lambgw.s3.objects as objects
import lambgw.s3.postobject as postobject
import lambgw.s3.tagging as tagging
from lambgw.gateway.core import Gateway
from lambgw.httpchannel import header_name
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import error_document
from lambgw.s3.cors import CorsPolicy
from lambgw.s3.request import S3Request, Target

log = Logger()

#: Headers every S3 response has, under twisted.web's names for them.
_SERVER, _REQUEST_ID, _ID_2 = map(header_name, (b"Server", b"x-amz-request-id", b"x-amz-id-2"))

#: Sub-resources that name operations this gateway does not implement.
UNSUPPORTED = frozenset(
    {
        "accelerate", "analytics", "cors", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "lifecycle", "logging", "metrics", "notification",
        "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock",
        "replication", "requestPayment", "restore", "retention", "select",
        "torrent", "versions", "website", "versionId",
    }
)  # fmt: skip

Handler = Callable[["S3API", S3Request, Target], Any]


def not_implemented(what: str) -> S3Error:
    """The NotImplemented error for an operation this gateway does not provide."""
    return S3Error(
        "NotImplemented",
        501,
        f"A header or query you provided implies functionality that is not implemented: {what}.",
    )


class S3API:
    """The S3 operations of one gateway, served through Klein."""

    app = Klein()
    app.url_map.merge_slashes = False

    #: Called with each request as it is rendered; what it returns is called once the request
    #: is answered (with True) or given up by its client (with False).
    observer: Callable[[S3Request], Callable[[bool], None]] | None = None

    def __init__(self, gateway: Gateway, multipart: Any = None) -> None:
        self.gateway = gateway
        self.multipart = multipart
        self.owner_id = hashlib.sha256(gateway.account.encode()).hexdigest()

    def resource(self) -> Resource:
        """The twisted.web resource serving the API."""
        return S3Resource(self)

    def choose(self, request: S3Request, target: Target) -> Handler:
        """The handler of the operation a request asks for."""
        method = request.method.decode("ascii", "replace").upper()
        query = target.query
        unsupported = sorted(set(query) & UNSUPPORTED)
        if method not in ("GET", "HEAD", "PUT", "POST", "DELETE"):
            raise S3Error(
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource.",
            )
        if not target.bucket:
            if method in ("GET", "HEAD"):
                return buckets.list_buckets
            raise S3Error("MethodNotAllowed", 405, "The specified method is not allowed.")
        if unsupported and not (method == "GET" and unsupported == ["versioning"]):
            raise not_implemented(f"{method} ?{unsupported[0]}")
        handler = (
            self._object_handler(method, target)
            if target.key
            else self._bucket_handler(method, target)
        )
        if handler is None:
            raise S3Error(
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource.",
            )
        return handler

    def _bucket_handler(self, method: str, target: Target) -> Handler | None:
        query = target.query
        for name in ("tagging", "attributes"):
            if name in query:
                raise not_implemented(f"{method} bucket ?{name}")
        if method == "GET":
            if "location" in query:
                return buckets.get_location
            if "versioning" in query:
                return buckets.get_versioning
            if "acl" in query:
                return buckets.get_acl
            if "uploads" in query:
                return self._multipart("list_uploads")
            if query.get("list-type") == "2":
                return buckets.list_objects_v2
            return buckets.list_objects_v1
        if method == "HEAD":
            return buckets.head_bucket
        if method == "PUT":
            if "acl" in query:
                return acl.put_acl
            return buckets.create_bucket
        if method == "DELETE":
            return buckets.delete_bucket
        if method == "POST" and "delete" in query:
            return objects.delete_objects
        if method == "POST" and not query:
            return postobject.post_object
        return None

    def _object_handler(self, method: str, target: Target) -> Handler | None:
        query = target.query
        if "acl" in query:
            return {"GET": buckets.get_acl, "PUT": acl.put_acl}.get(method)
        if "tagging" in query:
            return tagging.TAGGING_HANDLERS.get(method)
        if "attributes" in query:
            return attributes.get_object_attributes if method == "GET" else None
        if "uploadId" in query:
            operation = {
                "GET": "list_parts",
                "PUT": "upload_part",
                "POST": "complete",
                "DELETE": "abort",
            }.get(method)
            return self._multipart(operation) if operation else None
        if method == "POST" and "uploads" in query:
            return self._multipart("create")
        return {
            "GET": objects.get_object,
            "HEAD": objects.get_object,
            "PUT": objects.put_object,
            "DELETE": objects.delete_object,
        }.get(method)

    def _multipart(self, operation: str) -> Handler:
        if self.multipart is None:
            raise not_implemented("multipart uploads")
        handler: Handler = getattr(self.multipart, operation)
        return handler

    @app.route("/", branch=True)
    def dispatch(self, request: S3Request) -> Any:
        """Run the operation the request asks for."""
        state = request.s3
        if state.error is not None:
            raise state.error
        assert state.target is not None
        handler = state.handler = self.choose(request, state.target)
        # A Deferred or the answer itself: :func:`serve` takes either, and what it raises.
        return handler(self, request, state.target)

    @app.handle_errors(Exception)
    def render_error(self, request: IRequest, failure: Failure) -> bytes:
        """Render any failure as an S3 error document."""
        assert isinstance(request, S3Request)
        error = failure.value
        if not isinstance(error, S3Error):
            log.failure(
                "Unexpected failure in {method} {path}",
                failure,
                method=request.method,
                path=request.uri.partition(b"?")[0],
            )
            error = S3Error(
                "InternalError", 500, "We encountered an internal error. Please try again."
            )
        return render_s3_error(request, error)


def render_s3_error(request: S3Request, error: S3Error) -> bytes:
    """Set the status and headers of an S3 error and return its document."""
    target = getattr(request.s3, "target", None)
    resource = error.resource
    if resource is None and target is not None:
        resource = "/" + target.bucket + ("/" + target.key if target.key else "")
    if resource is None:
        # The target could not be parsed: name the path as it came, still percent-encoded.
        resource = request.uri.partition(b"?")[0].decode("latin-1")
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", b"application/xml")
    for name in (b"ETag", b"Last-Modified", b"Content-Range", b"Accept-Ranges"):
        request.responseHeaders.removeHeader(name)
    body = error_document(error.code, error.message, resource, request.s3.request_id)
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


def _header(request: S3Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def serve(api: S3API, request: S3Request) -> object:
    """Run ``api``'s catch-all route on ``request`` and write its answer, as Klein would.

    The handler's Deferred is cancelled when the client goes away; a failure is rendered by
    the route's error handler unless the request is already over.
    """
    d: Deferred[Any] = maybeDeferred(api.dispatch, request)
    request.when_over(lambda reason: None if reason is None else d.cancel())

    def answer(result: object) -> None:
        if request.finished or request._disconnected:
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("Unhandled failure of a finished request", result)
            return
        try:
            body = api.render_error(request, result) if isinstance(result, Failure) else result
            if isinstance(body, bytes) and body:
                request.write(body)
            request.finish()
        except Exception:
            log.failure("Unhandled failure writing a response")

    d.addBoth(answer)
    return NOT_DONE_YET


def _request_over(
    reason: Failure | None, request: S3Request, finished: Callable[[bool], None] | None
) -> None:
    """Clean up after a request, then tell its observer whether it was answered.

    The observer hears of it once the bytes handed to the kernel are all counted.
    """
    request.run_cleanups()
    if finished is not None:
        answered = reason is None
        request.when_settled(lambda: finished(answered))


class S3Resource(Resource):
    """The root resource: common headers and CORS, then the S3 API of the request's account.

    ``api_for`` gives the API of the account an access key acts for (by default, ``api``
    serves every key); requests refused before authentication are answered by ``api``.
    ``cors`` gives the CORS policy in force: preflights are answered here, unauthenticated.
    """

    isLeaf = True

    def __init__(
        self,
        api: S3API,
        api_for: Callable[[str], S3API] | None = None,
        cors: Callable[[], CorsPolicy] = CorsPolicy,
    ) -> None:
        super().__init__()
        self._api = api
        self._api_for = api_for
        self._cors = cors

    def _api_of(self, access_key: str | None) -> S3API:
        if access_key is None or self._api_for is None:
            return self._api
        return self._api_for(access_key)

    def _preflight(self, request: S3Request, policy: CorsPolicy) -> bytes:
        try:
            headers = policy.preflight(
                _header(request, b"origin"),
                _header(request, b"access-control-request-method"),
                _header(request, b"access-control-request-headers"),
            )
        except S3Error as e:
            return render_s3_error(request, e)
        for name, value in headers:
            request.setHeader(name, value)
        request.setHeader(b"Content-Length", b"0")
        return b""

    def render(self, request: S3Request) -> Any:
        """Add the headers every S3 response has and run the request's operation."""
        state = request.s3
        raw = request.responseHeaders._rawHeaders
        request_id = state.request_id.encode()
        raw[_SERVER] = [b"lambgw"]
        raw[_REQUEST_ID] = [request_id]
        raw[_ID_2] = [request_id]
        observer = self._api.observer
        finished = None if observer is None else observer(request)
        request.when_over(lambda reason: _request_over(reason, request, finished))
        policy = self._cors()
        if request.method == b"OPTIONS" and state.error is None:
            return self._preflight(request, policy)
        for name, value in policy.response_headers(_header(request, b"origin")):
            request.setHeader(name, value)
        if state.error is not None and state.error.code == "InvalidURI":
            return render_s3_error(request, state.error)
        try:
            api = self._api_of(state.access_key)
        except S3Error as e:
            return render_s3_error(request, e)
        return serve(api, request)
