"""The order cache: what the gateway knows of its account's orders between network calls.

Buckets are resolved and uploads are checked against free capacity from this cache, so the
hot path of a request does not wait on the network.  The network stays the authority: it
refuses what does not fit when an object is committed.

The gateway adds what it writes to an order's cached space used, but cannot take off what a
delete or an overwrite frees (the network does not say how much).  So a cached figure is
*confirmed* only while this gateway has changed nothing in the order since the figure was
fetched: only a confirmed figure may refuse an upload before its body is read.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from lambgw.network.errors import NoSuchOrder
from lambgw.network.interface import INetwork, Order

log = Logger()


@define
class OrderCache:
    """The account's orders, refreshed on demand and on a timer."""

    network: INetwork
    account: str
    _orders: dict[str, Order] = field(factory=dict)
    _loaded: bool = False
    #: Per order, how many writes and deletes this gateway has made in it (never reset).
    _changes: dict[str, int] = field(factory=dict)
    #: Per order, the count of its changes when its cached figure was fetched.
    _fetched_at: dict[str, int] = field(factory=dict)
    #: The orders being fetched again by :meth:`refetch`.
    _refetching: set[str] = field(factory=set)

    def known(self, order_id: str) -> Order | None:
        """The cached order ``order_id``, without asking the network."""
        return self._orders.get(order_id)

    @property
    def loaded(self) -> bool:
        """Whether the cache has been filled from the network at least once."""
        return self._loaded

    def all(self) -> Sequence[Order]:
        """The cached orders, oldest first."""
        return sorted(self._orders.values(), key=lambda o: (o.created, o.order_id))

    @inlineCallbacks
    def refresh(self) -> Generator[Deferred[Any], Any, Sequence[Order]]:
        """Fetch every order of the account from the network."""
        changes = dict(self._changes)
        orders: Sequence[Order] = yield self.network.orders(self.account)
        self._orders = {o.order_id: o for o in orders}
        self._fetched_at = {o.order_id: changes.get(o.order_id, 0) for o in orders}
        self._loaded = True
        return self.all()

    @inlineCallbacks
    def get(self, order_id: str) -> Generator[Deferred[Any], Any, Order]:
        """The order ``order_id``, asking the network when it is not cached."""
        cached = self._orders.get(order_id)
        if cached is not None:
            return cached
        return (yield self._fetch(order_id))

    @inlineCallbacks
    def _fetch(self, order_id: str) -> Generator[Deferred[Any], Any, Order]:
        changes = self._changes.get(order_id, 0)
        try:
            order: Order = yield self.network.order(self.account, order_id)
        except NoSuchOrder:
            self._orders.pop(order_id, None)
            raise
        self._orders[order_id] = order
        self._fetched_at[order_id] = changes
        return order

    def confirmed(self, order_id: str) -> bool:
        """Whether the cached figure of ``order_id`` is the network's, unchanged since.

        A write or delete made while the figure was being fetched leaves it unconfirmed.
        """
        fetched = self._fetched_at.get(order_id)
        return fetched is not None and fetched == self._changes.get(order_id, 0)

    def refetch(self, order_id: str) -> None:
        """Fetch ``order_id`` again in the background (once at a time); failures are logged."""
        if order_id in self._refetching:
            return
        self._refetching.add(order_id)
        d = self._fetch(order_id)
        d.addErrback(
            lambda f: log.warn(
                "Fetching order {order} failed: {why}", order=order_id, why=f.getErrorMessage()
            )
        )
        d.addBoth(lambda _: self._refetching.discard(order_id))

    def charge(self, order_id: str, delta: int) -> None:
        """Add ``delta`` bytes this gateway wrote to the cached space used by ``order_id``."""
        self._changes[order_id] = self._changes.get(order_id, 0) + 1
        cached = self._orders.get(order_id)
        if cached is not None:
            # Built field by field: ``evolve`` costs as much as the rest of a small PUT's
            # bookkeeping.
            self._orders[order_id] = Order(
                order_id=cached.order_id,
                account=cached.account,
                capacity=cached.capacity,
                used=max(0, cached.used + delta),
                created=cached.created,
                expires=cached.expires,
                status=cached.status,
            )

    def released(self, order_id: str) -> None:
        """Note that this gateway freed space in ``order_id`` by an amount it does not know."""
        self._changes[order_id] = self._changes.get(order_id, 0) + 1
