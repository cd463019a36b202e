"""The embedded network: :class:`INetwork` over an in-process :class:`Store`.

Store calls run in a thread pool, so the reactor never waits for SQLite or the disk;
objects are stored one after the other by :class:`SerialCalls` (SQLite takes one writer at
a time anyway).  A small object in memory is stored on the reactor thread, and GET and
HEAD look their object up there, while such calls stay quick and need no file and no
wait (:class:`QuickCalls`); else small objects are committed together in the writes'
lane, and look-ups run one after the other in another :class:`SerialCalls`, so that a
busy gateway hands a read over with a list append rather than a thread wake-up.  Object
bytes stream from the opened files through :class:`FileRangeBody`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from lambgw.network.completion import DEFAULT_UPLOAD_EXPIRY
from lambgw.network.files import SMALL_READ, BytesBody, FileRangeBody, read_small
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
from lambgw.network.quick import QuickCalls, TurnWrites, checkpoint_if_due
from lambgw.network.serial import SerialCalls
from lambgw.network.store import Store, held_inline
from lambgw.network.uploads import StoredUploads

_P = ParamSpec("_P")
_T = TypeVar("_T")


@implementer(INetwork)
class EmbeddedNetwork:
    """The Lambda network kept in a local :class:`Store`, used from the reactor thread."""

    def __init__(
        self,
        store: Store,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
        upload_expiry: float = DEFAULT_UPLOAD_EXPIRY,
        quick_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Serve ``store``; its calls run in ``threadpool`` (started by the caller).

        Multipart uploads idle for ``upload_expiry`` seconds are aborted by
        :meth:`expire_uploads`.  ``quick_clock`` times the calls tried on the reactor
        thread (:class:`QuickCalls`).
        """
        self._store = store
        self._uploads = StoredUploads(store, upload_expiry)
        self._reactor = reactor
        self._threadpool = threadpool
        self._writes = SerialCalls(reactor, threadpool, store.index.group)
        self._reads = QuickCalls(SerialCalls(reactor, threadpool).call, clock=quick_clock)
        self._quick_writes = QuickCalls(self._writes.call_grouped, clock=quick_clock)
        # The reactor is also an IReactorTime: the turn's writes wait for its end.
        self._turn_writes = TurnWrites(cast(IReactorTime, reactor), store.index, self._quick_writes)

    @classmethod
    def from_directory(
        cls,
        data_dir: FilePath[str] | str,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
        upload_expiry: float = DEFAULT_UPLOAD_EXPIRY,
    ) -> EmbeddedNetwork:
        """Open (creating if needed) the store in ``data_dir``."""
        return cls(Store(data_dir), reactor, threadpool, upload_expiry)

    @property
    def store(self) -> Store:
        """The store behind this network."""
        return self._store

    def _call(self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._threadpool, f, *args, **kwargs)

    def ensure_account(
        self, account: str, default_capacity: int, default_days: float
    ) -> Deferred[list[Order]]:
        """Return the orders of ``account``, creating it with one order if it is new."""
        return self._call(self._store.ensure_account, account, default_capacity, default_days)

    def orders(self, account: str) -> Deferred[Sequence[Order]]:
        """Return all orders of ``account``, in the order they were bought."""
        return self._call(self._store.orders, account)

    def order(self, account: str, order_id: str) -> Deferred[Order]:
        """Return one order of ``account``."""
        return self._call(self._store.order, account, order_id)

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
        """Store an object made of the spooled ``segments``, atomically.

        A small object in memory is stored on the reactor thread at the end of its turn,
        with the others of the turn (:class:`TurnWrites`), if no other writer holds the index;
        else committed with the others queued beside it.
        """
        args = (account, order_id, path, segments, new, if_none_match, if_match)
        if held_inline(segments, new.size):
            return self._turn_writes.call(self._put_now, self._store.put, *args)
        return self._writes.call(self._store.put, *args)

    def _put_now(self, *args: Any) -> ObjectInfo:
        """:meth:`Store.put` without waiting, then a checkpoint in the pool if now due."""
        info = self._store.put(*args, now=True)
        checkpoint_if_due(self._store.index, self._writes)
        return info

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
        """None: a spooled file is stored here by a rename, cheaper than any stream."""
        return None

    def head_object(self, account: str, order_id: str, path: str) -> Deferred[ObjectInfo]:
        """Return what is stored at ``path``."""
        return self._reads.call(self._store.head_now, self._store.head, account, order_id, path)

    def get_object(
        self, account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """Return the object at ``path`` and a body streaming bytes ``first`` to ``last``."""

        def held() -> tuple[ObjectInfo, IObjectBody]:
            info, data = self._store.read_held_now(account, order_id, path, first, last)
            return info, BytesBody(data)

        def opened() -> tuple[ObjectInfo, IObjectBody]:
            info, ranges = self._store.open_range(account, order_id, path, first, last)
            if sum(piece.length for piece in ranges) <= SMALL_READ:
                return info, BytesBody(read_small(ranges))
            return info, FileRangeBody(ranges, self._reactor, self._threadpool)

        return self._reads.call(held, opened)

    def delete_object(
        self, account: str, order_id: str, path: str, if_match: str | None = None
    ) -> Deferred[bool]:
        """Remove the object at ``path``; fire with whether there was one."""
        return self._call(self._store.delete, account, order_id, path, if_match)

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
        """Copy an object between orders of ``account``."""
        return self._call(
            self._store.copy, account, src_order_id, src_path, dst_order_id, dst_path, replace, tags
        )

    def get_tags(self, account: str, order_id: str, path: str) -> Deferred[Mapping[str, str]]:
        """Return the tags of the object at ``path``."""
        return self._call(self._store.get_tags, account, order_id, path)

    def put_tags(
        self, account: str, order_id: str, path: str, tags: Mapping[str, str]
    ) -> Deferred[None]:
        """Replace the tags of the object at ``path``."""
        return self._call(self._store.put_tags, account, order_id, path, tags)

    def list_objects(
        self,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: int = 1000,
    ) -> Deferred[ListPage]:
        """List up to ``max_keys`` objects and common prefixes after ``marker``."""
        return self._call(self._store.list, account, order_id, prefix, delimiter, marker, max_keys)

    def create_upload(
        self,
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        checksum_algorithm: str = "",
        upload_id: str = "",
    ) -> Deferred[MultipartUpload]:
        """Open a multipart upload to ``path``."""
        return self._call(
            self._uploads.create, account, order_id, path, described, checksum_algorithm, upload_id
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
        """Store the spooled ``segment`` as part ``number``: a rename into the store."""
        return self._call(
            self._uploads.upload_part,
            account,
            order_id,
            path,
            upload_id,
            number,
            segment,
            etag,
            checksums,
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
        """None: a spooled part is stored here by a rename, cheaper than any stream."""
        return None

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
        """A page of the order's open uploads."""
        return self._call(
            self._uploads.list_uploads,
            account,
            order_id,
            prefix,
            delimiter,
            key_marker,
            upload_id_marker,
            max_uploads,
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
        """The upload and a page of its parts."""
        return self._call(
            self._uploads.list_parts, account, order_id, path, upload_id, marker, max_parts
        )

    def abort_upload(
        self, account: str, order_id: str, path: str, upload_id: str
    ) -> Deferred[None]:
        """Remove the upload and its parts."""
        return self._call(self._uploads.abort, account, order_id, path, upload_id)

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
        """Make the object of the named parts, by reference to their files."""
        return self._call(
            self._uploads.complete,
            account,
            order_id,
            path,
            upload_id,
            parts,
            checksums,
            if_none_match,
            if_match,
        )

    def expire_uploads(self) -> Deferred[int]:
        """Abort the uploads idle longer than the expiry; fire with how many."""
        return self._call(self._uploads.expire)
