"""End-to-end tests of downloads whose client closes its connection at once.

curl and urllib close as soon as the last byte is in.  Such a download is whole: the access
log and ``lambgw_sent_bytes_total`` count every byte and nothing is logged above info.  A
client that leaves earlier cut its download: that is one warning with the key, the bytes
sent and the bytes due.  Both are checked on the embedded network (whose bodies go out with
sendfile(2)) and over a lambnet node (spliced from the node's socket to the client's).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import urllib.request
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest

from tests.gateway import (
    ACCOUNT,
    TWISTD,
    ClientTests,
    GatewayCase,
    GatewayProcess,
    MiB,
    _spawn,
    free_port,
    start_lambgw,
    target_is_moto,
)
from tests.test_e2e_lambnet import prepare_account, start_node

#: Downloads per test: enough for the client's close to race the gateway's last send.
DOWNLOADS = 200
#: The object's size: several sendfile calls, and above the node's splicing threshold.
SIZE = 2 * MiB + 12345
#: Log levels that must not appear while downloads succeed.
LOUD = re.compile(r"#(warn|error|critical)\]")


def read_head(sock: socket.socket) -> tuple[int, bytes]:
    """Read a response's head from ``sock``: its Content-Length and the body bytes after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise AssertionError(f"connection closed in the head: {data!r}")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    (length,) = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    return length, rest


def download(port: int, path: str, stop_after: int | None = None) -> int:
    """GET ``path`` over a fresh connection and close it after the last byte (or ``stop_after``).

    Returns the body bytes received.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        length, body = read_head(sock)
        got = len(body)
        wanted = length if stop_after is None else stop_after
        while got < wanted:
            more = sock.recv(1024 * 1024)
            if not more:
                break
            got += len(more)
        return got


class _DownloadTests(ClientTests):
    """Downloads closed after their last byte, and one cut early; shared by both networks."""

    admin: ClassVar[str]

    def metric(self, name: str, operation: str) -> float:
        """The value of the sample ``name`` with ``operation=...`` (0 if absent)."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=30) as response:  # noqa: S310
            text = response.read().decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("operation") == operation:
                    return float(sample.value)
        return 0.0

    def records(self, key: str) -> list[dict[str, Any]]:
        """The access log's records of GETs of ``key``."""
        marker = "[lambgw.access#info] "
        found = [
            json.loads(line.split(marker, 1)[1])
            for line in self.gateway.output().splitlines()
            if marker in line
        ]
        return [r for r in found if r["key"] == key and r["method"] == "GET"]

    def presigned(self, key: str) -> str:
        """The path and query of a presigned GET of ``key``."""
        url = self.gateway.s3_client().generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}
        )
        return url.split(str(self.gateway.port), 1)[1]

    def loud_lines(self) -> list[str]:
        """The log lines above info, but for the warning about the default keys."""
        return [
            line
            for line in self.gateway.output().splitlines()
            if LOUD.search(line) and "default keys" not in line
        ]

    def test_closed_after_last_byte(self) -> None:
        """Downloads closed right after their last byte count whole, and nothing is logged loud."""
        key = self.key("whole")
        self.gateway.s3_client().put_object(Bucket=self.bucket, Key=key, Body=os.urandom(SIZE))
        path = self.presigned(key)
        before = self.metric("lambgw_sent_bytes_total", "GetObject")
        loud_before = self.loud_lines()
        for _ in range(DOWNLOADS):
            self.assertEqual(download(self.gateway.port, path), SIZE)
        sent = self.metric("lambgw_sent_bytes_total", "GetObject") - before
        self.assertEqual(sent, DOWNLOADS * SIZE)
        records = self.records(key)
        self.assertEqual(len(records), DOWNLOADS)
        self.assertEqual(
            {(r["status"], r["bytes_out"], r["completed"]) for r in records}, {(200, SIZE, True)}
        )
        self.assertEqual(self.loud_lines(), loud_before)

    def test_cut_early_warned_once(self) -> None:
        """A download its client cuts is one warning with the key and the bytes sent and due."""
        key = self.key("cut")
        self.gateway.s3_client().put_object(Bucket=self.bucket, Key=key, Body=os.urandom(8 * SIZE))
        loud_before = self.loud_lines()
        download(self.gateway.port, self.presigned(key), stop_after=100_000)
        self.wait_for(lambda: len(self.records(key)) == 1)
        (record,) = self.records(key)
        self.assertFalse(record["completed"])
        self.assertLess(record["bytes_out"], 8 * SIZE)
        new = self.loud_lines()[len(loud_before) :]
        self.assertEqual(len(new), 1, new)
        self.assertIn("#warn]", new[0])
        self.assertIn(
            f"Download of {key} cut by the client after {record['bytes_out']} of {8 * SIZE} bytes",
            new[0],
        )
        self.assertNotIn("Traceback", self.gateway.output())

    def wait_for(self, condition: Any, timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds (the access line follows the client's close)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("timed out")
            time.sleep(0.05)


def _known_admin(cls: type[GatewayCase]) -> tuple[str, ...]:
    """Flags of a gateway with its admin pages on a free port (noted on ``cls``) and JSON lines."""
    port = free_port()
    cls.admin = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return ("--admin-listen", f"tcp:{port}:interface=127.0.0.1", "--access-log-format", "json")


class EmbeddedDownloadTests(_DownloadTests, GatewayCase):
    """Downloads from the embedded network, sent with sendfile(2)."""

    @classmethod
    def setUpClass(cls) -> None:
        """Start the gateway with its admin pages on a known port and a JSON access log."""
        if target_is_moto():
            raise SkipTest("moto_server has no access log")
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        os.makedirs(cls.scratch)
        try:
            cls.gateway = start_lambgw(os.path.join(cls.root, "home"), *_known_admin(cls))
            cls.bucket = cls.gateway.order_id
        except BaseException:
            cls.tearDownClass()
            raise


class LambnetDownloadTests(_DownloadTests, GatewayCase):
    """Downloads from a lambnet node, spliced from its socket to the client's."""

    node: ClassVar[GatewayProcess]

    @classmethod
    def setUpClass(cls) -> None:
        """Start a node and a gateway over it, with known admin pages and a JSON access log."""
        if target_is_moto():
            raise SkipTest("the lambnet tests run against the gateway only")
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        home = os.path.join(cls.root, "home")
        os.makedirs(cls.scratch)
        os.makedirs(home)
        try:
            cls.bucket = prepare_account(home)
            cls.node = start_node(home, free_port())
            argv = [
                *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", home, "--account", ACCOUNT),
                *("--gateway.address", "127.0.0.1:{port}"),
                *("--broker.validator_addr", f"http://127.0.0.1:{cls.node.port}"),
                *_known_admin(cls),
            ]
            cls.gateway = _spawn(argv, home, "lambgw", cls.bucket)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        """Stop the node too."""
        node = cls.__dict__.get("node")
        if node is not None:
            node.stop()
        super().tearDownClass()
