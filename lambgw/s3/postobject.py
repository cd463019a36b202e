"""POST Object: a browser uploads a file with an HTML form whose policy a server signed.

The form's body is received by :class:`~lambgw.s3.formbody.FormBody`, which checks the
policy before the file's bytes are spooled.  This stores the object and answers as the
form asks: a redirect (``success_action_redirect``), or ``success_action_status`` 200, 201
(with an XML description) or 204 (the default).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from twisted.internet.defer import Deferred, inlineCallbacks

from lambgw.network.interface import ObjectInfo, Segment
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import document, element
from lambgw.s3.formbody import FormBody
from lambgw.s3.front import new_object_from
from lambgw.s3.request import S3Request, Target

if TYPE_CHECKING:
    from lambgw.s3.api import S3API


def _location(request: S3Request, bucket: str, key: str) -> str:
    """The URL of the new object, through the host the form was posted to."""
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    return f"{scheme}://{host}/{quote(bucket)}/{quote(key)}"


def _redirect(url: str, bucket: str, key: str, etag: str) -> str | None:
    """Where ``success_action_redirect`` sends the browser, or ``None`` if it is no URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    query = urlencode({"bucket": bucket, "key": key, "etag": etag})
    return url + ("&" if parts.query else "?") + query


@inlineCallbacks
def post_object(
    api: S3API, request: S3Request, target: Target
) -> Generator[Deferred[Any], Any, bytes]:
    """POST Object: store the form's file at its key and answer as the form asks."""
    form = request.content
    if not isinstance(form, FormBody):
        raise S3Error(
            "PreconditionFailed",
            412,
            "Bucket POST must be of the enclosure-type multipart/form-data",
        )
    spooled = request.s3.spooled()
    if form.length_range is not None and spooled.size < form.length_range[0]:
        raise S3Error.of(
            "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size"
        )
    fields = form.fields
    headers = {name: [value] for name, value in fields.items()}
    new = new_object_from(headers, spooled.size, spooled.md5.hex())
    segment = Segment(spooled.path, spooled.size, spooled.data)
    info: ObjectInfo = yield api.gateway.put_object(target.bucket, form.key, [segment], new)
    etag = f'"{info.etag}"'
    location = _location(request, target.bucket, form.key)
    request.setHeader(b"ETag", etag.encode())
    request.setHeader(b"Location", location.encode())
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        to = _redirect(redirect, target.bucket, form.key, etag)
        if to is not None:
            request.setResponseCode(303)
            request.setHeader(b"Location", to.encode())
            request.setHeader(b"Content-Length", b"0")
            return b""
    status = fields.get("success_action_status")
    if status == "201":
        request.setResponseCode(201)
        request.setHeader(b"Content-Type", b"application/xml")
        return document(
            "PostResponse",
            element("Location", location)
            + element("Bucket", target.bucket)
            + element("Key", form.key)
            + element("ETag", etag),
        )
    request.setResponseCode(200 if status == "200" else 204)
    request.setHeader(b"Content-Length", b"0")
    return b""
