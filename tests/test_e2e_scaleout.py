"""End-to-end: one multipart upload served by three gateways that share nothing but a lambnet node.

Each gateway has a config home of its own (its own spool, no shared directory); the parts of
one upload go to them in turn, one of them is killed with ``kill -9`` once its parts are
acknowledged, and the upload is listed and completed through the others.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lambgw.lambnet.keys import private_key_path
from tests.gateway import (
    ACCOUNT,
    ADMIN_ANYWHERE,
    TWISTD,
    GatewayProcess,
    MiB,
    _spawn,
    free_port,
    target_is_moto,
)
from tests.test_e2e_lambnet import prepare_account, start_node


def start_gateway(home: str, node_port: int, key_file: str) -> GatewayProcess:
    """Start lambgw with config home ``home`` over the node, signing with ``key_file``."""
    os.makedirs(home)
    argv = [
        *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", home, "--account", ACCOUNT),
        *("--gateway.address", "127.0.0.1:{port}", *ADMIN_ANYWHERE),
        *("--broker.validator_addr", f"http://127.0.0.1:{node_port}"),
        *("--broker.extra_key_file", key_file),
    ]
    return _spawn(argv, home, "lambgw", "")


class ThreeGatewaysTests(SynchronousTestCase):
    """Three gateways with three homes over one lambnet node serve one upload together."""

    def setUp(self) -> None:
        if target_is_moto():
            raise SkipTest("the lambnet tests run against the gateway only")
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-scale-")
        self.addCleanup(shutil.rmtree, self.root, True)
        node_home = os.path.join(self.root, "node")
        os.makedirs(node_home)
        self.order_id = prepare_account(node_home)
        node = start_node(node_home, free_port())
        self.addCleanup(node.stop)
        key = private_key_path(node_home, ACCOUNT)
        self.gateways = []
        for n in range(3):
            gateway = start_gateway(os.path.join(self.root, f"gw{n}"), node.port, key)
            self.addCleanup(gateway.stop)
            self.gateways.append(gateway)

    def test_round_robin_parts_and_kill_9(self) -> None:
        """Parts sent in turn to three gateways, one killed: the upload completes whole."""
        bucket, key = self.order_id, "shared/object"
        clients = [g.s3_client() for g in self.gateways]
        upload_id = clients[0].create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        bodies = [os.urandom(5 * MiB) for _ in range(6)] + [os.urandom(1234)]
        parts = []
        for number, body in enumerate(bodies, 1):
            client = clients[(number - 1) % 3]
            etag = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
            self.assertEqual(etag, f'"{hashlib.md5(body).hexdigest()}"')
            parts.append({"PartNumber": number, "ETag": etag})
        killed = self.gateways[0]._process
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()

        listed = clients[1].list_multipart_uploads(Bucket=bucket)["Uploads"]
        self.assertEqual([(u["Key"], u["UploadId"]) for u in listed], [(key, upload_id)])
        stored = clients[2].list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
        self.assertEqual(
            [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in stored], parts
        )
        done = clients[1].complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        digests = b"".join(hashlib.md5(body).digest() for body in bodies)
        expected = f'"{hashlib.md5(digests).hexdigest()}-{len(bodies)}"'
        self.assertEqual(done["ETag"], expected)
        self.assertRegex(done["ETag"], r'^"[0-9a-f]{32}-7"$')
        got = clients[2].get_object(Bucket=bucket, Key=key)
        self.assertEqual(got["ETag"], expected)
        self.assertEqual(
            hashlib.sha256(got["Body"].read()).hexdigest(),
            hashlib.sha256(b"".join(bodies)).hexdigest(),
        )
        self.assertEqual(clients[1].list_multipart_uploads(Bucket=bucket).get("Uploads", []), [])
        for n in (1, 2):
            spool = os.path.join(self.root, f"gw{n}", "gateway", "spool")
            self.assertEqual([f for _, _, files in os.walk(spool) for f in files], [])
