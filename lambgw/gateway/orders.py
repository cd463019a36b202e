"""The order cache: what the gateway knows of its account's orders between network calls.

Buckets are resolved and uploads are checked against free capacity from this cache, so the
hot path of a request does not wait on the network.  The network stays the authority: it
refuses what does not fit when an object is committed.
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
        orders: Sequence[Order] = yield self.network.orders(self.account)
        self._orders = {o.order_id: o for o in orders}
        self._loaded = True
        return self.all()

    @inlineCallbacks
    def get(self, order_id: str) -> Generator[Deferred[Any], Any, Order]:
        """The order ``order_id``, asking the network when it is not cached."""
        cached = self._orders.get(order_id)
        if cached is not None:
            return cached
        try:
            order: Order = yield self.network.order(self.account, order_id)
        except NoSuchOrder:
            self._orders.pop(order_id, None)
            raise
        self._orders[order_id] = order
        return order

    def charge(self, order_id: str, delta: int) -> None:
        """Adjust the cached space used by ``order_id`` after a write or delete."""
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

    def update(self, order: Order) -> None:
        """Record a fresh copy of one order."""
        self._orders[order.order_id] = order
