"""The gateway core: S3 buckets and keys onto orders and paths of the network.

The S3 layer calls this with buckets and keys; this resolves them (``lambgw`` or ``s3gw``
mode), calls the network, and turns the network's failures into S3 errors in one place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from attrs import define, evolve
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.python.failure import Failure

from lambgw.gateway.buckets import Bucket, OrderBuckets, OrderFolderBuckets
from lambgw.gateway.orders import OrderCache
from lambgw.network import errors as net
from lambgw.network.interface import (
    MAX_PATH_BYTES,
    INetwork,
    IObjectBody,
    IUpload,
    ListedObject,
    ListPage,
    NewObject,
    ObjectInfo,
    Segment,
)
from lambgw.protocol.errors import S3Error
from lambgw.spooldir import SpoolDirectory

T = TypeVar("T")

#: The largest single PUT, as in S3.
MAX_PUT_SIZE = 5 * 1024**3
#: Spooled bodies untouched this long (seconds) were left by a crash.
SPOOL_STALE_AFTER = 3600.0


def s3_error(failure: BaseException, bucket: str = "", key: str = "") -> BaseException:
    """The S3 error for a network failure (others pass through unchanged)."""
    resource = f"/{bucket}/{key}" if key else f"/{bucket}"
    if isinstance(failure, net.NoSuchOrder):
        return S3Error("NoSuchBucket", 404, "The specified bucket does not exist.", resource)
    if isinstance(failure, net.NoSuchPath):
        return S3Error("NoSuchKey", 404, "The specified key does not exist.", resource)
    if isinstance(failure, net.QuotaExceeded):
        return S3Error("QuotaExceeded", 403, f"The order is full: {failure}", resource)
    if isinstance(failure, net.OrderExpired):
        return S3Error("AccountProblem", 403, f"The order has expired: {failure}", resource)
    if isinstance(failure, net.PreconditionFailed):
        return S3Error(
            "PreconditionFailed",
            412,
            "At least one of the pre-conditions you specified did not hold",
            resource,
        )
    if isinstance(failure, net.InvalidPath):
        return S3Error("InvalidArgument", 400, f"Invalid key: {failure}", resource)
    if isinstance(failure, net.NetworkUnavailable):
        return S3Error(
            "ServiceUnavailable", 503, "The storage network is unavailable; retry.", resource
        )
    return failure


def check_key(key: str, prefix: str) -> None:
    """Refuse keys that S3 refuses: empty, or longer than 1024 bytes of UTF-8."""
    if not key:
        raise S3Error.of("InvalidArgument", "An object key must not be empty.")
    if len(key.encode("utf-8")) > MAX_PATH_BYTES or len(
        (prefix + key).encode("utf-8")
    ) > MAX_PATH_BYTES + len(prefix.encode("utf-8")):
        raise S3Error("KeyTooLongError", 400, "Your key is too long.", key)


@define
class Gateway:
    """One account's buckets and objects, over a network."""

    network: INetwork
    account: str
    orders: OrderCache
    buckets: OrderBuckets | OrderFolderBuckets
    spool: SpoolDirectory

    @property
    def spool_dir(self) -> str:
        """Where this process spools request bodies (its own directory in the spool)."""
        return self.spool.path

    @classmethod
    def create(
        cls, network: INetwork, account: str, spool_dir: str, single_order: str = ""
    ) -> Gateway:
        """A gateway in ``lambgw`` mode, or ``s3gw`` mode when ``single_order`` is given.

        The gateway claims a directory of its own in the spool ``spool_dir``, after removing
        what ended processes left there.
        """
        spool = SpoolDirectory.claim(spool_dir)
        cache = OrderCache(network, account)
        buckets: OrderBuckets | OrderFolderBuckets
        if single_order:
            buckets = OrderFolderBuckets(network, cache, single_order, spool.path)
        else:
            buckets = OrderBuckets(cache)
        return cls(network, account, cache, buckets, spool)

    def _call(self, bucket: str, key: str, call: Callable[[], Deferred[T]]) -> Deferred[T]:
        return self._call_then(bucket, key, call, None)

    def _call_then(
        self,
        bucket: str,
        key: str,
        call: Callable[[], Deferred[Any]],
        then: Callable[[Any], T] | None,
    ) -> Deferred[T]:
        """``call()``, its network errors made S3 errors about ``key``, its result ``then``'d."""

        def translate(failure: Failure) -> Failure:
            if isinstance(failure.value, net.NetworkError):
                raise s3_error(failure.value, bucket, key) from None
            return failure

        try:
            started = call()
        except Exception:
            started = fail()
        if then is None:
            return started.addErrback(translate)
        return started.addCallbacks(then, translate)

    def list_buckets(self) -> Deferred[Sequence[Bucket]]:
        """The buckets, fetched afresh from the network."""
        return self._call("", "", self.buckets.list)

    def bucket(self, name: str) -> Deferred[Bucket]:
        """The bucket ``name`` or NoSuchBucket (from the cache when it is there)."""
        cached = self.buckets.cached(name)
        if cached is not None:
            return succeed(cached)
        return self._call(name, "", lambda: self.buckets.get(name))

    def _in_bucket(self, name: str, then: Callable[[Bucket], Deferred[T]]) -> Deferred[T]:
        """``then(bucket)`` for the bucket ``name``: at once when it is cached, else once known.

        A cached bucket costs no Deferred of its own; what ``then`` raises is the failure of
        the Deferred returned, either way.
        """
        cached = self.buckets.cached(name)
        if cached is None:
            return self.bucket(name).addCallback(then)
        try:
            return then(cached)
        except Exception:
            return fail()

    def create_bucket(self, name: str) -> Deferred[Bucket]:
        """Create bucket ``name`` (s3gw) or say why not (lambgw)."""
        return self._call(name, "", lambda: self.buckets.create(name))

    def delete_bucket(self, name: str) -> Deferred[None]:
        """Delete the empty bucket ``name``."""
        return self._call(name, "", lambda: self.buckets.delete(name))

    def precheck_upload(self, bucket: str, size: int) -> None:
        """Refuse at once an upload that cannot fit, judged from the cached order.

        Only a figure confirmed by the network refuses (see :mod:`lambgw.gateway.orders`).
        Otherwise the order is fetched again in the background and the upload goes on: the
        network refuses it at commit if it does not fit.
        """
        if size > MAX_PUT_SIZE:
            raise S3Error.of(
                "EntityTooLarge",
                f"Your proposed upload exceeds the maximum allowed size of {MAX_PUT_SIZE} bytes.",
            )
        order = self.buckets.order_for(bucket)
        if order is None:
            return
        free = order.free
        if size > free and not self.orders.confirmed(order.order_id):
            self.orders.refetch(order.order_id)
        elif size > free:
            raise S3Error(
                "QuotaExceeded",
                403,
                f"The upload of {size} bytes does not fit in order {order.order_id}: "
                f"{free} bytes free of {order.capacity} (the parts of open multipart "
                "uploads included).",
                f"/{bucket}",
            )

    def put_object(
        self,
        bucket: str,
        key: str,
        segments: Sequence[Segment],
        new: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Store an object made of spooled segments (consumed either way).

        The conditions are the network's (:meth:`INetwork.put_object`).
        """

        def found(b: Bucket) -> Deferred[ObjectInfo]:
            try:
                check_key(key, b.prefix)
            except Exception:
                discard()
                raise
            return self._call_then(
                bucket,
                key,
                lambda: self.network.put_object(
                    self.account, b.order_id, b.prefix + key, segments, new, if_none_match, if_match
                ),
                lambda info: stored(info, b.order_id),
            )

        def discard() -> None:
            for segment in segments:
                _unlink(segment.path)

        def not_found(failure: Failure) -> Failure:
            discard()
            return failure

        def stored(info: ObjectInfo, order_id: str) -> ObjectInfo:
            self.orders.charge(order_id, info.size)
            return keyed(info, key)

        cached = self.buckets.cached(bucket)
        if cached is None:
            return self.bucket(bucket).addCallbacks(found, not_found)
        try:
            return found(cached)
        except Exception:
            return fail()

    def open_upload(
        self,
        bucket: str,
        key: str,
        described: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start streaming an object to the network, if it streams and the order is known.

        The bucket itself is checked when the upload is finished.  ``digests`` and
        ``expect``: those the network is to compute and check (:meth:`INetwork.open_upload`).
        """
        order = self.buckets.order_for(bucket)
        if order is None:
            return None
        prefix = f"{bucket}/" if isinstance(self.buckets, OrderFolderBuckets) else ""
        check_key(key, prefix)
        return self.network.open_upload(
            self.account,
            order.order_id,
            prefix + key,
            described,
            if_none_match,
            if_match,
            digests=digests,
            expect=expect,
        )

    def open_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        size: int,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start streaming a part to the network, if it streams and the order is known.

        The upload and the bucket are checked when the part is finished.  ``digests`` and
        ``expect`` as for :meth:`open_upload`.
        """
        order = self.buckets.order_for(bucket)
        if order is None:
            return None
        prefix = f"{bucket}/" if isinstance(self.buckets, OrderFolderBuckets) else ""
        check_key(key, prefix)
        try:
            return self.network.open_part(
                self.account,
                order.order_id,
                prefix + key,
                upload_id,
                number,
                size,
                digests=digests,
                expect=expect,
            )
        except net.NetworkError:
            return None  # (an id that cannot be: refused when the part is stored)

    @inlineCallbacks
    def finish_upload(
        self, bucket: str, key: str, upload: IUpload, new: NewObject, content_sha256: str
    ) -> Generator[Deferred[Any], Any, ObjectInfo]:
        """Store the object streamed by ``upload`` (given up if the bucket is gone).

        ``content_sha256`` is the SHA-256 the bytes must have, which the network checks: the
        one the client signed, or one computed of the bytes as they were sent.  Bytes that
        do not match it fail with ``XAmzContentSHA256Mismatch``; bytes that do not match a
        digest the client declared, which the network computes (``expect``), with
        ``BadDigest``.  Either way nothing is stored.
        """
        try:
            b = yield self.bucket(bucket)
        except Exception:
            upload.abort()
            raise
        try:
            info: ObjectInfo = yield self._call(
                bucket, key, lambda: upload.finish(new, content_sha256)
            )
        except net.BadDigest:
            raise S3Error.of(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ) from None
        except net.DigestMismatch as e:
            raise S3Error.of("BadDigest", str(e)) from None
        self.orders.charge(b.order_id, info.size)
        return keyed(info, key)

    def head_object(self, bucket: str, key: str) -> Deferred[ObjectInfo]:
        """What is stored at ``key``."""

        def found(b: Bucket) -> Deferred[ObjectInfo]:
            check_key(key, b.prefix)
            return self._call_then(
                bucket,
                key,
                lambda: self.network.head_object(self.account, b.order_id, b.prefix + key),
                lambda info: keyed(info, key),
            )

        return self._in_bucket(bucket, found)

    def get_object(
        self, bucket: str, key: str, first: int = 0, last: int | None = None
    ) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """The object at ``key`` and the bytes ``first``..``last`` of it."""

        def found(b: Bucket) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
            check_key(key, b.prefix)
            return self._call_then(
                bucket,
                key,
                lambda: self.network.get_object(
                    self.account, b.order_id, b.prefix + key, first, last
                ),
                lambda got: (keyed(got[0], key), got[1]),
            )

        return self._in_bucket(bucket, found)

    def delete_object(self, bucket: str, key: str, if_match: str | None = None) -> Deferred[bool]:
        """Delete ``key``; deleting a missing key succeeds, as in S3, unless ``if_match``."""

        def found(b: Bucket) -> Deferred[bool]:
            check_key(key, b.prefix)
            d = self._call(
                bucket,
                key,
                lambda: self.network.delete_object(
                    self.account, b.order_id, b.prefix + key, if_match
                ),
            )
            return d.addCallback(released, b.order_id)

        def released(deleted: bool, order_id: str) -> bool:
            if deleted:
                self.orders.released(order_id)
            return deleted

        return self._in_bucket(bucket, found)

    @inlineCallbacks
    def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        replace: NewObject | None,
        tags: Mapping[str, str] | None = None,
    ) -> Generator[Deferred[Any], Any, ObjectInfo]:
        """Copy an object inside the network (between orders of the account too).

        The copy keeps the source's tags unless ``tags`` are given.
        """
        src = yield self.bucket(src_bucket)
        dst = yield self.bucket(dst_bucket)
        check_key(src_key, src.prefix)
        check_key(dst_key, dst.prefix)
        info: ObjectInfo = yield self._call(
            src_bucket,
            src_key,
            lambda: self.network.copy_object(
                self.account,
                src.order_id,
                src.prefix + src_key,
                dst.order_id,
                dst.prefix + dst_key,
                replace,
                tags,
            ),
        )
        self.orders.charge(dst.order_id, info.size)
        return keyed(info, dst_key)

    def get_tags(self, bucket: str, key: str) -> Deferred[Mapping[str, str]]:
        """The tags of the object at ``key``."""

        def found(b: Bucket) -> Deferred[Mapping[str, str]]:
            check_key(key, b.prefix)
            return self._call(
                bucket, key, lambda: self.network.get_tags(self.account, b.order_id, b.prefix + key)
            )

        return self._in_bucket(bucket, found)

    def put_tags(self, bucket: str, key: str, tags: Mapping[str, str]) -> Deferred[None]:
        """Replace the tags of the object at ``key`` (none: remove them)."""

        def found(b: Bucket) -> Deferred[None]:
            check_key(key, b.prefix)
            return self._call(
                bucket,
                key,
                lambda: self.network.put_tags(self.account, b.order_id, b.prefix + key, tags),
            )

        return self._in_bucket(bucket, found)

    @inlineCallbacks
    def list_objects(
        self, bucket: str, prefix: str, delimiter: str, marker: str, max_keys: int
    ) -> Generator[Deferred[Any], Any, ListPage]:
        """A page of the bucket's keys after ``marker``, paths turned back into keys."""
        b = yield self.bucket(bucket)
        page: ListPage = yield self._call(
            bucket,
            "",
            lambda: self.network.list_objects(
                self.account,
                b.order_id,
                b.prefix + prefix,
                delimiter,
                b.prefix + marker if marker else "",
                max_keys,
            ),
        )
        if not b.prefix:
            return page
        cut = len(b.prefix)
        return ListPage(
            objects=[
                ListedObject(o.path[cut:], o.size, o.etag, o.last_modified) for o in page.objects
            ],
            common_prefixes=[p[cut:] for p in page.common_prefixes],
            is_truncated=page.is_truncated,
            next_marker=page.next_marker[cut:] if page.next_marker else None,
        )


def keyed(info: ObjectInfo, key: str) -> ObjectInfo:
    """``info`` with ``key`` as its path (the network knows the path in the order).

    ``info`` itself where they are the same, as they are when a bucket is an order:
    ``evolve`` costs as much as the rest of a small PUT's bookkeeping.
    """
    return info if info.path == key else evolve(info, path=key)


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def sweep_spool(spool_dir: str, min_age: float = SPOOL_STALE_AFTER) -> int:
    """Delete bodies left in ``spool_dir`` by requests cut short by a crash.

    A file untouched (neither written nor linked) for ``min_age`` seconds belongs to no
    request in progress.  Returns how many files were deleted.
    """
    now = time.time()
    cleaned = 0
    for entry in os.scandir(spool_dir):
        with suppress(FileNotFoundError):
            stat = entry.stat(follow_symlinks=False)
            if entry.is_file() and now - max(stat.st_mtime, stat.st_ctime) >= min_age:
                os.unlink(entry.path)
                cleaned += 1
    return cleaned
