"""Tests of how the workers share new connections: the loads table and the shared listeners."""

from __future__ import annotations

import errno
import os
import signal
import socket
from typing import Any

from twisted.internet import error
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lambgw.s3.connections import ConnectionLimits, Connections
from lambgw.workers.balance import ABSENT, HOLD, LOADS_ENV, Loads
from lambgw.workers.sockets import adopt
from lambgw.workers.supervisor import Supervisor

reactor: Any = _reactor


class LoadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.table = Loads.create(3)
        self.addCleanup(self.table.close)

    def worker(self, number: int) -> Loads:
        """Worker ``number``'s view of the table, through a descriptor of its own."""
        loads = Loads.inherited({LOADS_ENV: str(os.dup(self.table.fileno()))}, number)
        assert loads is not None
        self.addCleanup(loads.close)
        return loads

    def test_slots_absent_until_a_worker_arrives(self) -> None:
        """A new table reads ABSENT for every worker; arriving makes a worker's slot 0."""
        self.assertEqual(len(self.table), 3)
        self.assertEqual([self.table.get(n) for n in (1, 2, 3)], [ABSENT] * 3)
        self.worker(2).arrive()
        self.assertEqual([self.table.get(n) for n in (1, 2, 3)], [ABSENT, 0, ABSENT])

    def test_arriving_keeps_a_count(self) -> None:
        """A worker that listens on a second socket keeps the count it published."""
        one = self.worker(1)
        one.arrive()
        one.publish(5)
        one.arrive()
        self.assertEqual(self.table.get(1), 5)

    def test_counts_seen_by_every_process_view(self) -> None:
        """What one worker publishes, the others and the supervisor read."""
        one, two = self.worker(1), self.worker(2)
        one.publish(4)
        two.publish(3)
        self.assertEqual((self.table.get(1), self.table.get(2)), (4, 3))
        self.assertTrue(one.others_fewer())
        self.assertFalse(two.others_fewer())

    def test_equal_counts_and_absent_workers_leave_no_one_waiting(self) -> None:
        """Ties, and workers that are not running (or never ran), are never 'fewer'."""
        one, two = self.worker(1), self.worker(2)
        one.publish(7)
        two.publish(7)
        self.assertFalse(one.others_fewer())
        self.table.set(2, ABSENT)  # worker 2 ended
        self.assertFalse(one.others_fewer())

    def test_no_table_without_the_variable(self) -> None:
        """A worker started without a table balances nothing."""
        self.assertIsNone(Loads.inherited({}, 1))

    def test_bad_tables_refused(self) -> None:
        """A descriptor that is not a table of whole slots, or a slot outside it, is refused."""
        fd = os.memfd_create("not-a-table")
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, 12)
        self.assertRaises(ValueError, Loads, fd)
        self.assertRaises(ValueError, Loads, self.table.fileno(), 3)


class _Counted(Protocol):
    """A server connection counted in its worker's ``Connections``."""

    def __init__(self, connections: Connections, accepted: list[int], number: int) -> None:
        self.connections = connections
        self.accepted = accepted
        self.number = number

    def connectionMade(self) -> None:
        self.connections.opened()
        self.accepted.append(self.number)

    def connectionLost(self, reason: Any = None) -> None:
        self.connections.closed()


class SharedListenerTests(TestCase):
    """Two 'workers' in one reactor, each with its own copy of one listening socket."""

    def setUp(self) -> None:
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.listening.setblocking(False)  # as the supervisor's listeners are
        self.addCleanup(self.listening.close)
        self.port_number = self.listening.getsockname()[1]
        self.table = Loads.create(2)
        self.addCleanup(self.table.close)
        #: The worker number of each connection accepted, in order.
        self.accepted: list[int] = []
        self.clients: list[socket.socket] = []
        self.addCleanup(lambda: [client.close() for client in self.clients])

    def worker(self, number: int, balanced: bool = True) -> Connections:
        """Start worker ``number``'s listener; its connections' count."""
        loads = None
        if balanced:
            loads = Loads(os.dup(self.table.fileno()), number - 1)
            self.addCleanup(loads.close)
        connections = Connections(ConnectionLimits())
        if loads is not None:
            connections.changed = loads.publish
        factory = Factory.forProtocol(lambda: _Counted(connections, self.accepted, number))
        factory.noisy = False
        port = adopt(reactor, os.dup(self.listening.fileno()), factory, loads)
        self.addCleanup(port.stopListening)
        return connections

    @inlineCallbacks
    def connect(self) -> Any:
        """Open a connection and wait until a worker has accepted it; that worker's number."""
        before = len(self.accepted)
        client = socket.create_connection(("127.0.0.1", self.port_number))
        self.clients.append(client)
        for _ in range(500):
            if len(self.accepted) > before:
                return self.accepted[-1]
            yield deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("no worker accepted the connection in 5 s")

    @inlineCallbacks
    def test_connections_spread_evenly(self) -> Any:
        """Sixteen connections, one after the other, go eight to each worker."""
        one, two = self.worker(1), self.worker(2)
        for _ in range(16):
            yield self.connect()
        self.assertEqual((one.open, two.open), (8, 8))
        self.assertEqual((self.table.get(1), self.table.get(2)), (8, 8))

    @inlineCallbacks
    def test_closed_connections_counted(self) -> Any:
        """A worker whose connections closed takes the next ones."""
        one, two = self.worker(1), self.worker(2)
        for _ in range(4):
            yield self.connect()
        # Close the connections of worker 1: it now has the fewest.
        for client, number in list(zip(self.clients, self.accepted, strict=True)):
            if number == 1:
                client.close()
        for _ in range(200):
            if one.open == 0:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((one.open, two.open), (0, 2))
        taken = []
        for _ in range(2):
            taken.append((yield self.connect()))
        self.assertEqual(taken, [1, 1])

    @inlineCallbacks
    def test_waiting_connection_taken_after_the_hold(self) -> Any:
        """A worker that is not accepting does not make a connection wait more than HOLD."""
        self.table.set(2, 0)  # worker 2 says it has nothing, but never accepts
        one = self.worker(1)
        one.opened()  # as if one connection were open already
        start = reactor.seconds()
        self.assertEqual((yield self.connect()), 1)
        waited = reactor.seconds() - start
        self.assertGreaterEqual(waited, HOLD)
        self.assertLess(waited, 5.0)

    @inlineCallbacks
    def test_without_a_table_connections_taken_at_once(self) -> Any:
        """A listener without loads accepts whatever the others have."""
        self.table.set(2, 0)
        self.worker(1, balanced=False)
        waiting: Deferred[Any] = self.connect()
        self.assertEqual((yield waiting), 1)


class _SpawningReactor(Clock):
    """A clock that records the processes a supervisor starts instead of starting them."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, **kwargs: Any) -> None:
        self.spawned.append(kwargs)


class SupervisorTableTests(SynchronousTestCase):
    """What the supervisor gives its workers to balance by."""

    def supervisor(self) -> Supervisor:
        reactor = _SpawningReactor()
        supervisor = Supervisor(reactor, [], 2, lambda number, admin: ["worker"], "", 1.0, {})
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        supervisor.startService()
        self.addCleanup(supervisor._remove_runtime, None)
        return supervisor

    def test_each_worker_inherits_the_table(self) -> None:
        """Every worker gets the table's descriptor and the variable naming it; slots absent."""
        supervisor = self.supervisor()
        assert supervisor.loads is not None
        spawned = supervisor.reactor.spawned
        self.assertEqual(len(spawned), 2)
        for kwargs in spawned:
            fd = int(kwargs["env"][LOADS_ENV])
            self.assertEqual(kwargs["childFDs"][fd], supervisor.loads.fileno())
        self.assertEqual([supervisor.loads.get(n) for n in (1, 2)], [ABSENT, ABSENT])

    def test_ended_worker_absent(self) -> None:
        """A worker that ended reads ABSENT until its successor listens."""
        supervisor = self.supervisor()
        assert supervisor.loads is not None
        supervisor.loads.set(1, 3)
        supervisor.ended(supervisor.workers[1], Failure(error.ProcessDone(0)))
        self.assertEqual(supervisor.loads.get(1), ABSENT)

    def test_without_memfd_workers_still_start(self) -> None:
        """Where no shared table can be made, the workers start without one, with a warning."""
        warnings: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(warnings.append)
        self.addCleanup(globalLogPublisher.removeObserver, warnings.append)

        def refused(*args: Any) -> int:
            raise OSError(errno.EPERM, "memfd_create refused")

        self.patch(os, "memfd_create", refused)
        supervisor = self.supervisor()
        self.assertIsNone(supervisor.loads)
        self.assertEqual(len(supervisor.reactor.spawned), 2)
        self.assertNotIn(LOADS_ENV, supervisor.reactor.spawned[0]["env"])
        texts = [formatEvent(event) for event in warnings]
        self.assertTrue(any("cannot share their loads" in text for text in texts), texts)
