"""End-to-end test of ``/readyz`` over a lambnet node that stops: 503 at once, 200 again."""

from __future__ import annotations

import os
import tempfile
import time
import urllib.error
import urllib.request
from typing import ClassVar

from twisted.trial.unittest import SkipTest

from tests.gateway import (
    ACCOUNT,
    TWISTD,
    GatewayCase,
    GatewayProcess,
    _spawn,
    free_port,
    target_is_moto,
)
from tests.test_e2e_lambnet import prepare_account, start_node

#: Seconds /readyz may take to say that a node refusing connections is unreachable.
PROMPT = 1.0


class ReadinessOverNodeTests(GatewayCase):
    """A gateway over a node whose admin pages are on a known port."""

    node: ClassVar[GatewayProcess]
    admin: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        """Start a node and a gateway over it."""
        if target_is_moto():
            raise SkipTest("the lambnet tests run against the gateway only")
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        home = os.path.join(cls.root, "home")
        os.makedirs(cls.scratch)
        os.makedirs(home)
        admin_port = free_port()
        cls.admin = f"http://127.0.0.1:{admin_port}"
        try:
            cls.bucket = prepare_account(home)
            cls.node = start_node(home, free_port())
            argv = [
                *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", home, "--account", ACCOUNT),
                *("--gateway.address", "127.0.0.1:{port}"),
                *("--admin-listen", f"tcp:{admin_port}:interface=127.0.0.1"),
                *("--broker.validator_addr", f"http://127.0.0.1:{cls.node.port}"),
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

    def ready(self) -> tuple[int, str, float]:
        """GET /readyz: its status, its text and how long it took."""
        began = time.monotonic()
        try:
            with urllib.request.urlopen(self.admin + "/readyz", timeout=30) as response:  # noqa: S310
                status, text = response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8")
        return status, text, time.monotonic() - began

    def test_node_refusing_is_unready_at_once(self) -> None:
        """With the node stopped /readyz says 503 within a second, and 200 once it is back."""
        self.assertEqual(self.ready()[:2], (200, "ready\n"))
        port = self.node.port
        self.node.stop()
        status, text, took = self.ready()
        self.assertEqual(status, 503)
        self.assertIn("network unreachable", text)
        self.assertLess(took, PROMPT)
        type(self).node = start_node(self.gateway.home, port)
        self.assertEqual(self.ready()[:2], (200, "ready\n"))
