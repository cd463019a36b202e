"""Tests of the gateway core: buckets from the order cache, network failures as S3 errors."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from lambgw.gateway.core import Gateway
from lambgw.network.errors import NoSuchPath
from lambgw.network.interface import INetwork, ObjectInfo, Order
from lambgw.protocol.errors import S3Error

ORDER_ID = "D9A585E80A92439D5DFFB384901F359A572F4E1F"
ORDER = Order(ORDER_ID, "demo", 1000, 10, 0.0, 1e12)


class CountingNetwork:
    """A network of one order and one object that counts the calls made to it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def orders(self, account: str) -> Deferred[list[Order]]:
        """The one order."""
        self.calls.append("orders")
        return succeed([ORDER])

    def order(self, account: str, order_id: str) -> Deferred[Order]:
        """The one order."""
        self.calls.append("order")
        return succeed(ORDER)

    def head_object(self, account: str, order_id: str, path: str) -> Deferred[ObjectInfo]:
        """The object at ``k``; nothing elsewhere."""
        self.calls.append("head_object")
        if path != "k":
            return fail(NoSuchPath(path))
        return succeed(ObjectInfo(order_id, path, size=3, etag="e", last_modified=0.0))


class GatewayCoreTests(SynchronousTestCase):
    def gateway(self) -> tuple[Gateway, CountingNetwork]:
        """A ``lambgw`` gateway over a counting network."""
        network = CountingNetwork()
        return Gateway.create(cast(INetwork, network), "demo", self.mktemp()), network

    def result(self, d: Deferred[Any]) -> Any:
        """The result ``d`` already has."""
        return self.successResultOf(d)

    def test_cached_bucket_without_network(self) -> None:
        """A bucket whose order is cached is resolved without a network call."""
        gw, network = self.gateway()
        self.result(gw.orders.refresh())
        network.calls.clear()
        bucket = self.result(gw.bucket(ORDER_ID.lower()))
        self.assertEqual((bucket.order_id, bucket.prefix), (ORDER_ID, ""))
        self.assertEqual(network.calls, [])

    def test_uncached_bucket_asks_network(self) -> None:
        """A bucket whose order is not cached yet is looked up on the network."""
        gw, network = self.gateway()
        bucket = self.result(gw.bucket(ORDER_ID))
        self.assertEqual(bucket.order_id, ORDER_ID)
        self.assertEqual(network.calls, ["order"])

    def test_missing_key_is_no_such_key(self) -> None:
        """A path missing on the network is NoSuchKey naming the bucket and key."""
        gw, _ = self.gateway()
        error = self.failureResultOf(gw.head_object(ORDER_ID, "missing"), S3Error).value
        self.assertEqual((error.code, error.status), ("NoSuchKey", 404))
        self.assertEqual(error.resource, f"/{ORDER_ID}/missing")

    def test_head_names_the_key(self) -> None:
        """HeadObject answers with the object named by its key."""
        gw, _ = self.gateway()
        info = self.result(gw.head_object(ORDER_ID, "k"))
        self.assertEqual((info.path, info.size), ("k", 3))

    def test_bad_key_fails_before_network(self) -> None:
        """An empty key fails as InvalidArgument without asking for the object."""
        gw, network = self.gateway()
        self.result(gw.orders.refresh())
        network.calls.clear()
        error = self.failureResultOf(gw.head_object(ORDER_ID, ""), S3Error).value
        self.assertEqual(error.code, "InvalidArgument")
        self.assertEqual(network.calls, [])
