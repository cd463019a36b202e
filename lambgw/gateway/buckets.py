"""How buckets map onto orders, in the two gateway modes.

``lambgw``: each order of the account is a bucket; key ``k`` of bucket ``O`` is path ``k`` of
order ``O``.  ``s3gw``: one order holds ordinary buckets; key ``k`` of bucket ``b`` is path
``b/k``, and the bucket itself is a marker at ``.buckets/b`` (bucket names never start with a
dot, so no object path can collide with a marker).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Generator, Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, inlineCallbacks

from lambgw.gateway.orders import OrderCache
from lambgw.network.errors import NoSuchOrder, NoSuchPath, PreconditionFailed
from lambgw.network.interface import INetwork, NewObject, Order, Segment
from lambgw.protocol.errors import S3Error

ORDER_ID = re.compile(r"[0-9A-Fa-f]{40}")
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
MARKERS = ".buckets/"


@frozen
class Bucket:
    """A bucket as S3 lists it, and where its keys live on the network."""

    name: str
    created: float
    order_id: str
    #: Prepended to a key to make the path in the order.
    prefix: str


def no_such_bucket(name: str) -> S3Error:
    """The NoSuchBucket error for ``name``."""
    return S3Error("NoSuchBucket", 404, "The specified bucket does not exist.", name)


def check_bucket_name(name: str) -> None:
    """Refuse names that S3 refuses (3-63 characters of a-z, 0-9, '.', '-'; not an IP)."""
    if not BUCKET_NAME.fullmatch(name) or ".." in name or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        raise S3Error("InvalidBucketName", 400, "The specified bucket is not valid.", name)


def empty_segment(spool_dir: str) -> Segment:
    """A new empty spool file, the bytes of a zero-length object."""
    path = os.path.join(spool_dir, secrets.token_hex(16) + ".part")
    with open(path, "xb"):
        pass
    return Segment(path, 0)


@define
class OrderBuckets:
    """``lambgw`` mode: every order of the account is a bucket named by its id."""

    cache: OrderCache

    def order_for(self, name: str) -> Order | None:
        """The cached order behind bucket ``name``, without a network call."""
        return self.cache.known(name.upper()) if ORDER_ID.fullmatch(name) else None

    def cached(self, name: str) -> Bucket | None:
        """The bucket ``name`` if its order is cached, without a network call."""
        order = self.order_for(name)
        return None if order is None else Bucket(order.order_id, order.created, order.order_id, "")

    @inlineCallbacks
    def list(self) -> Generator[Deferred[Any], Any, Sequence[Bucket]]:
        """Every order, fetched afresh: buying an order makes it appear here."""
        orders = yield self.cache.refresh()
        return [Bucket(o.order_id, o.created, o.order_id, "") for o in orders]

    @inlineCallbacks
    def get(self, name: str) -> Generator[Deferred[Any], Any, Bucket]:
        """The bucket ``name`` (an order id, in either case)."""
        if not ORDER_ID.fullmatch(name):
            raise no_such_bucket(name)
        try:
            order = yield self.cache.get(name.upper())
        except NoSuchOrder:
            raise no_such_bucket(name) from None
        return Bucket(order.order_id, order.created, order.order_id, "")

    @inlineCallbacks
    def create(self, name: str) -> Generator[Deferred[Any], Any, Bucket]:
        """Orders are bought, not created: creating one's own order succeeds, as in us-east-1.

        S3 in its default region answers 200 when one creates a bucket one already owns;
        clients (the seed's boto3 script among them) rely on it.
        """
        if ORDER_ID.fullmatch(name):
            try:
                order = yield self.cache.get(name.upper())
            except NoSuchOrder:
                pass
            else:
                return Bucket(order.order_id, order.created, order.order_id, "")
        raise S3Error(
            "InvalidBucketName" if not ORDER_ID.fullmatch(name) else "AccessDenied",
            400 if not ORDER_ID.fullmatch(name) else 403,
            "In lambgw mode buckets are the account's orders: orders are bought on the "
            "network (e.g. `python -m lambgw order buy`), not created; use s3gw for "
            "ordinary buckets.",
            name,
        )

    def delete(self, name: str) -> Deferred[None]:
        """Orders cannot be deleted through the gateway."""
        raise S3Error(
            "MethodNotAllowed",
            405,
            "In lambgw mode buckets are orders, which cannot be deleted through the gateway.",
            name,
        )


@define
class OrderFolderBuckets:
    """``s3gw`` mode: ordinary buckets inside one order."""

    network: INetwork
    cache: OrderCache
    order_id: str
    spool_dir: str
    _known: dict[str, Bucket] = field(factory=dict)

    def order_for(self, name: str) -> Order | None:
        """The cached order that holds every bucket."""
        return self.cache.known(self.order_id)

    def cached(self, name: str) -> Bucket | None:
        """The bucket ``name`` if it is known, without a network call."""
        return self._known.get(name)

    @inlineCallbacks
    def list(self) -> Generator[Deferred[Any], Any, Sequence[Bucket]]:
        """The bucket markers of the order, in name order."""
        buckets: list[Bucket] = []
        marker = ""
        while True:
            page = yield self.network.list_objects(
                self.cache.account, self.order_id, prefix=MARKERS, marker=marker
            )
            for info in page.objects:
                name = info.path[len(MARKERS) :]
                buckets.append(Bucket(name, info.last_modified, self.order_id, name + "/"))
            if not page.is_truncated or page.next_marker is None:
                break
            marker = page.next_marker
        self._known = {b.name: b for b in buckets}
        return buckets

    @inlineCallbacks
    def get(self, name: str) -> Generator[Deferred[Any], Any, Bucket]:
        """The bucket ``name``, from memory or from its marker on the network."""
        bucket = self._known.get(name)
        if bucket is not None:
            return bucket
        if not BUCKET_NAME.fullmatch(name):
            raise no_such_bucket(name)
        try:
            info = yield self.network.head_object(self.cache.account, self.order_id, MARKERS + name)
        except NoSuchPath:
            raise no_such_bucket(name) from None
        bucket = Bucket(name, info.last_modified, self.order_id, name + "/")
        self._known[name] = bucket
        return bucket

    @inlineCallbacks
    def create(self, name: str) -> Generator[Deferred[Any], Any, Bucket]:
        """Create bucket ``name``: a marker written only if none exists (else it is ours)."""
        check_bucket_name(name)
        segment = empty_segment(self.spool_dir)
        try:
            info = yield self.network.put_object(
                self.cache.account,
                self.order_id,
                MARKERS + name,
                [segment],
                NewObject(size=0, etag="d41d8cd98f00b204e9800998ecf8427e"),
                if_none_match=True,
            )
        except PreconditionFailed:
            # Already ours: 200, as S3 answers in its default region.
            bucket = yield self.get(name)
            return bucket
        bucket = Bucket(name, info.last_modified, self.order_id, name + "/")
        self._known[name] = bucket
        return bucket

    @inlineCallbacks
    def delete(self, name: str) -> Generator[Deferred[Any], Any, None]:
        """Delete bucket ``name`` if it holds no object."""
        yield self.get(name)
        page = yield self.network.list_objects(
            self.cache.account, self.order_id, prefix=name + "/", max_keys=1
        )
        if page.objects or page.common_prefixes:
            raise S3Error(
                "BucketNotEmpty", 409, "The bucket you tried to delete is not empty.", name
            )
        yield self.network.delete_object(self.cache.account, self.order_id, MARKERS + name)
        self._known.pop(name, None)
