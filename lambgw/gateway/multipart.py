"""Multipart uploads, kept by the network: S3 buckets and keys onto the network's uploads.

The gateway holds no state of an upload: its parts, part list and expiry are the network's
(:meth:`~lambgw.network.interface.INetwork.create_upload` and the calls after it), so any
gateway process serves any request of an upload.  This resolves buckets and keys into
orders and paths, checks what S3 checks before the network is asked (part numbers, upload
ids), and turns the network's refusals into S3's errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from attrs import define, evolve
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

from lambgw.gateway.buckets import Bucket, OrderFolderBuckets
from lambgw.gateway.core import Gateway, check_key, keyed, s3_error
from lambgw.network import errors as net
from lambgw.network.completion import MAX_PART_NUMBER, UPLOAD_ID
from lambgw.network.interface import (
    CompletedPart,
    IUpload,
    MultipartUpload,
    NewObject,
    ObjectInfo,
    PartInfo,
    PartsPage,
    Segment,
    UploadsPage,
)
from lambgw.protocol.errors import S3Error

_T = TypeVar("_T")

#: The largest part, as in S3.
MAX_PART_SIZE = 5 * 1024**3


def no_such_upload(upload_id: str) -> S3Error:
    """S3's error for an upload that does not exist (or not for that key)."""
    return S3Error(
        "NoSuchUpload",
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload "
        "may have been aborted or completed.",
        upload_id,
    )


def check_part_number(value: str | int) -> int:
    """Return the part number of a request; ``InvalidArgument`` if it is not 1..10000."""
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= MAX_PART_NUMBER:
        raise S3Error.of(
            "InvalidArgument",
            f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive.",
        )
    return int(text)


def _s3_error(error: net.NetworkError, bucket: str, key: str, upload_id: str) -> BaseException:
    """The S3 error of a network failure of an upload's request."""
    if isinstance(error, net.NoSuchUpload):
        return no_such_upload(upload_id)
    for kind in (net.InvalidPart, net.InvalidPartOrder, net.EntityTooSmall, net.BadDigest):
        if isinstance(error, kind):
            return S3Error.of(kind.__name__, str(error), f"/{bucket}/{key}")
    return s3_error(error, bucket, key)


@define
class MultipartUploads:
    """The multipart uploads of one gateway's account, on the network.

    ``pool`` runs the disk work of bringing over the uploads an earlier release kept in
    ``legacy_dir`` (see :mod:`lambgw.gateway.legacy`).
    """

    gateway: Gateway
    reactor: IReactorFromThreads
    pool: ThreadPool
    legacy_dir: str = ""

    @inlineCallbacks
    def _in_bucket(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        call: Callable[[Bucket], Deferred[_T]],
    ) -> Any:
        """Run ``call`` with the resolved bucket, its failures turned into S3 errors."""
        b: Bucket = yield self.gateway.bucket(bucket)
        if key:
            check_key(key, b.prefix)
        if upload_id and not UPLOAD_ID.fullmatch(upload_id):
            raise no_such_upload(upload_id)
        try:
            result = yield call(b)
        except net.NetworkError as e:
            raise _s3_error(e, bucket, key, upload_id) from None
        return result

    def create(
        self, bucket: str, key: str, described: NewObject, checksum_algorithm: str
    ) -> Deferred[MultipartUpload]:
        """Open an upload to ``key``; fire with it (its path is the key)."""
        gateway = self.gateway
        d: Deferred[MultipartUpload] = self._in_bucket(
            bucket,
            key,
            "",
            lambda b: gateway.network.create_upload(
                gateway.account, b.order_id, b.prefix + key, described, checksum_algorithm
            ),
        )
        return d.addCallback(lambda upload: evolve(upload, path=key))

    @inlineCallbacks
    def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        segment: Segment,
        etag: str,
        checksums: Mapping[str, str],
    ) -> Any:
        """Store the spooled ``segment`` (consumed either way) as part ``number``."""
        gateway = self.gateway
        order: list[str] = []

        def store(b: Bucket) -> Deferred[PartInfo]:
            order.append(b.order_id)
            return gateway.network.upload_part(
                gateway.account,
                b.order_id,
                b.prefix + key,
                upload_id,
                number,
                segment,
                etag,
                checksums,
            )

        part: PartInfo = yield self._in_bucket(bucket, key, upload_id, store)
        gateway.orders.charge(order[0], part.size)
        return part

    @inlineCallbacks
    def finish_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        upload: IUpload,
        new: NewObject,
        content_sha256: str,
    ) -> Any:
        """Store the part streamed by ``upload``: ``new`` gives its size, ETag and checksums."""
        try:
            info: ObjectInfo = yield self.gateway.finish_upload(
                bucket, key, upload, new, content_sha256
            )
        except net.NetworkError as e:
            raise _s3_error(e, bucket, key, upload_id) from None
        return PartInfo(number, info.size, info.etag, info.last_modified, info.checksums)

    def list_parts(
        self, bucket: str, key: str, upload_id: str, marker: int, max_parts: int
    ) -> Deferred[PartsPage]:
        """The upload and a page of its parts."""
        gateway = self.gateway
        d: Deferred[PartsPage] = self._in_bucket(
            bucket,
            key,
            upload_id,
            lambda b: gateway.network.list_parts(
                gateway.account, b.order_id, b.prefix + key, upload_id, marker, max_parts
            ),
        )
        return d.addCallback(lambda page: evolve(page, upload=evolve(page.upload, path=key)))

    @inlineCallbacks
    def list_uploads(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str,
        upload_id_marker: str,
        max_uploads: int,
    ) -> Any:
        """A page of the bucket's open uploads, their paths turned back into keys."""
        gateway = self.gateway
        cut: list[int] = []

        def listed(b: Bucket) -> Deferred[UploadsPage]:
            cut.append(len(b.prefix))
            return gateway.network.list_uploads(
                gateway.account,
                b.order_id,
                b.prefix + prefix,
                delimiter,
                b.prefix + key_marker if key_marker else "",
                upload_id_marker,
                max_uploads,
            )

        page: UploadsPage = yield self._in_bucket(bucket, "", "", listed)
        if not cut[0]:
            return page
        n = cut[0]
        return UploadsPage(
            uploads=[evolve(u, path=u.path[n:]) for u in page.uploads],
            common_prefixes=[p[n:] for p in page.common_prefixes],
            is_truncated=page.is_truncated,
            next_key_marker=page.next_key_marker[n:],
            next_upload_id_marker=page.next_upload_id_marker,
        )

    @inlineCallbacks
    def abort(self, bucket: str, key: str, upload_id: str) -> Any:
        """Abort the upload: its parts are removed and their space given back."""
        gateway = self.gateway
        yield self._in_bucket(
            bucket,
            key,
            upload_id,
            lambda b: gateway.network.abort_upload(
                gateway.account, b.order_id, b.prefix + key, upload_id
            ),
        )
        yield gateway.orders.refresh()

    def complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        checksums: Mapping[str, str],
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Make the object of the named parts (a repeated completion answers the same).

        The write's conditions (``If-None-Match: *``, ``If-Match``) are the network's to check.
        """
        gateway = self.gateway
        d: Deferred[ObjectInfo] = self._in_bucket(
            bucket,
            key,
            upload_id,
            lambda b: gateway.network.complete_upload(
                gateway.account,
                b.order_id,
                b.prefix + key,
                upload_id,
                parts,
                checksums,
                if_none_match,
                if_match,
            ),
        )
        return d.addCallback(keyed, key)

    def bucket_and_key(self, upload: MultipartUpload) -> tuple[str, str]:
        """The bucket and key of an upload the network listed (by order and path)."""
        if isinstance(self.gateway.buckets, OrderFolderBuckets):
            bucket, _, key = upload.path.partition("/")
            return bucket, key
        return upload.order_id, upload.path

    @inlineCallbacks
    def open_uploads(self) -> Any:
        """The open uploads of every order of the account (the first 1,000 of each)."""
        found: list[MultipartUpload] = []
        gateway = self.gateway
        for order in gateway.orders.all():
            page = yield gateway.network.list_uploads(gateway.account, order.order_id)
            found += page.uploads
        return found
