"""Tests of the download side of the HTTP network: the read size of its connections."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.abstract import FileDescriptor
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.http import READ_SIZE, HTTPNetwork, read_in_large_pieces


class _Wrapper:
    """A transport over another one, as TLS wraps the socket's."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport


class ReadSizeTests(SynchronousTestCase):
    def test_socket_read_size_raised(self) -> None:
        """The socket transport reads READ_SIZE bytes at a time."""
        socket = FileDescriptor(reactor=task.Clock())  # type: ignore[arg-type]
        read_in_large_pieces(socket)
        self.assertEqual(socket.bufferSize, READ_SIZE)

    def test_socket_under_tls_raised(self) -> None:
        """The socket under a wrapping transport (TLS) is the one changed."""
        socket = FileDescriptor(reactor=task.Clock())  # type: ignore[arg-type]
        wrapper = _Wrapper(socket)
        read_in_large_pieces(wrapper)
        self.assertEqual(socket.bufferSize, READ_SIZE)
        self.assertFalse(hasattr(wrapper, "bufferSize"))

    def test_pool_connections_read_large(self) -> None:
        """A connection of the network's pool raises its socket's read size when made."""
        network = HTTPNetwork.connect(
            "http://127.0.0.1:1",
            "demo",
            None,
            task.Clock(),
            None,  # type: ignore[arg-type]
        )
        pool = network._client._agent._pool
        protocol = pool._factory(lambda c: None, None).buildProtocol(None)
        socket = FileDescriptor(reactor=task.Clock())  # type: ignore[arg-type]
        protocol.makeConnection(socket)
        self.assertEqual(socket.bufferSize, READ_SIZE)
