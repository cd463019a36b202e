"""End-to-end tests of the spools: a full file system, what a killed gateway or node left behind.

The full-disk tests put the gateway's data (``--broker.db_path``) on a tmpfs of 8 MiB, so they
run only where the test may mount one (as root); the crash tests run anywhere.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bench.client import Endpoint, Signer, object_path
from tests.gateway import (
    ACCESS_KEY,
    SECRET_KEY,
    GatewayProcess,
    MiB,
    free_port,
    start_lambgw,
    target_is_moto,
)
from tests.test_e2e_lambnet import _incoming, prepare_account, start_gateway, start_node

#: Seconds a test waits for something the gateway does by itself.
PATIENCE = 30.0


def open_put(gateway: GatewayProcess, key: str, size: int, expect: bool = False) -> socket.socket:
    """Send the signed headers of a PUT of ``size`` bytes; the connection, for the body."""
    signer = Signer(Endpoint("127.0.0.1", gateway.port, ACCESS_KEY, SECRET_KEY))
    path = object_path(gateway.order_id, key)
    headers = signer.sign("PUT", path, payload_sha256="UNSIGNED-PAYLOAD")
    headers["content-length"] = str(size)
    if expect:
        headers["expect"] = "100-continue"
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=PATIENCE)
    lines = [f"PUT {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(lines).encode())
    return sock


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """Read the response on ``sock``: its status and body."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    try:
        return response.status, response.read()
    finally:
        sock.close()


def spool_files(db_path: str) -> list[str]:
    """The files in the spool of the gateway data ``db_path``."""
    root = os.path.join(db_path, "spool")
    return sorted(
        os.path.relpath(os.path.join(d, name), root)
        for d, _, names in os.walk(root)
        for name in names
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds, failing after :data:`PATIENCE` seconds."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class FullSpoolTests(SynchronousTestCase):
    """A gateway whose spool is on a file system of 8 MiB."""

    def setUp(self) -> None:
        """Mount the tmpfs and start the gateway with its data there."""
        if target_is_moto():
            raise SkipTest("the spool is the gateway's")
        root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, root, True)
        self.data = os.path.join(root, "data")
        os.makedirs(self.data)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", self.data],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            raise SkipTest(f"cannot mount a tmpfs: {mounted.stderr.decode(errors='replace')}")
        self.addCleanup(subprocess.run, ["umount", "-l", self.data], check=False)
        admin_port = free_port()
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.gateway = start_lambgw(
            os.path.join(root, "home"),
            *("--broker.db_path", self.data),
            *("--admin-listen", f"tcp:{admin_port}:interface=127.0.0.1"),
        )
        self.addCleanup(self.gateway.stop)
        self.s3 = self.gateway.s3_client(retries={"total_max_attempts": 1})
        self.used = self.order_used()

    def order_used(self) -> int:
        """The bytes the gateway's order holds."""
        (order,) = self.gateway.orders()
        return int(order["used"])

    def fill(self, size: int) -> str:
        """Take ``size`` bytes of the tmpfs with a file of the test's; its path."""
        path = os.path.join(self.data, "filler")
        with open(path, "wb") as f:
            f.write(b"\0" * size)
        return path

    def page(self, path: str) -> tuple[int, str]:
        """An admin page: its status and text."""
        try:
            with urllib.request.urlopen(self.admin + path, timeout=PATIENCE) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def assert_nothing_left(self, key: str) -> None:
        """No object ``key``, no spooled file, no capacity taken."""
        self.assertEqual(spool_files(self.data), [])
        self.assertEqual(self.order_used(), self.used)
        listed = self.s3.list_objects_v2(Bucket=self.gateway.order_id, Prefix=key)
        self.assertEqual(listed.get("Contents", []), [])

    def test_refused_before_the_body(self) -> None:
        """A PUT that cannot fit is answered 503 SlowDown before its body is sent."""
        filler = self.fill(5 * MiB)
        sock = open_put(self.gateway, "big", 4 * MiB, expect=True)
        status, body = answer(sock)
        self.assertEqual(status, 503)
        self.assertIn(b"<Code>SlowDown</Code>", body)
        self.assertIn(b"spool is full", body)
        status, text = self.page("/readyz")
        self.assertEqual(status, 503)
        self.assertIn(f"spool full: {os.path.join(self.data, 'spool')} has ", text)
        self.assertIn("lambgw_spool_free_bytes ", self.page("/metrics")[1])
        self.assert_nothing_left("big")
        os.unlink(filler)
        self.assertEqual(self.page("/readyz"), (200, "ready\n"))
        self.s3.put_object(Bucket=self.gateway.order_id, Key="big", Body=b"b" * (4 * MiB))

    def test_larger_than_the_disk(self) -> None:
        """A PUT larger than the whole spool is refused as too large, not to be retried."""
        status, body = answer(open_put(self.gateway, "huge", 9 * MiB, expect=True))
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>EntityTooLarge</Code>", body)

    def test_disk_fills_mid_body(self) -> None:
        """A disk that fills while a body arrives: 503 SlowDown, logged once, nothing kept."""
        sock = open_put(self.gateway, "mid", 6 * MiB)
        sock.sendall(b"m" * MiB)
        wait_for(lambda: bool(spool_files(self.data)), "the body in the spool")
        filler = self.fill(4 * MiB)
        sock.sendall(b"m" * (5 * MiB))
        status, body = answer(sock)
        self.assertEqual(status, 503, body.decode() + self.gateway.output())
        self.assertIn(b"<Code>SlowDown</Code>", body)
        self.assert_nothing_left("mid")
        # A second refusal is not logged again.
        self.assertEqual(answer(open_put(self.gateway, "again", 6 * MiB, expect=True))[0], 503)
        output = self.gateway.output()
        self.assertEqual(output.count("is full:"), 1, output)
        self.assertIn(f"The gateway's spool {os.path.join(self.data, 'spool')} is full", output)
        self.assertNotIn("Traceback", output)
        os.unlink(filler)
        self.s3.put_object(Bucket=self.gateway.order_id, Key="mid", Body=b"m" * (6 * MiB))
        self.assertEqual(self.order_used(), self.used + 6 * MiB)


class CrashLeftoversTests(SynchronousTestCase):
    """A gateway killed mid-upload leaves bodies that the next start removes at once."""

    def setUp(self) -> None:
        """A config home for two gateways sharing one data directory."""
        if target_is_moto():
            raise SkipTest("the spool is the gateway's")
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")
        self.data = os.path.join(self.home, "gateway")

    def start(self) -> GatewayProcess:
        """Start a gateway on the shared home; stopped at the end of the test."""
        gateway = start_lambgw(self.home)
        self.addCleanup(gateway.stop)
        return gateway

    def test_killed_gateway_leftovers_removed_at_start(self) -> None:
        """Kill -9 mid-PUT, restart: its body is gone at once; a live neighbour's stays."""
        killed, neighbour = self.start(), self.start()
        kept = open_put(neighbour, "kept", 8 * MiB)
        kept.sendall(b"k" * MiB)
        wait_for(lambda: len(spool_files(self.data)) == 1, "the neighbour's body")
        (kept_file,) = spool_files(self.data)
        cut = open_put(killed, "cut", 64 * MiB)
        cut.sendall(b"c" * (4 * MiB))
        wait_for(lambda: len(spool_files(self.data)) == 2, "the killed gateway's body")
        os.kill(killed._process.pid, signal.SIGKILL)
        killed._process.wait()
        cut.close()
        self.assertEqual(len(spool_files(self.data)), 2)
        restarted = self.start()
        self.assertEqual(spool_files(self.data), [kept_file])
        self.assertRegex(
            restarted.output(),
            r"Removed 1 files \(\d+ bytes\) left in the spool .* by a process that ended",
        )
        kept.sendall(b"k" * (7 * MiB))
        self.assertEqual(answer(kept)[0], 200)
        s3 = restarted.s3_client()
        body = s3.get_object(Bucket=restarted.order_id, Key="kept")["Body"].read()
        self.assertEqual(body, b"k" * (8 * MiB))
        self.assertEqual(spool_files(self.data), [])
        listed = s3.list_objects_v2(Bucket=restarted.order_id)
        self.assertEqual([o["Key"] for o in listed["Contents"]], ["kept"])
        # Stopped cleanly, each gateway removes its own directory.
        restarted.stop()
        neighbour.stop()
        self.assertEqual(os.listdir(os.path.join(self.data, "spool")), [])

    def test_killed_node_leftovers_removed_at_start(self) -> None:
        """A node killed mid-PUT leaves a body in its incoming/; its restart removes it."""
        os.makedirs(self.home)
        order_id = prepare_account(self.home)
        node_port = free_port()
        node = start_node(self.home, node_port)
        self.addCleanup(node.stop)
        gateway = start_gateway(self.home, "lambgw", node_port, order_id)
        self.addCleanup(gateway.stop)
        cut = open_put(gateway, "cut", 64 * MiB)
        cut.sendall(b"c" * (4 * MiB))
        wait_for(lambda: bool(_incoming(self.home)), "the body in the node's incoming/")
        os.kill(node._process.pid, signal.SIGKILL)
        node._process.wait()
        cut.close()
        self.assertTrue(_incoming(self.home))
        restarted = start_node(self.home, node_port)
        self.addCleanup(restarted.stop)
        self.assertEqual(_incoming(self.home), [])
        s3 = gateway.s3_client()
        s3.put_object(Bucket=order_id, Key="after", Body=b"a" * (2 * MiB))
        self.assertEqual(
            s3.get_object(Bucket=order_id, Key="after")["Body"].read(), b"a" * (2 * MiB)
        )
