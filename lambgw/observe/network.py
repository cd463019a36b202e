"""A network that times its calls: latency and errors of the storage network, as metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from attrs import define
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lambgw.network.errors import ANSWERS
from lambgw.network.interface import (
    CompletedPart,
    INetwork,
    IObjectBody,
    IUpload,
    ListPage,
    MultipartUpload,
    NewObject,
    ObjectInfo,
    Order,
    PartInfo,
    PartsPage,
    Segment,
    UploadsPage,
)
from lambgw.observe.metrics import GatewayMetrics

_T = TypeVar("_T")
log = Logger()


@implementer(INetwork)
@define
class TimedNetwork:
    """An :class:`INetwork` that passes every call on and records how long it took.

    A call that fails is counted by its error, unless the failure is one of the network's
    ordinary answers (:data:`ANSWERS`): no such key is what a HEAD is for.
    """

    network: INetwork
    metrics: GatewayMetrics
    clock: Callable[[], float] = time.monotonic

    def _timed(self, call: str, start: Callable[[], Deferred[_T]], *subject: str) -> Deferred[_T]:
        """Run ``start()``, timing it as ``call``; a failed call is logged once, with its cause.

        ``subject`` (an order and a path) names what the call was about, in that log line.
        """
        began = self.clock()

        def done(result: Any) -> Any:
            seconds = self.clock() - began
            self.metrics.network_seconds.observe(seconds, call)
            if isinstance(result, Failure) and not result.check(CancelledError, *ANSWERS):
                self.metrics.network_errors.inc(call, type(result.value).__name__)
                log.warn(
                    "Network call {call} {subject} failed after {seconds:.3f} s: {reason}",
                    call=call,
                    subject="/".join(subject),
                    seconds=seconds,
                    reason=f"{type(result.value).__name__}: {result.value}",
                )
            return result

        return start().addBoth(done)

    def orders(self, account: str) -> Deferred[Sequence[Order]]:
        """The orders of ``account``."""
        return self._timed("orders", lambda: self.network.orders(account))

    def order(self, account: str, order_id: str) -> Deferred[Order]:
        """One order of ``account``."""
        return self._timed("order", lambda: self.network.order(account, order_id), order_id)

    def put_object(
        self,
        account: str,
        order_id: str,
        path: str,
        segments: Sequence[Segment],
        new: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Store an object."""
        return self._timed(
            "put_object",
            lambda: self.network.put_object(
                account, order_id, path, segments, new, if_none_match, if_match
            ),
            order_id,
            path,
        )

    def open_upload(
        self,
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start streaming an object (its finish is timed as ``put_object``)."""
        upload = self.network.open_upload(
            account, order_id, path, described, if_none_match, if_match, digests, expect
        )
        return None if upload is None else _TimedUpload(upload, self, (order_id, path))

    def head_object(self, account: str, order_id: str, path: str) -> Deferred[ObjectInfo]:
        """What is stored at ``path``."""
        return self._timed(
            "head_object", lambda: self.network.head_object(account, order_id, path), order_id, path
        )

    def get_object(
        self, account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """The object at ``path`` and its bytes (timed until the body is ready to stream)."""
        return self._timed(
            "get_object",
            lambda: self.network.get_object(account, order_id, path, first, last),
            order_id,
            path,
        )

    def delete_object(
        self, account: str, order_id: str, path: str, if_match: str | None = None
    ) -> Deferred[bool]:
        """Remove the object at ``path``."""
        return self._timed(
            "delete_object",
            lambda: self.network.delete_object(account, order_id, path, if_match),
            order_id,
            path,
        )

    def copy_object(
        self,
        account: str,
        src_order_id: str,
        src_path: str,
        dst_order_id: str,
        dst_path: str,
        replace: NewObject | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Deferred[ObjectInfo]:
        """Copy an object inside the network."""
        return self._timed(
            "copy_object",
            lambda: self.network.copy_object(
                account, src_order_id, src_path, dst_order_id, dst_path, replace, tags
            ),
            dst_order_id,
            dst_path,
        )

    def get_tags(self, account: str, order_id: str, path: str) -> Deferred[Mapping[str, str]]:
        """The tags of an object."""
        return self._timed(
            "get_tags", lambda: self.network.get_tags(account, order_id, path), order_id, path
        )

    def put_tags(
        self, account: str, order_id: str, path: str, tags: Mapping[str, str]
    ) -> Deferred[None]:
        """Replace the tags of an object."""
        return self._timed(
            "put_tags",
            lambda: self.network.put_tags(account, order_id, path, tags),
            order_id,
            path,
        )

    def list_objects(
        self,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: int = 1000,
    ) -> Deferred[ListPage]:
        """A page of an order's listing."""
        return self._timed(
            "list_objects",
            lambda: self.network.list_objects(
                account, order_id, prefix, delimiter, marker, max_keys
            ),
            order_id,
        )

    def create_upload(
        self,
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        checksum_algorithm: str = "",
        upload_id: str = "",
    ) -> Deferred[MultipartUpload]:
        """Open a multipart upload."""
        return self._timed(
            "create_upload",
            lambda: self.network.create_upload(
                account, order_id, path, described, checksum_algorithm, upload_id
            ),
            order_id,
            path,
        )

    def upload_part(
        self,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        number: int,
        segment: Segment,
        etag: str,
        checksums: Mapping[str, str],
    ) -> Deferred[PartInfo]:
        """Store a part."""
        return self._timed(
            "upload_part",
            lambda: self.network.upload_part(
                account, order_id, path, upload_id, number, segment, etag, checksums
            ),
            order_id,
            path,
        )

    def open_part(
        self,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        number: int,
        size: int,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start streaming a part (its finish is timed as ``upload_part``)."""
        upload = self.network.open_part(
            account, order_id, path, upload_id, number, size, digests, expect
        )
        return (
            None if upload is None else _TimedUpload(upload, self, (order_id, path), "upload_part")
        )

    def list_uploads(
        self,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> Deferred[UploadsPage]:
        """List open uploads."""
        return self._timed(
            "list_uploads",
            lambda: self.network.list_uploads(
                account, order_id, prefix, delimiter, key_marker, upload_id_marker, max_uploads
            ),
        )

    def list_parts(
        self,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        marker: int = 0,
        max_parts: int = 1000,
    ) -> Deferred[PartsPage]:
        """List an upload's parts."""
        return self._timed(
            "list_parts",
            lambda: self.network.list_parts(account, order_id, path, upload_id, marker, max_parts),
            order_id,
            path,
        )

    def abort_upload(
        self, account: str, order_id: str, path: str, upload_id: str
    ) -> Deferred[None]:
        """Abort an upload."""
        return self._timed(
            "abort_upload",
            lambda: self.network.abort_upload(account, order_id, path, upload_id),
            order_id,
            path,
        )

    def complete_upload(
        self,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        checksums: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Complete an upload."""
        return self._timed(
            "complete_upload",
            lambda: self.network.complete_upload(
                account, order_id, path, upload_id, parts, checksums, if_none_match, if_match
            ),
            order_id,
            path,
        )


@implementer(IUpload)
@define
class _TimedUpload:
    """An upload whose finish is timed like a ``put_object`` (or the ``call`` it stands for)."""

    upload: IUpload
    network: TimedNetwork
    subject: tuple[str, ...]
    call: str = "put_object"

    def throttle(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Pass the backpressure on."""
        self.upload.throttle(pause, resume)

    def write(self, data: bytes) -> None:
        """Send more bytes."""
        self.upload.write(data)

    def finish(self, new: NewObject, content_sha256: str) -> Deferred[ObjectInfo]:
        """Store the object."""
        return self.network._timed(
            self.call, lambda: self.upload.finish(new, content_sha256), *self.subject
        )

    def abort(self) -> None:
        """Give up."""
        self.upload.abort()

    def direct(self, resumed: Callable[[], None], failed: Callable[[], None]) -> Deferred[Any]:
        """The socket the bytes may go into directly, if any."""
        return self.upload.direct(resumed, failed)

    def sent_directly(self, count: int) -> None:
        """Bytes went into that socket."""
        self.upload.sent_directly(count)

    def indirect(self) -> None:
        """Bytes come through ``write`` again."""
        self.upload.indirect()
