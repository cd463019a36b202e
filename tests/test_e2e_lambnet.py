"""End-to-end tests of the gateway over a real ``twistd -n lambnet`` node on loopback.

The node serves ``HOME/network``, the store the admin command manages, so orders bought with
``python -m lambgw order buy --home HOME`` appear on the node at once.  The client suites of
boto3, the aws cli and multipart uploads run again in both gateway modes over the node; then
faults (the node stopped before and during transfers) and security (unsigned, another
account's, tampered, replayed and escaping requests, sent straight to the node).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, ClassVar
from urllib.parse import quote

from botocore.exceptions import ClientError
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bench.client import (
    BenchError,
    Endpoint,
    Payload,
    Signer,
    connect,
    crc32_base64,
    object_path,
    perform,
)
from lambgw.lambnet.keys import private_key_path, read_private_key
from lambgw.network import signing, wire
from tests.gateway import (
    ACCESS_KEY,
    ACCOUNT,
    ADMIN_ANYWHERE,
    SECRET_KEY,
    TWISTD,
    ClientTests,
    GatewayCase,
    GatewayProcess,
    MiB,
    _environment,
    _spawn,
    _wait_listening,
    admin,
    free_port,
    target_is_moto,
)
from tests.test_e2e_awscli import _AwsCliTests, _configure
from tests.test_e2e_boto3 import _Boto3Tests
from tests.test_e2e_multipart import _MultipartClientTests


def prepare_account(home: str, capacity: str = "10GiB") -> str:
    """Create account demo with a key and one order in ``HOME/network``; the order's id."""
    admin(home, "account", "create")
    admin(home, "account", "key")
    bought = json.loads(admin(home, "order", "buy", "--capacity", capacity, "--json"))
    return str(bought["order_id"])


def start_node(home: str, port: int | None = None) -> GatewayProcess:
    """Start ``twistd -n lambnet --data HOME/network`` on ``port`` (a free one by default)."""
    argv = [
        *(*TWISTD, "-n", "--pidfile=", "lambnet", "--data", os.path.join(home, "network")),
        *("--listen", "tcp:{port}:interface=127.0.0.1"),
    ]
    if port is None:
        return _spawn(argv, home, "lambnet", "")
    log_path = os.path.join(home, f"lambnet-{port}-{time.monotonic_ns()}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [a.format(port=port) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
            env=_environment(),
        )
    _wait_listening(process, port, log_path)
    return GatewayProcess("lambnet", home, port, "", process, log_path)


def start_gateway(
    home: str, mode: str, node_port: int, order_id: str, *flags: str
) -> GatewayProcess:
    """Start the gateway in ``mode`` over the node on ``node_port``, with extra ``flags``."""
    argv = [
        *(*TWISTD, "-n", "--pidfile=", mode, "--home", home, "--account", ACCOUNT),
        *("--gateway.address", "127.0.0.1:{port}", *ADMIN_ANYWHERE),
        *("--broker.validator_addr", f"http://127.0.0.1:{node_port}"),
        *flags,
    ]
    if mode == "s3gw":
        argv += ["--broker.extra_order_id", order_id]
    return _spawn(argv, home, mode, order_id)


class LambnetCase(GatewayCase):
    """A gateway case whose gateway talks to a lambnet node started for the class."""

    node: ClassVar[GatewayProcess]

    @classmethod
    def gateway_flags(cls) -> tuple[str, ...]:
        """Extra command-line flags of the gateway (none)."""
        return ()

    @classmethod
    def setUpClass(cls) -> None:
        """Start the node, make the account, start the gateway over the node."""
        if target_is_moto():
            raise SkipTest("the lambnet tests run against the gateway only")
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        os.makedirs(cls.scratch)
        home = os.path.join(cls.root, "home")
        os.makedirs(home)
        try:
            order_id = prepare_account(home)
            cls.node = start_node(home, free_port())
            cls.gateway = start_gateway(
                home, cls.mode, cls.node.port, order_id, *cls.gateway_flags()
            )
            if cls.mode == "lambgw":
                cls.bucket = order_id
            else:
                cls.bucket = f"e2e-{cls.__name__.lower()}"
                cls.gateway.s3_client().create_bucket(Bucket=cls.bucket)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        """Stop the gateway and the node, remove the directory."""
        node = cls.__dict__.get("node")
        if node is not None:
            node.stop()
        super().tearDownClass()


class Boto3LambgwOverLambnetTests(_Boto3Tests, LambnetCase):
    """boto3 against lambgw over lambnet."""

    mode = "lambgw"


class Boto3S3gwOverLambnetTests(_Boto3Tests, LambnetCase):
    """boto3 against s3gw over lambnet."""

    mode = "s3gw"


class _AwsCliSample(ClientTests):
    """A sample of the aws cli tests (the whole suite runs on the embedded network)."""

    env: dict[str, str]

    @classmethod
    def setUpClass(cls) -> None:
        """Start the node and the gateway; configure the aws cli for the gateway."""
        super().setUpClass()
        config_dir = os.path.join(cls.root, "aws")
        os.makedirs(config_dir)
        cls.env = _configure(config_dir)

    aws = _AwsCliTests.aws
    aws_run = _AwsCliTests.aws_run
    url = _AwsCliTests.url
    s3api = _AwsCliTests.s3api
    put = _AwsCliTests.put
    round_trip = _AwsCliTests.round_trip
    test_ls_lists_the_bucket = _AwsCliTests.test_ls_lists_the_bucket
    test_round_trip_empty = _AwsCliTests.test_round_trip_empty
    test_round_trip_100mib_multipart = _AwsCliTests.test_round_trip_100mib_multipart
    test_ls_prefix = _AwsCliTests.test_ls_prefix
    test_rm_deletes = _AwsCliTests.test_rm_deletes


class AwsCliLambgwOverLambnetTests(_AwsCliSample, LambnetCase):
    """The aws cli against lambgw over lambnet."""

    mode = "lambgw"

    def test_bought_order_is_listed(self) -> None:
        """An order bought on the node appears in the gateway's bucket listing."""
        order_id = self.gateway.buy_order()
        names = [line.split()[-1] for line in self.aws("s3", "ls").splitlines()]
        self.assertIn(order_id, names)


class AwsCliS3gwOverLambnetTests(_AwsCliSample, LambnetCase):
    """The aws cli against s3gw over lambnet."""

    mode = "s3gw"


class MultipartLambgwOverLambnetTests(_MultipartClientTests, LambnetCase):
    """Multipart uploads of every client against lambgw over lambnet."""

    mode = "lambgw"


class MultipartS3gwOverLambnetTests(_MultipartClientTests, LambnetCase):
    """Multipart uploads of every client against s3gw over lambnet."""

    mode = "s3gw"


def _incoming(home: str) -> list[str]:
    """The bodies in the node's ``incoming/`` (each node process has a directory there)."""
    directory = os.path.join(home, "network", "incoming")
    return [name for _, _, names in os.walk(directory) for name in names]


class ConcurrentLargePutTests(LambnetCase):
    """Large objects streamed to the node side by side."""

    mode = "lambgw"

    def test_concurrent_large_puts(self) -> None:
        """Pairs of concurrent 17-18 MB PUTs, never retried, all succeed and read back whole."""
        s3 = self.gateway.s3_client(retries={"total_max_attempts": 1, "mode": "standard"})
        bodies = [os.urandom(17 * MiB + 333_333 * i) for i in range(2)]
        failures: list[str] = []

        def put(round_: int, i: int) -> None:
            try:
                etag = s3.put_object(Bucket=self.bucket, Key=self.key(f"{i}"), Body=bodies[i])
                if etag["ETag"] != f'"{hashlib.md5(bodies[i]).hexdigest()}"':
                    failures.append(f"round {round_}, object {i}: ETag {etag['ETag']}")
            except Exception as e:
                failures.append(f"round {round_}, object {i}: {e!r}")

        for round_ in range(8):
            threads = [threading.Thread(target=put, args=(round_, i)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        self.assertEqual(failures, [])
        for i, body in enumerate(bodies):
            got = s3.get_object(Bucket=self.bucket, Key=self.key(f"{i}"))["Body"].read()
            self.assertEqual(hashlib.md5(got).digest(), hashlib.md5(body).digest())
        self.assertNotIn("Network call", self.gateway.output())


class FaultTests(LambnetCase):
    """The node stops or fails; the gateway answers clearly and keeps serving."""

    mode = "lambgw"

    def setUp(self) -> None:
        super().setUp()
        self.home = self.gateway.home
        self.order_id = self.bucket
        self.s3 = self.gateway.s3_client(
            retries={"max_attempts": 1}, read_timeout=60, connect_timeout=5
        )
        self.used_before = self.used()

    def used(self) -> int:
        """The bytes the order holds, as the node's store says."""
        (order,) = [o for o in self.gateway.orders() if o["order_id"] == self.order_id]
        return int(order["used"])

    def assert_nothing_stored(self, key: str) -> None:
        """No object at ``key``, and the order holds what it held before the test."""
        self.assertEqual(self.used(), self.used_before)
        listed = self.s3.list_objects_v2(Bucket=self.order_id, Prefix=key)
        self.assertNotIn("Contents", listed)

    def assert_serving(self) -> None:
        """The gateway stores and reads an object again."""
        key = self.key("after")
        self.s3.put_object(Bucket=self.order_id, Key=key, Body=b"still here")
        body = self.s3.get_object(Bucket=self.order_id, Key=key)["Body"].read()
        self.assertEqual(body, b"still here")
        self.assertTrue(self.gateway.running())

    def restart_node(self) -> None:
        """Start the node again on its port."""
        node = type(self).node
        type(self).node = start_node(self.home, node.port)

    def test_node_stopped_before_upload(self) -> None:
        """With the node down, a PUT fails with 503 and nothing is stored or charged."""
        self.node.stop()
        with self.assertRaises(ClientError) as caught:
            self.s3.put_object(Bucket=self.order_id, Key=self.key("k"), Body=b"x" * 1000)
        self.assertEqual(caught.exception.response["ResponseMetadata"]["HTTPStatusCode"], 503)
        self.restart_node()
        self.assert_nothing_stored(self.key("k"))
        self.assert_serving()

    def test_node_stopped_during_upload(self) -> None:
        """The node stopped while the gateway streams to it: 503, no object, no charge."""
        size = 192 * MiB
        path = self.scratch_path("big")
        with open(path, "wb") as f:
            f.truncate(size)
        errors: list[BaseException] = []

        def upload() -> None:
            try:
                with open(path, "rb") as body:
                    self.s3.put_object(Bucket=self.order_id, Key=self.key("big"), Body=body)
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=upload)
        thread.start()
        deadline = time.monotonic() + 60
        while not _incoming(self.home) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        self.node.stop()
        thread.join(60)
        self.assertEqual(len(errors), 1, "the upload should have failed")
        error = errors[0]
        assert isinstance(error, ClientError)
        self.assertEqual(error.response["ResponseMetadata"]["HTTPStatusCode"], 503)
        self.assertEqual(_incoming(self.home), [])
        self.restart_node()
        self.assert_nothing_stored(self.key("big"))
        self.assert_serving()

    def test_bad_digest_of_streamed_upload(self) -> None:
        """A large PUT streamed to the node with a wrong Content-MD5: 400, nothing stored."""
        body = os.urandom(3 * MiB)
        wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        with self.assertRaises(ClientError) as caught:
            self.s3.put_object(
                Bucket=self.order_id, Key=self.key("md5"), Body=body, ContentMD5=wrong
            )
        self.assertEqual(caught.exception.response["Error"]["Code"], "BadDigest")
        deadline = time.monotonic() + 10
        while _incoming(self.home) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(_incoming(self.home), [])
        self.assert_nothing_stored(self.key("md5"))
        self.assert_serving()

    def send_with_wrong_sha256(self, key: str, query: list[tuple[str, str]]) -> str:
        """PUT 3 MiB to ``key`` signed with another body's SHA-256; the error answered.

        The gateway streams the body to the node without hashing it: the node checks it.
        """
        body = os.urandom(3 * MiB)
        endpoint = Endpoint("127.0.0.1", self.gateway.port, ACCESS_KEY, SECRET_KEY)
        wrong = Payload(body, hashlib.sha256(b"other").hexdigest(), crc32_base64(body))
        request = Signer(endpoint).prepare("PUT", object_path(self.order_id, key), query, wrong)
        conn = connect(endpoint)
        try:
            with self.assertRaises(BenchError) as caught:
                perform(conn, request)
        finally:
            conn.close()
        deadline = time.monotonic() + 10
        while _incoming(self.home) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(_incoming(self.home), [])
        return str(caught.exception)

    def test_wrong_signed_sha256_of_streamed_put(self) -> None:
        """A large PUT whose body is not the one signed: 400, nothing stored or charged."""
        answer = self.send_with_wrong_sha256(self.key("sha"), [])
        self.assertIn(": 400 ", answer)
        self.assertIn("XAmzContentSHA256Mismatch", answer)
        self.assert_nothing_stored(self.key("sha"))
        self.assert_serving()

    def test_wrong_signed_sha256_of_streamed_part(self) -> None:
        """A part whose body is not the one signed: 400, no part stored, nothing charged."""
        key = self.key("sha-part")
        upload_id = self.s3.create_multipart_upload(Bucket=self.order_id, Key=key)["UploadId"]
        query = [("partNumber", "1"), ("uploadId", upload_id)]
        answer = self.send_with_wrong_sha256(key, query)
        self.assertIn(": 400 ", answer)
        self.assertIn("XAmzContentSHA256Mismatch", answer)
        parts = self.s3.list_parts(Bucket=self.order_id, Key=key, UploadId=upload_id)
        self.assertNotIn("Parts", parts)
        self.assertEqual(self.used(), self.used_before)
        self.s3.abort_multipart_upload(Bucket=self.order_id, Key=key, UploadId=upload_id)

    def test_node_stopped_before_download(self) -> None:
        """With the node down, a GET fails with 503; it works again once the node is back."""
        key = self.key("k")
        self.s3.put_object(Bucket=self.order_id, Key=key, Body=b"data")
        self.node.stop()
        with self.assertRaises(ClientError) as caught:
            self.s3.get_object(Bucket=self.order_id, Key=key)
        self.assertEqual(caught.exception.response["ResponseMetadata"]["HTTPStatusCode"], 503)
        self.restart_node()
        self.assertEqual(self.s3.get_object(Bucket=self.order_id, Key=key)["Body"].read(), b"data")
        self.assert_serving()

    def test_node_stopped_during_download(self) -> None:
        """The node stopped mid-download: the client gets a short body, never a wrong one."""
        data = os.urandom(64 * MiB)
        self.s3.put_object(Bucket=self.order_id, Key=self.key("big"), Body=data)
        reader = self.gateway.s3_client(retries={"max_attempts": 1}, read_timeout=5)
        body = reader.get_object(Bucket=self.order_id, Key=self.key("big"))["Body"]
        first = body.read(1 * MiB)
        kill(self.node)
        received = first
        with self.assertRaises(Exception):  # noqa: B017 - botocore raises several kinds
            while chunk := body.read(1 * MiB):
                received += chunk
            raise AssertionError(f"the body ended after {len(received)} bytes")
        self.assertEqual(received, data[: len(received)])
        self.restart_node()
        self.assert_serving()


def kill(process: GatewayProcess) -> None:
    """Kill a process at once (SIGKILL)."""
    process._process.send_signal(signal.SIGKILL)
    process._process.wait()


class SecurityTests(LambnetCase):
    """Requests sent straight to the node that it must refuse, reading and writing nothing."""

    mode = "lambgw"

    def setUp(self) -> None:
        super().setUp()
        self.home = self.gateway.home
        self.order_id = self.bucket
        self.account_key = read_private_key(private_key_path(self.home, ACCOUNT))
        self.used_before = self.stored()[0]["used"]

    def send(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send a raw request to the node; its status and JSON answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=30)
        try:
            connection.request(method, target, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        return response.status, json.loads(raw) if raw else {}

    def signed(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        key: Any = None,
        account: str = ACCOUNT,
        digest: str | None = None,
    ) -> dict[str, str]:
        """The signing headers of a request."""
        path, _, query = target.partition("?")
        return signing.sign(
            key or self.account_key,
            account,
            method,
            path,
            query,
            digest or hashlib.sha256(body).hexdigest(),
            int(time.time()),
        )

    def object_target(self, path: str, account: str = ACCOUNT) -> str:
        """The target of an object of the order."""
        orders = f"/{wire.VERSION}/accounts/{account}/orders"
        return f"{orders}/{self.order_id}/object?path={quote(path, safe='')}"

    def put_headers(self, body: bytes) -> dict[str, str]:
        """The object description of a PUT of ``body``."""
        new = {
            "size": len(body),
            "etag": hashlib.md5(body).hexdigest(),
            "content_type": "text/plain",
            "metadata": {},
            "headers": {},
            "checksums": {},
            "checksum_type": "",
        }
        return {"x-lamb-object": json.dumps(new)}

    def stored(self) -> list[dict[str, Any]]:
        """The orders of the account as the admin command sees them."""
        orders: list[dict[str, Any]] = json.loads(admin(self.home, "order", "list", "--json"))
        return orders

    def test_signed_request_accepted(self) -> None:
        """A correctly signed PUT is stored (the baseline of the refusals below)."""
        body = b"hello"
        target = self.object_target("ok")
        headers = {**self.signed("PUT", target, body), **self.put_headers(body)}
        status, answer = self.send("PUT", target, body, headers)
        self.assertEqual((status, answer["size"]), (201, 5))

    def test_unsigned_refused(self) -> None:
        """A request without a signature is refused with 401."""
        status, answer = self.send("GET", f"/{wire.VERSION}/accounts/{ACCOUNT}/orders")
        self.assertEqual((status, answer["code"]), (401, "Unauthorized"))

    def test_other_account_refused(self) -> None:
        """A request for demo's order signed by another account is refused, nothing written."""
        for action in ("create", "key"):
            command = ["account", action, "--account", "eve", "--home", self.home]
            subprocess.run(
                [sys.executable, "-m", "lambgw", *command],
                check=True,
                capture_output=True,
                env=_environment(),
            )
        eve = read_private_key(private_key_path(self.home, "eve"))
        body = b"evil"
        target = self.object_target("x")
        headers = {**self.signed("PUT", target, body, eve, "eve"), **self.put_headers(body)}
        status, answer = self.send("PUT", target, body, headers)
        self.assertEqual((status, answer["code"]), (403, "AccessDenied"))
        target = self.object_target("x", "eve")
        headers = {**self.signed("PUT", target, body, eve, "eve"), **self.put_headers(body)}
        status, answer = self.send("PUT", target, body, headers)
        self.assertEqual((status, answer["code"]), (404, "NoSuchOrder"))
        self.assertEqual(self.stored()[0]["used"], self.used_before)

    def test_forged_signature_refused(self) -> None:
        """A request claiming to be demo's but signed with another key is refused."""
        target = f"/{wire.VERSION}/accounts/{ACCOUNT}/orders"
        headers = self.signed("GET", target, key=signing.generate_key())
        status, answer = self.send("GET", target, headers=headers)
        self.assertEqual((status, answer["code"]), (401, "Unauthorized"))

    def test_tampered_body_refused(self) -> None:
        """A body that does not match its signed digest is refused, and not stored."""
        target = self.object_target("t")
        headers = {**self.signed("PUT", target, b"good"), **self.put_headers(b"evil")}
        status, answer = self.send("PUT", target, b"evil", headers)
        self.assertEqual((status, answer["code"]), (400, "BadDigest"))
        self.assertEqual(self.stored()[0]["used"], self.used_before)
        self.assertEqual(_incoming(self.home), [])

    def test_trailer_of_another_request_refused(self) -> None:
        """A streamed body whose trailer was signed for another request is refused."""
        body = b"streamed body"
        target = self.object_target("trailed") + f"&size={len(body)}"
        headers = self.signed("PUT", target, digest=signing.TRAILER)
        description = json.dumps(json.loads(self.put_headers(body)["x-lamb-object"]))
        digest = hashlib.sha256(body).hexdigest()
        other = signing.sign_trailer(self.account_key, b"another request", digest, description)
        trailer = wire.encode_trailer(wire.Trailer(digest, description, other))
        status, answer = self.send("PUT", target, body + trailer, headers)
        self.assertEqual((status, answer["code"]), (401, "Unauthorized"))
        self.assertEqual(self.stored()[0]["used"], self.used_before)
        headers = self.signed("PUT", target, digest=signing.TRAILER)
        signature = signing.signature_of(headers)
        good = signing.sign_trailer(self.account_key, signature, digest, description)
        trailer = wire.encode_trailer(wire.Trailer(digest, description, good))
        status, answer = self.send("PUT", target, body + trailer, headers)
        self.assertEqual((status, answer["size"]), (201, len(body)))

    def test_tampered_path_refused(self) -> None:
        """A signed request sent to another path is refused."""
        headers = {**self.signed("PUT", self.object_target("a"), b"x"), **self.put_headers(b"x")}
        status, answer = self.send("PUT", self.object_target("b"), b"x", headers)
        self.assertEqual((status, answer["code"]), (401, "Unauthorized"))

    def test_replay_refused(self) -> None:
        """The same signed request sent twice is refused the second time."""
        target = f"/{wire.VERSION}/accounts/{ACCOUNT}/orders"
        headers = self.signed("GET", target)
        self.assertEqual(self.send("GET", target, headers=headers)[0], 200)
        status, answer = self.send("GET", target, headers=headers)
        self.assertEqual((status, answer["code"]), (401, "Unauthorized"))
        self.assertIn("replayed", answer["message"])

    def test_old_date_refused(self) -> None:
        """A request dated beyond the allowed skew is refused."""
        target = f"/{wire.VERSION}/accounts/{ACCOUNT}/orders"
        headers = signing.sign(
            self.account_key,
            ACCOUNT,
            "GET",
            target,
            "",
            signing.EMPTY_SHA256,
            int(time.time()) - 3600,
        )
        status, answer = self.send("GET", target, headers=headers)
        self.assertEqual((status, answer["code"]), (401, "Unauthorized"))

    def test_path_escape_refused(self) -> None:
        """Dot segments that would leave the order or the account are refused."""
        for target in [
            f"/{wire.VERSION}/accounts/{ACCOUNT}/orders/{self.order_id}/../../../accounts/eve/orders",
            f"/{wire.VERSION}/accounts/{ACCOUNT}/orders/./{self.order_id}",
            f"/{wire.VERSION}/accounts/..%2F{ACCOUNT}/orders",
        ]:
            headers = self.signed("GET", target)
            status, _ = self.send("GET", target, headers=headers)
            self.assertIn(status, (400, 404), target)

    def test_object_path_stays_in_the_order(self) -> None:
        """An object named with dot segments is just a name inside the order."""
        body = b"inside"
        target = self.object_target("../../etc/passwd")
        headers = {**self.signed("PUT", target, body), **self.put_headers(body)}
        self.assertEqual(self.send("PUT", target, body, headers)[0], 201)
        self.assertFalse(os.path.exists(os.path.join(self.home, "etc", "passwd")))
        target = f"/{wire.VERSION}/accounts/{ACCOUNT}/orders/{self.order_id}/list?prefix=..%2F"
        _, page = self.send("GET", target, headers=self.signed("GET", target))
        self.assertEqual(page["paths"], ["../../etc/passwd"])

    def streamed(
        self, path: str, body: bytes, expect: dict[str, str], content_sha256: str
    ) -> tuple[int, dict[str, Any]]:
        """Stream ``body`` to ``path`` asking the node for its MD5 and CRC32; the answer."""
        target = self.object_target(path) + f"&size={len(body)}&digests=md5%2Ccrc32"
        headers = self.signed("PUT", target, digest=signing.TRAILER)
        new = {**json.loads(self.put_headers(body)["x-lamb-object"]), "etag": "", "expect": expect}
        description = wire.header_json(new)
        signature = signing.sign_trailer(
            self.account_key, signing.signature_of(headers), content_sha256, description
        )
        trailer = wire.encode_trailer(wire.Trailer(content_sha256, description, signature))
        return self.send("PUT", target, body + trailer, headers)

    def test_digests_computed_by_the_node(self) -> None:
        """A streamed body's MD5 and CRC32 are computed by the node, unsigned, and stored."""
        body = os.urandom(3 * MiB)
        md5 = hashlib.md5(body)
        expect = {"md5": base64.b64encode(md5.digest()).decode("ascii")}
        status, answer = self.streamed("digested", body, expect, signing.UNSIGNED_PAYLOAD)
        self.assertEqual((status, answer["etag"]), (201, md5.hexdigest()))
        self.assertEqual(answer["checksums"], {"crc32": crc32_base64(body)})
        target = self.object_target("digested")
        status, _ = self.send("HEAD", target, headers=self.signed("HEAD", target))
        self.assertEqual(status, 200)

    def test_digest_mismatch_refused(self) -> None:
        """A body whose MD5 is not the one expected is refused with S3's message, not stored."""
        body = os.urandom(3 * MiB)
        expect = {"md5": base64.b64encode(hashlib.md5(b"other").digest()).decode("ascii")}
        status, answer = self.streamed("mismatch", body, expect, hashlib.sha256(body).hexdigest())
        message = "The Content-MD5 you specified did not match what we received."
        self.assertEqual(
            (status, answer["code"], answer["message"]), (400, "DigestMismatch", message)
        )
        target = self.object_target("mismatch")
        status, _ = self.send("HEAD", target, headers=self.signed("HEAD", target))
        self.assertEqual(status, 404)
        self.assertEqual(self.stored()[0]["used"], self.used_before)
        self.assertEqual(_incoming(self.home), [])


def make_test_ca(directory: str) -> tuple[str, str, str]:
    """Write a test CA and a certificate for ``localhost`` signed by it; their PEM files.

    Returns the CA certificate, the server certificate and the server key.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lambgw test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = [os.path.join(directory, name) for name in ("ca.pem", "node.pem", "node.key")]
    pem = serialization.Encoding.PEM
    for path, data in zip(
        paths,
        [
            ca.public_bytes(pem),
            cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ],
        strict=True,
    ):
        with open(path, "wb") as f:
            f.write(data)
    return paths[0], paths[1], paths[2]


class HTTPSTests(SynchronousTestCase):
    """The gateway over a lambnet node serving HTTPS with a certificate of a test CA."""

    def setUp(self) -> None:
        if target_is_moto():
            raise SkipTest("the lambnet tests run against the gateway only")
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")
        os.makedirs(self.home)
        self.order_id = prepare_account(self.home, "1GiB")
        self.ca, cert, key = make_test_ca(self.root)
        argv = [
            *(*TWISTD, "-n", "--pidfile=", "lambnet", "--data", os.path.join(self.home, "network")),
            *("--listen", "tcp:{port}:interface=127.0.0.1", "--tls-cert", cert, "--tls-key", key),
        ]
        self.node = _spawn(argv, self.home, "lambnet", "")
        self.addCleanup(self.node.stop)

    def gateway(self, *flags: str) -> GatewayProcess:
        """Start lambgw over the node's HTTPS address, with ``flags``."""
        argv = [
            *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", self.home, "--account", ACCOUNT),
            *("--gateway.address", "127.0.0.1:{port}", *ADMIN_ANYWHERE),
            *("--broker.validator_addr", f"https://localhost:{self.node.port}", *flags),
        ]
        gateway = _spawn(argv, self.home, "lambgw", self.order_id)
        self.addCleanup(gateway.stop)
        return gateway

    def test_round_trip_over_https(self) -> None:
        """With the test CA, objects go to the node and back over HTTPS."""
        s3 = self.gateway("--broker.ca_file", self.ca).s3_client()
        data = os.urandom(3 * MiB)
        s3.put_object(Bucket=self.order_id, Key="k", Body=data)
        self.assertEqual(s3.get_object(Bucket=self.order_id, Key="k")["Body"].read(), data)

    def test_unknown_ca_refused(self) -> None:
        """Without the test CA, the node's certificate is refused and the gateway says so."""
        # The gateway opens its S3 port only once the node answers: it exits, never listening.
        with self.assertRaises(RuntimeError) as caught:
            self.gateway()
        self.assertIn("Cannot start", str(caught.exception))
        self.assertIn("certificate verify failed", str(caught.exception))
