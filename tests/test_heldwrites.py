"""Writes of a turn sent at its end (:mod:`lambgw.heldwrites`), over real loopback TCP."""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet import task, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IPushProducer, IReactorFDSet
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from lambgw.heldwrites import HeldClient, HeldServer, hold_writes, send_all, send_now
from lambgw.network.files import wait_writable

reactor: Any = _reactor

#: More than loopback sockets take at once, so that some is left to the reactor.
LARGE = 32 * 1024 * 1024


class Answering(Protocol):
    """Answers each piece of data with what ``answer`` does to the transport."""

    def __init__(self, answer: Callable[[Any, bytes], None], held: bool) -> None:
        self.answer = answer
        self.held = held
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        if self.held:
            hold_writes(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.answer(self.transport, data)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.lost.callback(None)


class Reading(Protocol):
    """Sends ``ask`` once connected; keeps what comes until the connection closes."""

    def __init__(self, ask: bytes) -> None:
        self.ask = ask
        self.received: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.ask)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.done.callback(b"".join(self.received))


@inlineCallbacks
def held_client(case: TestCase) -> Generator[Any, Any, tuple[Reading, Answering]]:
    """A held client connection to a server that keeps what it reads: both protocols."""
    reading = Reading(b"")
    port = reactor.listenTCP(0, Factory.forProtocol(lambda: reading), interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    client = Answering(lambda transport, data: None, held=True)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    yield connectProtocol(endpoint, client)
    return reading, client


class TurnTests(TestCase):
    """An answer written in a turn is sent at its end, without the reactor watching."""

    def setUp(self) -> None:
        self.watched: list[Any] = []
        fdset: IReactorFDSet = reactor
        add_writer = fdset.addWriter

        def counting(writer: Any) -> None:
            self.watched.append(writer)
            add_writer(writer)

        self.patch(reactor, "addWriter", counting)

    @inlineCallbacks
    def exchange(
        self, answer: Callable[[Any, bytes], None], held: bool = True, ask: bytes = b"ping"
    ) -> Any:
        """Connect, send ``ask``, let the server answer; the bytes read and the server."""
        server = Answering(answer, held)
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        reading = Reading(ask)
        factory = ClientFactory.forProtocol(lambda: reading)
        reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
        received = yield reading.done
        yield server.lost
        return received, server, server.reason

    def server_watched(self, server: Answering) -> int:
        return sum(1 for writer in self.watched if writer is server.transport)

    @inlineCallbacks
    def test_sent_at_the_end_of_the_turn(self) -> Any:
        """The answer arrives, and the reactor was never asked to watch the server's socket."""

        def answer(transport: Any, data: bytes) -> None:
            transport.write(b"po")
            transport.write(b"ng")
            self.assertEqual(transport._tempDataLen, 4)  # held until the turn ends
            reactor.callLater(0.05, transport.loseConnection)

        received, server, _ = yield self.exchange(answer)
        self.assertEqual(received, b"pong")
        self.assertIsInstance(server.transport, HeldServer)
        self.assertEqual(self.server_watched(server), 1)  # only by loseConnection

    @inlineCallbacks
    def test_twisted_transport_is_watched(self) -> Any:
        """Twisted's own transport has the reactor watch its socket for each answer."""

        def answer(transport: Any, data: bytes) -> None:
            transport.write(b"pong")
            reactor.callLater(0.05, transport.loseConnection)

        received, server, _ = yield self.exchange(answer, held=False)
        self.assertEqual(received, b"pong")
        self.assertEqual(self.server_watched(server), 2)

    @inlineCallbacks
    def test_what_the_socket_does_not_take_is_left_to_the_reactor(self) -> Any:
        """A large answer is sent in part at the turn's end, and the rest as the socket drains."""
        body = bytes(range(256)) * (LARGE // 256)

        def answer(transport: Any, data: bytes) -> None:
            transport.write(body)
            transport.loseConnection()

        received, server, reason = yield self.exchange(answer)
        self.assertEqual(len(received), len(body))
        self.assertEqual(received, body)
        self.assertTrue(reason.check(ConnectionDone))
        self.assertGreaterEqual(self.server_watched(server), 1)

    def written_then(self, data: bytes, end: str) -> Deferred[tuple[bytes, Failure]]:
        """Answer with ``data`` and then the transport's ``end`` method, in the same turn."""

        def answer(transport: Any, _: bytes) -> None:
            transport.write(data)
            getattr(transport, end)()

        return self.exchange(answer).addCallback(lambda got: (got[0], got[2]))

    @inlineCallbacks
    def test_closed_in_the_turn_after_its_answer(self) -> Any:
        """An answer followed by a close in the same turn arrives whole before the close."""
        received, reason = yield self.written_then(b"last words", "loseConnection")
        self.assertEqual(received, b"last words")
        self.assertTrue(reason.check(ConnectionDone))

    @inlineCallbacks
    def test_aborted_in_the_turn_sends_nothing(self) -> Any:
        """An abort drops what was written, as it does on Twisted's own connections."""
        received, reason = yield self.written_then(b"never sent", "abortConnection")
        self.assertEqual(received, b"")
        self.assertTrue(reason.check(ConnectionAborted))

    @inlineCallbacks
    def test_written_again_while_watched(self) -> Any:
        """Writes to a transport the reactor watches (a full socket) are left to the reactor."""
        body = bytes(range(256)) * (LARGE // 256)

        def answer(transport: Any, data: bytes) -> None:
            transport.write(body)
            reactor.callLater(0, more, transport)

        def more(transport: Any) -> None:
            self.assertTrue(transport._watched)
            transport.write(b"tail")
            self.assertFalse(transport._write_held)
            transport.loseConnection()

        received, _, _ = yield self.exchange(answer)
        self.assertEqual(received, body + b"tail")

    @inlineCallbacks
    def test_a_client_connection_too(self) -> Any:
        """A connection made by this process sends its writes at the turn's end too."""
        reading, client = yield held_client(self)
        self.assertIsInstance(client.transport, HeldClient)
        connecting = self.server_watched(client)  # a connection in progress is watched
        client.transport.write(b"hello")  # type: ignore[union-attr]
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.server_watched(client), connecting)
        client.transport.loseConnection()  # type: ignore[union-attr]
        received = yield reading.done
        self.assertEqual(received, b"hello")


def arrived(sock: socket.socket) -> bytes:
    """What ``sock`` has received, waiting up to 5 s for the first byte (blocking the reactor).

    Called inside a turn of the reactor: bytes that are held to the turn's end never come.
    """
    readable, _, _ = select.select([sock], [], [], 5)
    return sock.recv(65536, socket.MSG_DONTWAIT) if readable else b""


class SentEarlyTests(TestCase):
    """Bytes sent before the turn's end when the code that wrote them says so."""

    @inlineCallbacks
    def served(self, count: int) -> Any:
        """``count`` plain sockets, each connected to a held server: the pairs."""
        servers: list[Protocol] = []
        accepted: Deferred[None] = Deferred()

        def made() -> Protocol:
            server = Protocol()
            servers.append(server)
            if len(servers) == count:
                reactor.callLater(0, accepted.callback, None)
            return server

        port = reactor.listenTCP(0, Factory.forProtocol(made), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        peers = []
        for _ in range(count):
            peer = socket.create_connection(("127.0.0.1", port.getHost().port))
            self.addCleanup(peer.close)
            peers.append(peer)
        yield accepted
        for server in servers:
            hold_writes(server.transport)
            self.addCleanup(server.transport.loseConnection)  # type: ignore[union-attr]
        return list(zip(servers, peers, strict=True))

    @inlineCallbacks
    def test_send_now(self) -> Any:
        """One transport's bytes are on their way when ``send_now`` returns."""
        ((server, peer),) = yield self.served(1)
        transport: Any = server.transport
        transport.write(b"now")
        send_now(transport)
        self.assertEqual(arrived(peer), b"now")

    @inlineCallbacks
    def test_send_all(self) -> Any:
        """Every transport written to in the turn sends when ``send_all`` returns."""
        pairs = yield self.served(2)
        for n, (server, _) in enumerate(pairs):
            server.transport.write(b"answer %d" % n)  # type: ignore[union-attr]
        send_all()
        self.assertEqual([arrived(peer) for _, peer in pairs], [b"answer 0", b"answer 1"])

    @inlineCallbacks
    def test_held_otherwise(self) -> Any:
        """Without either, the bytes wait for the turn's end (what the tests above rely on)."""
        ((server, peer),) = yield self.served(1)
        server.transport.write(b"later")  # type: ignore[union-attr]
        peer.setblocking(False)
        with self.assertRaises(BlockingIOError):
            peer.recv(16)
        peer.setblocking(True)
        yield task.deferLater(reactor, 0, lambda: None)
        self.assertEqual(arrived(peer), b"later")


@implementer(IPushProducer)
class Resumed:
    """A producer that counts how often it is resumed."""

    def __init__(self) -> None:
        self.resumed = 0

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


class WatchWritableTests(TestCase):
    """Bytes sent around a held transport: waiting for room waits for the socket itself."""

    @inlineCallbacks
    def test_waits_for_room_in_the_socket(self) -> Any:
        """A socket filled around the transport resumes its producer only once it drains."""
        reading, client = yield held_client(self)
        transport: Any = client.transport
        reading.transport.pauseProducing()  # type: ignore[union-attr]  # the peer reads nothing
        sock = transport.getHandle()
        filled = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                filled += sock.send(b"x" * 65536)
        producer = Resumed()
        transport.registerProducer(producer, True)
        wait_writable(transport)
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(producer.resumed, 0)
        reading.transport.resumeProducing()  # type: ignore[union-attr]
        while not producer.resumed:
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(producer.resumed, 1)
        transport.unregisterProducer()
        transport.loseConnection()
        received = yield reading.done
        self.assertEqual(len(received), filled)


class HoldWritesTests(SynchronousTestCase):
    """Which transports are changed."""

    def test_other_transports_are_left_alone(self) -> None:
        """An in-memory transport, and a subclass of Twisted's connection, keep their class."""
        memory = StringTransport()
        hold_writes(memory)
        self.assertIs(type(memory), StringTransport)

        class Own(tcp.Server):
            pass

        own = Own.__new__(Own)
        hold_writes(own)
        self.assertIs(type(own), Own)

    def test_found_under_a_wrapping_transport(self) -> None:
        """The TCP connection under a wrapper (as TLS is) is the one changed."""
        connection = tcp.Server.__new__(tcp.Server)
        connection._tempDataLen = 0  # nothing written yet

        class Wrapper:
            transport = connection

        hold_writes(Wrapper())
        self.assertIs(type(connection), HeldServer)
