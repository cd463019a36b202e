"""The embedded network: :class:`INetwork` over an in-process :class:`Store`.

Every store call runs in a thread pool, so the reactor never waits for SQLite or the disk;
objects are stored one after the other by :class:`SerialCalls` (SQLite takes one writer at
a time anyway), and looked up for GET and HEAD one after the other by another, so that a
busy gateway hands a small read over with a list append rather than a thread wake-up;
object bytes stream from the opened files through :class:`FileRangeBody`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from lambgw.network.files import SMALL_READ, BytesBody, FileRangeBody, read_small
from lambgw.network.interface import (
    INetwork,
    IObjectBody,
    IUpload,
    ListPage,
    NewObject,
    ObjectInfo,
    Order,
    Segment,
)
from lambgw.network.serial import SerialCalls
from lambgw.network.store import Store

_P = ParamSpec("_P")
_T = TypeVar("_T")


@implementer(INetwork)
class EmbeddedNetwork:
    """The Lambda network kept in a local :class:`Store`, used from the reactor thread."""

    def __init__(self, store: Store, reactor: IReactorFromThreads, threadpool: ThreadPool) -> None:
        """Serve ``store``; its calls run in ``threadpool`` (started by the caller)."""
        self._store = store
        self._reactor = reactor
        self._threadpool = threadpool
        self._writes = SerialCalls(reactor, threadpool)
        self._reads = SerialCalls(reactor, threadpool)

    @classmethod
    def from_directory(
        cls, data_dir: FilePath[str] | str, reactor: IReactorFromThreads, threadpool: ThreadPool
    ) -> EmbeddedNetwork:
        """Open (creating if needed) the store in ``data_dir``."""
        return cls(Store(data_dir), reactor, threadpool)

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
    ) -> Deferred[ObjectInfo]:
        """Store an object made of the spooled ``segments``, atomically."""
        return self._writes.call(
            self._store.put, account, order_id, path, segments, new, if_none_match
        )

    def open_upload(
        self,
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        if_none_match: bool = False,
    ) -> IUpload | None:
        """None: a spooled file is stored here by a rename, cheaper than any stream."""
        return None

    def head_object(self, account: str, order_id: str, path: str) -> Deferred[ObjectInfo]:
        """Return what is stored at ``path``."""
        return self._reads.call(self._store.head, account, order_id, path)

    def get_object(
        self, account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """Return the object at ``path`` and a body streaming bytes ``first`` to ``last``."""

        def opened() -> tuple[ObjectInfo, IObjectBody]:
            info, ranges = self._store.open_range(account, order_id, path, first, last)
            if sum(piece.length for piece in ranges) <= SMALL_READ:
                return info, BytesBody(read_small(ranges))
            return info, FileRangeBody(ranges, self._reactor, self._threadpool)

        return self._reads.call(opened)

    def delete_object(self, account: str, order_id: str, path: str) -> Deferred[bool]:
        """Remove the object at ``path``; fire with whether there was one."""
        return self._call(self._store.delete, account, order_id, path)

    def copy_object(
        self,
        account: str,
        src_order_id: str,
        src_path: str,
        dst_order_id: str,
        dst_path: str,
        replace: NewObject | None = None,
    ) -> Deferred[ObjectInfo]:
        """Copy an object between orders of ``account``."""
        return self._call(
            self._store.copy, account, src_order_id, src_path, dst_order_id, dst_path, replace
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
        """List up to ``max_keys`` objects and common prefixes after ``marker``."""
        return self._call(self._store.list, account, order_id, prefix, delimiter, marker, max_keys)
