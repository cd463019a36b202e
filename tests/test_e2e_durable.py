"""End-to-end: every small PUT the gateway acknowledged survives kill -9 of the gateway."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading

from botocore.exceptions import BotoCoreError, ClientError
from twisted.trial.unittest import SynchronousTestCase

from tests.gateway import GatewayProcess, start_lambgw, target_is_moto

#: Clients putting small objects at once, and how many each puts at most.
CLIENTS = 4
PUTS = 200


class AcknowledgedPutTests(SynchronousTestCase):
    """Small objects kept in the store's index are there once their PUT is answered."""

    def setUp(self) -> None:
        root = tempfile.mkdtemp(prefix="lambgw-e2e-durable-")
        self.addCleanup(shutil.rmtree, root, True)
        self.home = os.path.join(root, "home")

    def start(self) -> GatewayProcess:
        gateway = start_lambgw(self.home)
        self.addCleanup(gateway.stop)
        return gateway

    def test_kill_9_keeps_acknowledged_puts(self) -> None:
        """After kill -9 under a load of small PUTs, each one answered 200 is stored whole."""
        if target_is_moto():
            self.skipTest("kill -9 of moto_server tells nothing about the gateway")
        gateway = self.start()
        bucket = gateway.order_id
        acknowledged: list[tuple[str, bytes]] = []
        enough = threading.Event()

        def put(client_number: int) -> None:
            client = gateway.s3_client(retries={"max_attempts": 1})
            for n in range(PUTS):
                key, body = f"durable/{client_number}/{n}", os.urandom(4096)
                try:
                    client.put_object(Bucket=bucket, Key=key, Body=body)
                except (BotoCoreError, ClientError):
                    return
                acknowledged.append((key, body))
                if len(acknowledged) >= CLIENTS * PUTS // 4:
                    enough.set()

        threads = [threading.Thread(target=put, args=(c,)) for c in range(CLIENTS)]
        for thread in threads:
            thread.start()
        enough.wait(120)
        os.kill(gateway._process.pid, signal.SIGKILL)
        gateway._process.wait()
        for thread in threads:
            thread.join(60)
        self.assertGreater(len(acknowledged), 0)

        client = self.start().s3_client()
        for key, body in list(acknowledged):
            self.assertEqual(client.get_object(Bucket=bucket, Key=key)["Body"].read(), body, key)
