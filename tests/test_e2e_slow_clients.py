"""End-to-end tests of slow clients: heads and bodies too slow are cut, and connections capped.

The gateway runs with short bounds (a head within 2 s, a body of at least 20000 bytes a
second, 250 connections at most) so that the tests see them act; meanwhile boto3's ordinary
requests are served.
"""

from __future__ import annotations

import os
import selectors
import socket
import tempfile
import threading
import time
import urllib.request
from typing import ClassVar

from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest

from tests.gateway import GatewayCase, free_port, start_lambgw, target_is_moto

HEADER_TIMEOUT = 2.0
MIN_BODY_RATE = 20000
MAX_CONNECTIONS = 250
#: Slow-loris connections held open at once.
SLOW_CLIENTS = 200
#: Seconds a cut may come after its bound (a loaded machine, the poll of the test).
SLACK = 2.0


def open_connections(port: int, count: int) -> tuple[list[socket.socket], list[float]]:
    """``count`` connections to the gateway, non-blocking, and when each was opened."""
    socks, opened = [], []
    for _ in range(count):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        opened.append(time.monotonic())
        socks[-1].setblocking(False)
    return socks, opened


def idle_after_a_request(port: int, count: int) -> list[socket.socket]:
    """``count`` kept-alive connections, each idle after one (unsigned, refused) request."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"</Error>" not in answer:
            more = sock.recv(65536)
            if not more:
                raise AssertionError(f"closed after {answer!r}")
            answer += more
        assert answer.startswith(b"HTTP/1.1 403 "), answer
    return socks


def drip(socks: list[socket.socket], data: bytes, pace: float, deadline: float) -> dict[int, float]:
    """Send ``data`` one byte per ``pace`` seconds on each socket until each is closed.

    Returns, by socket index, the time each was closed by the gateway (what it answered is
    read and dropped); sockets still open at ``deadline`` are left out.
    """
    closed: dict[int, float] = {}
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, index)
    sent = 0
    next_byte = time.monotonic()
    while len(closed) < len(socks) and time.monotonic() < deadline:
        if time.monotonic() >= next_byte:
            byte = data[sent % len(data) : sent % len(data) + 1]
            sent += 1
            next_byte += pace
            for index, sock in enumerate(socks):
                if index not in closed:
                    try:
                        sock.send(byte)
                    except OSError:
                        closed[index] = time.monotonic()
                        selector.unregister(sock)
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                more = sock.recv(65536)
            except OSError:
                more = b""
            if not more:
                closed[key.data] = time.monotonic()
                selector.unregister(sock)
    selector.close()
    return closed


class SlowClientTests(GatewayCase):
    """A gateway with short bounds on heads, bodies and connections."""

    admin: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        """Start the gateway with short bounds and its admin pages on a known port."""
        if target_is_moto():
            raise SkipTest("moto_server has its own bounds")
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        os.makedirs(cls.scratch)
        port = free_port()
        cls.admin = f"http://127.0.0.1:{port}"
        try:
            cls.gateway = start_lambgw(
                os.path.join(cls.root, "home"),
                *("--gateway.header_timeout", str(HEADER_TIMEOUT)),
                *("--gateway.min_body_rate", str(MIN_BODY_RATE)),
                *("--gateway.max_connections", str(MAX_CONNECTIONS)),
                *("--admin-listen", f"tcp:{port}:interface=127.0.0.1"),
            )
            cls.bucket = cls.gateway.order_id
        except BaseException:
            cls.tearDownClass()
            raise

    def metric(self, name: str, **labels: str) -> float:
        """The sample ``name`` with ``labels`` from /metrics (0 if absent)."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=30) as response:  # noqa: S310
            text = response.read().decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def test_slow_heads_cut_while_others_served(self) -> None:
        """Slow-loris heads are cut within the bound while boto3's requests all succeed."""
        cut_before = self.metric("lambgw_connections_closed_total", reason="header_timeout")
        socks, opened = open_connections(self.gateway.port, SLOW_CLIENTS)
        self.addCleanup(lambda: [s.close() for s in socks])
        head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
        closed: dict[int, float] = {}
        deadline = opened[-1] + 4 * HEADER_TIMEOUT
        dripping = threading.Thread(target=lambda: closed.update(drip(socks, head, 0.2, deadline)))
        dripping.start()
        client = self.gateway.s3_client()
        served = 0
        while dripping.is_alive():
            key = self.key(f"served-{served}")
            client.put_object(Bucket=self.bucket, Key=key, Body=b"x" * 1000)
            self.assertEqual(
                client.get_object(Bucket=self.bucket, Key=key)["Body"].read(), b"x" * 1000
            )
            served += 1
        dripping.join()
        self.assertEqual(len(closed), SLOW_CLIENTS)
        held = [closed[index] - opened[index] for index in range(SLOW_CLIENTS)]
        self.assertLess(max(held), HEADER_TIMEOUT + SLACK)
        self.assertGreater(min(held), HEADER_TIMEOUT * 0.9)
        self.assertGreater(served, 0)
        cut = self.metric("lambgw_connections_closed_total", reason="header_timeout")
        self.assertEqual(cut - cut_before, SLOW_CLIENTS)
        for loud in ("Traceback", "#error]", "#critical]"):
            self.assertNotIn(loud, self.gateway.output())

    def test_slow_body_cut(self) -> None:
        """A body slower than the least rate is answered RequestTimeout and closed."""
        (sock,), _ = open_connections(self.gateway.port, 1)
        self.addCleanup(sock.close)
        sock.sendall(
            b"PUT /%s/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n"
            % self.bucket.encode()
        )
        began = time.monotonic()
        received = b""
        while time.monotonic() - began < 4 * HEADER_TIMEOUT:
            try:
                sock.send(b"b" * 100)
            except OSError:
                break
            try:
                more = sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.1)
                continue
            except OSError:
                break
            if not more:
                break
            received += more
        took = time.monotonic() - began
        self.assertTrue(received.startswith(b"HTTP/1.1 400 "), received)
        self.assertIn(b"<Code>RequestTimeout</Code>", received)
        self.assertLess(took, HEADER_TIMEOUT + SLACK)

    def test_cap(self) -> None:
        """At the cap (idle kept-alive connections) a new one gets 503 SlowDown, later all works."""
        socks = idle_after_a_request(self.gateway.port, MAX_CONNECTIONS)
        try:
            deadline = time.monotonic() + 5
            while self.metric("lambgw_connections_open") < MAX_CONNECTIONS:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.02)
            client = self.gateway.s3_client(retries={"total_max_attempts": 1})
            with self.assertRaises(ClientError) as raised:
                client.head_bucket(Bucket=self.bucket)
            self.assertEqual(raised.exception.response["ResponseMetadata"]["HTTPStatusCode"], 503)
        finally:
            for sock in socks:
                sock.close()
        deadline = time.monotonic() + 5
        while self.metric("lambgw_connections_open") > 1:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        self.gateway.s3_client().head_bucket(Bucket=self.bucket)
        self.assertGreaterEqual(self.metric("lambgw_connections_closed_total", reason="at_cap"), 1)
