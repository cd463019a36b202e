"""Tests for reaching the network at start: growing waits while the node is away, one line each."""

from __future__ import annotations

from itertools import islice

from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived

from lambgw.network.errors import NetworkUnavailable, NoSuchAccount
from lambgw.tap import refused_tls, start_delays, wait_for_network

ADDRESS = "http://127.0.0.1:1"


def unavailable(reason: BaseException) -> NetworkUnavailable:
    """A NetworkUnavailable raised while handling ``reason``, as the HTTP network raises it."""
    try:
        try:
            raise reason
        except BaseException:
            raise NetworkUnavailable(f"the network node cannot be reached: {reason!r}") from None
    except NetworkUnavailable as e:
        return e


class Attempts:
    """An attempt that fails with the given errors in turn, then answers ``"orders"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.count = 0

    def __call__(self) -> Deferred[str]:
        """One attempt."""
        self.count += 1
        if self.errors:
            return fail(self.errors.pop(0))
        return succeed("orders")


class StartDelaysTests(SynchronousTestCase):
    """The waits double from one second up to thirty."""

    def test_doubling_capped(self) -> None:
        """1, 2, 4, 8, 16, then 30 s for ever."""
        self.assertEqual(list(islice(start_delays(), 8)), [1, 2, 4, 8, 16, 30, 30, 30])


class RefusedTLSTests(SynchronousTestCase):
    """A failed TLS handshake is told apart from a node that is away."""

    def test_certificate_refused(self) -> None:
        """A certificate that does not verify is a refused handshake."""
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        reason = ResponseNeverReceived([Failure(error)])
        self.assertTrue(refused_tls(unavailable(reason)))

    def test_connection_refused(self) -> None:
        """A refused connection is not."""
        reason = ConnectionRefusedError("Connection refused")
        self.assertFalse(refused_tls(unavailable(reason)))

    def test_no_context(self) -> None:
        """A bare NetworkUnavailable (a 5xx answer) is not."""
        self.assertFalse(refused_tls(NetworkUnavailable("the network failed (500)")))


class WaitForNetworkTests(SynchronousTestCase):
    """wait_for_network tries again with growing waits while the network is away."""

    def test_waits_then_answers(self) -> None:
        """After two failures it tries again 1 s, then 2 s later, and fires with the answer."""
        clock = Clock()
        attempt = Attempts(NetworkUnavailable("down"), NetworkUnavailable("still down"))
        with capturedLogs() as events:
            d = wait_for_network(attempt, clock, ADDRESS)
            self.assertEqual(attempt.count, 1)
            clock.advance(0.999)
            self.assertEqual(attempt.count, 1)
            clock.advance(0.001)
            self.assertEqual(attempt.count, 2)
            clock.advance(1.999)
            self.assertNoResult(d)
            clock.advance(0.001)
        self.assertEqual(self.successResultOf(d), "orders")
        self.assertEqual(attempt.count, 3)
        self.assertEqual(
            [e["log_format"].format(**e) for e in events],
            [
                f"Waiting for the network node at {ADDRESS}: down (next try in 1 s)",
                f"Waiting for the network node at {ADDRESS}: still down (next try in 2 s)",
            ],
        )

    def test_other_error_raised(self) -> None:
        """An error that is not the network being away is raised at once."""
        clock = Clock()
        d = wait_for_network(Attempts(NoSuchAccount("no account demo")), clock, ADDRESS)
        self.failureResultOf(d, NoSuchAccount)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refused_tls_raised(self) -> None:
        """A refused TLS handshake is raised at once."""
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        attempt = Attempts(unavailable(ResponseNeverReceived([Failure(error)])))
        d = wait_for_network(attempt, Clock(), ADDRESS)
        self.failureResultOf(d, NetworkUnavailable)

    def test_not_wanted_raised(self) -> None:
        """A failure once the result is no longer wanted is raised, not waited on."""
        clock = Clock()
        d = wait_for_network(Attempts(NetworkUnavailable("down")), clock, ADDRESS, lambda: False)
        self.failureResultOf(d, NetworkUnavailable)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_while_waiting(self) -> None:
        """Cancelling during a wait stops it: no more attempts."""
        clock = Clock()
        attempt = Attempts(NetworkUnavailable("down"))
        with capturedLogs():
            d = wait_for_network(attempt, clock, ADDRESS)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        clock.advance(60)
        self.assertEqual(attempt.count, 1)
