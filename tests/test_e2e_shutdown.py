"""End-to-end test of a graceful stop: SIGTERM lets an upload in flight finish whole.

The gateway stops accepting connections at once, waits for the requests in flight (up to
``--shutdown-grace`` seconds), and keeps its open multipart uploads for the next start.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import socket
import sqlite3
import tempfile
import time
from urllib.parse import urlsplit

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lambgw.network.index import INDEX_FILE
from lambgw.network.objectfiles import OWNERS_DIR
from tests.gateway import GatewayProcess, free_port, start_lambgw, target_is_moto

MiB = 2**20
#: Seconds the gateway has to stop listening after SIGTERM, and to exit once idle.
STOP_TIMEOUT = 20.0


def refuses_connections(port: int) -> bool:
    """Whether nothing accepts connections on 127.0.0.1:port any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


class StopCase(SynchronousTestCase):
    """A test of the gateway's own stop, with a home in a fresh directory."""

    def setUp(self) -> None:
        if target_is_moto():
            raise SkipTest("stopping gracefully is the gateway's behaviour, not moto's")
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")


class GracefulStopTests(StopCase):
    """SIGTERM with an upload in flight."""

    def start(self) -> GatewayProcess:
        gateway = start_lambgw(self.home, "--shutdown-grace", "30")
        self.addCleanup(gateway.stop)
        return gateway

    def test_upload_in_flight_completes(self) -> None:
        """An upload half sent when SIGTERM comes completes with 200 and is stored whole."""
        gateway = self.start()
        client = gateway.s3_client(signature_version="s3v4")
        bucket = gateway.order_id
        upload_id = client.create_multipart_upload(Bucket=bucket, Key="kept")["UploadId"]
        part = client.upload_part(
            Bucket=bucket, Key="kept", UploadId=upload_id, PartNumber=1, Body=b"p" * 1000
        )
        body = os.urandom(8 * MiB)
        url = urlsplit(
            client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "slow"})
        )
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
        self.addCleanup(connection.close)
        connection.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        connection.send(body[: 3 * MiB])
        time.sleep(0.3)
        gateway._process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not refuses_connections(gateway.port):
            self.assertLess(time.monotonic(), deadline, "still accepting after SIGTERM")
            time.sleep(0.05)
        self.assertTrue(gateway.running(), "exited with a request in flight")
        connection.send(body[3 * MiB :])
        response = connection.getresponse()
        self.assertEqual((response.status, response.read()[:0]), (200, b""))
        # twistd ends by the signal it got, as systemd expects of a clean stop.
        self.assertIn(gateway._process.wait(STOP_TIMEOUT), (0, -signal.SIGTERM))
        output = gateway.output()
        self.assertIn("requests in flight have 30.0 s to finish", output)
        self.assertIn(f'PutObject PUT "/{bucket}/slow" 200 in={len(body)} out=0', output)

        again = self.start()
        client = again.s3_client()
        stored = client.get_object(Bucket=bucket, Key="slow")["Body"].read()
        self.assertEqual(hashlib.sha256(stored).digest(), hashlib.sha256(body).digest())
        parts = client.list_parts(Bucket=bucket, Key="kept", UploadId=upload_id)["Parts"]
        self.assertEqual([p["ETag"] for p in parts], [part["ETag"]])


def store_left_over(network_dir: str) -> tuple[list[str], int]:
    """What a stopped store left for the next start: owner files and pending file rows."""
    owners = sorted(os.listdir(os.path.join(network_dir, OWNERS_DIR)))
    db = sqlite3.connect(os.path.join(network_dir, INDEX_FILE))
    try:
        (pending,) = db.execute("SELECT COUNT(*) FROM pending").fetchone()
    finally:
        db.close()
    return owners, int(pending)


class StoreClosedAtStopTests(StopCase):
    """A graceful stop closes the store: nothing is left for the next start to reclaim."""

    def overwrite_and_stop(self, gateway: GatewayProcess, bucket: str) -> None:
        """Store an object in files, replace it and delete another, then SIGTERM."""
        client = gateway.s3_client(signature_version="s3v4")
        for body in (os.urandom(MiB), os.urandom(MiB)):
            client.put_object(Bucket=bucket, Key="big", Body=body)
        client.put_object(Bucket=bucket, Key="gone", Body=os.urandom(MiB))
        client.delete_object(Bucket=bucket, Key="gone")
        gateway._process.send_signal(signal.SIGTERM)
        self.assertIn(gateway._process.wait(STOP_TIMEOUT), (0, -signal.SIGTERM))

    def test_gateway_closes_the_embedded_store(self) -> None:
        """The embedded network's owner file is gone and no file is pending after SIGTERM."""
        gateway = start_lambgw(self.home)
        self.addCleanup(gateway.stop)
        self.overwrite_and_stop(gateway, gateway.order_id)
        self.assertEqual(store_left_over(os.path.join(self.home, "network")), ([], 0))

    def test_node_closes_its_store(self) -> None:
        """A lambnet node's store is closed the same way when the node stops."""
        from tests.test_e2e_lambnet import prepare_account, start_gateway, start_node

        os.makedirs(self.home)
        order_id = prepare_account(self.home)
        node = start_node(self.home, free_port())
        self.addCleanup(node.stop)
        gateway = start_gateway(self.home, "lambgw", node.port, order_id)
        self.addCleanup(gateway.stop)
        self.overwrite_and_stop(gateway, order_id)
        node._process.send_signal(signal.SIGTERM)
        self.assertIn(node._process.wait(STOP_TIMEOUT), (0, -signal.SIGTERM))
        self.assertEqual(store_left_over(os.path.join(self.home, "network")), ([], 0))
