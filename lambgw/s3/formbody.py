"""The body of a browser upload (POST Object): its fields checked, then its file spooled.

The fields before the file (at most 20 KiB) are read in memory as they arrive.  When the
file's part begins, the policy's signature and conditions are checked: a form that fails
them stores nothing, and the rest of its body is read and dropped.  The file's bytes then
go through the spool like any upload body (hashed on the way, never whole in memory), cut
from the rest of the form by :class:`~lambgw.protocol.formdata.FilePartDecoder`, into the
spool of the account whose key signed the policy.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

from lambgw.gateway.core import MAX_PUT_SIZE, Gateway
from lambgw.protocol.errors import S3Error
from lambgw.protocol.formdata import FilePartDecoder, FormHead, form_boundary
from lambgw.protocol.postpolicy import check_policy, decode_policy, missing_field, signed_by
from lambgw.s3.request import S3Request, Target
from lambgw.s3.spool import SpoolBody, SpooledFile


def is_form_post(method: str, target: Target, headers: Mapping[str, Sequence[str]]) -> bool:
    """Whether a request is a browser upload: a form POSTed to a bucket, no sub-resource."""
    content_type = headers.get("content-type") or [""]
    return (
        method == "POST"
        and bool(target.bucket)
        and not target.key
        and not target.query
        and content_type[0].split(";")[0].strip().lower() == "multipart/form-data"
    )


def no_file() -> S3Error:
    """The error of a form without its file."""
    return S3Error.of("InvalidArgument", "POST requires exactly one file upload per request.")


class FormBody:
    """Receives a browser upload for ``target``: fields, policy check, then the file spooled.

    Once the policy is checked, ``fields``, ``key``, ``length_range`` and ``content_type``
    describe the upload, and the request acts for the access key that signed it.
    """

    def __init__(
        self,
        request: S3Request,
        target: Target,
        content_type: str | None,
        length: int | None,
        gateway_for: Callable[[str], Gateway],
        reactor: IReactorFromThreads,
        pool: ThreadPool,
        lookup_secret: Callable[[str], str | None],
        clock: Callable[[], float],
    ) -> None:
        boundary = form_boundary(content_type)
        assert boundary is not None  # is_form_post chose this body
        self._boundary = boundary
        self._request = request
        self._target = target
        self._length = length
        self._gateway_for = gateway_for
        self._reactor = reactor
        self._pool = pool
        self._lookup_secret = lookup_secret
        self._clock = clock
        self._head = FormHead(boundary)
        self._spool: SpoolBody | None = None
        self._error: S3Error | None = None
        self._received = 0
        #: The form's fields before the file, by lower-case name.
        self.fields: dict[str, str] = {}
        #: The object's key (``${filename}`` replaced).
        self.key = ""
        #: The policy's ``content-length-range``, if it has one.
        self.length_range: tuple[int, int] | None = None

    def write(self, data: bytes) -> None:
        """Take the next piece of the body."""
        self._received += len(data)
        if self._error is not None:
            return
        if self._spool is not None:
            self._spool.write(data)
            return
        try:
            rest = self._head.feed(data)
            if rest is not None:
                self._start_file(rest)
        except S3Error as e:
            self._error = e

    def _start_file(self, rest: bytes) -> None:
        """Check the fields and the policy; start spooling the file (``rest`` begins it)."""
        fields = self._head.fields
        if "key" not in fields:
            raise missing_field("key")
        access_key = signed_by(fields, self._lookup_secret)
        if "policy" not in fields:
            raise missing_field("policy")
        policy = decode_policy(fields["policy"])
        self.length_range = check_policy(policy, fields, self._target.bucket, self._clock())
        filename = posixpath.basename(self._head.filename.replace("\\", "/"))
        self.key = fields["key"].replace("${filename}", filename)
        if not self.key:
            raise S3Error.of("InvalidArgument", "User key must have a length greater than 0.")
        gateway = self._gateway_for(access_key)
        left = None if self._length is None else self._length - self._received + len(rest)
        gateway.precheck_upload(self._target.bucket, max(0, (left or 0) - len(self._boundary)))
        self.fields = fields
        self._request.s3.access_key = access_key
        high = MAX_PUT_SIZE if self.length_range is None else self.length_range[1]
        transport = self._request.channel.transport
        self._spool = SpoolBody(
            self._reactor,
            self._pool,
            gateway.spool_dir,
            max_size=min(MAX_PUT_SIZE, high),
            decoder=FilePartDecoder(self._boundary),
            pause=transport.pauseProducing,
            resume=transport.resumeProducing,
        )
        if rest:
            self._spool.write(rest)

    def finish(self) -> Deferred[SpooledFile]:
        """Fire with the spooled file once the body is in, or fail with its error."""
        if self._error is not None:
            return fail(self._error)
        if self._spool is None:
            return fail(no_file())
        return self._spool.finish()

    def tell(self) -> int:
        """Bytes received so far."""
        return self._received

    def seek(self, offset: int, whence: int = 0) -> None:
        """Do nothing: the file is read back from the spool."""

    def read(self, size: int = -1) -> bytes:
        """Nothing: the form is parsed here, not by twisted.web."""
        return b""

    def close(self) -> None:
        """Drop the file unless it was finished."""
        if self._spool is not None:
            self._spool.close()
