"""Tests of the order cache: only a figure the network gave, unchanged since, refuses uploads."""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from lambgw.gateway.core import Gateway
from lambgw.network.interface import INetwork, Order
from lambgw.protocol.errors import S3Error

ORDER_ID = "D9A585E80A92439D5DFFB384901F359A572F4E1F"


def order(used: int) -> Order:
    """The one order of the account, with ``used`` of its 1,000 bytes used."""
    return Order(ORDER_ID, "demo", 1000, used, 0.0, 1e12)


class HeldNetwork:
    """A network whose order look-ups wait until the test answers them."""

    def __init__(self) -> None:
        self.waiting: list[Deferred[Order]] = []

    def orders(self, account: str) -> Deferred[list[Order]]:
        """All orders: answered through :meth:`answer` like a single look-up."""
        d: Deferred[Order] = Deferred()
        self.waiting.append(d)
        return d.addCallback(lambda o: [o])

    def order(self, account: str, order_id: str) -> Deferred[Order]:
        """One order, once the test answers."""
        d: Deferred[Order] = Deferred()
        self.waiting.append(d)
        return d

    def answer(self, used: int) -> None:
        """Answer the oldest waiting look-up with the order at ``used`` bytes."""
        self.waiting.pop(0).callback(order(used))


class OrderCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = HeldNetwork()
        self.gateway = Gateway.create(cast(INetwork, self.network), "demo", self.mktemp())
        d = self.gateway.orders.refresh()
        self.network.answer(900)
        self.successResultOf(d)
        self.bucket = ORDER_ID.lower()

    def refused(self, size: int) -> bool:
        """Whether the gateway refuses an upload of ``size`` before its body."""
        try:
            self.gateway.precheck_upload(self.bucket, size)
        except S3Error as e:
            self.assertEqual((e.code, e.status), ("QuotaExceeded", 403))
            return True
        return False

    def test_confirmed_figure_refuses(self) -> None:
        """An upload larger than the free space the network reported is refused at once."""
        self.assertTrue(self.refused(101))
        self.assertFalse(self.refused(100))
        self.assertEqual(self.network.waiting, [])

    def test_charged_figure_fetches_again(self) -> None:
        """After a write, an upload that seems not to fit goes on and the order is fetched."""
        self.gateway.orders.charge(ORDER_ID, 50)
        self.assertFalse(self.refused(60))
        self.assertFalse(self.refused(60))
        self.assertEqual(len(self.network.waiting), 1, "one fetch at a time")
        self.network.answer(950)
        self.assertTrue(self.refused(60))

    def test_delete_unconfirms(self) -> None:
        """After a delete, a full-looking order no longer refuses until it is fetched again."""
        self.gateway.orders.released(ORDER_ID)
        self.assertFalse(self.refused(500))
        self.network.answer(100)
        self.assertEqual(self.gateway.orders.known(ORDER_ID), order(100))
        self.assertFalse(self.refused(500))
        self.assertTrue(self.refused(901))

    def test_change_during_fetch_keeps_figure_unconfirmed(self) -> None:
        """A delete made while the order is being fetched leaves the fetched figure unconfirmed."""
        self.gateway.orders.charge(ORDER_ID, 100)
        self.assertFalse(self.refused(500))
        self.gateway.orders.released(ORDER_ID)
        self.network.answer(1000)
        self.assertFalse(self.refused(500))
        self.network.answer(0)
        self.assertTrue(self.refused(1001))

    def test_failed_fetch_is_logged_and_retried(self) -> None:
        """A fetch that fails leaves the figure unconfirmed; the next upload fetches again."""
        self.gateway.orders.released(ORDER_ID)
        self.assertFalse(self.refused(500))
        with capturedLogs() as events:
            self.network.waiting.pop(0).errback(RuntimeError("node away"))
        self.assertEqual(
            [formatEvent(e) for e in events], [f"Fetching order {ORDER_ID} failed: node away"]
        )
        self.assertFalse(self.refused(500))
        self.assertEqual(len(self.network.waiting), 1)
