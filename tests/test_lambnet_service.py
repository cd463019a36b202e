"""Tests of the ``twistd lambnet`` node's services: what stopping them leaves behind.

The node is built by its plugin's ``makeService`` over a store in a temporary directory,
listens on a loopback port on the test's reactor, and is sent a request by a plain TCP client.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from lambgw.lambnet import tap
from lambgw.lambnet.incoming import MEMORY_BODY, NodeChannel
from lambgw.network import signing, wire


async def _until(check: object, seconds: float = 30.0) -> None:
    """Wait on the reactor until ``check()`` is true; fail after ``seconds``."""
    assert callable(check)
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
    raise AssertionError(f"{check} still false after {seconds} s")


def _node_connections() -> list[object]:
    """The node's connections the reactor reads."""
    return [
        r for r in reactor.getReaders() if isinstance(getattr(r, "protocol", None), NodeChannel)
    ]


async def _close(client: Protocol) -> None:
    """Close ``client``'s connection; return once the node's end is closed too."""
    client.transport.loseConnection()  # type: ignore[union-attr]
    await _until(lambda: not _node_connections())


class StopTests(TestCase):
    """A node stopped with a body half received leaves nothing in ``incoming/``."""

    def setUp(self) -> None:
        # The collector's settings are the node process's, not the test runner's.
        self.patch(tap, "tune_collector", lambda: None)

    def test_stop_with_a_body_half_received(self) -> Deferred[None]:
        """The body's file goes with the node's directory, though its connection stays open."""
        return ensureDeferred(self._stop_with_a_body_half_received())

    async def _stop_with_a_body_half_received(self) -> None:
        options = tap.Options()
        data = self.mktemp()
        options.parseOptions(["--data", data, "--listen", "tcp:0:interface=127.0.0.1"])
        top = tap.makeService(options)
        top.startService()
        stopped = False

        async def stop() -> None:
            if not stopped:
                await top.stopService()

        self.addCleanup(lambda: ensureDeferred(stop()))
        listener = list(top)[-1]
        port = await listener._waitingForPort  # type: ignore[attr-defined]
        incoming = os.path.join(data, "incoming")

        def bodies() -> list[str]:
            return [name for _, _, names in os.walk(incoming) for name in names]

        client = Protocol()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        self.addCleanup(lambda: ensureDeferred(_close(client)))
        size = 64 * MEMORY_BODY
        head = (
            f"PUT /{wire.VERSION}/objects/o/k HTTP/1.1\r\nHost: node\r\n"
            f"Authorization: {signing.SCHEME} account=a,signature=s\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        client.transport.write(head.encode() + b"x" * (size // 2))  # type: ignore[union-attr]
        await _until(lambda: bodies() != [])
        self.assertTrue(client.connected)

        stopped = True
        await top.stopService()
        self.assertEqual(bodies(), [])
        self.assertTrue(client.connected, "the test should stop the node with the body open")

    def test_spool_released_after_the_pool(self) -> Deferred[object]:
        """The spool is released once the pool has stopped (its threads write the bodies)."""
        options = tap.Options()
        options.parseOptions(["--data", self.mktemp(), "--listen", "tcp:0:interface=127.0.0.1"])
        top = tap.makeService(options)
        events: list[str] = []
        pool = next(s for s in top if isinstance(s, tap._ThreadPoolService)).pool
        spooling = next(s for s in top if isinstance(s, tap._SpoolService))
        self.addCleanup(spooling.spool.release)
        stop_pool = pool.stop
        self.patch(pool, "stop", lambda: (events.append("pool"), stop_pool()))
        self.patch(spooling, "spool", SimpleNamespace(release=lambda: events.append("spool")))
        top.startService()
        stopping: Deferred[object] = top.stopService()
        self.assertEqual(events, ["pool", "spool"])
        return stopping
