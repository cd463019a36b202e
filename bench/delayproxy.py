"""A TCP proxy that delays every byte by a fixed time each way: a network that is not loopback.

``python -m bench.delayproxy LISTEN_PORT TARGET_PORT DELAY_MS`` listens on loopback and
relays each connection to ``127.0.0.1:TARGET_PORT``; what one side sends reaches the other
``DELAY_MS`` milliseconds later, in order.  The delay is the proxy's, not the system's (no
``tc``, no privileges).  Memory is bounded: a side with more than :data:`MAX_IN_FLIGHT`
bytes on their way stops being read until they are delivered.
"""

from __future__ import annotations

import asyncio
import sys

#: Bytes on their way in one direction of one connection before its sender is paused.
MAX_IN_FLIGHT = 4 * 1024 * 1024


class _Direction(asyncio.Protocol):
    """One side of a relayed connection: what it receives goes to the peer, late."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.peer: _Direction | None = None
        self.in_flight = 0
        self.closing = False
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.in_flight += len(data)
        if self.in_flight > MAX_IN_FLIGHT and self.transport is not None:
            self.transport.pause_reading()
        loop.call_later(self.delay, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        self.in_flight -= len(data)
        if self.in_flight <= MAX_IN_FLIGHT and self.transport is not None:
            self.transport.resume_reading()
        if self.peer is None:
            self.pending.append(data)
        elif self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        asyncio.get_running_loop().call_later(self.delay, self._close_peer)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        asyncio.get_running_loop().call_later(self.delay, self._close_peer)

    def _close_peer(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _serve(listen_port: int, target_port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()

    def accepted() -> _Direction:
        client = _Direction(delay)

        async def connect() -> None:
            try:
                _, server = await loop.create_connection(
                    lambda: _Direction(delay), "127.0.0.1", target_port
                )
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            client.peer, server.peer = server, client
            for data in client.pending:
                assert server.transport is not None
                server.transport.write(data)
            client.pending.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    server = await loop.create_server(accepted, "127.0.0.1", listen_port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """Relay ``LISTEN_PORT`` to ``TARGET_PORT`` with ``DELAY_MS`` each way, until killed."""
    listen_port, target_port, delay_ms = int(argv[0]), int(argv[1]), float(argv[2])
    asyncio.run(_serve(listen_port, target_port, delay_ms / 1000))


if __name__ == "__main__":
    main(sys.argv[1:])
